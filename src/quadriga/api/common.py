"""What every resource module needs: the running services, the caller's context, lookups that answer
Octavia's 404/403, tags, quotas and the write-then-wake pattern."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quadriga import constants as c
from quadriga import status
from quadriga.api import listing, policy, views
from quadriga.api.auth import Authenticator, RequestContext
from quadriga.api.errors import BadRequest, NotFound, PolicyForbidden, QuotaExceeded
from quadriga.api.rolemap import DEFAULT as DEFAULT_ROLE_MAPPING
from quadriga.api.rolemap import RoleMapping
from quadriga.certs.tls import TLSMaterial
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.keymanager import Secrets
from quadriga.providers.base import ProviderDriver


@dataclass
class Services:
    """What the API runs against. `tls` resolves listener and pool certificate refs through the key manager
    before anything is written (`quadriga serve` gives it a `TLSLoader` over its key manager); None (no key
    manager) stores refs unchecked; `secrets`, the key manager behind it, is asked first to let quadriga read
    the refs later, as the caller (`Secrets.grant_access`). `role_mapping` turns Keystone roles into quadriga
    roles."""

    db: Database
    authenticator: Authenticator
    providers: dict[str, ProviderDriver]
    default_provider: str
    wake: Callable[[], None] = lambda: None
    quota_defaults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(c.QUOTA_RESOURCES, -1))
    enforce_quotas: bool = True
    tls: TLSMaterial | None = None
    secrets: Secrets | None = None
    role_mapping: RoleMapping = DEFAULT_ROLE_MAPPING


def services(request: Request) -> Services:
    return request.app.state.services


def context(request: Request) -> RequestContext:
    """The authenticated caller, with the quadriga roles the role mapping gives its Keystone roles."""
    svc = services(request)
    ctx = svc.authenticator.authenticate(request)
    return dataclasses.replace(ctx, quadriga_roles=svc.role_mapping.resolve(ctx.roles))


def base_url(request: Request) -> str:
    return str(request.url.replace(query="")).removesuffix(".json")


def get_owned(
    session: Session, model: Any, ident: str, label: str, ctx: RequestContext, rule: str = policy.READ
) -> Any:
    """Load an object or 404, then apply `rule` against its project (a mismatch is 403, as in Octavia)."""
    obj = session.get(model, ident)
    if obj is None or getattr(obj, "provisioning_status", None) == c.DELETED:
        raise NotFound(label, ident)
    policy.enforce(ctx, rule, getattr(obj, "project_id", None))
    return obj


def project_for_create(ctx: RequestContext, body: BaseModel) -> str:
    requested = getattr(body, "project_id", None) or getattr(body, "tenant_id", None)
    project = requested or ctx.project_id
    if not project:
        raise BadRequest(
            "Validation failure: Missing project ID in request where one is required. "
            "An administrator should check the keystone settings in the Octavia configuration."
        )
    if len(project) > 255:  # the column's width (PostgreSQL refuses longer values)
        raise BadRequest(f"Invalid input for field/attribute project_id. Value: '{project}'. Too long.")
    policy.enforce(ctx, policy.WRITE, project)
    return project


def set_tags(session: Session, resource_id: str, tags: list[str] | None) -> None:
    """Replace an object's tags (a PUT that sends `tags`); None leaves them alone."""
    if tags is None:
        return
    session.execute(delete(m.Tag).where(m.Tag.resource_id == resource_id))
    add_tags(session, resource_id, tags)


def add_tags(session: Session, resource_id: str, tags: list[str]) -> None:
    """Tags of a new object (nothing to replace)."""
    session.add_all(m.Tag(resource_id=resource_id, tag=tag) for tag in sorted(set(tags)))


def check_quota(svc: Services, session: Session, project_id: str, kind: str, adding: int = 1) -> None:
    """403 when `adding` more objects of `kind` would exceed the project's quota. The project's quota row
    is locked first, so concurrent creates in one project are counted one after the other."""
    if not svc.enforce_quotas or adding <= 0:
        return
    quota = _locked_quota_row(session, project_id)
    column, label = c.QUOTA_RESOURCES[kind]
    limit = getattr(quota, column)
    if limit is None:
        limit = svc.quota_defaults[kind]
    if limit < 0:
        return
    if _count(session, kind, project_id) + adding > limit:
        raise QuotaExceeded(label)


def _locked_quota_row(session: Session, project_id: str) -> m.Quota:
    stmt = select(m.Quota).where(m.Quota.project_id == project_id).with_for_update()
    row = session.scalars(stmt).one_or_none()
    if row is None:
        try:
            with session.begin_nested():
                session.add(m.Quota(project_id=project_id))
        except IntegrityError:
            pass
        row = session.scalars(stmt).one()
    return row


def _count(session: Session, kind: str, project_id: str) -> int:
    model = status.KINDS[kind]
    stmt = select(func.count()).select_from(model).where(model.project_id == project_id)
    if model is m.LoadBalancer:
        stmt = stmt.where(model.provisioning_status != c.DELETED)
    return session.scalar(stmt) or 0


@contextlib.contextmanager
def change(svc: Services) -> Iterator[Session]:
    """A write transaction that wakes the controller once it has committed."""
    with svc.db.write() as session:
        yield session
    svc.wake()


def provider_of(svc: Services, lb: m.LoadBalancer) -> ProviderDriver:
    return svc.providers[lb.provider]


def sent(body: BaseModel) -> dict[str, Any]:
    """The attributes a client actually sent (a PUT changes only those)."""
    return body.model_dump(exclude_unset=True)


def snapshot(obj: Any) -> dict[str, Any]:
    """Column values of an ORM object, for a provider's update hook (`old`)."""
    return {col.key: getattr(obj, col.key) for col in obj.__table__.columns}


def project_scope(ctx: RequestContext, request: Request, model: Any) -> list[Any]:
    """WHERE clauses limiting a list to what the caller may read: everything for admins and global
    observers, otherwise the caller's own project (asking for another project's list is a 403)."""
    if policy.allowed(ctx, policy.READ_GLOBAL):
        return []
    policy.enforce(ctx, policy.READ, ctx.project_id)
    requested = request.query_params.get("project_id") or request.query_params.get("tenant_id")
    if requested and requested != ctx.project_id:
        raise PolicyForbidden()
    return [model.project_id == ctx.project_id]


def rendered(session: Session, root: str, render: Callable[[Any, views.TagMap], dict], obj: Any) -> dict[str, Any]:
    """`{root: object}` as the API shows it, tags included."""
    return {root: render(obj, views.load_tags(session, [obj.id]))}


def show(
    request: Request, ctx: RequestContext, model: Any, ident: str, label: str, root: str, render: Callable
) -> dict[str, Any]:
    """A GET of one object: 404/403 as Octavia answers them, and `fields` honoured."""
    with services(request).db.read() as session:
        obj = get_owned(session, model, ident, label, ctx)
        item = render(obj, views.load_tags(session, [obj.id]))
        return {root: listing.select_fields(item, listing.requested_fields(request.query_params))}


def list_visible(request: Request, ctx: RequestContext, spec: listing.ListSpec, *scope: Any) -> JSONResponse:
    """A list of what the caller may read (its project, or everything for global readers). Returned as a
    ready response: the framework's generic encoder would double the cost of a 1,000-item page."""
    with services(request).db.read() as session:
        where = [*project_scope(ctx, request, spec.model), *scope]
        return JSONResponse(listing.run(session, spec, request.query_params, base_url(request), where))
