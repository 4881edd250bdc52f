"""ACTIVE_STANDBY in the engine provider, against a scripted agent: a flavor's `loadbalancer_topology` makes two
engines (MASTER and BACKUP) with an address each on the VIP subnet and mirrored HA parts in one config; a crash
mid-way does not duplicate them; an amphora failover replaces one, telling the survivor first; a delete removes
both and releases their addresses; the topology is refused where it cannot run, and unknown ones anywhere."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from quadriga.agent.client import AgentUnavailable
from quadriga.db import models as m
from quadriga.providers.engine import EngineProvider
from tests.api.test_engine_provider import amphorae
from tests.support.api_harness import Api, make_api
from tests.support.scripted_agent import ScriptedAgent, engine_api, scripted_agent

LB = "/v2/lbaas/loadbalancers"


agent = pytest.fixture(scripted_agent, name="agent")
api = pytest.fixture(engine_api, name="api")


def flavor(api: Api, topology: str = "ACTIVE_STANDBY") -> str:
    data = f'{{"loadbalancer_topology": "{topology}"}}'
    body = {"flavorprofile": {"name": "fp", "provider_name": "amphora", "flavor_data": data}}
    profile = api.ok(api.post("/v2/lbaas/flavorprofiles", body), 201)["flavorprofile"]
    body = {"flavor": {"name": f"f-{topology}", "flavor_profile_id": profile["id"], "enabled": True}}
    return api.ok(api.post("/v2/lbaas/flavors", body), 201)["flavor"]["id"]


def create(api: Api, flavor_id: str) -> dict:
    body = {"vip_subnet_id": api.subnet_id(), "provider": "amphora", "flavor_id": flavor_id}
    return api.ok(api.post(LB, {"loadbalancer": body}), 201)["loadbalancer"]


def live(api: Api, lb_id: str) -> dict[str, m.Amphora]:
    return {a.role or "": a for a in amphorae(api, lb_id) if a.status == "ALLOCATED"}


def ports_of(api: Api, device_ids: list[str]) -> list[m.Port]:
    with api.db.read() as s:
        return list(s.scalars(select(m.Port).where(m.Port.device_id.in_(device_ids))))


def test_a_pair_gets_two_engines_with_mirrored_ha_parts(api: Api, agent: ScriptedAgent):
    lb = api.wait_lb(create(api, flavor(api))["id"])
    pair = live(api, lb["id"])
    assert set(pair) == {"MASTER", "BACKUP"}
    master, backup = pair["MASTER"], pair["BACKUP"]
    assert (master.vrrp_priority, backup.vrrp_priority, master.vrrp_id) == (100, 90, 1)
    assert master.ha_ip == backup.ha_ip == lb["vip_address"]
    assert len({master.vrrp_ip, backup.vrrp_ip, lb["vip_address"]}) == 3
    assert {p.id for p in ports_of(api, [master.id, backup.id])} == {master.vrrp_port_id, backup.vrrp_port_id}
    specs = dict(agent.applied)
    a, b = specs[master.id], specs[backup.id]
    assert a.model_copy(update={"ha": None}) == b.model_copy(update={"ha": None}), "both serve one config"
    assert a.ha and b.ha
    assert (a.ha.role, a.ha.address, a.ha.peer_address, a.ha.peer_name) == (
        "MASTER",
        master.vrrp_ip,
        backup.vrrp_ip,
        backup.id,
    )
    assert (b.ha.role, b.ha.address, b.ha.peer_address, b.ha.priority) == ("BACKUP", backup.vrrp_ip, master.vrrp_ip, 90)
    listed = api.ok(api.get("/v2/octavia/amphorae", params={"loadbalancer_id": lb["id"]}), 200)["amphorae"]
    assert sorted(x["role"] for x in listed) == ["BACKUP", "MASTER"]


def test_a_pass_that_fails_half_way_is_finished_by_the_next_without_new_engines(api: Api, agent: ScriptedAgent):
    agent.script = [None, AgentUnavailable("connection refused")]  # the MASTER is pushed, the BACKUP is not
    lb = create(api, flavor(api))
    with api.db.write() as s:
        api.reconciler.run_once()
        s.execute(update(m.LoadBalancer).values(lease_expires_at=None))
    assert api.wait_lb(lb["id"])["provisioning_status"] == "ACTIVE"
    assert len(amphorae(api, lb["id"])) == 2
    assert {engine for engine, _spec in agent.applied} == {a.id for a in amphorae(api, lb["id"])}


def test_amphora_failover_replaces_one_engine_and_tells_the_survivor_first(api: Api, agent: ScriptedAgent):
    lb = api.wait_lb(create(api, flavor(api))["id"])
    old = live(api, lb["id"])
    pushed = len(agent.applied)
    assert api.put(f"/v2/octavia/amphorae/{old['MASTER'].id}/failover", None).status_code == 202
    api.wait_lb(lb["id"])
    new = live(api, lb["id"])
    assert new["BACKUP"].id == old["BACKUP"].id and new["MASTER"].id != old["MASTER"].id
    assert new["MASTER"].vrrp_priority == 100 and new["MASTER"].vrrp_ip
    assert agent.removed == [old["MASTER"].id]
    order = [engine for engine, _spec in agent.applied[pushed:]]
    assert order == [old["BACKUP"].id, new["MASTER"].id], "the survivor learns its new peer first"
    survivor = agent.applied[pushed][1].ha
    assert survivor and survivor.peer_address == new["MASTER"].vrrp_ip and survivor.peer_name == new["MASTER"].id
    assert ports_of(api, [old["MASTER"].id]) == [], "the lost engine's address is released"


def test_delete_removes_both_engines_and_their_addresses(api: Api, agent: ScriptedAgent):
    lb = api.wait_lb(create(api, flavor(api))["id"])
    engines = [a.id for a in amphorae(api, lb["id"])]
    assert api.delete(f"{LB}/{lb['id']}").status_code == 204
    api.wait_lb(lb["id"], "DELETED")
    assert sorted(agent.removed) == sorted(engines)
    assert [a.status for a in amphorae(api, lb["id"])] == ["DELETED", "DELETED"]
    assert ports_of(api, engines) == []


def test_single_topology_flavor_keeps_one_engine(api: Api, agent: ScriptedAgent):
    lb = api.wait_lb(create(api, flavor(api, "SINGLE"))["id"])
    assert [a.role for a in amphorae(api, lb["id"])] == ["STANDALONE"]
    assert agent.applied[-1][1].ha is None


def test_unknown_topology_is_a_400(api: Api):
    body = {"flavorprofile": {"name": "fp", "provider_name": "amphora", "flavor_data": '{"loadbalancer_topology": 1}'}}
    r = api.post("/v2/lbaas/flavorprofiles", body)
    assert r.status_code == 400 and "loadbalancer_topology" in r.json()["faultstring"], r.text


def test_where_pairs_cannot_run_the_create_is_a_400_and_nothing_is_stored(tmp_path, agent: ScriptedAgent):
    def providers(db):
        return {"amphora": EngineProvider(db, {"agent-1": agent}, active_standby_unavailable="it needs netns")}

    for api in make_api(tmp_path, extra_providers=providers):
        r = api.post(LB, {"loadbalancer": {"vip_subnet_id": api.subnet_id(), "flavor_id": flavor(api)}})
        assert r.status_code == 400 and "it needs netns" in r.json()["faultstring"], r.text
        assert api.ok(api.get(LB), 200)["loadbalancers"] == []
        with api.db.read() as s:
            assert s.scalars(select(m.Port).where(m.Port.device_owner == "Octavia")).all() == []
