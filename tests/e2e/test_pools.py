"""Pools, proven with real traffic through a VIP: the pool protocols (HTTP, TCP, HTTPS, PROXY, PROXYV2),
the four load-balancing algorithms and the three kinds of session persistence.

One load balancer with a listener per case serves the whole module."""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from quadriga.backends import Backend
from tests.support import traffic
from tests.support.dataplane import Cloud
from tests.support.graph import eventually, find, find_member, listener, pool
from tests.support.servers import ProxyProtocolBackend, TlsBackend

PORTS = {
    "proxy": 80,
    "proxyv2": 81,
    "https": 82,
    "tcp": 83,
    "round-robin": 84,
    "least-conn": 85,
    "source-ip": 86,
    "source-ip-port": 87,
    "persist-source-ip": 88,
    "persist-http-cookie": 89,
    "persist-app-cookie": 90,
}


@dataclass
class Site:
    lb: dict
    vip: str
    web: list[Backend]
    tls: TlsBackend


@pytest.fixture(scope="module")
def site(cloud: Cloud) -> Iterator[Site]:
    with contextlib.ExitStack() as stack:
        web = [cloud.backend(f"po-web-{n}") for n in range(3)]
        tls = TlsBackend("po-tls", cloud.gateway).start()
        stack.callback(tls.stop)
        proxies = {}
        for name in ("po-proxy", "po-proxyv2"):
            proxies[name] = ProxyProtocolBackend(name, cloud.gateway).start()
            stack.callback(proxies[name].stop)

        def members(backends: list) -> list[dict]:
            return [cloud.member(b) for b in backends]

        def http(case: str, algorithm: str, backends: list[Backend] = web, **fields: object) -> dict:
            default_pool = pool(f"po-{case}", "HTTP", members(backends), algorithm, **fields)
            return listener(f"po-{case}", "HTTP", PORTS[case], default_pool)

        listeners = [
            listener("po-proxy", "HTTP", 80, pool("po-proxy", "PROXY", members([proxies["po-proxy"]]))),
            listener("po-proxyv2", "TCP", 81, pool("po-proxyv2", "PROXYV2", members([proxies["po-proxyv2"]]))),
            listener("po-https", "TCP", 82, pool("po-https", "HTTPS", members([tls]))),
            listener("po-tcp", "TCP", 83, pool("po-tcp", "TCP", members(web))),
            http("round-robin", "ROUND_ROBIN"),
            http("least-conn", "LEAST_CONNECTIONS", web[:2]),
            http("source-ip", "SOURCE_IP"),
            http("source-ip-port", "SOURCE_IP_PORT"),
            http("persist-source-ip", "ROUND_ROBIN", session_persistence={"type": "SOURCE_IP"}),
            http("persist-http-cookie", "ROUND_ROBIN", web[:2], session_persistence={"type": "HTTP_COOKIE"}),
            http(
                "persist-app-cookie",
                "ROUND_ROBIN",
                web[:2],
                session_persistence={"type": "APP_COOKIE", "cookie_name": "JSESSIONID"},
            ),
        ]
        lb = cloud.create_lb(name="pools", listeners=listeners)
        stack.callback(cloud.delete_lb, lb["id"])
        yield Site(lb, lb["vip_address"], web, tls)


# --- protocols -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "version"), [("proxy", 1), ("proxyv2", 2)])
def test_proxy_pools_tell_the_member_who_the_client_is(cloud: Cloud, site: Site, case: str, version: int) -> None:
    port = PORTS[case]
    with traffic.connection(site.vip, port, source=(cloud.gateway, 0)) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(traffic.request_bytes("/"))
        answer = traffic.parse(traffic.read_all(sock))
    assert answer.status == 200, answer
    got = json.loads(answer.body)
    assert got == {
        "backend": f"po-{case}",
        "version": version,
        "source": cloud.gateway,
        "source_port": client_port,
        "destination": site.vip,
        "destination_port": port,
    }


def test_https_pool_carries_tls_to_the_member(site: Site) -> None:
    der, answer = traffic.tls_get(site.vip, PORTS["https"])
    assert der == site.tls.certificate.der
    assert (answer.status, answer.text) == (200, "po-tls")


