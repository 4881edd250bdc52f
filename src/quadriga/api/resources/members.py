"""Members: `/v2/lbaas/pools/{pool_id}/members`, including the batch update."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from quadriga import constants as c
from quadriga import status
from quadriga.api import common, listing, policy, schemas, views
from quadriga.api.auth import RequestContext
from quadriga.api.errors import Conflict, NotFound
from quadriga.db import models as m

router = APIRouter()

SPEC = listing.ListSpec(
    model=m.Member,
    plural="members",
    render=views.member,
    columns=listing.common_columns(
        m.Member,
        "name",
        "address",
        "protocol_port",
        "weight",
        "backup",
        "subnet_id",
        "monitor_address",
        "monitor_port",
        "pool_id",
    ),
)


def initial_operating_status(pool: m.Pool) -> str:
    return c.OFFLINE if pool.health_monitor else c.NO_MONITOR


def build_member(session: Session, pool: m.Pool, project_id: str, fields: dict[str, Any]) -> m.Member:
    """Create a member row (status PENDING_CREATE) after checking its endpoint is unique in the pool."""
    if any(mb.address == fields["address"] and mb.protocol_port == fields["protocol_port"] for mb in pool.members):
        address, port = fields["address"], fields["protocol_port"]
        raise Conflict(f"Another member on this pool is already using ip {address} on protocol_port {port}")
    tags = fields.pop("tags", [])
    fields.pop("request_sriov", None)
    for key in ("project_id", "tenant_id"):
        fields.pop(key, None)
    member = m.Member(
        pool=pool,
        project_id=project_id,
        provisioning_status=c.PENDING_CREATE,
        operating_status=initial_operating_status(pool),
        **fields,
    )
    session.add(member)
    session.flush()
    common.add_tags(session, member.id, tags)
    return member


def _pool_for_change(session: Session, pool_id: str, ctx: RequestContext) -> tuple[m.LoadBalancer, m.Pool]:
    pool = common.get_owned(session, m.Pool, pool_id, "Pool", ctx, policy.WRITE)
    lb = status.lock_loadbalancer(session, pool.load_balancer_id)
    status.require_active(pool, "pool")
    return lb, pool


def _member_of(session: Session, pool_id: str, member_id: str, ctx: RequestContext, rule: str) -> m.Member:
    member = common.get_owned(session, m.Member, member_id, "Member", ctx, rule)
    if member.pool_id != pool_id:
        raise NotFound("Member", member_id)
    return member


@router.get("/v2/lbaas/pools/{pool_id}/members")
def list_members(pool_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    svc = common.services(request)
    with svc.db.read() as session:
        common.get_owned(session, m.Pool, pool_id, "Pool", ctx)
        where = [m.Member.pool_id == pool_id]
        return JSONResponse(listing.run(session, SPEC, request.query_params, common.base_url(request), where))


@router.get("/v2/lbaas/pools/{pool_id}/members/{member_id}")
def get_member(pool_id: str, member_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    svc = common.services(request)
    with svc.db.read() as session:
        common.get_owned(session, m.Pool, pool_id, "Pool", ctx)
        member = _member_of(session, pool_id, member_id, ctx, policy.READ)
        item = views.member(member, views.load_tags(session, [member.id]))
        return {"member": listing.select_fields(item, listing.requested_fields(request.query_params))}


@router.post("/v2/lbaas/pools/{pool_id}/members", status_code=201)
def create_member(
    pool_id: str,
    request: Request,
    member: schemas.MemberCreate = Body(embed=True),
    ctx: RequestContext = Depends(common.context),
) -> dict:
    svc = common.services(request)
    with common.change(svc) as session:
        lb, pool = _pool_for_change(session, pool_id, ctx)
        project = common.project_for_create(ctx, member)
        if project != pool.project_id:
            policy.enforce(ctx, policy.ADMIN)
        common.check_quota(svc, session, pool.project_id, "member")
        row = build_member(session, pool, pool.project_id, common.sent(member) | {"address": member.address})
        status.mark_change(lb, "member", row, "create", [pool, *pool.listeners])
        common.provider_of(svc, lb).member_create(row)
        return common.rendered(session, "member", views.member, row)


@router.put("/v2/lbaas/pools/{pool_id}/members/{member_id}")
def update_member(
    pool_id: str,
    member_id: str,
    request: Request,
    member: schemas.MemberUpdate = Body(embed=True),
    ctx: RequestContext = Depends(common.context),
) -> dict:
    svc = common.services(request)
    with common.change(svc) as session:
        lb, pool = _pool_for_change(session, pool_id, ctx)
        row = _member_of(session, pool_id, member_id, ctx, policy.WRITE)
        old = common.snapshot(row)
        changes = common.sent(member)
        common.set_tags(session, row.id, changes.pop("tags", None))
        for key, value in changes.items():
            if value is None and key in ("weight", "backup", "admin_state_up"):
                value = {"weight": 1, "backup": False, "admin_state_up": True}[key]
            setattr(row, key, value)
        status.mark_change(lb, "member", row, "update", [pool, *pool.listeners])
        common.provider_of(svc, lb).member_update(old, row)
        return common.rendered(session, "member", views.member, row)


@router.delete("/v2/lbaas/pools/{pool_id}/members/{member_id}", status_code=204)
def delete_member(
    pool_id: str, member_id: str, request: Request, ctx: RequestContext = Depends(common.context)
) -> Response:
    svc = common.services(request)
    with common.change(svc) as session:
        lb, pool = _pool_for_change(session, pool_id, ctx)
        row = _member_of(session, pool_id, member_id, ctx, policy.WRITE)
        status.mark_change(lb, "member", row, "delete", [pool, *pool.listeners])
        common.provider_of(svc, lb).member_delete(row)
    return Response(status_code=204)


@router.put("/v2/lbaas/pools/{pool_id}/members", status_code=202)
def batch_update_members(
    pool_id: str,
    request: Request,
    members: list[schemas.MemberCreate] = Body(embed=True),
    additive_only: bool = False,
    ctx: RequestContext = Depends(common.context),
) -> Response:
    """Replace the pool's member set: members matched by (address, protocol_port) are updated, new ones
    created, missing ones deleted (unless `additive_only`). One common.change of the load balancer."""
    svc = common.services(request)
    with common.change(svc) as session:
        lb, pool = _pool_for_change(session, pool_id, ctx)
        existing = {(mb.address, mb.protocol_port): mb for mb in pool.members}
        wanted = {}
        for item in members:
            key = (item.address, item.protocol_port)
            if key in wanted:
                raise Conflict(f"Another member on this pool is already using ip {key[0]} on protocol_port {key[1]}")
            wanted[key] = item
        new = [k for k in wanted if k not in existing]
        common.check_quota(svc, session, pool.project_id, "member", len(new))
        touched = []
        for key, item in wanted.items():
            fields = common.sent(item) | {"address": item.address}
            if key in existing:
                row = existing[key]
                common.set_tags(session, row.id, fields.pop("tags", None))
                for attr in ("name", "admin_state_up", "weight", "backup", "monitor_address", "monitor_port"):
                    if attr in fields:
                        setattr(row, attr, fields[attr])
                row.provisioning_status = c.PENDING_UPDATE
            else:
                row = build_member(session, pool, pool.project_id, fields)
            touched.append(row)
        if not additive_only:
            for key, row in existing.items():
                if key not in wanted:
                    row.provisioning_status = c.PENDING_DELETE
                    touched.append(row)
        status.mark_change(lb, "pool", pool, "update", [*pool.listeners])
        common.provider_of(svc, lb).member_batch_update(pool, touched)
    return Response(status_code=202)
