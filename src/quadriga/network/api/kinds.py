"""The three resource types the networking API serves, each described once: its model and list rules,
visibility, body models, operations and read-only attributes. `routes` and `tags` build every endpoint
of a type from its description."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from quadriga.api.auth import RequestContext
from quadriga.api.listing import ListSpec
from quadriga.api.views import TagMap
from quadriga.db import models as m
from quadriga.network import embedded as e
from quadriga.network.api import access, operations, schemas, views
from quadriga.network.api.listing import NEUTRON, Filter, constant_filters, fixed_ips


@dataclass
class Kind:
    """What the generic handlers need to know about one resource type."""

    singular: str
    spec: ListSpec  # model, plural, view, filters and sort keys
    visible: Callable[[RequestContext], Any]
    bodies: tuple[type[schemas.Body], type[schemas.Body]]  # create, update
    create: Callable[[Session, RequestContext, Any], Any]
    update: Callable[[Session, RequestContext, Any, dict[str, Any]], None]
    remove: Callable[[Session, Any], None]
    readonly: set[str]

    @property
    def plural(self) -> str:
        return self.spec.plural

    @property
    def label(self) -> str:
        return self.singular.capitalize()

    def fetch(self, session: Session, ctx: RequestContext, ident: str) -> Any:
        """The object `ident` if the caller may see it, else Neutron's 404."""
        stmt = select(self.spec.model).where(self.spec.model.id == ident).options(*self.spec.options)
        if not access.is_admin(ctx):
            stmt = stmt.where(self.visible(ctx))
        obj = session.scalar(stmt)
        if obj is None:
            raise e.not_found(self.label, ident)
        return obj


def _spec(
    model: Any,
    render: Callable[[Any, TagMap], dict[str, Any]],
    names: str,
    constants: dict[str, Any],
    columns: dict[str, Any] | None = None,
    filters: dict[str, Filter] | None = None,
    options: tuple[Any, ...] = (),
) -> ListSpec:
    """Neutron's list of `model`: the common attributes, `names` and `columns` filter and sort; the
    attributes every object shows with one value (`constants`) and `filters` filter too."""
    cols = {n: getattr(model, n) for n in ("id", "name", "description", "project_id", "revision_number")}
    cols |= {n: getattr(model, n) for n in names.split()} | {"tenant_id": model.project_id} | (columns or {})
    return ListSpec(
        model=model,
        plural=model.__tablename__,
        render=render,
        columns=cols,
        options=options,
        filters=constant_filters(constants) | (filters or {}),
        dialect=NEUTRON,
    )


_READONLY = {"id", "project_id", "tenant_id", "created_at", "updated_at", "revision_number", "status", "tags"}

NETWORK = Kind(
    singular="network",
    spec=_spec(
        m.Network,
        views.network,
        "admin_state_up status shared mtu port_security_enabled",
        {"is_default": False, "provider:network_type": "local", "ipv4_address_scope": None},
        columns={"router:external": m.Network.external},
        options=(selectinload(m.Network.subnets),),
    ),
    visible=access.visible_networks,
    bodies=(schemas.NetworkCreate, schemas.NetworkUpdate),
    create=operations.create_network,
    update=operations.update_network,
    remove=e.delete_network,
    readonly=_READONLY | {"subnets", "availability_zones"},
)
SUBNET = Kind(
    singular="subnet",
    spec=_spec(
        m.Subnet,
        views.subnet,
        "network_id ip_version cidr gateway_ip enable_dhcp ipv6_ra_mode ipv6_address_mode",
        {"subnetpool_id": None, "segment_id": None},
    ),
    visible=access.visible_subnets,
    bodies=(schemas.SubnetCreate, schemas.SubnetUpdate),
    create=operations.create_subnet,
    update=operations.update_subnet,
    remove=e.delete_subnet,
    readonly=_READONLY | {"network_id", "cidr", "ip_version", "ipv6_ra_mode", "ipv6_address_mode", "subnetpool_id"},
)
PORT = Kind(
    singular="port",
    spec=_spec(
        m.Port,
        views.port,
        "network_id admin_state_up status mac_address device_id device_owner port_security_enabled",
        {"binding:vnic_type": "normal", "qos_policy_id": None, "dns_name": ""},
        filters={"fixed_ips": fixed_ips},
        options=(selectinload(m.Port.fixed_ips),),
    ),
    visible=access.visible_ports,
    bodies=(schemas.PortCreate, schemas.PortUpdate),
    create=operations.create_port,
    update=operations.update_port,
    remove=operations.delete_port,
    readonly=_READONLY | {"network_id", "mac_address"},
)
KINDS = (NETWORK, SUBNET, PORT)
