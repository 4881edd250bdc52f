"""Operating statuses and statistics as the data plane reports them: member ONLINE, ERROR, DRAINING,
OFFLINE and NO_MONITOR side by side, a pool and its load balancer going DEGRADED, then ERROR when every
enabled member is down, and back; listener, load balancer and engine (amphora) statistics that grow with
real traffic through the VIP, request_errors that count malformed requests; the engine in the amphora API."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from quadriga.backends import Backend
from tests.support import traffic
from tests.support.dataplane import Cloud
from tests.support.graph import eventually, find, listener, monitor, pool, wait_statuses
from tests.support.servers import ClosedPort

COUNTERS = ("bytes_in", "bytes_out", "total_connections", "request_errors")


@dataclass
class Site:
    lb: dict
    vip: str
    backends: dict[str, Backend]
    listener_id: str  # of the listener the statistics tests send traffic to


@pytest.fixture(scope="module")
def site(cloud: Cloud) -> Iterator[Site]:
    with contextlib.ExitStack() as stack:
        backends = {name: cloud.backend(f"st-{name}") for name in ("traffic", "online", "draining", "offline", "plain")}
        closed = ClosedPort(cloud.gateway)
        stack.callback(closed.stop)

        def member(name: str, **fields: Any) -> dict[str, Any]:
            return cloud.member(backends[name], **fields)

        mixed = [
            member("online"),
            {"name": "st-error", "address": cloud.gateway, "protocol_port": closed.port},
            member("draining", weight=0),
            member("offline", admin_state_up=False),
        ]
        listeners = [
            listener("st-listener-traffic", "HTTP", 80, pool("st-pool-traffic", "HTTP", [member("traffic")])),
            listener("st-listener-mixed", "HTTP", 81, pool("st-pool-mixed", "HTTP", mixed, healthmonitor=monitor())),
            listener("st-listener-plain", "HTTP", 82, pool("st-pool-plain", "HTTP", [member("plain")])),
        ]
        lb = cloud.create_lb(name="stats", listeners=listeners)
        stack.callback(cloud.delete_lb, lb["id"])
        yield Site(lb, lb["vip_address"], backends, find(cloud, "listeners", "st-listener-traffic")["id"])


def amphora(cloud: Cloud, lb_id: str) -> dict[str, Any]:
    found = cloud.ok(cloud.api.get("/v2/octavia/amphorae", params={"loadbalancer_id": lb_id}), 200)["amphorae"]
    assert len(found) == 1, found
    return found[0]


def stats(cloud: Cloud, site: Site) -> dict[str, dict[str, int]]:
    """The same counters seen three ways: the load balancer's, the listener's and the engine's (that listener)."""
    lb = cloud.ok(cloud.api.get(f"/v2/lbaas/loadbalancers/{site.lb['id']}/stats"), 200)["stats"]
    li = cloud.ok(cloud.api.get(f"/v2/lbaas/listeners/{site.listener_id}/stats"), 200)["stats"]
    amp_id = amphora(cloud, site.lb["id"])["id"]
    entries = cloud.ok(cloud.api.get(f"/v2/octavia/amphorae/{amp_id}/stats"), 200)["amphora_stats"]
    # The engine has no entry for a listener before the first collection after it started.
    amp = next((e for e in entries if e["listener_id"] == site.listener_id), dict.fromkeys(COUNTERS, 0))
    assert amp.get("loadbalancer_id", site.lb["id"]) == site.lb["id"]
    return {"loadbalancer": lb, "listener": li, "amphora": amp}


def grown(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], **least: int) -> bool:
    return all(after[view][name] >= before[view][name] + delta for view in before for name, delta in least.items())


def test_statistics_grow_with_traffic(cloud: Cloud, site: Site) -> None:
    before = stats(cloud, site)
    answers = cloud.answers(site.vip, 5)
    assert answers == ["st-traffic"] * 5
    # Each request is > 50 bytes in (request line and headers) and each answer > 100 bytes out.
    after = eventually(
        lambda: (
            (now := stats(cloud, site))
            and grown(before, now, total_connections=5, bytes_in=5 * 50, bytes_out=5 * 100)
            and now
        ),
        10,
        "statistics grow by the 5 requests",
    )
    for view in after.values():
        assert view["active_connections"] >= 0


def test_request_errors_count_malformed_requests(cloud: Cloud, site: Site) -> None:
    before = stats(cloud, site)
    answer = traffic.exchange(site.vip, 80, b"NOT HTTP AT ALL\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    eventually(
        lambda: grown(before, stats(cloud, site), request_errors=1, total_connections=1),
        10,
        "request_errors counts the malformed request",
    )


def test_the_engine_is_listed_as_an_allocated_standalone_amphora(cloud: Cloud, site: Site) -> None:
    amp = amphora(cloud, site.lb["id"])
    assert (amp["status"], amp["role"], amp["loadbalancer_id"]) == ("ALLOCATED", "STANDALONE", site.lb["id"])
    expires = datetime.datetime.fromisoformat(amp["cert_expiration"])
    assert expires > datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(days=1)
    assert cloud.ok(cloud.api.get(f"/v2/octavia/amphorae/{amp['id']}"), 200)["amphora"] == amp


def test_the_amphora_shows_the_engines_network_address(cloud: Cloud, site: Site) -> None:
    amp = amphora(cloud, site.lb["id"])
    assert amp["lb_network_ip"] is not None, "the engine's address on its network should be shown"
    assert ipaddress.ip_address(amp["lb_network_ip"]) == ipaddress.ip_address(site.vip)


def test_operating_statuses_follow_the_data_plane(cloud: Cloud, site: Site) -> None:
    lb_id = site.lb["id"]
    wait_statuses(
        cloud,
        lb_id,
        {
            "st-online": "ONLINE",
            "st-error": "ERROR",
            "st-draining": "DRAINING",
            "st-offline": "OFFLINE",
            "st-plain": "NO_MONITOR",
            "st-traffic": "NO_MONITOR",
            "st-pool-mixed": "DEGRADED",
            "st-pool-plain": "ONLINE",
            "st-listener-mixed": "ONLINE",
            "loadbalancer": "DEGRADED",
        },
    )
    assert cloud.answers(site.vip, 4, port=81) == ["st-online"] * 4  # not the draining, offline or failed ones

    # Every enabled member down: the pool is ERROR, and so is the load balancer (as in Octavia).
    ports = {name: site.backends[name].port for name in ("online", "draining")}
    for name in ports:
        site.backends[name].stop()
    try:
        wait_statuses(
            cloud,
            lb_id,
            {"st-online": "ERROR", "st-draining": "ERROR", "st-pool-mixed": "ERROR", "loadbalancer": "ERROR"},
            timeout=6,
        )
        assert cloud.get(site.vip, 81).status_code == 503
        assert cloud.answers(site.vip, 1) == ["st-traffic"]  # other listeners keep serving
    finally:
        for name, port in ports.items():
            site.backends[name] = cloud.backend(f"st-{name}", port=port)
    wait_statuses(cloud, lb_id, {"st-online": "ONLINE", "st-draining": "DRAINING", "loadbalancer": "DEGRADED"})
