"""How objects look on the wire: one function per resource, Octavia's field names and defaults.

Tags are stored apart from their objects; `load_tags` fetches them for a whole page in one query."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quadriga import constants as c
from quadriga.db import models as m

TagMap = dict[str, list[str]]


def load_tags(session: Session, ids: Iterable[str]) -> TagMap:
    ids = list(ids)
    tags: TagMap = defaultdict(list)
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(m.Tag.resource_id, m.Tag.tag).where(m.Tag.resource_id.in_(ids[start : start + 500]))
        )
        for rid, tag in rows:
            tags[rid].append(tag)
    for v in tags.values():
        v.sort()
    return tags


def ts(value: dt.datetime | None, zone: str = "") -> str | None:
    """A stored (naive UTC) time on the wire: Octavia writes no zone, Neutron a `Z`."""
    return value.strftime("%Y-%m-%dT%H:%M:%S") + zone if value else None


def _ids(objs: Iterable[Any]) -> list[dict[str, str]]:
    return [{"id": o.id} for o in objs]


def _common(obj: Any, tags: TagMap) -> dict[str, Any]:
    return {
        "id": obj.id,
        "project_id": obj.project_id,
        "tenant_id": obj.project_id,
        "provisioning_status": obj.provisioning_status,
        "operating_status": obj.operating_status,
        "admin_state_up": obj.admin_state_up,
        "created_at": ts(obj.created_at),
        "updated_at": ts(obj.updated_at),
        "tags": tags.get(obj.id, []),
    }


def _text(value: str | None) -> str:
    return value if value is not None else ""


def loadbalancer(lb: m.LoadBalancer, tags: TagMap) -> dict[str, Any]:
    return {
        **_common(lb, tags),
        "name": _text(lb.name),
        "description": _text(lb.description),
        "vip_address": lb.vip_address,
        "vip_port_id": lb.vip_port_id,
        "vip_subnet_id": lb.vip_subnet_id,
        "vip_network_id": lb.vip_network_id,
        "vip_qos_policy_id": lb.vip_qos_policy_id,
        "vip_sg_ids": lb.vip_sg_ids or [],
        "vip_vnic_type": lb.vip_vnic_type,
        "additional_vips": lb.additional_vips or [],
        "provider": lb.provider,
        "flavor_id": lb.flavor_id,
        "availability_zone": lb.availability_zone,
        "listeners": _ids(lb.listeners),
        "pools": _ids(lb.pools),
    }


def listener(li: m.Listener, tags: TagMap) -> dict[str, Any]:
    return {
        **_common(li, tags),
        "name": _text(li.name),
        "description": _text(li.description),
        "protocol": li.protocol,
        "protocol_port": li.protocol_port,
        "connection_limit": li.connection_limit,
        "default_tls_container_ref": li.default_tls_container_ref,
        "sni_container_refs": li.sni_container_refs or [],
        "default_pool_id": li.default_pool_id,
        "l7policies": _ids(li.l7policies),
        "insert_headers": li.insert_headers or {},
        "loadbalancers": [{"id": li.load_balancer_id}],
        "timeout_client_data": li.timeout_client_data,
        "timeout_member_connect": li.timeout_member_connect,
        "timeout_member_data": li.timeout_member_data,
        "timeout_tcp_inspect": li.timeout_tcp_inspect,
        "client_authentication": li.client_authentication,
        "client_ca_tls_container_ref": li.client_ca_tls_container_ref,
        "client_crl_container_ref": li.client_crl_container_ref,
        "allowed_cidrs": li.allowed_cidrs,
        "tls_ciphers": li.tls_ciphers,
        "tls_versions": li.tls_versions,
        "alpn_protocols": li.alpn_protocols,
        "hsts_max_age": li.hsts_max_age,
        "hsts_include_subdomains": li.hsts_include_subdomains,
        "hsts_preload": li.hsts_preload,
    }


SESSION_PERSISTENCE_KEYS = ("type", "cookie_name", "persistence_timeout", "persistence_granularity")


def pool(p: m.Pool, tags: TagMap) -> dict[str, Any]:
    """Octavia's pool: every session-persistence key (null when unset), no healthmonitor_id without a monitor."""
    sp = p.session_persistence
    view = {
        **_common(p, tags),
        "name": _text(p.name),
        "description": _text(p.description),
        "protocol": p.protocol,
        "lb_algorithm": p.lb_algorithm,
        "session_persistence": {k: sp.get(k) for k in SESSION_PERSISTENCE_KEYS} if sp else None,
        "loadbalancers": [{"id": p.load_balancer_id}],
        "listeners": _ids(p.listeners),
        "members": _ids(p.members),
        "healthmonitor_id": p.health_monitor.id if p.health_monitor else None,
        "tls_enabled": p.tls_enabled,
        "tls_container_ref": p.tls_container_ref,
        "ca_tls_container_ref": p.ca_tls_container_ref,
        "crl_container_ref": p.crl_container_ref,
        "tls_ciphers": p.tls_ciphers,
        "tls_versions": p.tls_versions,
        "alpn_protocols": p.alpn_protocols,
    }
    if view["healthmonitor_id"] is None:
        del view["healthmonitor_id"]
    return view


