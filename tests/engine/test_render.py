"""haproxy.cfg rendering: every feature is rendered, validated by the real `haproxy -c`, and the lines that
carry it are asserted. Tenant-supplied values are fuzzed: whatever a valid spec holds renders into a
config HAProxy accepts, and no value can add, remove or split a config line."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quadriga.engine import spec as s
from quadriga.engine.render import (
    EnginePaths,
    RenderError,
    RenderOptions,
    backend_name,
    backends_of_pool,
    fetch_arg,
    ping_check_path,
    prune_support_files,
    quote,
    render,
    server_params,
    support_files,
    write_support_files,
)

OPTIONS = RenderOptions(max_connections=4000)  # fixed, so configs do not depend on this machine


# --- spec builders -------------------------------------------------------------------------------------------------


def uid() -> str:
    return str(uuid.uuid4())


def member(address: str = "127.0.0.1", port: int = 8080, **kw: Any) -> s.MemberSpec:
    return s.MemberSpec(id=kw.pop("id", uid()), address=address, protocol_port=port, **kw)


def pool(protocol: str = "HTTP", algorithm: str = "ROUND_ROBIN", members: int | tuple = 2, **kw: Any) -> s.PoolSpec:
    if isinstance(members, int):
        members = tuple(member(port=8080 + i) for i in range(members))
    return s.PoolSpec(id=kw.pop("id", uid()), protocol=protocol, lb_algorithm=algorithm, members=members, **kw)


def listener(
    protocol: str = "HTTP", port: int = 80, default_pool: s.PoolSpec | None = None, **kw: Any
) -> s.ListenerSpec:
    return s.ListenerSpec(
        id=kw.pop("id", uid()),
        protocol=protocol,
        protocol_port=port,
        default_pool_id=default_pool.id if default_pool else None,
        **kw,
    )


def rule(type_: str = "PATH", compare: str = "STARTS_WITH", value: str = "/api", **kw: Any) -> s.L7RuleSpec:
    return s.L7RuleSpec(id=kw.pop("id", uid()), type=type_, compare_type=compare, value=value, **kw)


def policy(action: str = "REJECT", position: int = 1, rules: tuple = (), **kw: Any) -> s.L7PolicySpec:
    return s.L7PolicySpec(id=kw.pop("id", uid()), action=action, position=position, rules=rules or (rule(),), **kw)


def engine(listeners: tuple = (), pools: tuple = (), vips: tuple = ("127.0.0.1",), **kw: Any) -> s.EngineSpec:
    return s.EngineSpec(
        revision=kw.pop("revision", 1),
        loadbalancer_id=kw.pop("loadbalancer_id", uid()),
        vips=vips,
        listeners=listeners,
        pools=pools,
        **kw,
    )


def section(config: str, header: str) -> list[str]:
    """The stripped lines of the config section that starts with `header` (e.g. 'backend p:l')."""
    lines = config.splitlines()
    start = lines.index(header)
    out = []
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        if line.strip():
            out.append(line.strip())
    return out


# --- global and defaults ---------------------------------------------------------------------------


def test_global_section_is_master_worker_friendly(check, tmp_path):
    p = pool()
    li = listener(default_pool=p, connection_limit=300)
    config = check(engine((li,), (p,)), RenderOptions(max_connections=10000, nbthread=2))
    glob = section(config, "global")
    assert "daemon" not in glob
    assert f"stats socket {tmp_path / 'haproxy.sock'} mode 600 level admin expose-fd listeners" in glob
    assert f"server-state-file {tmp_path / 'server-state'}" in glob
    assert "httpclient.ssl.verify none" in glob
    assert "nbthread 2" in glob
    assert "maxconn 400" in glob  # the listeners' limits plus headroom for the runtime API
    assert not any(line.startswith("log") for line in glob)
    assert "external-check" not in glob
    assert "load-server-state-from-file global" in section(config, "defaults")
    assert (tmp_path / "server-state").read_text() == "1\n"


def test_global_maxconn_is_capped_and_nbthread_defaults_to_one(check):
    p = pool()
    li = listener(default_pool=p)
    config = check(engine((li,), (p,)), RenderOptions(max_connections=2000))
    assert "maxconn 2000" in section(config, "global")
    assert "nbthread 1" in section(config, "global")
    assert "maxconn 2000" in section(config, f"frontend {li.id}")


def test_logging_to_stdout(check):
    http_pool, tcp_pool = pool(), pool("TCP")
    http, tcp = listener(default_pool=http_pool), listener("TCP", 81, tcp_pool)
    config = check(engine((http, tcp), (http_pool, tcp_pool)), RenderOptions(max_connections=10000, log="stdout"))
    assert "log stdout format raw local0" in section(config, "global")
    assert "log global" in section(config, "defaults")
    assert "option httplog" in section(config, f"frontend {http.id}")
    assert "option tcplog" in section(config, f"frontend {tcp.id}")


def test_empty_load_balancer_renders_a_valid_config(check):
    config = check(engine())
    assert "frontend" not in config and "backend" not in config


# --- listeners -------------------------------------------------------------------------------------


def test_http_listener_binds_every_vip_with_its_limits_and_timeouts(check):
    p = pool()
    li = listener(
        port=8080,
        default_pool=p,
        connection_limit=1234,
        timeout_client_data=1000,
        timeout_member_connect=2000,
        timeout_member_data=3000,
        timeout_tcp_inspect=400,
    )
    config = check(engine((li,), (p,), vips=("127.0.0.1", "::1", "10.0.0.5")))
    fe = section(config, f"frontend {li.id}")
    assert fe[0] == "mode http"
    assert [x for x in fe if x.startswith("bind")] == ["bind 127.0.0.1:8080", "bind [::1]:8080", "bind 10.0.0.5:8080"]
    assert "maxconn 1234" in fe
    assert "timeout client 1000ms" in fe
    assert "tcp-request inspect-delay 400ms" in fe
    assert "option idle-close-on-response" in fe
    assert f"default_backend {p.id}:{li.id}" in fe
    be = section(config, f"backend {p.id}:{li.id}")
    assert "timeout connect 2000ms" in be and "timeout server 3000ms" in be


def test_zero_timeouts_and_limits_mean_the_defaults(check):
    p = pool()
    li = listener(
        default_pool=p, connection_limit=0, timeout_client_data=0, timeout_member_connect=0, timeout_member_data=0
    )
    config = check(engine((li,), (p,)), RenderOptions(max_connections=100000))
    fe = section(config, f"frontend {li.id}")
    assert "timeout client 50000ms" in fe and "maxconn 50000" in fe
    assert not any(x.startswith("tcp-request inspect-delay") for x in fe)
    be = section(config, f"backend {p.id}:{li.id}")
    assert "timeout connect 5000ms" in be and "timeout server 50000ms" in be


def test_huge_timeouts_and_limits_stay_within_haproxy_bounds(check):
    p = pool(health_monitor=s.HealthMonitorSpec(type="TCP", delay=2**31 - 1, timeout=2**31 - 1, max_retries=1))
    big = 2073600000
    li = listener(
        default_pool=p,
        connection_limit=2**31 - 1,
        timeout_client_data=big,
        timeout_member_connect=big,
        timeout_member_data=big,
        timeout_tcp_inspect=big,
    )
    check(engine((li,), (p,)))


@pytest.mark.parametrize("protocol", ["TCP", "HTTPS"])
def test_tcp_and_https_passthrough_listeners_are_tcp_mode(check, protocol):
    p = pool(protocol if protocol == "HTTPS" else "TCP")
    li = listener(protocol, 443, p)
    config = check(engine((li,), (p,)))
    fe = section(config, f"frontend {li.id}")
    assert fe[0] == "mode tcp"
    assert "option idle-close-on-response" not in fe
    assert section(config, f"backend {p.id}:{li.id}")[0] == "mode tcp"


def test_tcp_listener_can_use_an_http_pool(check):
    p = pool("HTTP")
    li = listener("TCP", 80, p)
    config = check(engine((li,), (p,)))
    assert section(config, f"backend {p.id}:{li.id}")[0] == "mode http"


def test_prometheus_listener_serves_the_exporter(check):
    li = listener("PROMETHEUS", 9100)
    config = check(engine((li,)))
    fe = section(config, f"frontend {li.id}")
    assert "mode http" in fe
    assert "http-request use-service prometheus-exporter if { path /metrics }" in fe
    assert "http-request return status 404" in fe


def test_this_haproxy_has_the_prometheus_exporter(haproxy):
    out = subprocess.run([haproxy, "-vv"], capture_output=True, text=True, check=True).stdout
    assert "prometheus-exporter" in out


def test_prometheus_listener_without_the_exporter_is_a_clear_error(tmp_path):
    li = listener("PROMETHEUS", 9100)
    with pytest.raises(RenderError, match="prometheus-exporter"):
        render(engine((li,)), EnginePaths.under(tmp_path), RenderOptions(prometheus_exporter=False))


def test_admin_down_listener_and_load_balancer_disable_their_frontends(check):
    p = pool()
    up = listener(port=80, default_pool=p)
    down = listener(port=81, default_pool=p, admin_state_up=False)
    config = check(engine((up, down), (p,)))
    assert "disabled" not in section(config, f"frontend {up.id}")
    assert "disabled" in section(config, f"frontend {down.id}")
    config = check(engine((up, down), (p,), admin_state_up=False))
    assert "disabled" in section(config, f"frontend {up.id}")
    assert "disabled" in section(config, f"frontend {down.id}")


def test_allowed_cidrs_reject_other_sources(check):
    p = pool()
    li = listener(default_pool=p, allowed_cidrs=("10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"))
    config = check(engine((li,), (p,), vips=("127.0.0.1", "::1")))
    fe = section(config, f"frontend {li.id}")
    assert "acl allowed-source src 10.0.0.0/8" in fe
    assert "acl allowed-source src 192.168.1.7/32" in fe
    assert "acl allowed-source src 2001:db8::/32" in fe
    assert "tcp-request connection reject if !allowed-source" in fe


def test_insert_headers(check):
    p = pool()
    li = listener(default_pool=p, insert_headers=tuple(sorted(s.INSERT_HEADERS)))
    config = check(engine((li,), (p,)))
    fe = section(config, f"frontend {li.id}")
    assert "option forwardfor" in fe
    for line in (
        "http-request set-header X-Forwarded-Port %[dst_port]",
        "http-request set-header X-Forwarded-Proto http",
        "http-request set-header X-Forwarded-IP %[src]",
        "http-request set-header X-Client-IP %[src]",
        "http-request set-header X-Real-IP %[src]",
    ):
        assert line in fe


# --- L7 policies -----------------------------------------------------------------------------------


def test_l7_policies_run_in_position_order_with_anded_rules(check):
    default, special = pool(), pool()
    r_api = rule("PATH", "STARTS_WITH", "/api")
    r_host = rule("HOST_NAME", "EQUAL_TO", "example.com", invert=True)
    r_off = rule("PATH", "EQUAL_TO", "/off", admin_state_up=False)
    to_pool = policy("REDIRECT_TO_POOL", 1, (r_api, r_host, r_off), redirect_pool_id=special.id)
    r_old = rule("PATH", "STARTS_WITH", "/old")
    prefix = policy("REDIRECT_PREFIX", 2, (r_old,), redirect_prefix="https://new.example.com", redirect_http_code=308)
    r_jpg = rule("FILE_TYPE", "EQUAL_TO", "jpg")
    to_url = policy(
        "REDIRECT_TO_URL", 3, (r_jpg,), redirect_url="https://img.example.com/a%20b", redirect_http_code=301
    )
    r_bad = rule("HEADER", "CONTAINS", "bot", key="User-Agent")
    reject = policy("REJECT", 4, (r_bad,))
    li = listener(default_pool=default, l7policies=(reject, to_url, prefix, to_pool))  # out of order
    config = check(engine((li,), (default, special)))
    fe = section(config, f"frontend {li.id}")
    be = backend_name(special.id, li.id)
    rules = [x for x in fe if x.startswith(("http-request set-var", "http-request redirect", "http-request deny"))]
    assert rules == [
        f"http-request set-var(txn.l7_pool) str({be}) if rule-{r_api.id} !rule-{r_host.id}",
        f"http-request redirect prefix https://new.example.com code 308 if !l7-pool-chosen rule-{r_old.id}",
        f"http-request redirect location https://img.example.com/a%%20b code 301 if !l7-pool-chosen rule-{r_jpg.id}",
        f"http-request deny if !l7-pool-chosen rule-{r_bad.id}",
    ]
    assert "acl l7-pool-chosen var(txn.l7_pool) -m found" in fe
    assert f"use_backend {be} if {{ var(txn.l7_pool) -m str {be} }}" in fe
    assert fe.index(f"use_backend {be} if {{ var(txn.l7_pool) -m str {be} }}") < fe.index(
        f"default_backend {default.id}:{li.id}"
    )
    assert f"acl rule-{r_off.id}" not in "\n".join(fe)
    assert f"acl rule-{r_host.id} req.hdr(host) -i -m str -- example.com" in fe
    assert f"acl rule-{r_jpg.id} path_end -- jpg" in fe
    assert f"acl rule-{r_bad.id} req.hdr(User-Agent) -m sub -- bot" in fe
    assert f"backend {be}" in config


def test_inactive_policies_are_skipped(check):
    default, down = pool(), pool(admin_state_up=False)
    skipped = [
        policy("REJECT", 1, admin_state_up=False),
        policy("REJECT", 2, (rule(admin_state_up=False),)),
        policy("REDIRECT_TO_POOL", 3, redirect_pool_id=down.id),
        policy("REDIRECT_TO_POOL", 4, redirect_pool_id=None),
    ]
    li = listener(default_pool=default, l7policies=tuple(skipped))
    config = check(engine((li,), (default, down)))
    fe = section(config, f"frontend {li.id}")
    assert not any(x.startswith(("http-request", "use_backend", "acl")) for x in fe)
    assert f"backend {down.id}:{li.id}" not in config
    assert backends_of_pool(engine((li,), (default, down)), down.id) == []


def test_reject_only_policy_needs_no_pool_variable(check):
    p = pool()
    r = rule()
    li = listener(default_pool=p, l7policies=(policy("REJECT", 1, (r,)),))
    fe = section(check(engine((li,), (p,))), f"frontend {li.id}")
    assert f"http-request deny if rule-{r.id}" in fe
    assert not any("l7-pool-chosen" in x for x in fe)


RULE_CASES = [
    (t, c)
    for t in ("HOST_NAME", "PATH", "FILE_TYPE", "HEADER", "COOKIE")
    for c in ("REGEX", "STARTS_WITH", "ENDS_WITH", "CONTAINS", "EQUAL_TO")
    if t != "FILE_TYPE" or c in ("REGEX", "EQUAL_TO")
]
FETCH = {"HOST_NAME": "req.hdr(host) -i", "PATH": "path", "FILE_TYPE": "path_end", "HEADER": "req.hdr(X-Key)"}
FETCH["COOKIE"] = "req.cook(session)"
MATCH = {"REGEX": "reg", "STARTS_WITH": "beg", "ENDS_WITH": "end", "CONTAINS": "sub", "EQUAL_TO": "str"}


def test_every_rule_type_and_compare_type(check):
    p = pool()
    rules = {}
    policies = []
    for n, (t, c) in enumerate(RULE_CASES, 1):
        key = {"HEADER": "X-Key", "COOKIE": "session"}.get(t)
        value = "^/a.+b$" if c == "REGEX" else "v1"
        r = rule(t, c, value, key=key)
        rules[(t, c)] = r
        policies.append(policy("REJECT", n, (r,)))
    li = listener(default_pool=p, l7policies=tuple(policies))
    fe = section(check(engine((li,), (p,))), f"frontend {li.id}")
    for (t, c), r in rules.items():
        flag = "" if (t, c) == ("FILE_TYPE", "EQUAL_TO") else f" -m {MATCH[c]}"
        value = '"^/a.+b\\$"' if c == "REGEX" else "v1"
        assert f"acl rule-{r.id} {FETCH[t]}{flag} -- {value}" in fe
        assert f"http-request deny if rule-{r.id}" in fe


def test_a_policy_with_fifty_rules(check):
    p = pool()
    rules = tuple(rule("HEADER", "EQUAL_TO", f"v{i}", key=f"X-H{i}", invert=bool(i % 2)) for i in range(50))
    li = listener(default_pool=p, l7policies=(policy("REDIRECT_TO_POOL", 1, rules, redirect_pool_id=p.id),))
    p2 = pool()
    li2 = listener(
        port=81,
        default_pool=p2,
        l7policies=(
            policy("REDIRECT_TO_POOL", 1, (rule(),), redirect_pool_id=p.id),
            policy("REDIRECT_TO_URL", 2, rules, redirect_url="https://x.example.com/", redirect_http_code=303),
        ),
    )
    check(engine((li, li2), (p, p2)))


@pytest.mark.parametrize(
    ("rule_type", "compare_type", "value"),
    [("SSL_CONN_HAS_CERT", "STARTS_WITH", "True"), ("SSL_VERIFY_RESULT", "EQUAL_TO", "0 or 1")],
)
def test_ssl_rules_the_engine_cannot_compare_are_refused_by_the_spec(rule_type, compare_type, value):
    with pytest.raises(pydantic.ValidationError):
        s.L7RuleSpec(id="r", type=rule_type, compare_type=compare_type, value=value)


# --- pools -----------------------------------------------------------------------------------------

ALGORITHMS = {
    "ROUND_ROBIN": ["balance roundrobin"],
    "LEAST_CONNECTIONS": ["balance leastconn"],
    "SOURCE_IP": ["balance source", "hash-type consistent"],
    "SOURCE_IP_PORT": [
        "balance hash src,concat(:,txn.src_port)",
        "hash-type consistent",
        "tcp-request content set-var(txn.src_port) src_port",
    ],
}


@pytest.mark.parametrize("listener_protocol", ["HTTP", "TCP"])
def test_algorithms(check, listener_protocol):
    pools = [pool("HTTP" if listener_protocol == "HTTP" else "TCP", algo) for algo in ALGORITHMS]
    listeners = [listener(listener_protocol, 80 + i, p) for i, p in enumerate(pools)]
    config = check(engine(tuple(listeners), tuple(pools)))
    for li, p in zip(listeners, pools, strict=True):
        be = section(config, f"backend {p.id}:{li.id}")
        for line in ALGORITHMS[p.lb_algorithm]:
            assert line in be
        if p.lb_algorithm in ("ROUND_ROBIN", "LEAST_CONNECTIONS"):
            assert "hash-type consistent" not in be


def test_session_persistence_in_http_backends(check):
    src = pool(session_persistence=s.SessionPersistenceSpec(type="SOURCE_IP"))
    cookie = pool(session_persistence=s.SessionPersistenceSpec(type="HTTP_COOKIE"))
    app = pool(session_persistence=s.SessionPersistenceSpec(type="APP_COOKIE", cookie_name="JSESSIONID"))
    odd = pool(session_persistence=s.SessionPersistenceSpec(type="APP_COOKIE", cookie_name="a\"b\\c(d),e$f#g'h"))
    listeners = [listener(port=80 + i, default_pool=p) for i, p in enumerate((src, cookie, app, odd))]
    config = check(engine(tuple(listeners), (src, cookie, app, odd)))
    be = section(config, f"backend {src.id}:{listeners[0].id}")
    assert "stick-table type ipv6 size 10240" in be and "stick on src" in be
    be = section(config, f"backend {cookie.id}:{listeners[1].id}")
    assert "cookie SRV insert indirect nocache" in be
    for m in cookie.members:
        assert any(x.startswith(f"server {m.id} ") and x.endswith(f"cookie {m.id}") for x in be)
    be = section(config, f"backend {app.id}:{listeners[2].id}")
    assert "stick-table type string len 64 size 10240" in be
    assert "stick store-response res.cook(JSESSIONID)" in be
    assert "stick match req.cook(JSESSIONID)" in be
    be = section(config, f"backend {odd.id}:{listeners[3].id}")
    assert 'stick match "req.cook(\\"a\\\\\\"b\\\\\\\\c(d),e\\$f#g\'h\\")"' in be


def test_cookie_persistence_is_not_applied_in_tcp_mode(check):
    cookie = pool("TCP", session_persistence=s.SessionPersistenceSpec(type="HTTP_COOKIE"))
    app = pool("HTTPS", session_persistence=s.SessionPersistenceSpec(type="APP_COOKIE", cookie_name="JS"))
    src = pool("TCP", session_persistence=s.SessionPersistenceSpec(type="SOURCE_IP"))
    listeners = [listener("TCP", 80 + i, p) for i, p in enumerate((cookie, app, src))]
    config = check(engine(tuple(listeners), (cookie, app, src)))
    be = section(config, f"backend {cookie.id}:{listeners[0].id}")
    assert not any(x.startswith("cookie") or " cookie " in x for x in be)
    assert not any(x.startswith("stick") for x in section(config, f"backend {app.id}:{listeners[1].id}"))
    assert "stick on src" in section(config, f"backend {src.id}:{listeners[2].id}")


def hm(type_: str = "HTTP", **kw) -> s.HealthMonitorSpec:
    return s.HealthMonitorSpec(type=type_, delay=kw.pop("delay", 5), timeout=kw.pop("timeout", 3), max_retries=2, **kw)


def test_http_health_monitors(check):
    cases = {
        "single": (hm(expected_codes="200"), ["http-check send meth GET uri /", "http-check expect status 200"]),
        "list": (
            hm(http_method="HEAD", url_path="/health?x=1", expected_codes="200, 202,204"),
            ["http-check send meth HEAD uri /health?x=1", 'http-check expect rstatus "^(200|202|204)\\$"'],
        ),
        "range": (
            hm(expected_codes="200-204", http_version=1.0),
            ["http-check send meth GET uri / ver HTTP/1.0", 'http-check expect rstatus "^(200|201|202|203|204)\\$"'],
        ),
        "host": (
            hm(url_path="/a b", http_version=1.1, domain_name="www.example.com"),
            ["http-check send meth GET uri /a%20b ver HTTP/1.1 hdr Host www.example.com"],
        ),
        "default": (hm(), ["http-check expect status 200"]),
    }
    pools = {name: pool(health_monitor=h) for name, (h, _) in cases.items()}
    listeners = {name: listener(port=80 + i, default_pool=p) for i, (name, p) in enumerate(pools.items())}
    config = check(engine(tuple(listeners.values()), tuple(pools.values())))
    for name, (_, lines) in cases.items():
        be = section(config, f"backend {pools[name].id}:{listeners[name].id}")
        assert "option httpchk" in be and "timeout check 3s" in be
        for line in lines:
            assert line in be
        for m in pools[name].members:
            assert f"server {m.id} {m.address}:{m.protocol_port} weight 1 check inter 5s fall 3 rise 2" in be


def test_https_tcp_tls_hello_and_disabled_monitors(check):
    https = pool("HTTPS", health_monitor=hm("HTTPS", domain_name="secure.example.com", http_version=1.1))
    tcp = pool("TCP", health_monitor=hm("TCP", timeout=0))
    hello = pool("HTTPS", health_monitor=hm("TLS-HELLO"))
    off = pool("TCP", health_monitor=hm("TCP", admin_state_up=False))
    listeners = [listener("TCP", 80 + i, p) for i, p in enumerate((https, tcp, hello, off))]
    config = check(engine(tuple(listeners), (https, tcp, hello, off)))
    be = section(config, f"backend {https.id}:{listeners[0].id}")
    assert "option httpchk" in be
    assert "http-check send meth GET uri / ver HTTP/1.1 hdr Host secure.example.com" in be
    assert all("check-ssl verify none check-sni secure.example.com" in x for x in be if x.startswith("server"))
    be = section(config, f"backend {tcp.id}:{listeners[1].id}")
    assert not any(x.startswith(("option", "timeout check")) and x != "option allbackups" for x in be)
    assert all(" check inter 5s fall 3 rise 2" in x for x in be if x.startswith("server"))
    assert "option ssl-hello-chk" in section(config, f"backend {hello.id}:{listeners[2].id}")
    be = section(config, f"backend {off.id}:{listeners[3].id}")
    assert not any(" check" in x for x in be if x.startswith("server"))


def test_ping_monitor_is_an_external_check(check, tmp_path):
    members = (member(port=8080), member(port=8081, monitor_address="127.0.0.9", monitor_port=9000))
    p = pool("TCP", health_monitor=hm("PING", delay=2, timeout=1), members=members)
    li = listener("TCP", 80, p)
    spec = engine((li,), (p,))
    config = check(spec)
    assert "external-check" in section(config, "global")
    assert "insecure-fork-wanted" in section(config, "global")
    be = section(config, f"backend {p.id}:{li.id}")
    script = ping_check_path(spec, EnginePaths.under(tmp_path))
    assert script.parent == tmp_path / "files" and script.name.startswith("ping-check-")
    assert "option external-check" in be
    assert f"external-check command {script}" in be
    assert all(" addr " not in x and " port " not in x for x in be if x.startswith("server"))
    text = script.read_text()
    assert os.access(script, os.X_OK)
    assert f"    {p.id}:{li.id}/{members[1].id}) address=127.0.0.9 ;;" in text
    assert members[0].id not in text
    # The script is valid shell.
    subprocess.run(["sh", "-n", str(script)], check=True)


def test_ping_script_is_named_after_its_content_and_pruned_when_unused(tmp_path):
    paths = EnginePaths.under(tmp_path)
    p1 = pool("TCP", health_monitor=hm("PING"))
    first = engine((listener("TCP", 80, p1),), (p1,))
    p2 = pool("TCP", health_monitor=hm("PING"), members=(member(monitor_address="127.0.0.9"),))
    second = engine((listener("TCP", 80, p2),), (p2,))
    write_support_files(first, paths)
    write_support_files(second, paths)
    assert ping_check_path(first, paths) != ping_check_path(second, paths)
    assert ping_check_path(first, paths).exists() and ping_check_path(second, paths).exists()
    prune_support_files(second, paths)
    assert not ping_check_path(first, paths).exists() and ping_check_path(second, paths).exists()


def test_members(check):
    members = (
        member("127.0.0.1", 8080, weight=0),
        member("127.0.0.2", 8080, weight=256, backup=True),
        member("127.0.0.3", 8080, admin_state_up=False),
        member("::1", 8080, monitor_address="::2", monitor_port=9090),
        member("10.1.2.3", 80, monitor_port=81),
    )
    p = pool(health_monitor=hm("TCP"), members=members)
    li = listener(default_pool=p)
    be = section(check(engine((li,), (p,))), f"backend {p.id}:{li.id}")
    servers = [x for x in be if x.startswith("server")]
    base = "check inter 5s fall 3 rise 2"
    assert servers == [
        f"server {members[0].id} 127.0.0.1:8080 weight 0 {base}",
        f"server {members[1].id} 127.0.0.2:8080 weight 256 {base} backup",
        f"server {members[2].id} 127.0.0.3:8080 weight 1 {base} disabled",
        f"server {members[3].id} [::1]:8080 weight 1 {base} addr [::2] port 9090",
        f"server {members[4].id} 10.1.2.3:80 weight 1 {base} port 81",
    ]
    assert "option allbackups" in be


def test_admin_down_pool_disables_every_server(check):
    p = pool(admin_state_up=False, members=3)
    li = listener(default_pool=p)
    be = section(check(engine((li,), (p,))), f"backend {p.id}:{li.id}")
    assert [x.endswith(" disabled") for x in be if x.startswith("server")] == [True] * 3


@pytest.mark.parametrize("listener_protocol", ["HTTP", "TCP", "HTTPS"])
def test_proxy_protocol_pools_take_the_listeners_mode(check, listener_protocol):
    v1, v2 = pool("PROXY"), pool("PROXYV2")
    l1, l2 = listener(listener_protocol, 80, v1), listener(listener_protocol, 81, v2)
    config = check(engine((l1, l2), (v1, v2)))
    mode = "mode http" if listener_protocol == "HTTP" else "mode tcp"
    be = section(config, f"backend {v1.id}:{l1.id}")
    assert be[0] == mode and all(x.endswith(" send-proxy") for x in be if x.startswith("server"))
    be = section(config, f"backend {v2.id}:{l2.id}")
    assert be[0] == mode and all(x.endswith(" send-proxy-v2") for x in be if x.startswith("server"))


def test_a_pool_reached_from_two_listeners_gets_a_backend_for_each(check):
    shared, other, lonely = pool("PROXY"), pool("PROXY"), pool()
    http = listener("HTTP", 80, other, l7policies=(policy("REDIRECT_TO_POOL", 1, redirect_pool_id=shared.id),))
    tcp = listener("TCP", 81, shared, timeout_member_data=7000)
    spec = engine((http, tcp), (shared, other, lonely))
    config = check(spec)
    assert section(config, f"backend {shared.id}:{http.id}")[0] == "mode http"
    assert section(config, f"backend {shared.id}:{tcp.id}")[0] == "mode tcp"
    assert "timeout server 7000ms" in section(config, f"backend {shared.id}:{tcp.id}")
    assert backends_of_pool(spec, shared.id) == [f"{shared.id}:{http.id}", f"{shared.id}:{tcp.id}"]
    assert lonely.id not in config  # reached by no listener: not rendered


def test_every_combination_of_protocols_algorithms_persistence_and_monitors(check):
    """One config with a listener and pool for every combination the API accepts: HAProxy takes it all."""
    persistences = [
        None,
        s.SessionPersistenceSpec(type="SOURCE_IP"),
        s.SessionPersistenceSpec(type="HTTP_COOKIE"),
        s.SessionPersistenceSpec(type="APP_COOKIE", cookie_name="JS"),
    ]
    listeners, pools = [], []
    for listener_protocol in ("HTTP", "TCP", "HTTPS"):
        for pool_protocol in sorted(s.c.LISTENER_POOL_PROTOCOLS[listener_protocol]):
            for monitor in (None, *sorted(s.SUPPORTED_MONITOR_TYPES - {"UDP-CONNECT"})):
                for algorithm in ALGORITHMS:
                    for persistence in persistences:
                        p = pool(
                            pool_protocol,
                            algorithm,
                            members=(member(monitor_address="127.0.0.2", monitor_port=81), member(backup=True)),
                            session_persistence=persistence,
                            health_monitor=hm(monitor) if monitor else None,
                        )
                        pools.append(p)
                        listeners.append(listener(listener_protocol, 1000 + len(listeners), p))
    config = check(engine(tuple(listeners), tuple(pools)))
    assert config.count("\nbackend ") == len(pools) > 700


def test_server_params_match_the_rendered_server_lines(check, tmp_path):
    p = pool("PROXYV2", health_monitor=hm("HTTPS"), session_persistence=s.SessionPersistenceSpec(type="HTTP_COOKIE"))
    li = listener(default_pool=p)
    be = section(check(engine((li,), (p,))), f"backend {p.id}:{li.id}")
    extra_dir = EnginePaths.under(tmp_path).extra_dir
    for m in p.members:
        params = server_params(p, m, extra_dir=extra_dir, listener_protocol="HTTP")
        line = f"server {m.id} {m.address}:{m.protocol_port} " + " ".join(params)
        assert line in be


# --- the spec refuses what cannot be rendered ------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: member(id="bad id"),
        lambda: member(id="a:b"),
        lambda: member(id=""),
        lambda: member(address="example.com"),
        lambda: member(port=0),
        lambda: member(weight=257),
        lambda: rule(value="a\x00b"),
        lambda: rule("HEADER", "EQUAL_TO", "x", key="Bad Header"),
        lambda: rule("HEADER", "EQUAL_TO", "x"),
        lambda: rule("FILE_TYPE", "CONTAINS", "jpg"),
        lambda: policy("REDIRECT_TO_URL"),
        lambda: s.SessionPersistenceSpec(type="APP_COOKIE"),
        lambda: s.SessionPersistenceSpec(type="APP_COOKIE", cookie_name="a b"),
        lambda: hm(expected_codes="200;201"),
        lambda: hm(expected_codes="204-200"),
        lambda: hm(domain_name="bad domain"),
        lambda: hm(domain_name="example.com\n"),
        lambda: hm(url_path="health"),
        lambda: hm(http_version=2.0),
        lambda: listener("SCTP", 53),
        lambda: listener("TERMINATED_HTTPS", 443),
        lambda: listener("TCP", 80, insert_headers=("X-Forwarded-For",)),
        lambda: listener("TCP", 80, l7policies=(policy(),)),
        lambda: listener(allowed_cidrs=("10.0.0.0/33",)),
        lambda: pool("SCTP"),
        lambda: pool("UDP", session_persistence=s.SessionPersistenceSpec(type="HTTP_COOKIE")),
        lambda: pool("TCP", health_monitor=hm("UDP-CONNECT")),
        lambda: pool("UDP", health_monitor=hm("TLS-HELLO")),
        lambda: engine((listener("UDP", 53, p := pool("TCP")),), (p,)),  # UDP carries UDP pools only
        lambda: engine((listener(),), vips=()),
        lambda: engine((listener(port=80), listener(port=80))),
        lambda: engine((listener(default_pool=pool()),)),  # the pool is not in the spec
        lambda: engine((listener("HTTP", 80, p := pool("TCP")),), (p,)),  # HTTP cannot carry a TCP pool
        lambda: engine(vips=("127.0.0.1", "127.0.0.1")),
    ],
)
def test_spec_refuses(make):
    with pytest.raises((pydantic.ValidationError, ValueError)):
        make()


def test_spec_round_trips_through_json():
    p = pool(
        health_monitor=hm(http_version=1.1, domain_name="a.example.com"),
        session_persistence=s.SessionPersistenceSpec(type="APP_COOKIE", cookie_name="c"),
    )
    li = listener(
        default_pool=p,
        insert_headers=("X-Real-IP",),
        allowed_cidrs=("10.0.0.0/8",),
        l7policies=(policy("REDIRECT_TO_POOL", 1, redirect_pool_id=p.id),),
    )
    spec = engine((li,), (p,), vips=("::1",))
    wire = spec.model_dump_json()
    assert s.EngineSpec.model_validate_json(wire) == spec
    assert json.loads(wire)["schema_version"] == 1
    with pytest.raises(pydantic.ValidationError):
        s.EngineSpec.model_validate_json(wire.replace('"revision":1', '"revision":1,"extra":2'))
    with pytest.raises(pydantic.ValidationError):
        spec.revision = 2  # frozen


# --- escaping and fuzzing --------------------------------------------------------------------------


def test_quote():
    assert quote("plain/value-1.0") == "plain/value-1.0"
    assert quote("") == '""'
    assert quote("a b\"c\\d$e#f'g") == '"a b\\"c\\\\d\\$e#f\'g"'
    assert quote("line\nbreak\r\t") == '"line\\x0abreak\\x0d\\x09"'
    assert quote("é") == '"\\xc3\\xa9"'
    assert fetch_arg("X-Plain") == "X-Plain"
    assert fetch_arg("a'b\"c") == '"a\'b\\"c"'
    with pytest.raises(RenderError):
        quote("\x00")


text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
tokens = st.from_regex(r"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}\Z")
ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,30}\Z")
cookie_names = st.from_regex(r"\A[\x21-\x7e]{1,20}\Z")
pcre_literal = text.map(lambda v: re.escape(v))  # a regex that matches `v` literally, PCRE-compatible


def _no_space_or_quote(v: str) -> bool:
    return not re.search(r"[\s\"']", v)


@st.composite
def fuzzed_specs(draw):
    """A spec whose tenant-controlled strings and numbers are arbitrary (within the spec's rules)."""
    member_ids = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    members = tuple(
        s.MemberSpec(
            id=mid,
            address=draw(st.ip_addresses()).exploded,
            protocol_port=draw(st.integers(1, 65535)),
            weight=draw(st.integers(0, 256)),
            backup=draw(st.booleans()),
            admin_state_up=draw(st.booleans()),
            monitor_address=draw(st.none() | st.ip_addresses().map(str)),
            monitor_port=draw(st.none() | st.integers(1, 65535)),
        )
        for mid in member_ids
    )
    monitor = s.HealthMonitorSpec(
        type=draw(st.sampled_from(["HTTP", "HTTPS"])),
        delay=draw(st.integers(0, 2**31 - 1)),
        timeout=draw(st.integers(0, 2**31 - 1)),
        max_retries=draw(st.integers(1, 10)),
        max_retries_down=draw(st.integers(1, 10)),
        http_method=draw(st.sampled_from(["GET", "HEAD", "POST", "OPTIONS"])),
        url_path="/" + draw(text),
        expected_codes=draw(st.sampled_from(["200", "200,202", "200-204", "301"])),
        http_version=1.1,
        domain_name=draw(st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}\Z")),
    )
    persistence = s.SessionPersistenceSpec(type="APP_COOKIE", cookie_name=draw(cookie_names))
    the_pool = s.PoolSpec(
        id=draw(ids),
        protocol="HTTP",
        lb_algorithm=draw(st.sampled_from(["ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP", "SOURCE_IP_PORT"])),
        session_persistence=persistence,
        health_monitor=monitor,
        members=members,
    )
    rules = []
    rule_ids = draw(st.lists(ids, min_size=5, max_size=5, unique=True))
    for rid, (kind, key) in zip(
        rule_ids,
        [("HEADER", draw(tokens)), ("COOKIE", draw(tokens)), ("PATH", None), ("HOST_NAME", None), ("FILE_TYPE", None)],
        strict=True,
    ):
        compare = draw(st.sampled_from(["REGEX", "EQUAL_TO"] if kind == "FILE_TYPE" else list(MATCH)))
        # The API keeps whitespace and quotes out of non-REGEX values; REGEX values may hold anything.
        value = draw(pcre_literal if compare == "REGEX" else text.filter(_no_space_or_quote))
        rules.append(
            s.L7RuleSpec(id=rid, type=kind, compare_type=compare, key=key, value=value, invert=draw(st.booleans()))
        )
    policy_ids = draw(st.lists(ids, min_size=3, max_size=3, unique=True))
    policies = (
        s.L7PolicySpec(
            id=policy_ids[0],
            action="REDIRECT_TO_POOL",
            position=1,
            redirect_pool_id=the_pool.id,
            rules=tuple(rules[:2]),
        ),
        s.L7PolicySpec(
            id=policy_ids[1],
            action="REDIRECT_TO_URL",
            position=2,
            redirect_url=draw(text.filter(bool)),
            redirect_http_code=draw(st.sampled_from([301, 302, 303, 307, 308])),
            rules=tuple(rules[2:4]),
        ),
        s.L7PolicySpec(
            id=policy_ids[2],
            action="REDIRECT_PREFIX",
            position=3,
            redirect_prefix=draw(text.filter(bool)),
            rules=tuple(rules[4:]),
        ),
    )
    the_listener = s.ListenerSpec(
        id=draw(ids),
        protocol="HTTP",
        protocol_port=draw(st.integers(1, 65535)),
        connection_limit=draw(st.integers(-1, 2**31 - 1)),
        timeout_client_data=draw(st.integers(0, 2073600000)),
        timeout_member_connect=draw(st.integers(0, 2073600000)),
        timeout_member_data=draw(st.integers(0, 2073600000)),
        timeout_tcp_inspect=draw(st.integers(0, 2073600000)),
        insert_headers=tuple(draw(st.sets(st.sampled_from(sorted(s.INSERT_HEADERS))))),
        allowed_cidrs=tuple(str(draw(st.ip_addresses(v=4))) + f"/{draw(st.integers(0, 32))}" for _ in range(2)),
        default_pool_id=the_pool.id,
        l7policies=policies,
    )
    return s.EngineSpec(
        revision=draw(st.integers(0, 2**40)),
        loadbalancer_id=draw(ids),
        vips=(str(draw(st.ip_addresses())),),
        listeners=(the_listener,),
        pools=(the_pool,),
    )


def _skeleton(config: str) -> list[str]:
    """The first word of every line: what a value that broke out of its line would change."""
    return [line.split(maxsplit=1)[0] if line.strip() else "" for line in config.splitlines()]


def _benign(spec: s.EngineSpec) -> s.EngineSpec:
    """`spec` with every free-text value replaced by a plain word."""
    li = spec.listeners[0]
    policies = tuple(
        p.model_copy(
            update={
                "redirect_url": p.redirect_url and "x",
                "redirect_prefix": p.redirect_prefix and "x",
                "rules": tuple(r.model_copy(update={"value": "x", "key": r.key and "k"}) for r in p.rules),
            }
        )
        for p in li.l7policies
    )
    the_pool = spec.pools[0]
    monitor = the_pool.health_monitor.model_copy(update={"url_path": "/"})
    persistence = the_pool.session_persistence.model_copy(update={"cookie_name": "c"})
    return spec.model_copy(
        update={
            "listeners": (li.model_copy(update={"l7policies": policies}),),
            "pools": (the_pool.model_copy(update={"health_monitor": monitor, "session_persistence": persistence}),),
        }
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=fuzzed_specs())
def test_fuzzed_tenant_values_always_render_a_config_haproxy_accepts(checker, spec):
    with tempfile.TemporaryDirectory() as directory:
        config = checker(spec, Path(directory), OPTIONS)
        # No value adds, removes or splits a line, or changes the keyword a line starts with.
        assert _skeleton(config) == _skeleton(render(_benign(spec), EnginePaths.under(Path(directory)), OPTIONS))


@settings(max_examples=200, deadline=None)
@given(value=text, key=tokens)
def test_quoted_values_stay_one_word_on_one_line(value, key):
    word = quote(value)
    assert "\n" not in word and "\r" not in word
    assert quote(f"req.hdr({fetch_arg(key)})").count("\n") == 0
    # Inside the quotes, every '"' is escaped: the word ends exactly where it should.
    if word.startswith('"'):
        assert re.fullmatch(r'"(?:[^"\\]|\\.)*"', word)


# --- real traffic ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers every request with the request's headers as JSON."""

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = json.dumps({"server": self.server.name, "headers": headers}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # health checks hang up as soon as they have the status line
            pass

    def log_message(self, *args) -> None:
        pass


def _request(port: int, path: str = "/", headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_real_traffic_through_a_rendered_config(tmp_path, haproxy):
    backends = []
    for name in ("a", "b"):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        server.name = name
        threading.Thread(target=server.serve_forever, daemon=True).start()
        backends.append(server)
    try:
        _traffic(tmp_path, haproxy, backends)
    finally:
        for server in backends:
            server.shutdown()
            server.server_close()


ODD_KEY = "X-Odd'$HOME#|~"
ODD_VALUE = "say \"hi\" \\ $HOME # 'q' %[src] ok"


def _traffic(tmp_path: Path, haproxy: str, backends: list) -> None:
    members = tuple(member("127.0.0.1", b.server_address[1], id=f"member-{b.name}") for b in backends)
    web = pool(members=members, health_monitor=hm("HTTP", delay=1, timeout=1), id="web")
    only_b = pool(members=members[1:], id="only-b")
    port, metrics_port, closed_port, hash_port = (_free_port() for _ in range(4))
    hashed = pool(algorithm="SOURCE_IP_PORT", members=members, id="hashed")
    policies = (
        policy("REJECT", 1, (rule("HEADER", "EQUAL_TO", "x", key=ODD_KEY, id="r-odd-key"),)),
        policy("REJECT", 2, (rule("HEADER", "REGEX", "^" + re.escape(ODD_VALUE) + "$", key="X-Value", id="r-val"),)),
        policy(
            "REDIRECT_TO_URL",
            3,
            (rule("PATH", "EQUAL_TO", "/go", id="r-go"),),
            redirect_url="https://example.com/a%20b?q=1",
            redirect_http_code=307,
        ),
        policy(
            "REDIRECT_TO_POOL",
            4,
            (rule("COOKIE", "EQUAL_TO", "b", key="route", id="r-route"),),
            redirect_pool_id=only_b.id,
        ),
        policy("REJECT", 5, (rule("COOKIE", "EQUAL_TO", "b", key="route", id="r-route-2"),)),  # pool chosen above
    )
    li = listener("HTTP", port, web, l7policies=policies, insert_headers=("X-Forwarded-For", "X-Real-IP"), id="web-l")
    prom = listener("PROMETHEUS", metrics_port, id="metrics")
    closed = listener("HTTP", closed_port, web, allowed_cidrs=("10.0.0.0/8",), id="closed")
    by_port = listener("HTTP", hash_port, hashed, id="hashed-l")
    spec = engine((li, prom, closed, by_port), (web, only_b, hashed), loadbalancer_id="smoke")
    paths = EnginePaths.under(tmp_path)
    config = render(spec, paths, OPTIONS)
    write_support_files(spec, paths)
    assert set(support_files(spec, paths)) == {paths.server_state_file}
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(config)
    proc = subprocess.Popen(
        [haproxy, "-W", "-db", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for(port, proc)
        seen = set()
        for _ in range(6):
            status, _, body = _request(port)
            assert status == 200
            answer = json.loads(body)
            seen.add(answer["server"])
            assert answer["headers"]["x-forwarded-for"] == "127.0.0.1"
            assert answer["headers"]["x-real-ip"] == "127.0.0.1"
        assert seen == {"a", "b"}  # round robin over both members
        # Escaping carried the exact tenant strings through HAProxy's two quoting levels.
        assert _request(port, headers={ODD_KEY: "x"})[0] == 403
        assert _request(port, headers={ODD_KEY: "y"})[0] == 200
        assert _request(port, headers={"X-Value": ODD_VALUE})[0] == 403
        assert _request(port, headers={"X-Value": ODD_VALUE + "!"})[0] == 200
        status, headers, _ = _request(port, "/go")
        assert (status, headers["location"]) == (307, "https://example.com/a%20b?q=1")
        for _ in range(3):  # position 4 routes to only-b before the REJECT at position 5 can fire
            status, _, body = _request(port, headers={"Cookie": "route=b"})
            assert (status, json.loads(body)["server"]) == (200, "b")
        status, _, body = _request(metrics_port, "/metrics")
        assert status == 200 and b"haproxy_frontend_http_requests_total" in body
        assert _request(metrics_port, "/other")[0] == 404
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            _request(closed_port)  # 127.0.0.1 is not in allowed_cidrs: the connection is closed
        # SOURCE_IP_PORT: every request of one connection (one source port) reaches the same member,
        # while new connections spread (round robin, the fallback when the hash key is missing, would
        # alternate within the connection).
        conn = http.client.HTTPConnection("127.0.0.1", hash_port, timeout=5)
        try:
            servers = set()
            for _ in range(6):
                conn.request("GET", "/")
                servers.add(json.loads(conn.getresponse().read())["server"])
            assert len(servers) == 1
        finally:
            conn.close()
        assert {json.loads(_request(hash_port)[2])["server"] for _ in range(30)} == {"a", "b"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_for(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"haproxy exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    pytest.fail("haproxy did not start listening within 10 s")
