"""From the database's object tree to an engine spec.

`spec_from_loadbalancer` reads one load balancer with its listeners, L7 policies and rules, pools,
members and health monitors, and returns the declarative config its engines should run. The spec is the
desired state *after* the change being applied, so every object in PENDING_DELETE is left out (and with
it whatever hangs below it); everything else is carried over as it is, admin-down objects included.

Features the engine cannot carry yet raise `UnsupportedFeature` with a sentence that says what and why,
instead of producing an engine that silently does something else.

TLS refs (a TERMINATED_HTTPS listener's certificates, client CA and CRL; a `tls_enabled` pool's client
certificate, CA and CRL) are resolved through `TLSMaterial` into PEM files carried in the spec itself
(`EngineSpec.certificates`), named by a digest of their content: the agent never talks to a key manager,
and a renewed certificate behind the same ref gives a new file name, hence a new config and a reload.
`TLSMaterial` raises `CertificateError` or `SecretNotFound` for content that cannot be served and
`KeyManagerUnavailable` when the key manager cannot be asked; they pass through to the caller."""

from __future__ import annotations

import hashlib
from typing import Literal

from sqlalchemy.orm import object_session

from quadriga import constants as c
from quadriga.certs.tls import TLSMaterial
from quadriga.db import models as m
from quadriga.engine import spec as s


class UnsupportedFeature(ValueError):
    """The load balancer uses something the HAProxy engine does not implement (yet)."""


# Why SCTP cannot be served: the engine's kernel refuses SCTP sockets (no sctp module), so neither HAProxy nor
# the UDP proxy's kind of user-space balancer can carry it.
SCTP_REFUSED = "is not supported: this host's kernel has no SCTP sockets (EPROTONOSUPPORT)"
_LATER = {"SCTP": SCTP_REFUSED}


def spec_from_loadbalancer(lb: m.LoadBalancer, tls: TLSMaterial | None = None) -> s.EngineSpec:
    """The whole declarative config of `lb`'s engines. Must be called inside the session that loaded
    `lb` (relationships are read lazily). `tls` resolves certificate refs; without it a load balancer
    that uses TLS is an UnsupportedFeature."""
    if lb.provisioning_status == c.PENDING_DELETE:
        # The load balancer itself is going away: its engines should serve nothing.
        return s.EngineSpec(
            revision=lb.revision, loadbalancer_id=lb.id, admin_state_up=False, vips=_vips(lb), subnets=_subnets(lb)
        )
    pools = [p for p in lb.pools if _alive(p)]
    pool_ids = {p.id for p in pools}
    files = _Files(tls)
    return s.EngineSpec(
        revision=lb.revision,
        loadbalancer_id=lb.id,
        admin_state_up=lb.admin_state_up,
        vips=_vips(lb),
        subnets=_subnets(lb),
        listeners=tuple(_listener(li, pool_ids, files) for li in lb.listeners if _alive(li)),
        pools=tuple(_pool(p, files) for p in pools),
        certificates=tuple(files.certificates.values()),
    )


def _alive(obj: object) -> bool:
    return getattr(obj, "provisioning_status", None) != c.PENDING_DELETE


def _vips(lb: m.LoadBalancer) -> tuple[str, ...]:
    vips = [lb.vip_address] if lb.vip_address else []
    for extra in lb.additional_vips or []:
        address = extra.get("ip_address") if isinstance(extra, dict) else None
        if address and address not in vips:
            vips.append(address)
    return tuple(vips)


def _subnets(lb: m.LoadBalancer) -> tuple[s.SubnetSpec, ...]:
    """The subnets of the VIPs (what a network driver plugs), read through the session that loaded `lb`."""
    session = object_session(lb)
    ids = [lb.vip_subnet_id] + [v.get("subnet_id") for v in lb.additional_vips or [] if isinstance(v, dict)]
    found = [session.get(m.Subnet, i) for i in dict.fromkeys(ids) if i] if session is not None else []
    return tuple(
        s.SubnetSpec(id=sn.id, network_id=sn.network_id, cidr=sn.cidr, gateway_ip=sn.gateway_ip)
        for sn in found
        if sn is not None
    )


Kind = Literal["certificate", "ca", "crl"]
_PREFIX: dict[Kind, str] = {"certificate": "crt", "ca": "ca", "crl": "crl"}