def member(mb: m.Member, tags: TagMap) -> dict[str, Any]:
    return {
        **_common(mb, tags),
        "name": _text(mb.name),
        "address": mb.address,
        "protocol_port": mb.protocol_port,
        "weight": mb.weight,
        "backup": mb.backup,
        "subnet_id": mb.subnet_id,
        "monitor_address": mb.monitor_address,
        "monitor_port": mb.monitor_port,
        "vnic_type": mb.vnic_type,
    }


def healthmonitor(hm: m.HealthMonitor, tags: TagMap) -> dict[str, Any]:
    return {
        **_common(hm, tags),
        "name": _text(hm.name),
        "type": hm.type,
        "delay": hm.delay,
        "timeout": hm.timeout,
        "max_retries": hm.max_retries,
        "max_retries_down": hm.max_retries_down,
        "http_method": hm.http_method,
        "url_path": hm.url_path,
        "expected_codes": hm.expected_codes,
        "http_version": hm.http_version,
        "domain_name": hm.domain_name,
        "pools": [{"id": hm.pool_id}],
    }


def l7policy(pol: m.L7Policy, tags: TagMap) -> dict[str, Any]:
    return {
        **_common(pol, tags),
        "name": _text(pol.name),
        "description": _text(pol.description),
        "action": pol.action,
        "listener_id": pol.listener_id,
        "redirect_pool_id": pol.redirect_pool_id,
        "redirect_url": pol.redirect_url,
        "redirect_prefix": pol.redirect_prefix,
        "redirect_http_code": pol.redirect_http_code,
        "position": pol.position,
        "rules": _ids(pol.rules),
    }


def l7rule(rule: m.L7Rule, tags: TagMap) -> dict[str, Any]:
    return {
        **_common(rule, tags),
        "type": rule.type,
        "compare_type": rule.compare_type,
        "key": rule.key,
        "value": rule.value,
        "invert": rule.invert,
    }


def full_pool(p: m.Pool, tags: TagMap) -> dict[str, Any]:
    """A pool with its members and health monitor inlined, as in a graph-create response."""
    out = pool(p, tags)
    out["members"] = [member(mb, tags) for mb in p.members]
    out["healthmonitor"] = healthmonitor(p.health_monitor, tags) if p.health_monitor else None
    return out


def full_loadbalancer(lb: m.LoadBalancer, tags: TagMap) -> dict[str, Any]:
    """The POST response of a load balancer: the whole tree created with it."""
    out = loadbalancer(lb, tags)
    out["pools"] = [full_pool(p, tags) for p in lb.pools]
    listeners = []
    for li in lb.listeners:
        d = listener(li, tags)
        d["l7policies"] = [
            {**l7policy(pol, tags), "rules": [l7rule(r, tags) for r in pol.rules]} for pol in li.l7policies
        ]
        listeners.append(d)
    out["listeners"] = listeners
    return out


