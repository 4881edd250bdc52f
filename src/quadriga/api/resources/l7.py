"""L7 policies (`/v2/lbaas/l7policies`) and their rules (`/v2/lbaas/l7policies/{id}/rules`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, selectinload

from quadriga import constants as c
from quadriga import status
from quadriga.api import common, listing, policy, schemas, validation, views
from quadriga.api.auth import RequestContext
from quadriga.api.errors import NotFound, Validation
from quadriga.db import models as m

router = APIRouter()

POLICY_SPEC = listing.ListSpec(
    model=m.L7Policy,
    plural="l7policies",
    render=views.l7policy,
    columns=listing.common_columns(
        m.L7Policy,
        "name",
        "description",
        "action",
        "listener_id",
        "redirect_pool_id",
        "redirect_url",
        "redirect_prefix",
        "redirect_http_code",
        "position",
    ),
    options=(selectinload(m.L7Policy.rules),),
)
RULE_SPEC = listing.ListSpec(
    model=m.L7Rule,
    plural="rules",
    render=views.l7rule,
    columns=listing.common_columns(m.L7Rule, "type", "compare_type", "key", "value", "invert", "l7policy_id"),
)


RULE_RESETS = {"invert": False, "admin_state_up": True}


def _check_listener(listener: m.Listener) -> None:
    if listener.protocol not in c.HTTP_LISTENER_PROTOCOLS:
        raise Validation(
            f"L7 policies are only supported on HTTP and TERMINATED_HTTPS listeners, not on {listener.protocol}."
        )


def _check_redirect_pool(session: Session, listener: m.Listener, pool_id: str | None) -> None:
    if not pool_id:
        return
    pool = session.get(m.Pool, pool_id)
    if pool is None or pool.load_balancer_id != listener.load_balancer_id:
        raise Validation(f"Pool {pool_id} not found on the listener's load balancer.")
    validation.listener_pool_compatible(listener.protocol, pool.protocol)


def _place(listener: m.Listener, policy_row: m.L7Policy, position: int | None) -> None:
    """Insert `policy_row` at `position` (append when None) and renumber the listener's policies 1..N."""
    others = [p for p in listener.l7policies if p is not policy_row]
    others.sort(key=lambda p: p.position)
    index = len(others) if position is None else min(position - 1, len(others))
    others.insert(index, policy_row)
    for i, p in enumerate(others, start=1):
        p.position = i


def build_rule(session: Session, pol: m.L7Policy, project_id: str, fields: dict[str, Any]) -> m.L7Rule:
    validation.too_many_rules(len(pol.rules), pol.id)
    validation.l7rule(fields)
    tags = fields.pop("tags", [])
    for key in ("project_id", "tenant_id"):
        fields.pop(key, None)
    rule = m.L7Rule(
        l7policy=pol, project_id=project_id, provisioning_status=c.PENDING_CREATE, operating_status=c.OFFLINE, **fields
    )
    session.add(rule)
    session.flush()
    common.add_tags(session, rule.id, tags)
    return rule


def build_policy(session: Session, listener: m.Listener, project_id: str, fields: dict[str, Any]) -> m.L7Policy:
    _check_listener(listener)
    rules = fields.pop("rules", None) or []
    fields.pop("redirect_pool", None)
    tags = fields.pop("tags", [])
    position = fields.pop("position", None)
    for key in ("project_id", "tenant_id", "listener_id"):
        fields.pop(key, None)
    fields.setdefault("admin_state_up", True)
    validation.l7policy(fields)
    validation.normalize_l7policy_action(fields)
    _check_redirect_pool(session, listener, fields.get("redirect_pool_id"))
    pol = m.L7Policy(
        listener=listener,
        project_id=project_id,
        provisioning_status=c.PENDING_CREATE,
        operating_status=c.OFFLINE,
        position=0,
        **fields,
    )
    session.add(pol)
    session.flush()
    _place(listener, pol, position)
    session.flush()
    pol.updated_at = None  # placing it was part of its create: Octavia answers null until the first change
    common.add_tags(session, pol.id, tags)
    for rule in rules:
        build_rule(session, pol, project_id, rule)
    return pol


