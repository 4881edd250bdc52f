"""Engines, under Octavia's admin-only amphora API: `/v2/octavia/amphorae`. A DELETED engine (removed, or replaced
by a failover) is no longer listed or found, as in Octavia; housekeeping purges its row later."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session

from quadriga import constants as c
from quadriga import status
from quadriga.api import common, listing, policy, views
from quadriga.api.auth import RequestContext
from quadriga.api.errors import NotFound
from quadriga.db import models as m

router = APIRouter()

SPEC = listing.ListSpec(
    model=m.Amphora,
    plural="amphorae",
    render=lambda a, _tags: views.amphora(a),
    columns={col.key: getattr(m.Amphora, col.key) for col in m.Amphora.__table__.columns}
    | {"loadbalancer_id": m.Amphora.load_balancer_id},
    tagged=False,
)


def _find(session: Session, amphora_id: str) -> m.Amphora:
    amp = session.get(m.Amphora, amphora_id)
    if amp is None or amp.status == c.DELETED:
        raise NotFound("Amphora", amphora_id)
    return amp


def _get(request: Request, amphora_id: str) -> m.Amphora:
    with common.services(request).db.read() as session:
        return _find(session, amphora_id)


@router.get("/v2/octavia/amphorae")
def list_amphorae(request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    policy.enforce(ctx, policy.ADMIN)
    with common.services(request).db.read() as session:
        return listing.run(
            session, SPEC, request.query_params, common.base_url(request), [m.Amphora.status != c.DELETED]
        )


@router.get("/v2/octavia/amphorae/{amphora_id}")
def get_amphora(amphora_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    policy.enforce(ctx, policy.ADMIN)
    item = views.amphora(_get(request, amphora_id))
    return {"amphora": listing.select_fields(item, listing.requested_fields(request.query_params))}


@router.get("/v2/octavia/amphorae/{amphora_id}/stats")
def amphora_stats(amphora_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    policy.enforce(ctx, policy.ADMIN)
    with common.services(request).db.read() as session:
        amp = _find(session, amphora_id)
        return {"amphora_stats": views.amphora_statistics(session, amp)}


@router.put("/v2/octavia/amphorae/{amphora_id}/config", status_code=202)
def amphora_config(amphora_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> Response:
    """Push the engine's config again (statuses untouched): the controller sees its load balancer's
    engines as stale and re-applies the same revision."""
    policy.enforce(ctx, policy.ADMIN)
    svc = common.services(request)
    with common.change(svc) as session:
        amp = _find(session, amphora_id)
        lb = session.get(m.LoadBalancer, amp.load_balancer_id) if amp.load_balancer_id else None
        if lb is not None and lb.applied_revision == lb.revision:
            lb.applied_revision = lb.revision - 1
    return Response(status_code=202)


@router.put("/v2/octavia/amphorae/{amphora_id}/failover", status_code=202)
def amphora_failover(amphora_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> Response:
    """Replace one engine: its load balancer goes PENDING_UPDATE until a new engine serves it, then the old
    one is removed. 409 while the load balancer is not ACTIVE (e.g. already being failed over)."""
    policy.enforce(ctx, policy.ADMIN)
    svc = common.services(request)
    with common.change(svc) as session:
        amp = _find(session, amphora_id)
        if amp.load_balancer_id is None:
            return Response(status_code=202)  # a spare: nothing serves on it
        lb = status.lock_loadbalancer(session, amp.load_balancer_id, deleting=True)
        status.mark_change(lb, "loadbalancer", lb, "update")
        common.provider_of(svc, lb).amphora_failover(amp)
    return Response(status_code=202)


@router.delete("/v2/octavia/amphorae/{amphora_id}", status_code=204)
def delete_amphora(amphora_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> Response:
    policy.enforce(ctx, policy.ADMIN)
    with common.services(request).db.write() as session:
        session.delete(_find(session, amphora_id))
    return Response(status_code=204)
