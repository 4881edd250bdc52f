"""ACTIVE_STANDBY load balancers: two engines in two namespaces share the VIP through keepalived; when the one
holding it dies, the other takes over within about a second, with the stick table it shares through HAProxy's
peers; an amphora failover rebuilds the lost one; deleting the load balancer leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from quadriga.agent.runtime import RuntimeApi
from tests.support.dataplane import Cloud, haproxy_pids, network_driver, network_objects, running_cloud
from tests.support.ha import (
    active_standby_flavor,
    amphorae,
    engine_dir,
    holds,
    keepalived_pids,
    kill_engine,
    live_pair,
    namespace,
    vrrp_state,
    wait_holder,
    wait_vrrp_state,
)

TAKEOVER_LIMIT = 3.0  # seconds of failed requests tolerated in a test (the benchmark measures the real window)

needs_netns = pytest.mark.skipif(network_driver() != "netns", reason="ACTIVE_STANDBY needs root (netns driver)")


def sticky_graph(cloud: Cloud, name: str, flavor_id: str) -> dict:
    backends = [cloud.backend(f"{name}-{i}") for i in range(3)]
    pool = {
        "name": "p",
        "protocol": "HTTP",
        "lb_algorithm": "ROUND_ROBIN",
        "session_persistence": {"type": "SOURCE_IP"},
        "members": [cloud.member(b) for b in backends],
    }
    return {
        "name": name,
        "flavor_id": flavor_id,
        "listeners": [{"protocol": "HTTP", "protocol_port": 80, "default_pool": pool}],
    }


def stick_entries(cloud: Cloud, engine_id: str, backend: str) -> str:
    return RuntimeApi(engine_dir(cloud, engine_id) / "haproxy.sock").command(f"show table {backend}")


def first_success_after_failure(cloud: Cloud, vip: str, limit: float) -> tuple[float, str]:
    """Send requests until one fails and then one succeeds; the seconds in between and the answer."""
    start = time.monotonic()
    first_failure = None
    while time.monotonic() - start < limit + 5:
        try:
            answer = cloud.get(vip, timeout=0.3).text.strip()
        except httpx.HTTPError:
            first_failure = first_failure or time.monotonic()
            continue
        if first_failure is not None:
            return time.monotonic() - first_failure, answer
        if time.monotonic() - start > 2:
            return 0.0, answer  # the kill cost no request at all
    raise AssertionError(f"no request through {vip} succeeded within {limit + 5:.0f} s")


@needs_netns
def test_pair_takes_over_keeps_stickiness_and_rebuilds_the_lost_engine(cloud: Cloud, lbs: list[str], ha_flavor: str):
    lb = cloud.create_lb(**sticky_graph(cloud, "ha", ha_flavor))
    lbs.append(lb["id"])
    vip = lb["vip_address"]
    pair = live_pair(cloud, lb["id"])
    assert set(pair) == {"MASTER", "BACKUP"}
    master, backup = pair["MASTER"], pair["BACKUP"]
    assert (master["vrrp_priority"], backup["vrrp_priority"]) == (100, 90)
    assert master["vrrp_ip"] != backup["vrrp_ip"] and vip not in (master["vrrp_ip"], backup["vrrp_ip"])
    assert master["ha_ip"] == backup["ha_ip"] == vip
    assert master["lb_network_ip"] == master["vrrp_ip"] and backup["lb_network_ip"] == backup["vrrp_ip"]
    ids = [master["id"], backup["id"]]
    assert namespace(cloud, ids[0]) != namespace(cloud, ids[1])
    holder = wait_holder(cloud, ids, vip)
    assert holder == master["id"], "the higher priority wins the first election"

    answers = cloud.answers(vip, 5)
    assert len(set(answers)) == 1, f"SOURCE_IP persistence: one member for one client, got {answers}"
    pools = cloud.ok(cloud.api.get("/v2/lbaas/pools", params={"loadbalancer_id": lb["id"]}), 200)["pools"]
    backend = f"{pools[0]['id']}:{pools[0]['listeners'][0]['id']}"
    deadline = time.monotonic() + 5
    while "server_id=" not in stick_entries(cloud, backup["id"], backend):
        assert time.monotonic() < deadline, "the BACKUP never learnt the MASTER's stick-table entry"
        time.sleep(0.1)

    frozen = kill_engine(engine_dir(cloud, master["id"]), signal.SIGSTOP)  # hung: no one restarts it
    try:
        window, answer = first_success_after_failure(cloud, vip, TAKEOVER_LIMIT)
        assert window <= TAKEOVER_LIMIT, f"takeover took {window:.2f} s"
        assert answer == answers[0], "the stick table moved with the VIP"
        wait_vrrp_state(cloud, backup["id"], "MASTER")
        assert holds(cloud, backup["id"], vip)
        assert cloud.answers(vip, 3) == [answers[0]] * 3

        # The lost engine is rebuilt in its role; the survivor keeps the VIP (nopreempt) and its id.
        assert cloud.api.put(f"/v2/octavia/amphorae/{master['id']}/failover").status_code == 202
        cloud.wait_active(lb["id"], timeout=40)
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    rebuilt = live_pair(cloud, lb["id"])
    assert rebuilt["BACKUP"]["id"] == backup["id"]
    assert rebuilt["MASTER"]["id"] not in ids and rebuilt["MASTER"]["vrrp_ip"]
    deadline = time.monotonic() + 15
    while master["id"] in {a["id"] for a in amphorae(cloud, lb["id"])}:  # listed until DELETED
        assert time.monotonic() < deadline, "the hung engine was not removed"
        time.sleep(0.1)
    assert not engine_dir(cloud, master["id"]).exists()
    new_master = rebuilt["MASTER"]["id"]
    wait_vrrp_state(cloud, new_master, "BACKUP", peer=backup["id"])
    assert vrrp_state(cloud, backup["id"]) == "MASTER" and not holds(cloud, new_master, vip)
    assert cloud.answers(vip, 3) == [answers[0]] * 3

    # A crash of the engine holding the VIP: the other one serves again within the limit, and the controller,
    # whose heartbeats say that HAProxy is gone, replaces the crashed engine by itself.
    assert kill_engine(engine_dir(cloud, backup["id"]))
    window, _answer = first_success_after_failure(cloud, vip, TAKEOVER_LIMIT)
    assert window <= TAKEOVER_LIMIT, f"service came back after {window:.2f} s"
    deadline = time.monotonic() + 30
    while backup["id"] in {a["id"] for a in amphorae(cloud, lb["id"])}:  # listed until DELETED
        assert time.monotonic() < deadline, "the crashed engine was not replaced"
        time.sleep(0.2)
    cloud.wait_active(lb["id"], timeout=30)
    final = live_pair(cloud, lb["id"])
    assert set(final) == {"MASTER", "BACKUP"} and backup["id"] not in {a["id"] for a in final.values()}
    assert wait_holder(cloud, [a["id"] for a in final.values()], vip)
    assert cloud.answers(vip, 3) == [answers[0]] * 3


@needs_netns
def test_load_balancer_failover_replaces_the_pair_then_delete_leaves_nothing_behind(cloud: Cloud, ha_flavor: str):
    lb = cloud.create_lb(**sticky_graph(cloud, "ha-del", ha_flavor))
    old = [a["id"] for a in amphorae(cloud, lb["id"])]
    assert cloud.api.put(f"/v2/lbaas/loadbalancers/{lb['id']}/failover").status_code == 202
    cloud.wait_active(lb["id"], timeout=30)
    pair = live_pair(cloud, lb["id"])
    assert set(pair) == {"MASTER", "BACKUP"} and not {a["id"] for a in pair.values()} & set(old)
    wait_holder(cloud, [a["id"] for a in pair.values()], lb["vip_address"])
    assert len(set(cloud.answers(lb["vip_address"], 3))) == 1
    live = [a["id"] for a in pair.values()]
    deadline = time.monotonic() + 10
    while any(engine_dir(cloud, e).exists() for e in old):
        assert time.monotonic() < deadline, "the replaced pair was not removed"
        time.sleep(0.1)
    assert all(keepalived_pids(engine_dir(cloud, e)) and haproxy_pids(engine_dir(cloud, e)) for e in live)
    ports = {p["device_id"] for p in cloud.net.get("/v2.0/ports").json()["ports"]}
    assert ports >= set(live) and not ports & set(old), "each live engine has a port for its own address"

    engines = old + live
    dirs = [engine_dir(cloud, e) for e in engines]
    cloud.delete_lb(lb["id"])
    deadline = time.monotonic() + 10
    while any(keepalived_pids(d) or haproxy_pids(d) for d in dirs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(keepalived_pids(d) or haproxy_pids(d) for d in dirs)
    assert not any(d.exists() for d in dirs)
    assert cloud.server.state_dir is not None
    left = network_objects(cloud.server.state_dir)
    assert not [n for n in left if any(e in n for e in engines)], left
    ports = cloud.net.get("/v2.0/ports").json()["ports"]
    assert not {p["device_id"] for p in ports} & set(engines), "the engines' ports are released"


def test_loopback_driver_refuses_active_standby():
    with running_cloud(network_driver="loopback", extra_args=[]) as cloud, active_standby_flavor(cloud) as flavor:
        body = {"loadbalancer": {"vip_subnet_id": cloud.subnet["id"], "flavor_id": flavor}}
        r = cloud.api.post("/v2/lbaas/loadbalancers", json=body)
        assert r.status_code == 400, r.text
        assert "netns" in r.json()["faultstring"]
        assert cloud.api.get("/v2/lbaas/loadbalancers").json()["loadbalancers"] == []


def test_unknown_topology_is_refused(cloud: Cloud):
    body = {"name": "x", "provider_name": "amphora", "flavor_data": '{"loadbalancer_topology": "ACTIVE_ACTIVE"}'}
    r = cloud.api.post("/v2/lbaas/flavorprofiles", json={"flavorprofile": body})
    assert r.status_code == 400, r.text
    assert "ACTIVE_STANDBY" in r.json()["faultstring"]


@needs_netns
def test_stopping_serve_with_a_pair_leaves_nothing_behind():
    root = Path(tempfile.mkdtemp(prefix="qg-"))
    state = root / "state"
    try:
        with running_cloud(state_dir=state) as cloud, active_standby_flavor(cloud) as flavor_id:
            lb = cloud.create_lb(**sticky_graph(cloud, "ha-stop", flavor_id))
            engines = [a["id"] for a in amphorae(cloud, lb["id"])]
            assert len(engines) == 2 and keepalived_pids(state) and haproxy_pids(state)
            assert len(set(cloud.answers(lb["vip_address"], 2))) == 1
        assert cloud.server.returncode == 0
        assert keepalived_pids(state) == [] and haproxy_pids(state) == []
        assert network_objects(state) == []
    finally:
        for pid in keepalived_pids(state) + haproxy_pids(state):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