def status_tree(lb: m.LoadBalancer) -> dict[str, Any]:
    """`GET /loadbalancers/{id}/status`: the operating and provisioning statuses of the whole tree."""

    def pool_status(p: m.Pool) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": p.id,
            "name": _text(p.name),
            "provisioning_status": p.provisioning_status,
            "operating_status": p.operating_status,
            "members": [
                {
                    "id": mb.id,
                    "name": _text(mb.name),
                    "address": mb.address,
                    "protocol_port": mb.protocol_port,
                    "provisioning_status": mb.provisioning_status,
                    "operating_status": mb.operating_status,
                }
                for mb in p.members
            ],
        }
        if p.health_monitor:
            hm = p.health_monitor
            d["health_monitor"] = {
                "id": hm.id,
                "name": _text(hm.name),
                "type": hm.type,
                "provisioning_status": hm.provisioning_status,
                "operating_status": hm.operating_status,
            }
        return d

    listeners = []
    for li in lb.listeners:
        pools = {p.id: p for p in [li.default_pool] if p}
        for pol in li.l7policies:
            if pol.redirect_pool:
                pools.setdefault(pol.redirect_pool.id, pol.redirect_pool)
        listeners.append(
            {
                "id": li.id,
                "name": _text(li.name),
                "provisioning_status": li.provisioning_status,
                "operating_status": li.operating_status,
                "pools": [pool_status(p) for p in pools.values()],
            }
        )
    tree: dict[str, Any] = {
        "id": lb.id,
        "name": _text(lb.name),
        "provisioning_status": lb.provisioning_status,
        "operating_status": lb.operating_status,
        "listeners": listeners,
    }
    if lb.status_reason:  # quadriga's addition, only when there is one: why the last change went to ERROR
        tree["status_reason"] = lb.status_reason
    return {"statuses": {"loadbalancer": tree}}


def quota(q: m.Quota | None, project_id: str, defaults: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {"project_id": project_id, "tenant_id": project_id}
    for api_key, (column, _label) in c.QUOTA_RESOURCES.items():
        value = getattr(q, column) if q is not None else None
        value = defaults[api_key] if value is None else value
        out[api_key] = value
    out["load_balancer"] = out["loadbalancer"]
    out["health_monitor"] = out["healthmonitor"]
    return out


def flavor(f: m.Flavor) -> dict[str, Any]:
    return {
        "id": f.id,
        "name": f.name,
        "description": _text(f.description),
        "enabled": f.enabled,
        "flavor_profile_id": f.flavor_profile_id,
    }


def flavorprofile(fp: m.FlavorProfile) -> dict[str, Any]:
    return {"id": fp.id, "name": fp.name, "provider_name": fp.provider_name, "flavor_data": fp.flavor_data}


def availability_zone(az: m.AvailabilityZone) -> dict[str, Any]:
    return {
        "name": az.name,
        "description": _text(az.description),
        "enabled": az.enabled,
        "availability_zone_profile_id": az.availability_zone_profile_id,
    }


def availability_zone_profile(p: m.AvailabilityZoneProfile) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "provider_name": p.provider_name,
        "availability_zone_data": p.availability_zone_data,
    }


def amphora(a: m.Amphora) -> dict[str, Any]:
    return {
        "id": a.id,
        "loadbalancer_id": a.load_balancer_id,
        "compute_id": a.compute_id,
        "lb_network_ip": a.lb_network_ip,
        "vrrp_ip": a.vrrp_ip,
        "ha_ip": a.ha_ip,
        "vrrp_port_id": a.vrrp_port_id,
        "ha_port_id": a.ha_port_id,
        "cert_expiration": ts(a.cert_expiration),
        "cert_busy": a.cert_busy,
        "role": a.role,
        "status": a.status,
        "vrrp_interface": a.vrrp_interface,
        "vrrp_id": a.vrrp_id,
        "vrrp_priority": a.vrrp_priority,
        "cached_zone": a.cached_zone,
        "image_id": a.image_id,
        "compute_flavor": a.compute_flavor,
        # not in Octavia's view: the agent the engine runs on (compute_id is the engine's id there)
        "agent": a.agent,
        # not in Octavia's view: why the engine is in ERROR, being failed over, or held by the breaker
        "status_reason": a.status_reason,
        "created_at": ts(a.created_at),
        "updated_at": ts(a.updated_at),
    }


STATS_FIELDS = ("bytes_in", "bytes_out", "active_connections", "total_connections", "request_errors")


def statistics(session: Session, where: Any) -> dict[str, int]:
    """Octavia's `stats` body: the listener statistics rows matching `where`, summed over engines."""
    cols = [func.coalesce(func.sum(getattr(m.ListenerStatistics, f)), 0) for f in STATS_FIELDS]
    row = session.execute(select(*cols).where(where)).one()
    return {f: int(v) for f, v in zip(STATS_FIELDS, row, strict=True)}


def amphora_statistics(session: Session, amp: m.Amphora) -> list[dict[str, Any]]:
    """Octavia's `amphora_stats`: one entry per listener the engine serves."""
    rows = session.scalars(select(m.ListenerStatistics).where(m.ListenerStatistics.amphora_id == amp.id)).all()
    return [
        {"id": amp.id, "loadbalancer_id": amp.load_balancer_id, "listener_id": r.listener_id}
        | {f: getattr(r, f) for f in STATS_FIELDS}
        for r in rows
    ]