def test_tcp_pool_carries_http_members(cloud: Cloud, site: Site) -> None:
    assert sorted(cloud.answers(site.vip, 3, port=PORTS["tcp"])) == ["po-web-0", "po-web-1", "po-web-2"]


# --- algorithms ------------------------------------------------------------------------------------


def test_round_robin_spreads_evenly(cloud: Cloud, site: Site) -> None:
    counts = Counter(cloud.answers(site.vip, 9, port=PORTS["round-robin"]))
    assert counts == {"po-web-0": 3, "po-web-1": 3, "po-web-2": 3}


def test_least_connections_avoids_the_busy_member(cloud: Cloud, site: Site) -> None:
    port = PORTS["least-conn"]
    candidates = site.web[:2]
    slow: dict[str, str] = {}
    thread = threading.Thread(
        target=lambda: slow.update(name=cloud.get(site.vip, port, "/sleep/3000", timeout=10).text.strip()),
        daemon=True,
    )
    thread.start()
    try:
        busy = eventually(
            lambda: next((b for b in candidates if b.in_flight), None), 3, "the slow request reaches a member"
        )
        idle = next(b for b in candidates if b is not busy)
        assert cloud.answers(site.vip, 4, port=port) == [idle.name] * 4
    finally:
        thread.join(10)
    assert slow == {"name": busy.name}


def test_source_ip_sends_one_client_to_one_member(cloud: Cloud, site: Site) -> None:
    answers = cloud.answers(site.vip, 8, port=PORTS["source-ip"])
    assert len(set(answers)) == 1, answers


def test_source_ip_port_hashes_the_client_port_too(cloud: Cloud, site: Site) -> None:
    port = PORTS["source-ip-port"]
    base = random.randrange(20000, 30000, 100)

    def answer(source_port: int) -> str:
        return traffic.get(site.vip, port, source=(cloud.gateway, source_port)).text

    by_port = {}
    for source_port in range(base, base + 16):
        first = answer(source_port)
        assert [answer(source_port) for _ in range(2)] == [first, first], f"source port {source_port} moved"
        by_port[source_port] = first
    assert len(set(by_port.values())) > 1, f"every source port went to the same member: {by_port}"


# --- session persistence ---------------------------------------------------------------------------


def test_source_ip_persistence_sticks_to_the_first_member(cloud: Cloud, site: Site) -> None:
    answers = cloud.answers(site.vip, 8, port=PORTS["persist-source-ip"])
    assert len(set(answers)) == 1, answers


def test_http_cookie_persistence_inserts_a_cookie_and_follows_it(cloud: Cloud, site: Site) -> None:
    port = PORTS["persist-http-cookie"]
    first = cloud.get(site.vip, port)
    cookie = first.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    value = rest.split(";")[0]
    assert name == "SRV"
    pool_id = find(cloud, "pools", "po-persist-http-cookie")["id"]
    assert value == find_member(cloud, pool_id, first.text.strip())["id"]  # the member's id names it
    sticky = [cloud.get(site.vip, port, headers={"Cookie": f"SRV={value}"}).text.strip() for _ in range(6)]
    assert sticky == [first.text.strip()] * 6
    assert len(set(cloud.answers(site.vip, 4, port=port))) == 2  # without the cookie: round robin


def test_app_cookie_persistence_follows_the_applications_session_cookie(cloud: Cloud, site: Site) -> None:
    port = PORTS["persist-app-cookie"]
    sessions: dict[str, str] = {}  # session cookie value -> member that created it
    for n in range(6):
        if len(set(sessions.values())) == 2:
            break
        value = f"session{n}"
        sessions[value] = cloud.get(site.vip, port, f"/set-cookie/JSESSIONID/{value}").text.strip()
    assert len(set(sessions.values())) == 2, f"round robin should create sessions on both members: {sessions}"
    for value, member in sessions.items():
        answers = [cloud.get(site.vip, port, headers={"Cookie": f"JSESSIONID={value}"}).text.strip() for _ in range(4)]
        assert answers == [member] * 4, f"session {value} was created on {member}"
    assert len(set(cloud.answers(site.vip, 4, port=port))) == 2  # without the cookie: round robin
