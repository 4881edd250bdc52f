"""UDP through the API on the amphora provider: a UDP listener, pool, members and UDP-CONNECT monitor go ACTIVE,
datagrams through the VIP reach the members (UDP echo servers on the private network), operating statuses follow
the members as Octavia's do; UDP input Octavia refuses (and SCTP, which this kernel cannot carry) is a 4xx with
Octavia's fault body that stores nothing."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from tests.support.dataplane import Cloud, network_driver, udp_proxy_pids
from tests.support.graph import eventually, find, listener, monitor, pool
from tests.support.ha import engine_dir, holds, kill_engine, live_pair, wait_holder
from tests.support.udp import UdpClient, UdpEcho, spread, udp_answers

PORT = 53


@pytest.fixture
def echoes(cloud: Cloud) -> Iterator[list[UdpEcho]]:
    started = [UdpEcho(name, cloud.gateway) for name in ("udp-a", "udp-b")]
    yield started
    for echo in started:
        echo.stop()


def udp_member(echo: UdpEcho) -> dict[str, Any]:
    return {"name": echo.name, "address": echo.address, "protocol_port": echo.port}


def test_a_udp_load_balancer_carries_datagrams_and_reports_member_health(
    cloud: Cloud, lbs: list[str], echoes: list[UdpEcho]
) -> None:
    a, b = echoes
    udp_pool = pool("udp-pool", "UDP", [udp_member(a), udp_member(b)], healthmonitor=monitor("UDP-CONNECT"))
    lb = cloud.create_lb(name="udp", listeners=[listener("udp-listener", "UDP", PORT, udp_pool)])
    lbs.append(lb["id"])
    vip = lb["vip_address"]

    assert spread(udp_answers(vip, PORT, 6)) == {"udp-a": 3, "udp-b": 3}
    cloud.wait_member_status(lb["id"], {"udp-a": "ONLINE", "udp-b": "ONLINE"})
    tree = cloud.statuses(lb["id"])
    assert tree["operating_status"] == "ONLINE"
    (li,) = tree["listeners"]
    assert li["operating_status"] == "ONLINE" and li["pools"][0]["operating_status"] == "ONLINE"

    b.stop()  # ICMP port unreachable: UDP-CONNECT fails
    cloud.wait_member_status(lb["id"], {"udp-a": "ONLINE", "udp-b": "ERROR"})
    assert set(udp_answers(vip, PORT, 4)) == {"udp-a"}
    pool_id = find(cloud, "pools", "udp-pool")["id"]
    assert cloud.ok(cloud.api.get(f"/v2/lbaas/pools/{pool_id}"), 200)["pool"]["operating_status"] == "DEGRADED"
    b.start()
    cloud.wait_member_status(lb["id"], {"udp-a": "ONLINE", "udp-b": "ONLINE"})

    # A member added through the API takes flows; the flow of a client on another member is kept.
    with UdpClient(vip, PORT) as client:
        mine = client.ask()
        c = UdpEcho("udp-c", cloud.gateway)
        try:
            cloud.change("POST", f"/v2/lbaas/pools/{pool_id}/members", lb["id"], {"member": udp_member(c)}, 201)
            assert client.ask() == mine
            assert "udp-c" in udp_answers(vip, PORT, 6)
        finally:
            c.stop()

    def stats() -> dict[str, int] | None:  # they come with the heartbeats; a reload keeps the counters
        found = cloud.ok(cloud.api.get(f"/v2/lbaas/listeners/{li['id']}/stats"), 200)["stats"]
        return found if found["total_connections"] >= 17 else None

    found = eventually(stats, 15, "the listener's stats to count every flow")
    assert found["bytes_out"] > found["bytes_in"] > 0


@pytest.mark.skipif(network_driver() != "netns", reason="ACTIVE_STANDBY needs root (netns driver)")
def test_udp_on_an_active_standby_pair_follows_the_vip(cloud: Cloud, echoes: list[UdpEcho], ha_flavor: str) -> None:
    a, b = echoes
    udp_pool = pool("udp-ha-pool", "UDP", [udp_member(a), udp_member(b)])
    lb = cloud.create_lb(name="udp-ha", flavor_id=ha_flavor, listeners=[listener("udp-ha", "UDP", PORT, udp_pool)])
    frozen: list[int] = []
    try:
        vip = lb["vip_address"]
        pair = live_pair(cloud, lb["id"])
        master, backup = pair["MASTER"]["id"], pair["BACKUP"]["id"]
        assert wait_holder(cloud, [master, backup], vip) == master
        # Both engines run a UDP proxy: the BACKUP's is bound to the VIP before the VIP is there.
        assert all(len(udp_proxy_pids(engine_dir(cloud, e))) == 1 for e in (master, backup))
        assert set(udp_answers(vip, PORT, 4)) == {"udp-a", "udp-b"}

        # A hung MASTER: keepalived, HAProxy and the UDP proxy stop.
        frozen = kill_engine(engine_dir(cloud, master), signal.SIGSTOP)
        for pid in udp_proxy_pids(engine_dir(cloud, master)):
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
        assert udp_answers(vip, PORT, 1, timeout=0.3) == [None]
        eventually(lambda: udp_answers(vip, PORT, 1, timeout=0.3) != [None], 10, "UDP through the BACKUP")
        assert holds(cloud, backup, vip)
        assert set(udp_answers(vip, PORT, 4)) == {"udp-a", "udp-b"}
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cloud.delete_lb(lb["id"])


@pytest.fixture(scope="module")
def udp_site(cloud: Cloud) -> Iterator[dict[str, Any]]:
    """A load balancer with a TCP listener and pool, to aim bad UDP input at."""
    lb = cloud.create_lb(
        name="udp-bad", listeners=[listener("udp-bad-tcp", "TCP", 80, pool("udp-bad-pool", "TCP", []))]
    )
    try:
        yield lb
    finally:
        cloud.delete_lb(lb["id"])


def _snapshot(cloud: Cloud) -> dict[str, list[str]]:
    return {
        kind: sorted(row["id"] for row in cloud.ok(cloud.api.get(f"/v2/lbaas/{kind}"), 200)[kind])
        for kind in ("loadbalancers", "listeners", "pools", "healthmonitors")
    }


def _pool(lb_id: str, _pool_id: str, protocol: str = "UDP", **fields: Any) -> tuple[str, dict[str, Any]]:
    body = {"loadbalancer_id": lb_id, "protocol": protocol, "lb_algorithm": "ROUND_ROBIN", **fields}
    return "/v2/lbaas/pools", {"pool": body}


def _listener(lb_id: str, _pool_id: str, protocol: str = "UDP", **fields: Any) -> tuple[str, dict[str, Any]]:
    return "/v2/lbaas/listeners", {
        "listener": {"loadbalancer_id": lb_id, "protocol": protocol, "protocol_port": 53, **fields}
    }


def _udp_connect(_lb_id: str, pool_id: str) -> tuple[str, dict[str, Any]]:
    return "/v2/lbaas/healthmonitors", {"healthmonitor": {"pool_id": pool_id, **monitor("UDP-CONNECT")}}


# case -> (the POST (path, body) for the load balancer and pool ids, status, a phrase of the fault string)
BAD: dict[str, tuple[Callable[[str, str], tuple[str, dict[str, Any]]], int, str]] = {
    "udp-pool-http-cookie": (
        partial(_pool, session_persistence={"type": "HTTP_COOKIE"}),
        400,
        "HTTP_COOKIE is not supported for UDP",
    ),
    "udp-pool-tls": (partial(_pool, tls_enabled=True), 400, "TLS is not supported for UDP"),
    "udp-listener-tls": (partial(_listener, default_tls_container_ref="https://km.example/v1/secrets/x"), 400, ""),
    "udp-connect-on-tcp-pool": (_udp_connect, 400, "UDP-CONNECT is not supported for TCP"),
    "tcp-pool-persistence-timeout": (
        partial(_pool, protocol="TCP", session_persistence={"type": "SOURCE_IP", "persistence_timeout": 5}),
        400,
        "only for UDP and SCTP",
    ),
    "sctp-listener": (partial(_listener, protocol="SCTP"), 501, "no SCTP sockets"),
    "sctp-pool": (partial(_pool, protocol="SCTP"), 501, "no SCTP sockets"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_udp_and_sctp_input_is_refused_and_changes_nothing(
    cloud: Cloud, udp_site: dict[str, Any], case: str
) -> None:
    build, status, phrase = BAD[case]
    path, body = build(udp_site["id"], find(cloud, "pools", "udp-bad-pool")["id"])
    before = _snapshot(cloud)
    response = cloud.api.post(path, json=body)
    assert response.status_code == status, response.text
    fault = response.json()
    assert set(fault) == {"faultcode", "faultstring", "debuginfo"} and phrase in fault["faultstring"]
    assert fault["faultcode"] == ("Server" if status >= 500 else "Client")
    assert _snapshot(cloud) == before
    assert cloud.wait_active(udp_site["id"])["provisioning_status"] == "ACTIVE"
    eventually(lambda: cloud.statuses(udp_site["id"])["operating_status"] != "ERROR", 10, "the site stays up")
