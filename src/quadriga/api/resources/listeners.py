"""Listeners: `/v2/lbaas/listeners`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response
from sqlalchemy.orm import Session, selectinload

from quadriga import constants as c
from quadriga import status
from quadriga.api import common, listing, policy, schemas, tls_refs, validation, views
from quadriga.api.auth import RequestContext
from quadriga.api.errors import Conflict, Validation
from quadriga.api.resources.l7 import build_policy
from quadriga.db import models as m

router = APIRouter()

SPEC = listing.ListSpec(
    model=m.Listener,
    plural="listeners",
    render=views.listener,
    columns=listing.common_columns(
        m.Listener,
        "name",
        "description",
        "protocol",
        "protocol_port",
        "connection_limit",
        "default_pool_id",
        "default_tls_container_ref",
        "timeout_client_data",
        "timeout_member_connect",
        "timeout_member_data",
        "timeout_tcp_inspect",
        "client_authentication",
        "client_ca_tls_container_ref",
        "client_crl_container_ref",
        "tls_ciphers",
        "hsts_max_age",
        "hsts_include_subdomains",
        "hsts_preload",
        "load_balancer_id",
        loadbalancer_id="load_balancer_id",
    ),
    options=(selectinload(m.Listener.l7policies),),
)

# What a PUT of `null` resets each field to.
DEFAULTS: dict[str, Any] = {
    "admin_state_up": True,
    "connection_limit": -1,
    "sni_container_refs": [],
    "insert_headers": {},
    "timeout_client_data": 50000,
    "timeout_member_connect": 5000,
    "timeout_member_data": 50000,
    "timeout_tcp_inspect": 0,
    "client_authentication": "NONE",
    "hsts_include_subdomains": False,
    "hsts_preload": False,
}
TLS_DEFAULTS: dict[str, Any] = {
    "tls_versions": c.DEFAULT_TLS_VERSIONS,
    "alpn_protocols": c.DEFAULT_ALPN_PROTOCOLS,
}


def _vips(lb: m.LoadBalancer) -> list[str]:
    return [lb.vip_address or "", *[v.get("ip_address") or "" for v in lb.additional_vips or []]]


def _check_port_free(lb: m.LoadBalancer, protocol: str, port: int, listener_id: str | None = None) -> None:
    for other in lb.listeners:
        if other.id == listener_id:
            continue
        if other.protocol_port == port and c.L4_PROTOCOL[other.protocol] == c.L4_PROTOCOL[protocol]:
            raise Conflict(
                f"Another Listener on this Load Balancer is already using protocol {protocol} and protocol_port {port}"
            )


def _check_default_pool(session: Session, lb: m.LoadBalancer, protocol: str, pool_id: str | None) -> None:
    if not pool_id:
        return
    pool = session.get(m.Pool, pool_id)
    if pool is None or pool.load_balancer_id != lb.id:
        raise Validation(f"Pool {pool_id} not found on Load Balancer {lb.id}.")
    validation.listener_pool_compatible(protocol, pool.protocol)


def build_listener(
    session: Session,
    lb: m.LoadBalancer,
    project_id: str,
    fields: dict[str, Any],
    pool_ids_by_name: dict[str, str] | None = None,
) -> m.Listener:
    """Create a listener row with its L7 policies. In a graph create, pools are referenced by name."""
    policies = fields.pop("l7policies", None) or []
    fields.pop("default_pool", None)
    tags = fields.pop("tags", None) or []
    for key in ("project_id", "tenant_id", "loadbalancer_id"):
        fields.pop(key, None)
    fields = {k: v for k, v in fields.items() if v is not None}
    for key, default in DEFAULTS.items():
        fields.setdefault(key, default)
    if fields["protocol"] in c.TLS_LISTENER_PROTOCOLS:
        for key, default in TLS_DEFAULTS.items():
            fields.setdefault(key, list(default))
    _check_port_free(lb, fields["protocol"], fields["protocol_port"])
    _check_default_pool(session, lb, fields["protocol"], fields.get("default_pool_id"))
    validation.listener(fields, _vips(lb))
    listener = m.Listener(
        load_balancer=lb,
        project_id=project_id,
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
        **fields,
    )
    session.add(listener)
    session.flush()
    common.add_tags(session, listener.id, tags)
    for pol in policies:
        pool_name = (pol.get("redirect_pool") or {}).get("name")
        if pool_name and pool_ids_by_name is not None:
            pol["redirect_pool_id"] = pool_ids_by_name[pool_name]
        build_policy(session, listener, project_id, pol)
    return listener


def _for_change(session: Session, listener_id: str, ctx: RequestContext) -> tuple[m.LoadBalancer, m.Listener]:
    listener = common.get_owned(session, m.Listener, listener_id, "Listener", ctx, policy.WRITE)
    lb = status.lock_loadbalancer(session, listener.load_balancer_id)
    return lb, listener


@router.get("/v2/lbaas/listeners")
def list_listeners(request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    return common.list_visible(request, ctx, SPEC)


@router.get("/v2/lbaas/listeners/{listener_id}")
def get_listener(listener_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    return common.show(request, ctx, m.Listener, listener_id, "Listener", "listener", views.listener)


@router.get("/v2/lbaas/listeners/{listener_id}/stats")
def listener_stats(listener_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    svc = common.services(request)
    with svc.db.read() as session:
        common.get_owned(session, m.Listener, listener_id, "Listener", ctx)
        return {"stats": views.statistics(session, m.ListenerStatistics.listener_id == listener_id)}


@router.post("/v2/lbaas/listeners", status_code=201)
def create_listener(
    request: Request, listener: schemas.ListenerCreate = Body(embed=True), ctx: RequestContext = Depends(common.context)
) -> dict:
    svc = common.services(request)
    if listener.default_pool is not None:
        raise Validation("default_pool is only accepted in a load balancer graph create; use default_pool_id.")
    fields = listener.model_dump(exclude_unset=True)
    tls_refs.check_listener(svc, ctx, (m.LoadBalancer, listener.loadbalancer_id, "Load Balancer"), fields)
    with common.change(svc) as session:
        common.get_owned(session, m.LoadBalancer, listener.loadbalancer_id, "Load Balancer", ctx, policy.WRITE)
        common.project_for_create(ctx, listener)
        lb = status.lock_loadbalancer(session, listener.loadbalancer_id)
        common.check_quota(svc, session, lb.project_id, "listener")
        policies = listener.l7policies or []
        common.check_quota(svc, session, lb.project_id, "l7policy", len(policies))
        common.check_quota(svc, session, lb.project_id, "l7rule", sum(len(p.rules or []) for p in policies))
        fields["l7policies"] = [p.model_dump(exclude_unset=True) for p in policies]
        row = build_listener(session, lb, lb.project_id, fields)
        status.mark_change(lb, "listener", row, "create")
        common.provider_of(svc, lb).listener_create(row)
        return common.rendered(session, "listener", views.listener, row)


@router.put("/v2/lbaas/listeners/{listener_id}")
def update_listener(
    listener_id: str,
    request: Request,
    listener: schemas.ListenerUpdate = Body(embed=True),
    ctx: RequestContext = Depends(common.context),
) -> dict:
    svc = common.services(request)
    changes = common.sent(listener)
    tls_refs.check_listener(svc, ctx, (m.Listener, listener_id, "Listener"), changes, update=True)
    with common.change(svc) as session:
        lb, row = _for_change(session, listener_id, ctx)
        old = common.snapshot(row)
        common.set_tags(session, row.id, changes.pop("tags", None))
        for key, value in list(changes.items()):
            if value is None:
                default = DEFAULTS.get(key)
                if row.protocol in c.TLS_LISTENER_PROTOCOLS and key in TLS_DEFAULTS:
                    default = TLS_DEFAULTS[key]
                changes[key] = list(default) if isinstance(default, list) else default
        merged = old | changes
        if "default_pool_id" in changes:
            _check_default_pool(session, lb, row.protocol, changes["default_pool_id"])
        validation.listener(merged, _vips(lb))
        for key, value in changes.items():
            setattr(row, key, value)
        status.mark_change(lb, "listener", row, "update")
        common.provider_of(svc, lb).listener_update(old, row)
        return common.rendered(session, "listener", views.listener, row)


@router.delete("/v2/lbaas/listeners/{listener_id}", status_code=204)
def delete_listener(listener_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> Response:
    svc = common.services(request)
    with common.change(svc) as session:
        lb, row = _for_change(session, listener_id, ctx)
        status.mark_change(lb, "listener", row, "delete")
        common.provider_of(svc, lb).listener_delete(row)
    return Response(status_code=204)
