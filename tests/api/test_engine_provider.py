"""The engine provider's contract with the controller, against a scripted agent: placement is recorded
before the push, a config the agent refuses goes to ERROR at once with its reason, an unreachable agent is
retried, and a delete removes the engine."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import select, update

from quadriga.agent.client import AgentRejected, AgentUnavailable
from quadriga.controller.housekeeping import Housekeeping
from quadriga.db import models as m
from quadriga.engine.report import EngineReport
from tests.api.test_catalog import fault
from tests.support.api_harness import Api
from tests.support.scripted_agent import ScriptedAgent, engine_api, scripted_agent

LB = "/v2/lbaas/loadbalancers"
WEEK = dt.timedelta(days=7)


agent = pytest.fixture(scripted_agent, name="agent")
api = pytest.fixture(engine_api, name="api")


def create(api: Api, **fields) -> dict:
    body = {"vip_subnet_id": api.subnet_id(), "provider": "amphora", **fields}
    return api.ok(api.post(LB, {"loadbalancer": body}), 201)["loadbalancer"]


def amphorae(api: Api, lb_id: str) -> list[m.Amphora]:
    with api.db.read() as s:
        return list(s.scalars(select(m.Amphora).where(m.Amphora.load_balancer_id == lb_id)))


def test_create_places_an_engine_and_pushes_the_whole_spec(api: Api, agent: ScriptedAgent):
    lb = api.wait_lb(create(api)["id"])
    (amp,) = amphorae(api, lb["id"])
    assert (amp.status, amp.role, amp.agent, amp.compute_id, amp.applied_revision) == (
        "ALLOCATED",
        "STANDALONE",
        "agent-1",
        amp.id,
        1,
    )
    # As Octavia's SINGLE amphora: its HA and VRRP ports are UUIDs; the engine holds the VIP on the VIP's port.
    assert (amp.ha_port_id, amp.ha_ip) == (amp.vrrp_port_id, amp.vrrp_ip) == (lb["vip_port_id"], lb["vip_address"])
    engine_id, spec = agent.applied[-1]
    assert engine_id == amp.id and spec.loadbalancer_id == lb["id"] and spec.vips == (lb["vip_address"],)
    assert spec.subnets[0].id == lb["vip_subnet_id"]
    listed = api.ok(api.get("/v2/octavia/amphorae", params={"loadbalancer_id": lb["id"]}), 200)["amphorae"]
    assert [a["id"] for a in listed] == [amp.id]


def test_a_refused_config_goes_to_error_at_once_with_the_reason(api: Api, agent: ScriptedAgent):
    lb = api.wait_lb(create(api)["id"])
    agent.script = [AgentRejected("HAProxy rejected revision 2: bad things", 422)]
    body = {"listener": {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}}
    listener = api.ok(api.post("/v2/lbaas/listeners", body), 201)["listener"]
    api.wait_lb(lb["id"])
    got = api.ok(api.get(f"/v2/lbaas/listeners/{listener['id']}"), 200)["listener"]
    assert got["provisioning_status"] == "ERROR"
    tree = api.ok(api.get(f"{LB}/{lb['id']}/status"), 200)["statuses"]["loadbalancer"]
    assert "bad things" in tree["status_reason"]
    assert len(agent.applied) == 1  # refused once, never retried


def test_an_unreachable_agent_is_retried_until_it_answers(api: Api, agent: ScriptedAgent):
    agent.script = [AgentUnavailable("connection refused")]
    lb = create(api)
    with api.db.write() as s:  # skip the backoff wait once the first attempt failed
        api.reconciler.run_once()
        s.execute(update(m.LoadBalancer).values(lease_expires_at=None))
    assert api.wait_lb(lb["id"])["provisioning_status"] == "ACTIVE"
    assert len(agent.applied) == 1


def test_delete_removes_the_engine(api: Api, agent: ScriptedAgent):
    lb = api.wait_lb(create(api)["id"])
    (amp,) = amphorae(api, lb["id"])
    assert api.delete(f"{LB}/{lb['id']}").status_code == 204
    api.wait_lb(lb["id"], "DELETED")
    assert agent.removed == [amp.id]
    assert [a.status for a in amphorae(api, lb["id"])] == ["DELETED"]


def test_a_regex_haproxy_cannot_compile_is_a_400_and_nothing_is_stored(api: Api, agent: ScriptedAgent):
    lb = api.wait_lb(create(api)["id"])
    listener = api.ok(
        api.post(
            "/v2/lbaas/listeners", {"listener": {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}}
        ),
        201,
    )["listener"]
    api.wait_lb(lb["id"])
    policy = api.ok(
        api.post("/v2/lbaas/l7policies", {"l7policy": {"listener_id": listener["id"], "action": "REJECT"}}), 201
    )["l7policy"]
    api.wait_lb(lb["id"])
    # Python's `re` (the API's generic check, as Octavia's) accepts these; HAProxy's PCRE2 does not.
    for pattern, complaint in [("(?a)x", "unrecognized character"), (r"\N{LATIN SMALL LETTER A}", "does not support")]:
        r = api.post(
            f"/v2/lbaas/l7policies/{policy['id']}/rules",
            {"rule": {"type": "PATH", "compare_type": "REGEX", "value": pattern}},
        )
        assert r.status_code == 400 and complaint in r.json()["faultstring"], r.text
    assert api.ok(api.get(f"/v2/lbaas/l7policies/{policy['id']}/rules"), 200)["rules"] == []
    assert api.ok(api.get(f"{LB}/{lb['id']}"), 200)["loadbalancer"]["provisioning_status"] == "ACTIVE"
    # A full-graph create with such a rule is refused as a whole.
    graph = {
        "listeners": [
            {
                "protocol": "HTTP",
                "protocol_port": 80,
                "l7policies": [
                    {"action": "REJECT", "rules": [{"type": "PATH", "compare_type": "REGEX", "value": "(?a)x"}]}
                ],
            }
        ]
    }
    sent = len(agent.applied)
    r = api.post(LB, {"loadbalancer": {"vip_subnet_id": api.subnet_id(), "provider": "amphora", **graph}})
    assert r.status_code == 400, r.text
    assert len(agent.applied) == sent
    assert len(api.ok(api.get(LB), 200)["loadbalancers"]) == 1


def test_what_the_engine_cannot_carry_is_a_501_and_the_load_balancer_keeps_taking_changes(
    api: Api, agent: ScriptedAgent
):
    # SCTP: refused as Octavia refuses a provider's unsupported option, not accepted and failed at the apply
    # (which left the load balancer in ERROR and every later change failing behind the SCTP listener).
    lb = api.wait_lb(create(api)["id"])
    lb_id = lb["id"]

    def refused(path: str, body: dict, what: str) -> None:
        r = api.post(path, body)
        assert r.json() == fault(
            501,
            f"Provider 'amphora' does not support a requested option: {what} (the engine's kernel has no SCTP "
            "sockets, so it cannot carry SCTP)",
        ), r.text
        assert r.status_code == 501

    listener = {"loadbalancer_id": lb_id, "protocol": "SCTP", "protocol_port": 53}
    refused("/v2/lbaas/listeners", {"listener": listener}, "listener protocol SCTP")
    pool = {"loadbalancer_id": lb_id, "protocol": "SCTP", "lb_algorithm": "ROUND_ROBIN"}
    refused("/v2/lbaas/pools", {"pool": pool}, "pool protocol SCTP")
    graph = {
        "vip_subnet_id": api.subnet_id(),
        "provider": "amphora",
        "listeners": [{"protocol": "SCTP", "protocol_port": 53}],
    }
    refused(LB, {"loadbalancer": graph}, "listener protocol SCTP")
    tcp = {"loadbalancer_id": lb_id, "protocol": "TCP", "protocol_port": 53}
    api.ok(api.post("/v2/lbaas/listeners", {"listener": tcp}), 201)
    assert api.wait_lb(lb_id)["provisioning_status"] == "ACTIVE"
    assert len(api.ok(api.get(LB), 200)["loadbalancers"]) == 1


def test_failover_places_a_new_engine_then_removes_the_old_one(api: Api, agent: ScriptedAgent):
    lb = api.wait_lb(create(api)["id"])
    (old,) = amphorae(api, lb["id"])
    api.reconciler.stop()  # keep the failover in flight
    assert api.put(f"/v2/octavia/amphorae/{old.id}/failover", None).status_code == 202
    assert api.ok(api.get(f"{LB}/{lb['id']}"), 200)["loadbalancer"]["provisioning_status"] == "PENDING_UPDATE"
    # An engine already being replaced, or its load balancer, cannot be failed over again meanwhile.
    assert api.put(f"/v2/octavia/amphorae/{old.id}/failover", None).status_code == 409
    assert api.put(f"{LB}/{lb['id']}/failover", None).status_code == 409
    api.reconciler.run_once()
    assert api.ok(api.get(f"{LB}/{lb['id']}"), 200)["loadbalancer"]["provisioning_status"] == "ACTIVE"
    statuses = {a.id: a.status for a in amphorae(api, lb["id"])}
    assert statuses.pop(old.id) == "DELETED" and list(statuses.values()) == ["ALLOCATED"]
    assert agent.removed == [old.id]
    assert agent.applied[-1][0] != old.id  # the new engine got the whole spec
    # As in Octavia, the API no longer lists or finds the replaced engine (its row waits for housekeeping).
    listed = api.ok(api.get("/v2/octavia/amphorae", params={"loadbalancer_id": lb["id"]}), 200)["amphorae"]
    assert [(a["id"], a["status"]) for a in listed] == [(next(iter(statuses)), "ALLOCATED")]
    for path in ("", "/stats"):
        assert api.get(f"/v2/octavia/amphorae/{old.id}{path}").json() == fault(404, f"Amphora {old.id} not found.")
    assert api.put(f"/v2/octavia/amphorae/{old.id}/failover", None).status_code == 404


def test_a_replaced_engine_on_an_unreachable_agent_is_removed_later(api: Api, agent: ScriptedAgent):
    lb = api.wait_lb(create(api)["id"])
    (old,) = amphorae(api, lb["id"])
    real_remove = agent.remove

    def unreachable(engine_id: str) -> None:
        raise AgentUnavailable("no route to host")

    agent.remove = unreachable  # type: ignore[method-assign]
    assert api.put(f"{LB}/{lb['id']}/failover", None).status_code == 202
    api.wait_lb(lb["id"])
    assert {a.id: a.status for a in amphorae(api, lb["id"])}[old.id] == "PENDING_DELETE"
    agent.remove = real_remove  # type: ignore[method-assign]
    assert api.put(f"/v2/octavia/amphorae/{old.id}/config", None).status_code == 202
    deadline = time.monotonic() + 10
    while {a.id: a.status for a in amphorae(api, lb["id"])}[old.id] != "DELETED":
        assert time.monotonic() < deadline, "the replaced engine was never removed"
        time.sleep(0.05)
    assert agent.removed == [old.id]


def test_housekeeping_purges_old_deleted_rows_and_keeps_recent_ones(api: Api, agent: ScriptedAgent):
    old = api.wait_lb(create(api)["id"])
    recent = api.wait_lb(create(api)["id"])
    for lb in (old, recent):
        assert api.delete(f"{LB}/{lb['id']}").status_code == 204
        api.wait_lb(lb["id"], "DELETED")
    with api.db.write() as s:  # the first one was deleted long ago
        s.execute(update(m.LoadBalancer).where(m.LoadBalancer.id == old["id"]).values(updated_at=m.utcnow() - WEEK))
        s.execute(update(m.Amphora).where(m.Amphora.load_balancer_id == old["id"]).values(updated_at=m.utcnow() - WEEK))
    keeper = Housekeeping(api.db, {"agent-1": agent}, purge_after=dt.timedelta(days=1))
    assert keeper.purge() == 2
    with api.db.read() as s:
        assert s.get(m.LoadBalancer, old["id"]) is None and s.get(m.LoadBalancer, recent["id"]) is not None
    assert amphorae(api, old["id"]) == [] and len(amphorae(api, recent["id"])) == 1
    assert keeper.purge() == 0


def test_housekeeping_removes_an_engine_no_load_balancer_owns_after_two_sightings(api: Api, agent: ScriptedAgent):
    lb = api.wait_lb(create(api)["id"])
    (owned,) = amphorae(api, lb["id"])
    reports = [
        EngineReport(engine_id=owned.id, loadbalancer_id=lb["id"], revision=1, running=True),
        EngineReport(engine_id="stray-engine", loadbalancer_id="gone", revision=3, running=True),
    ]
    agent.reports = lambda: reports  # type: ignore[method-assign]
    keeper = Housekeeping(api.db, {"agent-1": agent})
    assert keeper.collect_orphans() == 0  # first sighting: it might be an engine being placed right now
    assert agent.removed == []
    assert keeper.collect_orphans() == 1
    assert agent.removed == ["stray-engine"]


def test_housekeeping_has_every_agent_collect_what_none_of_its_engines_owns(api: Api, agent: ScriptedAgent):
    agent.collect_orphans = lambda: ["namespace qg-abcd-ghost"]  # type: ignore[method-assign]
    keeper = Housekeeping(api.db, {"agent-1": agent})
    assert keeper.collect_orphans() == 1


def test_tls_settings_the_engine_cannot_serve_are_a_400_and_nothing_is_stored(api: Api, agent: ScriptedAgent):
    lb = api.wait_lb(create(api)["id"])
    sent = len(agent.applied)
    ref = "http://127.0.0.1:9311/v1/secrets/00000000-0000-0000-0000-000000000001"
    listener = {"loadbalancer_id": lb["id"], "protocol": "TERMINATED_HTTPS", "protocol_port": 443}
    listener["default_tls_container_ref"] = ref
    pool = {"loadbalancer_id": lb["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "tls_enabled": True}
    for path, root, body in [("/v2/lbaas/listeners", "listener", listener), ("/v2/lbaas/pools", "pool", pool)]:
        for fields, complaint in [
            ({"tls_ciphers": "NOTACIPHER"}, "OpenSSL selects no cipher"),  # `haproxy -c` refuses it
            ({"tls_ciphers": "ECDHE-RSA-AES128-GCM-SHA256 x"}, "letters, digits"),  # breaks the engine spec
            ({"tls_versions": ["TLSv1", "TLSv1.1"]}, "none of the versions"),
        ]:
            r = api.post(path, {root: {**body, **fields}})
            assert r.status_code == 400 and complaint in r.json()["faultstring"], r.text
    bad_pool = {**pool, "name": "p", "tls_ciphers": "NOPE"}
    del bad_pool["loadbalancer_id"]
    sni_only = {**listener, "default_tls_container_ref": None, "sni_container_refs": [ref]}
    r = api.post("/v2/lbaas/listeners", {"listener": sni_only})
    assert r.status_code == 400 and "needs a default_tls_container_ref" in r.json()["faultstring"], r.text
    graph = {"listeners": [{"protocol": "HTTP", "protocol_port": 80, "default_pool": bad_pool}]}
    r = api.post(LB, {"loadbalancer": {"vip_subnet_id": api.subnet_id(), "provider": "amphora", **graph}})
    assert r.status_code == 400 and "OpenSSL selects no cipher" in r.json()["faultstring"], r.text
    good = api.ok(api.post("/v2/lbaas/pools", {"pool": {**pool, "tls_ciphers": "ECDHE+AESGCM"}}), 201)["pool"]
    api.wait_lb(lb["id"])
    r = api.put(f"/v2/lbaas/pools/{good['id']}", {"pool": {"tls_versions": ["SSLv3"]}})
    assert r.status_code == 400 and "none of the versions" in r.json()["faultstring"], r.text
    assert api.ok(api.get("/v2/lbaas/listeners"), 200)["listeners"] == []
    assert [p["id"] for p in api.ok(api.get("/v2/lbaas/pools"), 200)["pools"]] == [good["id"]]
    assert len(api.ok(api.get(LB), 200)["loadbalancers"]) == 1
    assert len(agent.applied) == sent + 1  # only the good pool
