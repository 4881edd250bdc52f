"""Automatic failover with a real `quadriga serve`: an engine whose HAProxy dies and whose namespace goes
is replaced within seconds (traffic through the VIP comes back, statuses return to ONLINE, statistics keep
growing); when every engine falls silent at once the circuit breaker holds failover and says why."""

from __future__ import annotations

import os
import signal
import time

import httpx

from tests.support.dataplane import Cloud, engines, graph, kill_engine

RECOVERY = 12.0  # timeout 3 s + placement; the benchmark measures it (target 5 s)


def first_success(cloud: Cloud, vip: str, name: str, limit: float) -> float:
    """Seconds until a request through `vip` gets `name`'s answer (requests 0.1 s apart, bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            if cloud.get(vip, timeout=0.5).text.strip() == name:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no answer through {vip} within {limit} s")


def stats(cloud: Cloud, lb_id: str) -> dict[str, int]:
    return cloud.ok(cloud.api.get(f"/v2/lbaas/loadbalancers/{lb_id}/stats"), 200)["stats"]


def wait_for(what: str, condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def test_a_dead_engine_is_replaced_and_traffic_comes_back(cloud: Cloud, lbs: list[str]):
    lb = cloud.create_lb(**graph(cloud, "auto-fo"))
    lbs.append(lb["id"])
    vip = lb["vip_address"]
    (old,) = engines(cloud, lb["id"])
    assert cloud.answers(vip, 3) == ["auto-fo"] * 3
    wait_for("statistics counted", lambda: stats(cloud, lb["id"])["total_connections"] >= 3)
    healthy = wait_for("ONLINE", lambda: (t := cloud.statuses(lb["id"]))["operating_status"] == "ONLINE" and t)
    assert healthy["listeners"][0]["operating_status"] == "ONLINE"

    assert kill_engine(cloud.server.state_dir, old), "no HAProxy process found for the engine"
    try:  # it is really down
        cloud.get(vip, timeout=0.5)
        raise AssertionError("the killed engine still answers")
    except httpx.HTTPError:
        pass
    took = first_success(cloud, vip, "auto-fo", RECOVERY)

    now = wait_for("old engine removed", lambda: old not in (e := engines(cloud, lb["id"])) and e)
    live = [amp for amp, status in now.items() if status == "ALLOCATED"]
    assert len(live) == 1 and live[0] != old, now
    assert cloud.wait_active(lb["id"])["provisioning_status"] == "ACTIVE"
    wait_for("statuses as before the engine died", lambda: cloud.statuses(lb["id"]) == healthy)
    before = stats(cloud, lb["id"])["total_connections"]
    assert cloud.answers(vip, 5) == ["auto-fo"] * 5
    wait_for("statistics grow", lambda: stats(cloud, lb["id"])["total_connections"] >= before + 5)
    log = cloud.server.log_path.read_text()
    assert f"engine={old} lb={lb['id']} FAILOVER" in log
    print(f"traffic back {took:.1f} s after the engine died")


def held(cloud: Cloud, lb_ids: object) -> list[dict]:
    """The live engines of `lb_ids` whose status_reason shows the circuit breaker."""
    amps = cloud.ok(cloud.api.get("/v2/octavia/amphorae"), 200)["amphorae"]
    return [
        a
        for a in amps
        if a["loadbalancer_id"] in lb_ids
        and a["status"] != "DELETED"
        and "circuit breaker" in (a["status_reason"] or "")
    ]


def test_when_every_engine_falls_silent_the_breaker_holds_failover(cloud: Cloud, lbs: list[str]):
    fleet = [cloud.create_lb(**graph(cloud, f"brk-{i}")) for i in range(3)]
    lbs.extend(lb["id"] for lb in fleet)
    before = {lb["id"]: engines(cloud, lb["id"]) for lb in fleet}
    assert cloud.server.pid is not None
    os.kill(cloud.server.pid, signal.SIGUSR1)  # the drill: the agent's heartbeats stop, the engines serve on
    try:
        amps = wait_for("breaker shown on every engine", lambda: len(held(cloud, before)) == 3 and held(cloud, before))
        assert "3 of 3 engines silent" in amps[0]["status_reason"]
        time.sleep(2)  # well past the timeout: still nothing failed over
        assert {lb["id"]: engines(cloud, lb["id"]) for lb in fleet} == before
        for lb in fleet:  # the engines themselves are fine
            assert cloud.answers(lb["vip_address"], 1) == [lb["name"]]
    finally:
        os.kill(cloud.server.pid, signal.SIGUSR1)
    wait_for("breaker closed", lambda: "circuit breaker closed" in cloud.server.log_path.read_text())
    wait_for("reasons cleared", lambda: not held(cloud, before))
    assert {lb["id"]: engines(cloud, lb["id"]) for lb in fleet} == before
    assert cloud.server.log_path.read_text().count("CIRCUIT BREAKER OPEN") == 1
