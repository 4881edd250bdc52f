"""Pools: `/v2/lbaas/pools`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from quadriga import constants as c
from quadriga import status
from quadriga.api import common, listing, policy, schemas, tls_refs, validation, views
from quadriga.api.auth import RequestContext
from quadriga.api.errors import Conflict, Validation
from quadriga.api.resources.healthmonitors import build_health_monitor
from quadriga.api.resources.members import build_member
from quadriga.db import models as m

router = APIRouter()

SPEC = listing.ListSpec(
    model=m.Pool,
    plural="pools",
    render=views.pool,
    columns=listing.common_columns(
        m.Pool,
        "name",
        "description",
        "protocol",
        "lb_algorithm",
        "tls_enabled",
        "tls_container_ref",
        "ca_tls_container_ref",
        "crl_container_ref",
        "tls_ciphers",
        "load_balancer_id",
        loadbalancer_id="load_balancer_id",
    ),
    options=(selectinload(m.Pool.members), selectinload(m.Pool.health_monitor), selectinload(m.Pool.listeners)),
)


def build_pool(session: Session, lb: m.LoadBalancer, project_id: str, fields: dict[str, Any]) -> m.Pool:
    """Create a pool row with its health monitor and members (a graph create brings them along)."""
    hm = fields.pop("healthmonitor", None)
    members = fields.pop("members", None) or []
    tags = fields.pop("tags", [])
    for key in ("project_id", "tenant_id", "listener_id", "loadbalancer_id"):
        fields.pop(key, None)
    validation.pool(fields)
    pool = m.Pool(
        load_balancer=lb,
        project_id=project_id,
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
        **fields,
    )
    session.add(pool)
    session.flush()
    common.add_tags(session, pool.id, tags)
    if hm:
        build_health_monitor(session, pool, project_id, hm)
    for member in members:
        build_member(session, pool, project_id, member)
    return pool


def _for_change(session: Session, pool_id: str, ctx: RequestContext) -> tuple[m.LoadBalancer, m.Pool]:
    pool = common.get_owned(session, m.Pool, pool_id, "Pool", ctx, policy.WRITE)
    lb = status.lock_loadbalancer(session, pool.load_balancer_id)
    return lb, pool


@router.get("/v2/lbaas/pools")
def list_pools(request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    return common.list_visible(request, ctx, SPEC)


@router.get("/v2/lbaas/pools/{pool_id}")
def get_pool(pool_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    return common.show(request, ctx, m.Pool, pool_id, "Pool", "pool", views.pool)


@router.post("/v2/lbaas/pools", status_code=201)
def create_pool(
    request: Request, pool: schemas.PoolCreate = Body(embed=True), ctx: RequestContext = Depends(common.context)
) -> dict:
    svc = common.services(request)
    if not (pool.listener_id or pool.loadbalancer_id):
        raise Validation("Must provide at least one of: loadbalancer_id, listener_id")
    if pool.listener_id:
        owner = (m.Listener, pool.listener_id, "Listener")
    else:
        owner = (m.LoadBalancer, pool.loadbalancer_id, "Load Balancer")
    tls_refs.check_pool(svc, ctx, owner, common.sent(pool))
    with common.change(svc) as session:
        listener = None
        if pool.listener_id:
            listener = common.get_owned(session, m.Listener, pool.listener_id, "Listener", ctx, policy.WRITE)
            lb_id = listener.load_balancer_id
            if pool.loadbalancer_id and pool.loadbalancer_id != lb_id:
                raise Validation(f"Listener {listener.id} is not on Load Balancer {pool.loadbalancer_id}.")
        else:
            lb_id = pool.loadbalancer_id
            common.get_owned(session, m.LoadBalancer, lb_id, "Load Balancer", ctx, policy.WRITE)
        common.project_for_create(ctx, pool)
        lb = status.lock_loadbalancer(session, lb_id)
        if listener is not None:
            if listener.default_pool_id:
                raise Conflict("This listener already has a default pool")
            validation.listener_pool_compatible(listener.protocol, pool.protocol)
        common.check_quota(svc, session, lb.project_id, "pool")
        if pool.healthmonitor:
            common.check_quota(svc, session, lb.project_id, "healthmonitor")
        common.check_quota(svc, session, lb.project_id, "member", len(pool.members or []))
        row = build_pool(session, lb, lb.project_id, pool.model_dump(exclude_unset=True) | {"protocol": pool.protocol})
        parents = []
        if listener is not None:
            listener.default_pool_id = row.id
            parents.append(listener)
        status.mark_change(lb, "pool", row, "create", parents)
        common.provider_of(svc, lb).pool_create(row)
        session.flush()
        session.refresh(row)
        return common.rendered(session, "pool", views.pool, row)


@router.put("/v2/lbaas/pools/{pool_id}")
def update_pool(
    pool_id: str,
    request: Request,
    pool: schemas.PoolUpdate = Body(embed=True),
    ctx: RequestContext = Depends(common.context),
) -> dict:
    svc = common.services(request)
    changes = common.sent(pool)
    tls_refs.check_pool(svc, ctx, (m.Pool, pool_id, "Pool"), changes, update=True)
    with common.change(svc) as session:
        lb, row = _for_change(session, pool_id, ctx)
        old = common.snapshot(row)
        common.set_tags(session, row.id, changes.pop("tags", None))
        if "tls_enabled" in changes and changes["tls_enabled"] is None:
            changes["tls_enabled"] = False
        if "admin_state_up" in changes and changes["admin_state_up"] is None:
            changes["admin_state_up"] = True
        if "lb_algorithm" in changes and changes["lb_algorithm"] is None:
            changes.pop("lb_algorithm")
        validation.pool(old | changes)
        for key, value in changes.items():
            setattr(row, key, value)
        status.mark_change(lb, "pool", row, "update", row.listeners)
        common.provider_of(svc, lb).pool_update(old, row)
        return common.rendered(session, "pool", views.pool, row)


@router.delete("/v2/lbaas/pools/{pool_id}", status_code=204)
def delete_pool(pool_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> Response:
    svc = common.services(request)
    with common.change(svc) as session:
        lb, row = _for_change(session, pool_id, ctx)
        policy_id = session.scalars(select(m.L7Policy.id).where(m.L7Policy.redirect_pool_id == row.id)).first()
        if policy_id:
            raise Conflict(f"Pool {row.id} is in use by L7 policy {policy_id}")
        status.mark_change(lb, "pool", row, "delete", row.listeners)
        common.provider_of(svc, lb).pool_delete(row)
    return Response(status_code=204)
