"""From the database's object tree to an engine spec.

`spec_from_loadbalancer` reads one load balancer with its listeners, L7 policies and rules, pools,
members and health monitors, and returns the declarative config its engines should run. The spec is the
desired state *after* the change being applied, so every object in PENDING_DELETE is left out (and with
it whatever hangs below it); everything else is carried over as it is, admin-down objects included.

Features the engine cannot carry yet raise `UnsupportedFeature` with a sentence that says what and why,
instead of producing an engine that silently does something else."""

from __future__ import annotations

from sqlalchemy.orm import object_session

from quadriga import constants as c
from quadriga.db import models as m
from quadriga.engine import spec as s


class UnsupportedFeature(ValueError):
    """The load balancer uses something the HAProxy engine does not implement (yet)."""


_LATER = {
    "TERMINATED_HTTPS": "comes with TLS support",
    "UDP": "is not supported by the HAProxy engine yet",
    "SCTP": "is not supported by the HAProxy engine yet",
}


def spec_from_loadbalancer(lb: m.LoadBalancer) -> s.EngineSpec:
    """The whole declarative config of `lb`'s engines. Must be called inside the session that loaded
    `lb` (relationships are read lazily)."""
    if lb.provisioning_status == c.PENDING_DELETE:
        # The load balancer itself is going away: its engines should serve nothing.
        return s.EngineSpec(
            revision=lb.revision, loadbalancer_id=lb.id, admin_state_up=False, vips=_vips(lb), subnets=_subnets(lb)
        )
    pools = [p for p in lb.pools if _alive(p)]
    pool_ids = {p.id for p in pools}
    return s.EngineSpec(
        revision=lb.revision,
        loadbalancer_id=lb.id,
        admin_state_up=lb.admin_state_up,
        vips=_vips(lb),
        subnets=_subnets(lb),
        listeners=tuple(_listener(li, pool_ids) for li in lb.listeners if _alive(li)),
        pools=tuple(_pool(p) for p in pools),
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


def _listener(li: m.Listener, pool_ids: set[str]) -> s.ListenerSpec:
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
        raise UnsupportedFeature(f"L7 rule {rule.id}: type {rule.type} comes with TLS support.")
    return s.L7RuleSpec(
        id=rule.id,
        type=rule.type,
        compare_type=rule.compare_type,
        key=rule.key or None,
        value=rule.value,
        invert=rule.invert,
        admin_state_up=rule.admin_state_up,
    )


def _pool(pool: m.Pool) -> s.PoolSpec:
    if pool.protocol not in s.SUPPORTED_POOL_PROTOCOLS:
        raise UnsupportedFeature(f"Pool {pool.id}: protocol {pool.protocol} {_LATER.get(pool.protocol, '')}.")
    if pool.tls_enabled:
        raise UnsupportedFeature(f"Pool {pool.id}: TLS to members (tls_enabled) comes with TLS support.")
    persistence = None
    if pool.session_persistence and pool.session_persistence.get("type"):
        sp = pool.session_persistence
        persistence = s.SessionPersistenceSpec(type=sp["type"], cookie_name=sp.get("cookie_name") or None)
    monitor = pool.health_monitor if pool.health_monitor is not None and _alive(pool.health_monitor) else None
    return s.PoolSpec(
        id=pool.id,
        protocol=pool.protocol,
        lb_algorithm=pool.lb_algorithm,
        admin_state_up=pool.admin_state_up,
        session_persistence=persistence,
        health_monitor=_monitor(monitor) if monitor is not None else None,
        members=tuple(_member(mb) for mb in pool.members if _alive(mb)),
    )


def _monitor(hm: m.HealthMonitor) -> s.HealthMonitorSpec:
    if hm.type not in s.SUPPORTED_MONITOR_TYPES:
        raise UnsupportedFeature(f"Health monitor {hm.id}: type {hm.type} is not supported by the HAProxy engine.")
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
