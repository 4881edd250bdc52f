"""Health monitors, proven by member statuses that come from HAProxy's checks and by where real traffic
through the VIP goes: HTTP and HTTPS monitors (method, url_path, expected_codes as a code, a list and a
range, http_version, domain_name), TCP, PING, TLS-HELLO, monitor_address/monitor_port, backup members,
members of weight 0 and members going down and up again.

One load balancer with a listener (and pool) per monitor case serves the whole module; all its checks run
at once, so the module waits for the statuses to settle only once."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from quadriga.backends import Backend, Seen
from tests.support import traffic
from tests.support.dataplane import Cloud
from tests.support.graph import listener, monitor, pool, tree_statuses, wait_statuses
from tests.support.servers import ClosedPort, TlsBackend

SETTLE = 12.0  # checks every second, one failure down: statuses settle within a few seconds


@dataclass
class Site:
    lb: dict
    vip: str
    ports: dict[str, int]  # case -> listener port
    backends: dict[str, Backend]


# case -> (listener protocol, pool protocol, monitor, members (name suffix -> member fields), expected statuses)
Case = tuple[str, str, dict[str, Any], dict[str, dict[str, Any]], dict[str, str]]


@pytest.fixture(scope="module")
def site(cloud: Cloud) -> Iterator[Site]:
    with contextlib.ExitStack() as stack:
        names = ["web", "probe-post", "probe-head", "x", "traffic", "monitor-target", "primary", "backup", "w1", "w0"]
        backends: dict[str, Backend] = {name: cloud.backend(f"hm-{name}") for name in names}
        backends["tls"] = TlsBackend("hm-tls", cloud.gateway).start()
        stack.callback(backends["tls"].stop)
        closed = ClosedPort(cloud.gateway)
        stack.callback(closed.stop)

        def on(name: str, **fields: Any) -> dict[str, Any]:
            return {"address": cloud.gateway, "protocol_port": backends[name].port, **fields}

        def code_case(url: str, codes: str, status: str) -> Case:
            return "HTTP", "HTTP", monitor(url_path=url, expected_codes=codes), {"m": on("web")}, {"m": status}

        cases: dict[str, Case] = {
            "single-miss": code_case("/", "201", "ERROR"),
            "single-hit": code_case("/status/201", "201", "ONLINE"),
            "list-hit": code_case("/status/202", "200, 202", "ONLINE"),
            "list-miss": code_case("/status/204", "200,202", "ERROR"),
            "range-hit": code_case("/status/204", "200-204", "ONLINE"),
            "range-miss": code_case("/status/205", "200-204", "ERROR"),
            "post": (
                "HTTP",
                "HTTP",
                monitor(http_method="POST", url_path="/probe-post", http_version=1.1, domain_name="health.example"),
                {"m": on("probe-post")},
                {"m": "ONLINE"},
            ),
            "head10": (
                "HTTP",
                "HTTP",
                monitor(http_method="HEAD", url_path="/probe-head", http_version=1.0),
                {"m": on("probe-head")},
                {"m": "ONLINE"},
            ),
            "https": (
                "TCP",
                "HTTPS",
                monitor("HTTPS", url_path="/status/200", http_version=1.1, domain_name="tls.example"),
                {"m": on("tls")},
                {"m": "ONLINE"},
            ),
            "https-miss": ("TCP", "HTTPS", monitor("HTTPS", expected_codes="201"), {"m": on("tls")}, {"m": "ERROR"}),
            "tcp": (
                "TCP",
                "TCP",
                monitor("TCP"),
                {"up": on("web"), "down": {"address": cloud.gateway, "protocol_port": closed.port}},
                {"up": "ONLINE", "down": "ERROR"},
            ),
            "ping": (
                "HTTP",
                "HTTP",
                monitor("PING"),
                {"m": {"address": cloud.gateway, "protocol_port": closed.port}},
                {"m": "ONLINE"},
            ),
            "tls-hello": (
                "TCP",
                "TCP",
                monitor("TLS-HELLO"),
                {"tls": on("tls"), "plain": on("web")},
                {"tls": "ONLINE", "plain": "ERROR"},
            ),
            "monitor-port": (
                "HTTP",
                "HTTP",
                monitor(url_path="/monitor-probe"),
                {
                    "a": on("x", monitor_port=closed.port),
                    "b": on("traffic", monitor_address=cloud.gateway, monitor_port=backends["monitor-target"].port),
                },
                {"a": "ERROR", "b": "ONLINE"},
            ),
            "monitor-address": (
                "HTTP",
                "HTTP",
                monitor(url_path="/monitor-probe"),
                {
                    "m": {
                        "address": "127.0.0.1",  # the engine's own loopback: nothing listens there
                        "protocol_port": 9,
                        "monitor_address": cloud.gateway,
                        "monitor_port": backends["monitor-target"].port,
                    }
                },
                {"m": "ONLINE"},
            ),
            "backup": (
                "HTTP",
                "HTTP",
                monitor(),
                {"primary": on("primary"), "backup": on("backup", backup=True)},
                {"primary": "ONLINE", "backup": "ONLINE"},
            ),
            "weight": (
                "HTTP",
                "HTTP",
                monitor(),
                {"w1": on("w1"), "w0": on("w0", weight=0)},
                {"w1": "ONLINE", "w0": "DRAINING"},
            ),
        }
        ports = {case: 80 + n for n, case in enumerate(cases)}
        listeners = []
        expected = {}
        for case, (li_protocol, pool_protocol, hm, members, statuses) in cases.items():
            named = [{"name": f"hm-{case}-{suffix}", **fields} for suffix, fields in members.items()]
            hm_pool = pool(f"hm-{case}", pool_protocol, named, healthmonitor=hm)
            listeners.append(listener(f"hm-{case}-listener", li_protocol, ports[case], hm_pool))
            expected |= {f"hm-{case}-{suffix}": status for suffix, status in statuses.items()}
        lb = cloud.create_lb(name="health", listeners=listeners)
        stack.callback(cloud.delete_lb, lb["id"])
        wait_statuses(cloud, lb["id"], expected, timeout=SETTLE)
        yield Site(lb, lb["vip_address"], ports, backends)


def probes(backend: Backend, path: str) -> list[Seen]:
    return [seen for seen in list(backend.seen) if seen.path == path]


def test_expected_codes_decide_between_online_and_error(cloud: Cloud, site: Site) -> None:
    statuses = tree_statuses(cloud, site.lb["id"])
    for case, want in [
        ("single-hit", "ONLINE"),
        ("single-miss", "ERROR"),
        ("list-hit", "ONLINE"),
        ("list-miss", "ERROR"),
        ("range-hit", "ONLINE"),
        ("range-miss", "ERROR"),
    ]:
        assert statuses[f"hm-{case}-m"] == want, case
        assert statuses[f"hm-{case}"] == ("ONLINE" if want == "ONLINE" else "ERROR"), f"pool {case}"
        # The same healthy backend serves where its member is ONLINE, and nothing does where it is ERROR.
        answer = cloud.get(site.vip, site.ports[case])
        if want == "ONLINE":
            assert (answer.status_code, answer.text.strip()) == (200, "hm-web"), case
        else:
            assert answer.status_code == 503, case
    assert statuses["loadbalancer"] == "ERROR"  # a pool whose every member is down is an ERROR for Octavia


def test_http_monitor_sends_method_version_and_host(site: Site) -> None:
    post = probes(site.backends["probe-post"], "/probe-post")
    assert post, "the POST monitor's checks should reach the member"
    assert {(p.method, p.version) for p in post} == {("POST", "HTTP/1.1")}
    assert {p.headers.get("host") or p.headers.get("Host") for p in post} == {"health.example"}
    head = probes(site.backends["probe-head"], "/probe-head")
    assert head, "the HEAD monitor's checks should reach the member"
    assert {(p.method, p.version) for p in head} == {("HEAD", "HTTP/1.0")}


def test_https_monitor_checks_over_tls_with_the_domain_name_as_sni(cloud: Cloud, site: Site) -> None:
    tls = site.backends["tls"]
    assert isinstance(tls, TlsBackend)
    assert "tls.example" in set(tls.server_names)
    checks = probes(tls, "/status/200")
    assert checks and {p.headers.get("host") or p.headers.get("Host") for p in checks} == {"tls.example"}
    wait_statuses(cloud, site.lb["id"], {"hm-https-m": "ONLINE", "hm-https-miss-m": "ERROR"})
    der, answer = traffic.tls_get(site.vip, site.ports["https"])
    assert der == tls.certificate.der and answer.status == 200
    with pytest.raises(OSError):  # nothing serves behind the failed monitor: HAProxy closes the connection
        traffic.tls_get(site.vip, site.ports["https-miss"])


def test_tcp_monitor_takes_a_closed_port_out(cloud: Cloud, site: Site) -> None:
    wait_statuses(cloud, site.lb["id"], {"hm-tcp-up": "ONLINE", "hm-tcp-down": "ERROR", "hm-tcp": "DEGRADED"})
    assert cloud.answers(site.vip, 4, port=site.ports["tcp"]) == ["hm-web"] * 4


def test_ping_monitor_asks_the_host_not_the_port(cloud: Cloud, site: Site) -> None:
    # The member's port is closed, but its host answers ping: ONLINE, and traffic fails (503).
    wait_statuses(cloud, site.lb["id"], {"hm-ping-m": "ONLINE"})
    assert cloud.get(site.vip, site.ports["ping"]).status_code == 503


def test_tls_hello_monitor_wants_a_tls_server(cloud: Cloud, site: Site) -> None:
    wait_statuses(cloud, site.lb["id"], {"hm-tls-hello-tls": "ONLINE", "hm-tls-hello-plain": "ERROR"})
    tls = site.backends["tls"]
    assert isinstance(tls, TlsBackend)
    for _ in range(3):
        der, answer = traffic.tls_get(site.vip, site.ports["tls-hello"])
        assert der == tls.certificate.der and answer.text == "hm-tls"


def test_monitor_address_and_port_redirect_the_checks(cloud: Cloud, site: Site) -> None:
    wait_statuses(
        cloud,
        site.lb["id"],
        {"hm-monitor-port-a": "ERROR", "hm-monitor-port-b": "ONLINE", "hm-monitor-address-m": "ONLINE"},
    )
    # Member a's own port serves fine, but its checks go to a closed port: no traffic for it.
    assert cloud.answers(site.vip, 4, port=site.ports["monitor-port"]) == ["hm-traffic"] * 4
    assert probes(site.backends["monitor-target"], "/monitor-probe"), "the checks should reach the monitor port"
    assert not probes(site.backends["traffic"], "/monitor-probe")
    assert not probes(site.backends["x"], "/monitor-probe")
    # A member whose checks go to a healthy monitor_address is ONLINE even though its own address serves
    # nothing: the engine sends it traffic, which fails.
    assert cloud.get(site.vip, site.ports["monitor-address"]).status_code == 503


def test_weight_0_member_gets_no_requests_and_is_draining(cloud: Cloud, site: Site) -> None:
    wait_statuses(cloud, site.lb["id"], {"hm-weight-w0": "DRAINING", "hm-weight-w1": "ONLINE", "hm-weight": "ONLINE"})
    assert cloud.answers(site.vip, 6, port=site.ports["weight"]) == ["hm-w1"] * 6


def test_backup_serves_only_while_the_primary_is_down(cloud: Cloud, site: Site) -> None:
    port = site.ports["backup"]
    assert cloud.answers(site.vip, 4, port=port) == ["hm-primary"] * 4
    primary = site.backends["primary"]
    primary_port = primary.port
    primary.stop()
    try:
        started = time.monotonic()
        wait_statuses(cloud, site.lb["id"], {"hm-backup-primary": "ERROR", "hm-backup-backup": "ONLINE"}, timeout=6)
        assert time.monotonic() - started < 6
        assert cloud.answers(site.vip, 4, port=port) == ["hm-backup"] * 4
    finally:
        site.backends["primary"] = cloud.backend("hm-primary", port=primary_port)
    wait_statuses(cloud, site.lb["id"], {"hm-backup-primary": "ONLINE"}, timeout=6)
    assert cloud.answers(site.vip, 4, port=port) == ["hm-primary"] * 4