class _Files:
    """The TLS files of one spec: each ref resolved once, each distinct content kept once."""

    def __init__(self, tls: TLSMaterial | None) -> None:
        self.tls = tls
        self.certificates: dict[str, s.CertificateSpec] = {}
        self._by_ref: dict[tuple[str, Kind, str], str] = {}

    def add(self, owner: str, kind: Kind, ref: str, project_id: str) -> str:
        """The CertificateSpec id of `ref`'s content."""
        if self.tls is None:
            raise UnsupportedFeature(
                f"{owner} uses TLS ({ref}), but this controller has no key manager to read certificates from."
            )
        key = (ref, kind, project_id)
        if key not in self._by_ref:
            names: tuple[str, ...] = ()
            if kind == "certificate":
                bundle = self.tls.certificate(ref, project_id)
                pem, names = bundle.combined_pem(), bundle.names
            elif kind == "ca":
                pem = self.tls.ca_certificates(ref, project_id)
            else:
                pem = self.tls.crl(ref, project_id)
            cert_id = f"{_PREFIX[kind]}-{hashlib.sha256(pem.encode()).hexdigest()[:40]}"
            self.certificates.setdefault(cert_id, s.CertificateSpec(id=cert_id, kind=kind, pem=pem, names=names))
            self._by_ref[key] = cert_id
        return self._by_ref[key]

    def maybe(self, owner: str, kind: Kind, ref: str | None, project_id: str) -> str | None:
        return self.add(owner, kind, ref, project_id) if ref else None


def _listener_tls(li: m.Listener, files: _Files) -> s.ListenerTLSSpec:
    owner = f"Listener {li.id}"
    if not li.default_tls_container_ref:
        raise UnsupportedFeature(f"{owner}: a TERMINATED_HTTPS listener needs a default_tls_container_ref.")
    auth = li.client_authentication or "NONE"
    return s.ListenerTLSSpec(
        default_certificate=files.add(owner, "certificate", li.default_tls_container_ref, li.project_id),
        sni_certificates=tuple(
            dict.fromkeys(files.add(owner, "certificate", ref, li.project_id) for ref in li.sni_container_refs or ())
        ),
        client_authentication=auth,
        client_ca=files.maybe(owner, "ca", li.client_ca_tls_container_ref, li.project_id),
        client_crl=files.maybe(owner, "crl", li.client_crl_container_ref, li.project_id),
        hsts_max_age=li.hsts_max_age,
        hsts_include_subdomains=bool(li.hsts_include_subdomains),
        hsts_preload=bool(li.hsts_preload),
        **_tls_options(li),
    )


def _pool_tls(pool: m.Pool, files: _Files) -> s.PoolTLSSpec:
    owner = f"Pool {pool.id}"
    return s.PoolTLSSpec(
        certificate=files.maybe(owner, "certificate", pool.tls_container_ref, pool.project_id),
        ca=files.maybe(owner, "ca", pool.ca_tls_container_ref, pool.project_id),
        crl=files.maybe(owner, "crl", pool.crl_container_ref, pool.project_id),
        **_tls_options(pool),
    )


def _tls_options(obj: m.Listener | m.Pool) -> dict[str, object]:
    """tls_versions, tls_ciphers and alpn_protocols; unset ones take the spec's defaults."""
    options: dict[str, object] = {"ciphers": obj.tls_ciphers or None}
    if obj.tls_versions:
        options["versions"] = tuple(obj.tls_versions)
    if obj.alpn_protocols:
        options["alpn_protocols"] = tuple(obj.alpn_protocols)
    return options