def _policy_for_change(session: Session, policy_id: str, ctx: RequestContext) -> tuple[m.LoadBalancer, m.L7Policy]:
    pol = common.get_owned(session, m.L7Policy, policy_id, "L7 Policy", ctx, policy.WRITE)
    lb = status.lock_loadbalancer(session, pol.listener.load_balancer_id)
    return lb, pol


@router.get("/v2/lbaas/l7policies")
def list_policies(request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    return common.list_visible(request, ctx, POLICY_SPEC)


@router.get("/v2/lbaas/l7policies/{policy_id}")
def get_policy(policy_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    return common.show(request, ctx, m.L7Policy, policy_id, "L7 Policy", "l7policy", views.l7policy)


@router.post("/v2/lbaas/l7policies", status_code=201)
def create_policy(
    request: Request, l7policy: schemas.L7PolicyCreate = Body(embed=True), ctx: RequestContext = Depends(common.context)
) -> dict:
    svc = common.services(request)
    with common.change(svc) as session:
        listener = common.get_owned(session, m.Listener, l7policy.listener_id, "Listener", ctx, policy.WRITE)
        common.project_for_create(ctx, l7policy)
        lb = status.lock_loadbalancer(session, listener.load_balancer_id)
        common.check_quota(svc, session, lb.project_id, "l7policy")
        common.check_quota(svc, session, lb.project_id, "l7rule", len(l7policy.rules or []))
        pol = build_policy(session, listener, lb.project_id, common.sent(l7policy))
        status.mark_change(lb, "l7policy", pol, "create", [listener])
        common.provider_of(svc, lb).l7policy_create(pol)
        return common.rendered(session, "l7policy", views.l7policy, pol)


@router.put("/v2/lbaas/l7policies/{policy_id}")
def update_policy(
    policy_id: str,
    request: Request,
    l7policy: schemas.L7PolicyUpdate = Body(embed=True),
    ctx: RequestContext = Depends(common.context),
) -> dict:
    svc = common.services(request)
    with common.change(svc) as session:
        lb, pol = _policy_for_change(session, policy_id, ctx)
        old = common.snapshot(pol)
        changes = common.sent(l7policy)
        common.set_tags(session, pol.id, changes.pop("tags", None))
        position = changes.pop("position", None)
        if "admin_state_up" in changes and changes["admin_state_up"] is None:
            changes["admin_state_up"] = True
        if changes.get("action", "") is None:
            changes.pop("action")
        merged = old | changes
        if "action" in changes and "redirect_http_code" not in changes:
            merged["redirect_http_code"] = None  # a new action drops the old action's code
        validation.l7policy(merged)
        validation.normalize_l7policy_action(merged)
        _check_redirect_pool(session, pol.listener, merged.get("redirect_pool_id"))
        for key in ("action", "redirect_pool_id", "redirect_url", "redirect_prefix", "redirect_http_code"):
            setattr(pol, key, merged[key])
        for key in ("name", "description", "admin_state_up"):
            if key in changes:
                setattr(pol, key, changes[key])
        if position is not None:
            _place(pol.listener, pol, position)
        status.mark_change(lb, "l7policy", pol, "update", [pol.listener])
        common.provider_of(svc, lb).l7policy_update(old, pol)
        return common.rendered(session, "l7policy", views.l7policy, pol)


@router.delete("/v2/lbaas/l7policies/{policy_id}", status_code=204)
def delete_policy(policy_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> Response:
    svc = common.services(request)
    with common.change(svc) as session:
        lb, pol = _policy_for_change(session, policy_id, ctx)
        status.mark_change(lb, "l7policy", pol, "delete", [pol.listener])
        common.provider_of(svc, lb).l7policy_delete(pol)
    return Response(status_code=204)


# --- rules -----------------------------------------------------------------------------------------


def _rule_of(session: Session, pol: m.L7Policy, rule_id: str, ctx: RequestContext, rule: str) -> m.L7Rule:
    row = common.get_owned(session, m.L7Rule, rule_id, "L7 Rule", ctx, rule)
    if row.l7policy_id != pol.id:
        raise NotFound("L7 Rule", rule_id)
    return row


def _rule_parents(pol: m.L7Policy) -> list[Any]:
    return [pol, pol.listener]


@router.get("/v2/lbaas/l7policies/{policy_id}/rules")
def list_rules(policy_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    svc = common.services(request)
    with svc.db.read() as session:
        common.get_owned(session, m.L7Policy, policy_id, "L7 Policy", ctx)
        scope = [m.L7Rule.l7policy_id == policy_id]
        return JSONResponse(listing.run(session, RULE_SPEC, request.query_params, common.base_url(request), scope))


@router.get("/v2/lbaas/l7policies/{policy_id}/rules/{rule_id}")
def get_rule(policy_id: str, rule_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    svc = common.services(request)
    with svc.db.read() as session:
        pol = common.get_owned(session, m.L7Policy, policy_id, "L7 Policy", ctx)
        row = _rule_of(session, pol, rule_id, ctx, policy.READ)
        item = views.l7rule(row, views.load_tags(session, [row.id]))
        return {"rule": listing.select_fields(item, listing.requested_fields(request.query_params))}


@router.post("/v2/lbaas/l7policies/{policy_id}/rules", status_code=201)
def create_rule(
    policy_id: str,
    request: Request,
    rule: schemas.L7RuleCreate = Body(embed=True),
    ctx: RequestContext = Depends(common.context),
) -> dict:
    svc = common.services(request)
    with common.change(svc) as session:
        lb, pol = _policy_for_change(session, policy_id, ctx)
        common.project_for_create(ctx, rule)
        status.require_active(pol, "l7policy")
        common.check_quota(svc, session, lb.project_id, "l7rule")
        row = build_rule(
            session, pol, lb.project_id, common.sent(rule) | {"type": rule.type, "compare_type": rule.compare_type}
        )
        status.mark_change(lb, "l7rule", row, "create", _rule_parents(pol))
        common.provider_of(svc, lb).l7rule_create(row)
        return common.rendered(session, "rule", views.l7rule, row)


@router.put("/v2/lbaas/l7policies/{policy_id}/rules/{rule_id}")
def update_rule(
    policy_id: str,
    rule_id: str,
    request: Request,
    rule: schemas.L7RuleUpdate = Body(embed=True),
    ctx: RequestContext = Depends(common.context),
) -> dict:
    svc = common.services(request)
    with common.change(svc) as session:
        lb, pol = _policy_for_change(session, policy_id, ctx)
        status.require_active(pol, "l7policy")
        row = _rule_of(session, pol, rule_id, ctx, policy.WRITE)
        old = common.snapshot(row)
        changes = common.sent(rule)
        for key, default in RULE_RESETS.items():  # `null` resets these, as the CLI's `unset` sends
            if key in changes and changes[key] is None:
                changes[key] = default
        changes = {k: v for k, v in changes.items() if v is not None or k == "key"}
        common.set_tags(session, row.id, changes.pop("tags", None))
        validation.l7rule(old | changes)
        for key, value in changes.items():
            setattr(row, key, value)
        status.mark_change(lb, "l7rule", row, "update", _rule_parents(pol))
        common.provider_of(svc, lb).l7rule_update(old, row)
        return common.rendered(session, "rule", views.l7rule, row)


@router.delete("/v2/lbaas/l7policies/{policy_id}/rules/{rule_id}", status_code=204)
def delete_rule(
    policy_id: str, rule_id: str, request: Request, ctx: RequestContext = Depends(common.context)
) -> Response:
    svc = common.services(request)
    with common.change(svc) as session:
        lb, pol = _policy_for_change(session, policy_id, ctx)
        status.require_active(pol, "l7policy")
        row = _rule_of(session, pol, rule_id, ctx, policy.WRITE)
        status.mark_change(lb, "l7rule", row, "delete", _rule_parents(pol))
        common.provider_of(svc, lb).l7rule_delete(row)
    return Response(status_code=204)
