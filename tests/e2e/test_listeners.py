"""Listeners, proven with real traffic through a VIP: every listener protocol the engine carries (HTTP,
TCP, HTTPS passthrough, PROMETHEUS), insert_headers, allowed_cidrs, connection_limit and the four timeouts.

One load balancer with a listener per case serves the whole module (a create is one reload; ten load
balancers would be ten engines)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from quadriga.backends import Backend
from tests.support import traffic
from tests.support.dataplane import Cloud
from tests.support.graph import find, listener, pool, wait_statuses
from tests.support.servers import TlsBackend, Unaccepting

ALL_HEADERS = ["X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Proto", "X-Forwarded-IP", "X-Client-IP", "X-Real-IP"]


@dataclass
class Site:
    lb: dict
    vip: str
    web: list[Backend]
    tls: list[TlsBackend]
    unaccepting: Unaccepting


@pytest.fixture(scope="module")
def site(cloud: Cloud) -> Iterator[Site]:
    with contextlib.ExitStack() as stack:
        web = [cloud.backend(f"li-web-{n}") for n in range(2)]
        tls = [TlsBackend(f"li-tls-{n}", cloud.gateway).start() for n in range(2)]
        for server in tls:
            stack.callback(server.stop)
        unaccepting = Unaccepting(cloud.gateway)
        stack.callback(unaccepting.stop)

        def http(name: str, port: int, **fields: object) -> dict:
            return listener(name, "HTTP", port, pool(f"{name}-pool", "HTTP", map(cloud.member, web)), **fields)

        listeners = [
            http("li-http", 80, insert_headers=dict.fromkeys(ALL_HEADERS, "true")),
            listener("li-tcp", "TCP", 81, pool("li-tcp-pool", "TCP", map(cloud.member, web))),
            listener("li-https", "HTTPS", 443, pool("li-https-pool", "HTTPS", map(cloud.member, tls))),
            listener("li-metrics", "PROMETHEUS", 9100),
            http("li-cidrs", 82, allowed_cidrs=["192.0.2.0/24"]),
            http("li-limit", 83, connection_limit=1),
            http("li-member-data", 84, timeout_member_data=500),
            listener(
                "li-member-connect",
                "HTTP",
                85,
                pool(
                    "li-member-connect-pool",
                    "HTTP",
                    [{"address": unaccepting.address, "protocol_port": unaccepting.port}],
                ),
                timeout_member_connect=300,
                timeout_member_data=1000,
            ),
            http("li-client-data", 86, timeout_client_data=500),
            listener(
                "li-inspect",
                "TCP",
                87,
                pool("li-inspect-pool", "TCP", map(cloud.member, web)),
                timeout_tcp_inspect=3000,
            ),
        ]
        lb = cloud.create_lb(name="listeners", listeners=listeners)
        stack.callback(cloud.delete_lb, lb["id"])
        yield Site(lb, lb["vip_address"], web, tls, unaccepting)


def test_http_listener_inserts_the_headers_it_was_asked_for(cloud: Cloud, site: Site) -> None:
    gateway = cloud.gateway  # the host's address on the private network: the client's source address
    seen = cloud.get(site.vip, 80, "/echo", headers={"X-Real-IP": "203.0.113.9"})
    headers = {k.lower(): v for k, v in seen.json().items()}  # HAProxy sends header names in lower case
    assert headers["x-forwarded-for"] == gateway
    assert headers["x-forwarded-port"] == "80"
    assert headers["x-forwarded-proto"] == "http"
    for name in ("x-real-ip", "x-forwarded-ip", "x-client-ip"):
        assert headers[name] == gateway, name  # set by HAProxy, never the client's claim

    plain = {k.lower() for k in cloud.get(site.vip, 84, "/echo").json()}  # a listener without insert_headers
    assert not {h.lower() for h in ALL_HEADERS} & plain


def test_tcp_listener_carries_raw_tcp_to_http_members(cloud: Cloud, site: Site) -> None:
    answers = cloud.answers(site.vip, 4, port=81)
    assert sorted(answers) == ["li-web-0", "li-web-0", "li-web-1", "li-web-1"]
    # Bytes that are no HTTP reach the member as they are: its own HTTP server answers them (with its own
    # error page), where an HTTP listener's HAProxy refuses them itself.
    raw = traffic.exchange(site.vip, 81, b"HELLO\r\n\r\n")
    assert b"Error code: 400" in raw, raw[:300]
    refused = traffic.exchange(site.vip, 80, b"HELLO\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 400") and b"Error code" not in refused, refused[:300]


def test_https_listener_passes_tls_through_to_the_member(site: Site) -> None:
    certificates = {b.name: b.certificate.der for b in site.tls}
    reached = set()
    for _ in range(4):
        der, answer = traffic.tls_get(site.vip, 443, server_name="passthrough.test")
        assert answer.status == 200
        assert der == certificates[answer.text], "the client must see the certificate of the member that answered"
        reached.add(answer.text)
    assert reached == set(certificates)
    # The member, not HAProxy, did the handshake: it saw the client's SNI name.
    assert "passthrough.test" in {name for b in site.tls for name in b.server_names}


def test_prometheus_listener_serves_haproxy_metrics(cloud: Cloud, site: Site) -> None:
    metrics = cloud.get(site.vip, 9100, "/metrics")
    assert metrics.status_code == 200
    assert "haproxy_process_" in metrics.text
    assert "haproxy_frontend_" in metrics.text
    assert cloud.get(site.vip, 9100, "/").status_code == 404


def test_allowed_cidrs_refuse_other_sources_and_follow_changes(cloud: Cloud, site: Site) -> None:
    with pytest.raises(httpx.TransportError):
        cloud.get(site.vip, 82)
    assert cloud.get(site.vip, 80).status_code == 200  # the other listeners are open to everyone
    li = find(cloud, "listeners", "li-cidrs")
    cloud.change(
        "PUT",
        f"/v2/lbaas/listeners/{li['id']}",
        site.lb["id"],
        {"listener": {"allowed_cidrs": [f"{cloud.gateway}/32"]}},
    )
    assert cloud.get(site.vip, 82).status_code == 200


def test_connection_limit_makes_a_second_connection_wait(cloud: Cloud, site: Site) -> None:
    """With connection_limit 1, HAProxy accepts no second connection while one is open: the second client
    waits in the kernel's backlog (it is not refused) and is served as soon as the first leaves, and the
    listener reports FULL, i.e. DEGRADED, meanwhile."""
    result: dict[str, object] = {}

    def second() -> None:
        try:
            result["answer"] = traffic.get(site.vip, 83, timeout=10)
        except OSError as exc:
            result["error"] = exc

    with traffic.connection(site.vip, 83) as held:
        held.sendall(b"GET / HTTP/1.1\r\n")  # an unfinished request keeps the connection busy
        wait_statuses(cloud, site.lb["id"], {"li-limit": "DEGRADED"}, timeout=5)
        thread = threading.Thread(target=second, daemon=True)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), f"the second connection was handled while the first was open: {result}"
    thread.join(10)
    assert not thread.is_alive()
    assert "error" not in result, result
    assert result["answer"].status == 200  # type: ignore[union-attr]
    wait_statuses(cloud, site.lb["id"], {"li-limit": "ONLINE"}, timeout=5)


def test_timeout_member_data_turns_a_slow_member_into_504(cloud: Cloud, site: Site) -> None:
    started = time.monotonic()
    assert cloud.get(site.vip, 84, "/sleep/3000").status_code == 504
    assert time.monotonic() - started < 2.5
    assert cloud.get(site.vip, 84, "/sleep/100").status_code == 200
    assert cloud.get(site.vip, 80, "/sleep/1000").status_code == 200  # the default (50 s) waits


def test_timeout_member_connect_gives_up_on_a_member_that_never_accepts(cloud: Cloud, site: Site) -> None:
    # The member's accept queue has one slot: the first connection fills it (and times out on data), after
    # that the kernel drops every SYN, so HAProxy's connects hang until timeout_member_connect (300 ms, tried
    # 4 times: retries 3) and it answers 503. The default (5 s) would take 20 s.
    first = cloud.get(site.vip, 85)
    assert first.status_code in (503, 504)
    started = time.monotonic()
    assert cloud.get(site.vip, 85).status_code == 503
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 4, elapsed


def test_timeout_client_data_closes_a_silent_client(site: Site) -> None:
    started = time.monotonic()
    with traffic.connection(site.vip, 86) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")  # and then nothing
        raw = traffic.read_all(sock)
    assert time.monotonic() - started < 3  # the default would be 50 s
    assert raw.startswith(b"HTTP/1.1 408"), raw[:100]
    with traffic.connection(site.vip, 80, timeout=1.5) as sock:  # the default keeps waiting
        sock.sendall(b"GET / HTTP/1.1\r\n")
        with pytest.raises(socket.timeout):
            sock.recv(100)


def test_timeout_tcp_inspect_does_not_hold_plain_tcp(cloud: Cloud, site: Site) -> None:
    """timeout_tcp_inspect only bounds how long content rules may wait for data; a TCP listener without
    such rules forwards at once, so a request answers long before the 3 s inspect delay."""
    started = time.monotonic()
    assert cloud.answers(site.vip, 1, port=87)[0].startswith("li-web-")
    assert time.monotonic() - started < 1.5
