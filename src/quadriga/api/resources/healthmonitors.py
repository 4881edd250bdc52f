"""Health monitors: `/v2/lbaas/healthmonitors`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response
from sqlalchemy import update
from sqlalchemy.orm import Session

from quadriga import constants as c
from quadriga import status
from quadriga.api import common, listing, policy, schemas, validation, views
from quadriga.api.auth import RequestContext
from quadriga.api.errors import Conflict
from quadriga.db import models as m

router = APIRouter()

SPEC = listing.ListSpec(
    model=m.HealthMonitor,
    plural="healthmonitors",
    render=views.healthmonitor,
    columns=listing.common_columns(
        m.HealthMonitor,
        "name",
        "type",
        "delay",
        "timeout",
        "max_retries",
        "max_retries_down",
        "http_method",
        "url_path",
        "expected_codes",
        "http_version",
        "domain_name",
        "pool_id",
    ),
)

HTTP_DEFAULTS = {"http_method": "GET", "url_path": "/", "expected_codes": "200"}


def build_health_monitor(session: Session, pool: m.Pool, project_id: str, fields: dict[str, Any]) -> m.HealthMonitor:
    if pool.health_monitor is not None:
        raise Conflict("This pool already has a health monitor")
    if fields["type"] in ("HTTP", "HTTPS"):
        for key, default in HTTP_DEFAULTS.items():
            if fields.get(key) is None:
                fields[key] = default
    validation.health_monitor(fields, pool.protocol)
    tags = fields.pop("tags", [])
    for key in ("project_id", "tenant_id", "pool_id"):
        fields.pop(key, None)
    hm = m.HealthMonitor(
        pool=pool, project_id=project_id, provisioning_status=c.PENDING_CREATE, operating_status=c.OFFLINE, **fields
    )
    session.add(hm)
    session.flush()
    common.add_tags(session, hm.id, tags)
    # Members of a monitored pool report real health from now on.
    session.execute(
        update(m.Member)
        .where(m.Member.pool_id == pool.id, m.Member.operating_status == c.NO_MONITOR)
        .values(operating_status=c.OFFLINE)
    )
    return hm


def _for_change(session: Session, hm_id: str, ctx: RequestContext) -> tuple[m.LoadBalancer, m.HealthMonitor]:
    hm = common.get_owned(session, m.HealthMonitor, hm_id, "Health Monitor", ctx, policy.WRITE)
    lb = status.lock_loadbalancer(session, hm.pool.load_balancer_id)
    status.require_active(hm.pool, "pool")
    return lb, hm


@router.get("/v2/lbaas/healthmonitors")
def list_health_monitors(request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    return common.list_visible(request, ctx, SPEC)


@router.get("/v2/lbaas/healthmonitors/{hm_id}")
def get_health_monitor(hm_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    return common.show(request, ctx, m.HealthMonitor, hm_id, "Health Monitor", "healthmonitor", views.healthmonitor)


@router.post("/v2/lbaas/healthmonitors", status_code=201)
def create_health_monitor(
    request: Request,
    healthmonitor: schemas.HealthMonitorCreate = Body(embed=True),
    ctx: RequestContext = Depends(common.context),
) -> dict:
    svc: common.Services = common.services(request)
    with common.change(svc) as session:
        pool = common.get_owned(session, m.Pool, healthmonitor.pool_id, "Pool", ctx, policy.WRITE)
        common.project_for_create(ctx, healthmonitor)
        lb = status.lock_loadbalancer(session, pool.load_balancer_id)
        status.require_active(pool, "pool")
        common.check_quota(svc, session, pool.project_id, "healthmonitor")
        hm = build_health_monitor(session, pool, pool.project_id, healthmonitor.model_dump())
        status.mark_change(lb, "healthmonitor", hm, "create", [pool, *pool.listeners])
        common.provider_of(svc, lb).health_monitor_create(hm)
        return common.rendered(session, "healthmonitor", views.healthmonitor, hm)


@router.put("/v2/lbaas/healthmonitors/{hm_id}")
def update_health_monitor(
    hm_id: str,
    request: Request,
    healthmonitor: schemas.HealthMonitorUpdate = Body(embed=True),
    ctx: RequestContext = Depends(common.context),
) -> dict:
    svc = common.services(request)
    with common.change(svc) as session:
        lb, hm = _for_change(session, hm_id, ctx)
        old = common.snapshot(hm)
        changes = common.sent(healthmonitor)
        common.set_tags(session, hm.id, changes.pop("tags", None))
        merged = old | changes
        if hm.type in ("HTTP", "HTTPS"):
            for key, default in HTTP_DEFAULTS.items():
                if merged.get(key) is None:
                    merged[key] = changes[key] = default
        if "max_retries_down" in changes and changes["max_retries_down"] is None:
            merged["max_retries_down"] = changes["max_retries_down"] = 3
        validation.health_monitor(merged, hm.pool.protocol)
        for key, value in changes.items():
            if value is None and key in ("delay", "timeout", "max_retries", "admin_state_up"):
                continue
            setattr(hm, key, value)
        status.mark_change(lb, "healthmonitor", hm, "update", [hm.pool, *hm.pool.listeners])
        common.provider_of(svc, lb).health_monitor_update(old, hm)
        return common.rendered(session, "healthmonitor", views.healthmonitor, hm)


@router.delete("/v2/lbaas/healthmonitors/{hm_id}", status_code=204)
def delete_health_monitor(hm_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> Response:
    svc = common.services(request)
    with common.change(svc) as session:
        lb, hm = _for_change(session, hm_id, ctx)
        status.mark_change(lb, "healthmonitor", hm, "delete", [hm.pool, *hm.pool.listeners])
        common.provider_of(svc, lb).health_monitor_delete(hm)
    return Response(status_code=204)