def _listener(li: m.Listener, pool_ids: set[str], files: _Files) -> s.ListenerSpec:
    if li.protocol in _LATER:
        raise UnsupportedFeature(f"Listener {li.id}: protocol {li.protocol} {_LATER[li.protocol]}.")
    headers = []
    for name, value in sorted((li.insert_headers or {}).items()):
        if str(value).lower() != "true":
            continue
        if name not in s.INSERT_HEADERS:
            raise UnsupportedFeature(f"Listener {li.id}: insert_headers {name} is not supported by the engine.")
        headers.append(name)
    default_pool_id = li.default_pool_id if li.default_pool_id in pool_ids else None
    return s.ListenerSpec(
        id=li.id,
        protocol=li.protocol,
        protocol_port=li.protocol_port,
        admin_state_up=li.admin_state_up,
        connection_limit=li.connection_limit if li.connection_limit is not None else -1,
        timeout_client_data=_or(li.timeout_client_data, 50000),
        timeout_member_connect=_or(li.timeout_member_connect, 5000),
        timeout_member_data=_or(li.timeout_member_data, 50000),
        timeout_tcp_inspect=_or(li.timeout_tcp_inspect, 0),
        insert_headers=tuple(headers),
        allowed_cidrs=tuple(li.allowed_cidrs or ()),
        default_pool_id=default_pool_id,
        l7policies=tuple(_l7policy(p, pool_ids) for p in li.l7policies if _alive(p)),
        tls=_listener_tls(li, files) if li.protocol in c.TLS_LISTENER_PROTOCOLS else None,
    )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _l7policy(policy: m.L7Policy, pool_ids: set[str]) -> s.L7PolicySpec:
    # A redirect pool that is being deleted is dropped; the policy is then skipped by the renderer.
    redirect_pool_id = policy.redirect_pool_id if policy.redirect_pool_id in pool_ids else None
    return s.L7PolicySpec(
        id=policy.id,
        action=policy.action,
        position=policy.position,
        admin_state_up=policy.admin_state_up,
        redirect_pool_id=redirect_pool_id,
        # The API stored these normalized for the action (validation.normalize_l7policy_action).
        redirect_url=policy.redirect_url,
        redirect_prefix=policy.redirect_prefix,
        redirect_http_code=policy.redirect_http_code,
        rules=tuple(_l7rule(r) for r in policy.rules if _alive(r)),
    )


def _l7rule(rule: m.L7Rule) -> s.L7RuleSpec:
    if rule.type not in s.SUPPORTED_RULE_TYPES:
        raise UnsupportedFeature(f"L7 rule {rule.id}: type {rule.type} is not supported by the engine.")
    return s.L7RuleSpec(
        id=rule.id,
        type=rule.type,
        compare_type=rule.compare_type,
        key=rule.key or None,
        value=rule.value,
        invert=rule.invert,
        admin_state_up=rule.admin_state_up,
    )


def _pool(pool: m.Pool, files: _Files) -> s.PoolSpec:
    if pool.protocol not in s.SUPPORTED_POOL_PROTOCOLS:
        raise UnsupportedFeature(f"Pool {pool.id}: protocol {pool.protocol} {_LATER.get(pool.protocol, '')}.")
    persistence = None
    if pool.session_persistence and pool.session_persistence.get("type"):
        sp = pool.session_persistence
        persistence = s.SessionPersistenceSpec(
            type=sp["type"],
            cookie_name=sp.get("cookie_name") or None,
            persistence_timeout=sp.get("persistence_timeout"),
            persistence_granularity=sp.get("persistence_granularity") or None,
        )
    monitor = pool.health_monitor if pool.health_monitor is not None and _alive(pool.health_monitor) else None
    return s.PoolSpec(
        id=pool.id,
        protocol=pool.protocol,
        lb_algorithm=pool.lb_algorithm,
        admin_state_up=pool.admin_state_up,
        session_persistence=persistence,
        health_monitor=_monitor(monitor) if monitor is not None else None,
        members=tuple(_member(mb) for mb in pool.members if _alive(mb)),
        tls=_pool_tls(pool, files) if pool.tls_enabled else None,
    )


def _monitor(hm: m.HealthMonitor) -> s.HealthMonitorSpec:
    if hm.type not in s.SUPPORTED_MONITOR_TYPES:
        raise UnsupportedFeature(f"Health monitor {hm.id}: type {hm.type} is not supported by the engine.")
    return s.HealthMonitorSpec(
        type=hm.type,
        delay=hm.delay,
        timeout=hm.timeout,
        max_retries=hm.max_retries,
        max_retries_down=_or(hm.max_retries_down, 3),
        http_method=hm.http_method,
        url_path=hm.url_path,
        expected_codes=hm.expected_codes,
        http_version=hm.http_version,
        domain_name=hm.domain_name,
        admin_state_up=hm.admin_state_up,
    )


def _member(mb: m.Member) -> s.MemberSpec:
    return s.MemberSpec(
        id=mb.id,
        address=mb.address,
        protocol_port=mb.protocol_port,
        weight=_or(mb.weight, 1),
        backup=bool(mb.backup),
        admin_state_up=mb.admin_state_up,
        monitor_address=mb.monitor_address or None,
        monitor_port=mb.monitor_port,
    )
