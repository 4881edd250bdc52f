"""Render an engine spec into haproxy.cfg (HAProxy 2.6, master-worker).

`render(spec, paths)` is a pure function: the same spec, paths and options give the same text. The
Python side works out every value (names, limits, conditions, server options); the Jinja2 templates in
`templates/` lay them out. `support_files(spec, paths)` returns the few files the config refers to
(the server-state file's initial content, the PING check script, the TLS certificates, CAs and CRLs),
which the agent writes before it runs `haproxy -c`.

Design choices (the why lives here, next to the code):

* **One backend per (pool, listener) pair**, named `<pool id>:<listener id>` (see `backend_name`), as
  Octavia does. HAProxy takes the member timeouts from the backend and the listener owns them, and a
  PROXY pool takes its mode from the listener (http behind an HTTP listener, tcp behind TCP), so a pool
  reachable from two listeners needs two backends. Pools no listener reaches are not rendered.
  `backends_of_pool` lists the backends of a pool, for the runtime API.
* **L7 policies run in position order, first match wins.** REJECT and the redirects are `http-request`
  rules, which stop processing when they fire; REDIRECT_TO_POOL records its backend in `txn.l7_pool`
  and every later policy requires that nothing was chosen yet; `use_backend` then routes on that
  variable. (Octavia mixes `http-request deny`, `redirect` and `use_backend`, which HAProxy evaluates in
  that fixed order whatever the positions.) A policy with no enabled rule, or whose pool is admin-down
  or going away, is skipped, as in Octavia.
* **SOURCE_IP_PORT** hashes "address:port" of the client: `balance hash src,concat(:,txn.src_port)`
  (HAProxy 2.6's `balance hash <expr>`), with `txn.src_port` set by a `tcp-request content` rule in the
  backend. `balance source` would hash the address only. SOURCE_IP and SOURCE_IP_PORT use
  `hash-type consistent`, so runtime weight changes apply and a member going down only moves its own
  clients.
* **PING** cannot be done by HAProxy itself. As Octavia does, it is an external check: HAProxy runs
  `<extra_dir>/ping-check` (written by `support_files`), which sends one ICMP echo with `ping`
  (iputils-ping) to the member, or to its monitor_address. HAProxy kills it when the check times out.
  This needs `external-check` and `insecure-fork-wanted` in `global`, which are set only when a PING
  monitor is in use, and the right to send ICMP (root, or `net.ipv4.ping_group_range`).
* **TLS.** A TERMINATED_HTTPS listener binds `ssl crt <default> crt <sni>...`: HAProxy serves the first
  certificate of a bind line when the client's server name matches none of the certificates' names, and
  picks by name (SAN, else CN) otherwise. Versions become `no-sslv3`/`no-tlsv1x` flags, client
  authentication `verify none|optional|required` with `ca-file`/`crl-file`, HSTS an `http-response`
  header, all as Octavia renders them. A `tls_enabled` pool's servers get `ssl` with `verify required
  ca-file` (or `verify none` without a CA, as Octavia), `crl-file`, `crt` (the client certificate) and
  the same version, cipher and ALPN options; behind a TERMINATED_HTTPS listener they pass the client's
  server name on (`sni ssl_fc_sni`). Every file is a support file named by its content digest
  (`CertificateSpec.id`), mode 0600.
* **ACTIVE_STANDBY** engines (`spec.ha`) share their stick tables through a `peers` section (the two
  engines, by engine id, on their own addresses at `PEERS_PORT`; `localpeer` names this one), so a client
  keeps its member when the standby takes over. Their VIPs are moved by keepalived (`quadriga.engine.vrrp`);
  HAProxy binds them before they arrive thanks to `ip_nonlocal_bind` in the engine's namespace.
* **Escaping.** Every value that may come from a tenant goes through `quote()` (HAProxy's weak quoting
  with `\\"`, `\\\\`, `\\$` and `\\xNN` for control and non-ASCII bytes), so it is always exactly one word
  on its own line, whatever it holds; `fetch_arg()` adds the second level HAProxy needs inside
  `fetch(...)` arguments; `log_format_literal()` doubles `%` where HAProxy reads a log-format string
  (redirect targets, the health check Host header). ACL patterns follow `--`, so a value that looks like
  a flag stays a value. Ids are restricted by the spec to characters that need no quoting.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import resource
import shlex
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2

from quadriga.engine.spec import (
    CIPHERS_PATTERN,
    EngineSpec,
    ListenerSpec,
    ListenerTLSSpec,
    MemberSpec,
    PoolSpec,
    PoolTLSSpec,
    TLSVersion,
    expand_expected_codes,
)

TEMPLATES = Path(__file__).parent / "templates"
EMPTY_SERVER_STATE = "1\n"  # a server-state file HAProxy reads without a warning
PING_CHECK = "ping-check"
HAPROXY_MAX_TIMER_MS = 2**31 - 1
HAPROXY_MAX_MAXCONN = 1_000_000
DEFAULT_TIMEOUT_CLIENT_DATA = 50000
DEFAULT_TIMEOUT_MEMBER_CONNECT = 5000
DEFAULT_TIMEOUT_MEMBER_DATA = 50000
PEERS = "quadriga"  # the peers section of an ACTIVE_STANDBY engine
PEERS_PORT = 1025  # where the two engines of a pair exchange stick-table entries (Octavia's port)

MODE = {"HTTP": "http", "HTTPS": "tcp", "TCP": "tcp", "PROMETHEUS": "http", "TERMINATED_HTTPS": "http"}
BALANCE = {
    "ROUND_ROBIN": "roundrobin",
    "LEAST_CONNECTIONS": "leastconn",
    "SOURCE_IP": "source",
    "SOURCE_IP_PORT": "hash src,concat(:,txn.src_port)",
}
MATCH = {"REGEX": "reg", "STARTS_WITH": "beg", "ENDS_WITH": "end", "CONTAINS": "sub", "EQUAL_TO": "str"}
INSERT_HEADER_VALUE = {
    "X-Forwarded-Port": "%[dst_port]",
    "X-Forwarded-Proto": "http",
    "X-Forwarded-IP": "%[src]",
    "X-Client-IP": "%[src]",
    "X-Real-IP": "%[src]",
    # As Octavia renders them: the client certificate as HAProxy saw it (verify result 0 is a good one).
    "X-SSL-Client-Verify": "%[ssl_c_verify]",
    "X-SSL-Client-Has-Cert": "%[ssl_c_used]",
    "X-SSL-Client-DN": "%{+Q}[ssl_c_s_dn]",
    "X-SSL-Client-CN": "%{+Q}[ssl_c_s_dn(cn)]",
    "X-SSL-Issuer": "%{+Q}[ssl_c_i_dn]",
    "X-SSL-Client-SHA1": "%{+Q}[ssl_c_sha1,hex]",
    "X-SSL-Client-Not-Before": "%{+Q}[ssl_c_notbefore]",
    "X-SSL-Client-Not-After": "%{+Q}[ssl_c_notafter]",
}
# The flag that turns each version off (every version not asked for is turned off).
NO_VERSION: dict[TLSVersion, str] = {
    "SSLv3": "no-sslv3",
    "TLSv1": "no-tlsv10",
    "TLSv1.1": "no-tlsv11",
    "TLSv1.2": "no-tlsv12",
    "TLSv1.3": "no-tlsv13",
}
VERIFY = {"NONE": "none", "OPTIONAL": "optional", "MANDATORY": "required"}
# ssl_c_s_dn(<field>) matches OpenSSL's short names: the e-mail field is emailAddress ("EMAIL" matches nothing).
DN_FIELD_NAMES = {"EMAIL": "emailAddress", "E": "emailAddress"}
# What the engine's OpenSSL (3.x, Debian's MinProtocol TLSv1.2) negotiates: a version list without one of
# these leaves HAProxy with no version at all, which it refuses.
SERVED_TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


class RenderError(ValueError):
    """The spec asks for something this HAProxy cannot do."""


@dataclass(frozen=True)
class EnginePaths:
    """Where the engine's runtime files live (absolute paths on the engine's host)."""

    runtime_socket: Path  # HAProxy's runtime API (stats socket, level admin)
    server_state_file: Path  # saved with `show servers state` before a reload, read at start
    extra_dir: Path  # files the config refers to: see `support_files`

    @classmethod
    def under(cls, directory: Path) -> EnginePaths:
        directory = Path(directory)
        return cls(directory / "haproxy.sock", directory / "server-state", directory / "files")


def fd_limited_maxconn() -> int:
    """The largest global maxconn this process's file descriptor limit allows HAProxy to start with
    (HAProxy needs about two descriptors a connection and refuses to start when it cannot get them)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return HAPROXY_MAX_MAXCONN
    return max(100, min(HAPROXY_MAX_MAXCONN, (hard - 1000) // 2))


@dataclass(frozen=True)
class RenderOptions:
    nbthread: int = 1
    max_connections: int = field(default_factory=fd_limited_maxconn)  # cap of the global maxconn
    default_connection_limit: int = 50000  # a listener's connection_limit -1 (as Octavia)
    stick_table_size: int = 10240
    log: Literal["none", "stdout"] = "none"
    hard_stop_after_s: int | None = 120  # how long an old worker may keep connections after a reload
    prometheus_exporter: bool = True  # this HAProxy has the prometheus-exporter service (`haproxy -vv`)


# --- escaping --------------------------------------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z0-9_./:@,()+=?&%~*-]+\Z")
_BARE_ARG = re.compile(r"^[A-Za-z0-9_.-]+\Z")


def quote(value: str) -> str:
    """`value` as exactly one word of an HAProxy config line, whatever characters it holds."""
    if _BARE.match(value):
        return value
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == "\x00" or 0xD800 <= code <= 0xDFFF:
            raise RenderError("NUL and lone surrogates cannot appear in an HAProxy config")
        if ch in '"\\$':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code > 0x7E:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def fetch_arg(value: str) -> str:
    """`value` as one argument inside `fetch(...)`: HAProxy's second quoting level. The result still
    goes through `quote` as part of its word."""
    if _BARE_ARG.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def log_format_literal(value: str) -> str:
    """`value` where HAProxy reads a log-format string: a literal '%' is '%%'."""
    return value.replace("%", "%%")


def _url_path(value: str) -> str:
    # An HTTP request line cannot hold spaces or control characters: percent-encode what it cannot carry.
    return "".join(ch if 0x21 <= ord(ch) <= 0x7E else "".join(f"%{b:02X}" for b in ch.encode()) for ch in value)


def _host(ip: str) -> str:
    # HAProxy reads the last ':' of an address as the start of its port: IPv6 goes in brackets.
    return f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip


def _address(ip: str, port: int) -> str:
    return f"{_host(ip)}:{port}"


def _seconds(value: int) -> str:
    return f"{max(1, min(value, HAPROXY_MAX_TIMER_MS // 1000))}s"


def _ms(value: int, default: int) -> int:
    return min(value or default, HAPROXY_MAX_TIMER_MS)


# --- naming ----------------------------------------------------------------------------------------


def backend_name(pool_id: str, listener_id: str) -> str:
    return f"{pool_id}:{listener_id}"


def _acl_name(rule_id: str) -> str:
    # Prefixed so an id can never collide with one of HAProxy's predefined ACLs (TRUE, HTTP, ...).
    return f"rule-{rule_id}"


def _active_policies(listener: ListenerSpec, spec: EngineSpec) -> list[tuple[Any, list[Any]]]:
    """The L7 policies that take effect, in evaluation order, each with its enabled rules."""
    pools = {p.id: p for p in spec.pools}
    active = []
    for policy in sorted(listener.l7policies, key=lambda p: p.position):
        rules = [r for r in policy.rules if r.admin_state_up]
        if not policy.admin_state_up or not rules:
            continue
        if policy.action == "REDIRECT_TO_POOL":
            pool = pools.get(policy.redirect_pool_id or "")
            if pool is None or not pool.admin_state_up:
                continue
        active.append((policy, rules))
    return active


def _listener_pools(listener: ListenerSpec, spec: EngineSpec) -> list[str]:
    ids = [listener.default_pool_id] if listener.default_pool_id else []
    ids += [p.redirect_pool_id for p, _ in _active_policies(listener, spec) if p.action == "REDIRECT_TO_POOL"]
    return list(dict.fromkeys(i for i in ids if i))


def backends_of_pool(spec: EngineSpec, pool_id: str) -> list[str]:
    """The names of the HAProxy backends that carry `pool_id` (one per listener that reaches it)."""
    spec = haproxy_part(spec)
    return [backend_name(pool_id, li.id) for li in spec.listeners if pool_id in _listener_pools(li, spec)]


def haproxy_part(spec: EngineSpec) -> EngineSpec:
    """What HAProxy serves of `spec`: UDP listeners (and so the pools only they reach) are the UDP proxy's
    (`quadriga.engine.udp`)."""
    listeners = tuple(li for li in spec.listeners if li.protocol != "UDP")
    return spec if len(listeners) == len(spec.listeners) else spec.model_copy(update={"listeners": listeners})


# --- servers ---------------------------------------------------------------------------------------


def server_params(pool: PoolSpec, member: MemberSpec, *, extra_dir: Path, listener_protocol: str = "HTTP") -> list[str]:
    """The options after `server <name> <address>` for `member`: the same words serve the config and
    the runtime API's `add server`. `extra_dir` holds the TLS files (EnginePaths.extra_dir)."""
    params = [f"weight {member.weight}"]
    hm = pool.health_monitor
    if hm is not None and hm.admin_state_up:
        params.append(f"check inter {_seconds(hm.delay)} fall {hm.max_retries_down} rise {hm.max_retries}")
        if hm.type != "PING":
            if member.monitor_address:
                params.append(f"addr {_host(member.monitor_address)}")
            if member.monitor_port:
                params.append(f"port {member.monitor_port}")
        if hm.type == "HTTPS":
            # A TLS pool's checks are verified as its traffic is; others take any certificate (as Octavia).
            params.append("check-ssl" if pool.tls is not None else "check-ssl verify none")
            if hm.domain_name:
                params.append(f"check-sni {hm.domain_name}")
    sp = pool.session_persistence
    if sp is not None and sp.type == "HTTP_COOKIE" and _backend_mode(pool, listener_protocol) == "http":
        params.append(f"cookie {member.id}")
    if pool.protocol == "PROXY":
        params.append("send-proxy")
    elif pool.protocol == "PROXYV2":
        params.append("send-proxy-v2")
    if pool.tls is not None:
        params += _server_tls(pool.id, pool.tls, extra_dir, listener_protocol)
    if member.backup:
        params.append("backup")
    if not (member.admin_state_up and pool.admin_state_up):
        params.append("disabled")
    return params


def _server_tls(pool_id: str, tls: PoolTLSSpec, extra_dir: Path, listener_protocol: str) -> list[str]:
    params = ["ssl"]
    if tls.ca is not None:
        params.append(f"verify required ca-file {_file(extra_dir, tls.ca)}")
        if tls.crl is not None:
            params.append(f"crl-file {_file(extra_dir, tls.crl)}")
    else:
        params.append("verify none")
    if tls.certificate is not None:
        params.append(f"crt {_file(extra_dir, tls.certificate)}")
    if listener_protocol == "TERMINATED_HTTPS":
        params.append("sni ssl_fc_sni")
    return params + _tls_options(tls, f"Pool {pool_id}")


def tls_options_error(versions: Sequence[str], ciphers: str | None) -> str | None:
    """Why HAProxy could not serve these tls_versions and tls_ciphers (None: it can). The API asks before it
    stores them, as `haproxy -c` refuses a cipher list OpenSSL selects nothing from and a version list
    without a version OpenSSL negotiates leaves every handshake failing."""
    if versions and not set(versions) & set(SERVED_TLS_VERSIONS):
        return (
            f"tls_versions {', '.join(versions)} holds none of the versions this engine's OpenSSL negotiates "
            f"({', '.join(SERVED_TLS_VERSIONS)})."
        )
    if ciphers:
        if not re.fullmatch(CIPHERS_PATTERN, ciphers):
            return "tls_ciphers is an OpenSSL cipher list: letters, digits and the characters _:+!@=.- only."
        try:  # the engine's OpenSSL, as HAProxy calls it (TLS 1.2 suites; TLS 1.3 ones are not set here)
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
        except ssl.SSLError:
            return f"OpenSSL selects no cipher from tls_ciphers {ciphers!r}: use OpenSSL cipher names."
    return None


def _tls_options(tls: ListenerTLSSpec | PoolTLSSpec, owner: str) -> list[str]:
    if error := tls_options_error(tls.versions, tls.ciphers):
        raise RenderError(f"{owner}: {error}")
    options = [flag for version, flag in NO_VERSION.items() if version not in tls.versions]
    if tls.ciphers:
        options.append(f"ciphers {quote(tls.ciphers)}")
    if tls.alpn_protocols:
        options.append(f"alpn {quote(','.join(tls.alpn_protocols))}")
    return options


def certificate_path(extra_dir: Path, cert_id: str) -> Path:
    """Where the file of a CertificateSpec lives: named by its content digest, so a config that is
    rejected never changes a file the running config reads."""
    return extra_dir / cert_id


def _file(extra_dir: Path, cert_id: str) -> str:
    return quote(str(certificate_path(extra_dir, cert_id)))


def _bind_tls(listener_id: str, tls: ListenerTLSSpec, extra_dir: Path) -> str:
    # The first certificate is the one served when no certificate's names match the client's SNI.
    certificates = dict.fromkeys((tls.default_certificate, *tls.sni_certificates))
    words = ["ssl"] + [f"crt {_file(extra_dir, cert_id)}" for cert_id in certificates]
    if tls.client_ca is not None:
        words.append(f"verify {VERIFY[tls.client_authentication]} ca-file {_file(extra_dir, tls.client_ca)}")
        if tls.client_crl is not None:
            words.append(f"crl-file {_file(extra_dir, tls.client_crl)}")
    return " ".join(words + _tls_options(tls, f"Listener {listener_id}"))


def _hsts(tls: ListenerTLSSpec) -> str | None:
    """The Strict-Transport-Security value, in Octavia's format."""
    if tls.hsts_max_age is None:
        return None
    value = f"max-age={tls.hsts_max_age};"
    if tls.hsts_include_subdomains:
        value += " includeSubDomains;"
    if tls.hsts_preload:
        value += " preload;"
    return quote(value)


def _backend_mode(pool: PoolSpec, listener_protocol: str) -> str:
    if pool.protocol in ("PROXY", "PROXYV2"):
        return MODE[listener_protocol]
    return "http" if pool.protocol == "HTTP" else "tcp"


# --- the view the templates lay out ----------------------------------------------------------------


def _frontend(
    listener: ListenerSpec, spec: EngineSpec, options: RenderOptions, maxconn: int, paths: EnginePaths
) -> dict[str, Any]:
    mode = MODE[listener.protocol]
    if listener.protocol == "PROMETHEUS" and not options.prometheus_exporter:
        raise RenderError(
            f"Listener {listener.id} is a PROMETHEUS listener, but this HAProxy has no prometheus-exporter "
            "service (see `haproxy -vv`)."
        )
    acls: list[dict[str, Any]] = []
    policies: list[dict[str, Any]] = []
    pool_chosen = False
    for policy, rules in _active_policies(listener, spec):
        for rule in rules:
            acls.append(_acl(rule))
        condition = (["!l7-pool-chosen"] if pool_chosen else []) + [
            ("!" if r.invert else "") + _acl_name(r.id) for r in rules
        ]
        entry: dict[str, Any] = {"id": policy.id, "action": policy.action, "condition": " ".join(condition)}
        if policy.action == "REDIRECT_TO_POOL":
            entry["backend"] = backend_name(policy.redirect_pool_id, listener.id)
            pool_chosen = True
        elif policy.action == "REDIRECT_TO_URL":
            entry["target"] = quote(log_format_literal(policy.redirect_url))
        elif policy.action == "REDIRECT_PREFIX":
            entry["target"] = quote(log_format_literal(policy.redirect_prefix))
        entry["code"] = policy.redirect_http_code or 302
        policies.append(entry)
    pool_backends = list(dict.fromkeys(p["backend"] for p in policies if "backend" in p))
    limit = listener.connection_limit if listener.connection_limit > 0 else options.default_connection_limit
    tls = listener.tls
    bind_tls = f" {_bind_tls(listener.id, tls, paths.extra_dir)}" if tls is not None else ""
    headers = {h: INSERT_HEADER_VALUE[h] for h in listener.insert_headers if h in INSERT_HEADER_VALUE}
    if tls is not None and "X-Forwarded-Proto" in headers:
        headers["X-Forwarded-Proto"] = "https"
    return {
        "name": listener.id,
        "protocol": listener.protocol,
        "mode": mode,
        "disabled": not (listener.admin_state_up and spec.admin_state_up),
        "binds": [_address(vip, listener.protocol_port) + bind_tls for vip in spec.vips],
        "maxconn": min(limit, maxconn),
        "timeout_client": _ms(listener.timeout_client_data, DEFAULT_TIMEOUT_CLIENT_DATA),
        "inspect_delay": min(listener.timeout_tcp_inspect, HAPROXY_MAX_TIMER_MS),
        "allowed_cidrs": list(listener.allowed_cidrs),
        "acls": acls,
        "policies": policies,
        "pool_chosen_acl": bool(pool_backends),
        "pool_backends": pool_backends,
        "forwardfor": "X-Forwarded-For" in listener.insert_headers,
        "set_headers": list(headers.items()),
        "hsts": _hsts(tls) if tls is not None else None,
        "default_backend": backend_name(listener.default_pool_id, listener.id) if listener.default_pool_id else None,
    }


def _acl(rule: Any) -> dict[str, Any]:
    flags = []
    if rule.type == "HOST_NAME":
        fetch = "req.hdr(host)"
        flags.append("-i")
    elif rule.type == "PATH":
        fetch = "path"
    elif rule.type == "FILE_TYPE":
        fetch = "path_end"
    elif rule.type == "HEADER":
        fetch = f"req.hdr({fetch_arg(rule.key)})"
    elif rule.type == "SSL_CONN_HAS_CERT":  # a boolean fetch: no pattern, as Octavia
        return {"name": _acl_name(rule.id), "fetch": "ssl_c_used", "flags": "", "value": None}
    elif rule.type == "SSL_VERIFY_RESULT":  # an integer (the spec checks the value is one)
        return {"name": _acl_name(rule.id), "fetch": "ssl_c_verify", "flags": "-m int", "value": rule.value}
    elif rule.type == "SSL_DN_FIELD":
        fetch = f"ssl_c_s_dn({fetch_arg(DN_FIELD_NAMES.get(rule.key.upper(), rule.key))})"
    else:  # COOKIE
        fetch = f"req.cook({fetch_arg(rule.key)})"
    # path_end already matches the end of the path; `-m str` would turn it into an exact match.
    if not (rule.type == "FILE_TYPE" and rule.compare_type == "EQUAL_TO"):
        flags.append(f"-m {MATCH[rule.compare_type]}")
    return {"name": _acl_name(rule.id), "fetch": quote(fetch), "flags": " ".join(flags), "value": quote(rule.value)}


def _backend(
    pool: PoolSpec, listener: ListenerSpec, spec: EngineSpec, options: RenderOptions, paths: EnginePaths
) -> dict[str, Any]:
    mode = _backend_mode(pool, listener.protocol)
    persistence: list[str] = []
    sp = pool.session_persistence
    shared = f" peers {PEERS}" if spec.ha is not None else ""
    if sp is not None:
        if sp.type == "SOURCE_IP":
            persistence = [f"stick-table type ipv6 size {options.stick_table_size}{shared}", "stick on src"]
        elif mode != "http":
            persistence = [f"# {sp.type} session persistence needs HTTP: not applied to a {mode}-mode backend"]
        elif sp.type == "HTTP_COOKIE":
            persistence = ["cookie SRV insert indirect nocache"]
        else:  # APP_COOKIE
            name = fetch_arg(sp.cookie_name or "")
            persistence = [
                f"stick-table type string len 64 size {options.stick_table_size}{shared}",
                f"stick store-response {quote(f'res.cook({name})')}",
                f"stick match {quote(f'req.cook({name})')}",
            ]
    return {
        "name": backend_name(pool.id, listener.id),
        "mode": mode,
        "balance": BALANCE[pool.lb_algorithm],
        "hash_consistent": pool.lb_algorithm in ("SOURCE_IP", "SOURCE_IP_PORT"),
        "src_port_var": pool.lb_algorithm == "SOURCE_IP_PORT",
        "persistence": persistence,
        "timeout_connect": _ms(listener.timeout_member_connect, DEFAULT_TIMEOUT_MEMBER_CONNECT),
        "timeout_server": _ms(listener.timeout_member_data, DEFAULT_TIMEOUT_MEMBER_DATA),
        "monitor": _monitor(pool, spec, paths),
        "servers": [
            {
                "name": m.id,
                "address": _address(m.address, m.protocol_port),
                "params": " ".join(
                    server_params(pool, m, extra_dir=paths.extra_dir, listener_protocol=listener.protocol)
                ),
            }
            for m in pool.members
        ],
    }


def _monitor(pool: PoolSpec, spec: EngineSpec, paths: EnginePaths) -> dict[str, Any] | None:
    hm = pool.health_monitor
    if hm is None or not hm.admin_state_up:
        return None
    view: dict[str, Any] = {"type": hm.type, "timeout": _seconds(hm.timeout) if hm.timeout > 0 else None}
    if hm.type in ("HTTP", "HTTPS"):
        send = f"meth {hm.http_method or 'GET'} uri {quote(_url_path(hm.url_path or '/'))}"
        if hm.http_version is not None:
            send += f" ver HTTP/{hm.http_version:.1f}"
        if hm.domain_name:
            send += f" hdr Host {quote(log_format_literal(hm.domain_name))}"
        codes = expand_expected_codes(hm.expected_codes or "200")
        if len(codes) == 1:
            expect = f"status {codes[0]}"
        else:
            expect = "rstatus " + quote("^(" + "|".join(str(code) for code in codes) + ")$")
        view.update(send=send, expect=expect)
    elif hm.type == "PING":
        view["command"] = quote(str(ping_check_path(spec, paths)))
    return view


def _uses_ping(spec: EngineSpec) -> bool:
    reached = {p for li in spec.listeners for p in _listener_pools(li, spec)}
    return any(
        p.health_monitor is not None and p.health_monitor.admin_state_up and p.health_monitor.type == "PING"
        for p in spec.pools
        if p.id in reached
    )


def _view(spec: EngineSpec, paths: EnginePaths, options: RenderOptions) -> dict[str, Any]:
    limits = [
        li.connection_limit if li.connection_limit > 0 else options.default_connection_limit
        for li in spec.listeners
        if li.admin_state_up and spec.admin_state_up
    ]
    # Headroom for the runtime API's own connections.
    maxconn = max(1, min(options.max_connections, sum(limits) + 100))
    pools = {p.id: p for p in spec.pools}
    frontends = [_frontend(li, spec, options, maxconn, paths) for li in spec.listeners]
    backends = [
        _backend(pools[pool_id], li, spec, options, paths)
        for li in spec.listeners
        for pool_id in _listener_pools(li, spec)
    ]
    return {
        "spec": spec,
        "log": options.log == "stdout",
        "maxconn": maxconn,
        "nbthread": options.nbthread,
        "hard_stop_after": options.hard_stop_after_s,
        "runtime_socket": quote(str(paths.runtime_socket)),
        "server_state_file": quote(str(paths.server_state_file)),
        "external_check": _uses_ping(spec),
        "frontends": frontends,
        "backends": backends,
        "peers": _peers(spec),
    }


def _peers(spec: EngineSpec) -> dict[str, Any] | None:
    if spec.ha is None:
        return None
    ha = spec.ha
    members = sorted([(ha.name, ha.address), (ha.peer_name, ha.peer_address)])
    return {
        "section": PEERS,
        "local": ha.name,
        "members": [{"name": name, "address": _address(address, PEERS_PORT)} for name, address in members],
    }


JINJA = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=False,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def render(spec: EngineSpec, paths: EnginePaths, options: RenderOptions | None = None) -> str:
    """The haproxy.cfg that makes an engine serve `spec`."""
    if options is None:
        options = RenderOptions()
    if options.nbthread < 1:
        raise RenderError("nbthread must be at least 1")
    return JINJA.get_template("haproxy.cfg.j2").render(_view(haproxy_part(spec), paths, options))


# --- support files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SupportFile:
    content: str
    mode: int = 0o600
    overwrite: bool = True  # False: only written when missing (the server-state file belongs to HAProxy)


def support_files(spec: EngineSpec, paths: EnginePaths) -> dict[Path, SupportFile]:
    """Files the rendered config refers to, by absolute path."""
    spec = haproxy_part(spec)
    files = {paths.server_state_file: SupportFile(EMPTY_SERVER_STATE, overwrite=False)}
    if _uses_ping(spec):
        files[ping_check_path(spec, paths)] = SupportFile(_ping_script(spec), mode=0o700)
    for cert in spec.certificates:  # private keys among them: 0600
        files[certificate_path(paths.extra_dir, cert.id)] = SupportFile(cert.pem)
    return files


def ping_check_path(spec: EngineSpec, paths: EnginePaths) -> Path:
    """The PING check script's path, named after its content: writing the script for a config that is then
    rejected never changes what the running config executes."""
    digest = hashlib.sha256(_ping_script(spec).encode()).hexdigest()[:12]
    return paths.extra_dir / f"{PING_CHECK}-{digest}"


def prune_support_files(spec: EngineSpec, paths: EnginePaths) -> None:
    """Remove support files the config now running (`spec`'s) no longer refers to."""
    keep = set(support_files(spec, paths))
    if paths.extra_dir.is_dir():
        for path in paths.extra_dir.iterdir():
            if path not in keep:
                path.unlink(missing_ok=True)


def write_support_files(spec: EngineSpec, paths: EnginePaths) -> None:
    for path, f in support_files(spec, paths).items():
        if path.exists() and not f.overwrite:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f.content)
        tmp.chmod(f.mode)
        tmp.replace(path)


def _ping_script(spec: EngineSpec) -> str:
    # HAProxy passes the server's own address; members with a monitor_address are pinged there instead.
    targets = []
    for li in spec.listeners:
        for pool_id in _listener_pools(li, spec):
            pool = spec.pool(pool_id)
            if pool.health_monitor is None or pool.health_monitor.type != "PING":
                continue
            for m in pool.members:
                if m.monitor_address:
                    key = f"{backend_name(pool_id, li.id)}/{m.id}"
                    targets.append((shlex.quote(key), shlex.quote(m.monitor_address)))
    return JINJA.get_template("ping-check.sh.j2").render(targets=targets)
