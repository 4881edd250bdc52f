"""Quotas: `/v2/lbaas/quotas`. A project's row holds its custom limits; NULL means the default."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Request, Response
from sqlalchemy import or_, select

from quadriga import constants as c
from quadriga.api import common, policy, schemas, views
from quadriga.api.auth import RequestContext
from quadriga.api.errors import BadRequest
from quadriga.db import models as m

router = APIRouter()

# API key (including the deprecated aliases) -> Quota column
COLUMNS = {api: column for api, (column, _label) in c.QUOTA_RESOURCES.items()} | {
    "load_balancer": "load_balancer",
    "health_monitor": "health_monitor",
}


@router.get("/v2/lbaas/quotas")
def list_quotas(request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    svc = common.services(request)
    custom = or_(*(getattr(m.Quota, col).is_not(None) for col in set(COLUMNS.values())))
    stmt = select(m.Quota).where(custom).order_by(m.Quota.project_id)
    if not policy.allowed(ctx, policy.READ_QUOTA_GLOBAL):
        # As Octavia's _auth_get_all: asking for another project's quotas needs the global rule.
        wanted = request.query_params.get("project_id") or ctx.project_id
        policy.enforce(ctx, policy.READ_QUOTA, wanted)
        stmt = stmt.where(m.Quota.project_id == ctx.project_id)
    elif request.query_params.get("project_id"):
        stmt = stmt.where(m.Quota.project_id == request.query_params["project_id"])
    with svc.db.read() as session:
        quotas = [views.quota(q, q.project_id, svc.quota_defaults) for q in session.scalars(stmt)]
    return {"quotas": quotas, "quotas_links": []}


@router.get("/v2/lbaas/quotas/{project_id}")
def get_quota(project_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    svc = common.services(request)
    policy.enforce(ctx, policy.READ_QUOTA, project_id)
    with svc.db.read() as session:
        return {"quota": views.quota(session.get(m.Quota, project_id), project_id, svc.quota_defaults)}


@router.get("/v2/lbaas/quotas/{project_id}/default")
def get_default_quota(project_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    svc = common.services(request)
    policy.enforce(ctx, policy.READ_QUOTA, project_id)
    return {"quota": views.quota(None, project_id, svc.quota_defaults)}


@router.put("/v2/lbaas/quotas/{project_id}", status_code=202)
def update_quota(
    project_id: str,
    request: Request,
    quota: schemas.QuotaUpdate = Body(embed=True),
    ctx: RequestContext = Depends(common.context),
) -> dict:
    svc = common.services(request)
    policy.enforce(ctx, policy.WRITE_QUOTA, project_id)
    if len(project_id) > 255:  # the column's width (PostgreSQL refuses longer values)
        raise BadRequest(f"Invalid input for field/attribute project_id. Value: '{project_id}'. Too long.")
    with svc.db.write() as session:
        row = session.get(m.Quota, project_id)
        if row is None:
            row = m.Quota(project_id=project_id)
            session.add(row)
        for key, value in common.sent(quota).items():
            setattr(row, COLUMNS[key], value)
        session.flush()
        return {"quota": views.quota(row, project_id, svc.quota_defaults)}


@router.delete("/v2/lbaas/quotas/{project_id}", status_code=202)
def reset_quota(project_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> Response:
    svc = common.services(request)
    policy.enforce(ctx, policy.WRITE_QUOTA, project_id)
    with svc.db.write() as session:
        row = session.get(m.Quota, project_id)
        if row is not None:
            for column in set(COLUMNS.values()):
                setattr(row, column, None)
    return Response(status_code=202)
