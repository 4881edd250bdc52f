"""Authorization: Octavia's default policy (keystone default roles, with the deprecated load-balancer_*
roles still honoured, as oslo.policy does while both are configured).

Endpoints ask for one of the API access rules of Octavia's policies/base.py: read, read-global, write,
read-quota, read-quota-global, write-quota, admin."""

from __future__ import annotations

from quadriga.api.auth import RequestContext
from quadriga.api.errors import PolicyForbidden

READ = "read"
READ_GLOBAL = "read-global"
WRITE = "write"
READ_QUOTA = "read-quota"
READ_QUOTA_GLOBAL = "read-quota-global"
WRITE_QUOTA = "write-quota"
ADMIN = "admin"


def is_admin(ctx: RequestContext) -> bool:
    return ctx.is_admin or bool(ctx.roles & {"admin", "load-balancer_admin"})


def _global_observer(ctx: RequestContext) -> bool:
    return bool(ctx.roles & {"admin", "load-balancer_global_observer"})


def _quota_admin(ctx: RequestContext) -> bool:
    return bool(ctx.roles & {"admin", "load-balancer_quota_admin"})


def _owner(ctx: RequestContext, project_id: str | None) -> bool:
    return ctx.project_id is not None and ctx.project_id == project_id


def _member_and_owner(ctx: RequestContext, project_id: str | None) -> bool:
    return _owner(ctx, project_id) and bool(ctx.roles & {"member", "load-balancer_member"})


def _observer_and_owner(ctx: RequestContext, project_id: str | None) -> bool:
    return _owner(ctx, project_id) and bool(ctx.roles & {"reader", "load-balancer_observer"})


def allowed(ctx: RequestContext, rule: str, project_id: str | None = None) -> bool:
    """Whether `ctx` passes `rule` for an object owned by `project_id`."""
    if is_admin(ctx):
        return True
    if rule == READ:
        return _observer_and_owner(ctx, project_id) or _global_observer(ctx) or _member_and_owner(ctx, project_id)
    if rule == READ_GLOBAL:
        return _global_observer(ctx)
    if rule == WRITE:
        return _member_and_owner(ctx, project_id)
    if rule == READ_QUOTA:
        return (
            _observer_and_owner(ctx, project_id)
            or _global_observer(ctx)
            or _member_and_owner(ctx, project_id)
            or _quota_admin(ctx)
        )
    if rule == READ_QUOTA_GLOBAL:
        return _global_observer(ctx) or _quota_admin(ctx)
    if rule == WRITE_QUOTA:
        return _quota_admin(ctx)
    return False  # ADMIN and anything unknown


def enforce(ctx: RequestContext, rule: str, project_id: str | None = None) -> None:
    if not allowed(ctx, rule, project_id):
        raise PolicyForbidden()
