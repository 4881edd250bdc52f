"""Who sees and changes what, as Neutron's default policy has it: admins see everything; a project sees
its own objects, shared and external networks, the subnets of shared networks and the ports on its own
networks; only the owner (or an admin) changes an object; only an admin acts for another project."""

from __future__ import annotations

from typing import Any

from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session

from quadriga.api.auth import RequestContext
from quadriga.db import models as m
from quadriga.network import embedded as e
from quadriga.network.api.errors import bad_request, forbidden
from quadriga.network.api.schemas import Owned


def is_admin(ctx: RequestContext) -> bool:
    return ctx.is_admin or "admin" in ctx.roles


def _mine(column: Any, ctx: RequestContext) -> Any:
    return column == ctx.project_id if ctx.project_id else false()


def visible_networks(ctx: RequestContext) -> Any:
    return or_(_mine(m.Network.project_id, ctx), m.Network.shared.is_(True), m.Network.external.is_(True))


def visible_subnets(ctx: RequestContext) -> Any:
    shared = select(m.Network.id).where(m.Network.shared.is_(True))
    return or_(_mine(m.Subnet.project_id, ctx), m.Subnet.network_id.in_(shared))


def visible_ports(ctx: RequestContext) -> Any:
    owned = select(m.Network.id).where(_mine(m.Network.project_id, ctx))
    return or_(_mine(m.Port.project_id, ctx), m.Port.network_id.in_(owned))


def require_owner(ctx: RequestContext, obj: Any, action: str) -> None:
    if not is_admin(ctx) and obj.project_id != ctx.project_id:
        raise forbidden(action)


def project_for_create(ctx: RequestContext, body: Owned) -> str:
    """The project a new object belongs to: the caller's, or (admins only) the one the body names."""
    if body.project_id and body.tenant_id and body.project_id != body.tenant_id:
        raise bad_request("'project_id' and 'tenant_id' do not match")
    given = body.project_id or body.tenant_id
    if given and given != ctx.project_id and not is_admin(ctx):
        raise bad_request(
            "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request "
            "requires admin privileges"
        )
    project = given or ctx.project_id
    if not project:
        raise bad_request("Running without keystone AuthN requires that tenant_id is specified")
    return project


def visible_network(session: Session, ctx: RequestContext, network_id: str) -> m.Network:
    stmt = select(m.Network).where(m.Network.id == network_id)
    if not is_admin(ctx):
        stmt = stmt.where(visible_networks(ctx))
    network = session.scalar(stmt)
    if network is None:
        raise e.not_found("Network", network_id)
    return network
