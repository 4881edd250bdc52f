"""The embedded networking service's HTTP API: the subset of Neutron v2.0 the OpenStack clients need
(networks, subnets, ports, tags, and read-only stand-ins for security groups, subnet pools, QoS policies
and extensions), so `openstack network ...`, openstacksdk and octaviaclient work without a Neutron.

Neutron's conventions are kept where clients notice them: root keys, `NeutronError` bodies with Neutron's
exception type names, unknown list filters ignored, `fields`, `.json` suffixes, 201/200/204 codes."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Boolean, Integer, and_, exists, false, or_, select
from sqlalchemy.orm import Session, selectinload
from starlette.exceptions import HTTPException as StarletteHTTPException

from quadriga import constants as c
from quadriga.api.auth import Authenticator, RequestContext
from quadriga.api.errors import ApiError
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.network import embedded as e

log = logging.getLogger("quadriga.network")

# --- request bodies ----------------------------------------------------------------------------------

Name = Annotated[str, Field(max_length=255)]
TagName = Annotated[str, Field(min_length=1, max_length=255)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Owned(_Body):
    project_id: Name | None = None
    tenant_id: Name | None = None
    tags: list[TagName] = []


class NetworkCreate(_Owned):
    name: Name = ""
    description: Name = ""
    admin_state_up: bool = True
    shared: bool = False
    router_external: bool = Field(False, alias="router:external")
    mtu: int = Field(1500, ge=68, le=9216)
    port_security_enabled: bool = True


class NetworkUpdate(_Body):
    name: Name = ""
    description: Name = ""
    admin_state_up: bool = True
    shared: bool = False
    router_external: bool = Field(False, alias="router:external")
    mtu: int = Field(1500, ge=68, le=9216)
    port_security_enabled: bool = True


class Pool(_Body):
    start: str
    end: str


class Route(_Body):
    destination: str
    nexthop: str


class _SubnetCommon(_Body):
    name: Name = ""
    description: Name = ""
    gateway_ip: str | None = None
    allocation_pools: list[Pool] | None = None
    enable_dhcp: bool = True
    dns_nameservers: list[str] | None = None
    host_routes: list[Route] | None = None


class SubnetCreate(_SubnetCommon, _Owned):
    network_id: str
    cidr: str
    ip_version: int
    ipv6_ra_mode: str | None = None
    ipv6_address_mode: str | None = None
    subnetpool_id: None = None
    service_types: list[str] = Field([], max_length=0)

    @field_validator("ip_version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value not in (4, 6):
            raise ValueError(f"{value} is not in [4, 6]")
        return value

    @field_validator("ipv6_ra_mode", "ipv6_address_mode")
    @classmethod
    def _mode(cls, value: str | None) -> str | None:
        if value not in (None, "slaac", "dhcpv6-stateful", "dhcpv6-stateless"):
            raise ValueError(f"'{value}' is not in ['dhcpv6-stateful', 'dhcpv6-stateless', 'slaac', None]")
        return value


class SubnetUpdate(_SubnetCommon):
    pass


class FixedIp(_Body):
    subnet_id: str | None = None
    ip_address: str | None = None


class _PortCommon(_Body):
    name: Name = ""
    description: Name = ""
    admin_state_up: bool = True
    device_id: Name = ""
    device_owner: Name = ""
    port_security_enabled: bool = True
    fixed_ips: list[FixedIp] | None = None
    security_groups: list[str] = Field([], max_length=0)
    allowed_address_pairs: list[dict] = Field([], max_length=0)
    binding_vnic_type: str = Field("normal", alias="binding:vnic_type", pattern="^normal$")


class PortCreate(_PortCommon, _Owned):
    network_id: str
    mac_address: str | None = Field(None, pattern=r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")


class PortUpdate(_PortCommon):
    pass


class TagsBody(_Body):
    tags: list[TagName]


# --- errors ------------------------------------------------------------------------------------------

_TYPES = {
    400: "HTTPBadRequest",
    401: "HTTPUnauthorized",
    403: "HTTPForbidden",
    404: "HTTPNotFound",
    405: "HTTPMethodNotAllowed",
    409: "HTTPConflict",
    413: "HTTPRequestEntityTooLarge",
}


def neutron_fault(status: int, type_: str | None, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"NeutronError": {"type": type_ or _TYPES.get(status, "HTTPError"), "message": message, "detail": ""}}
    return JSONResponse(body, status_code=status, headers=headers)


def bad_request(message: str) -> e.NetError:
    return e.NetError(400, "HTTPBadRequest", message)


def forbidden(rule: str) -> e.NetError:
    return e.NetError(403, "PolicyNotAuthorized", f"rule:{rule} is disallowed by policy")


def _body_error(exc: ValidationError, readonly: frozenset[str] | set[str]) -> e.NetError:
    errors = exc.errors(include_url=False)
    extra = [str(err["loc"][0]) for err in errors if err["type"] == "extra_forbidden" and len(err["loc"]) == 1]
    if ro := [name for name in extra if name in readonly]:
        return bad_request(f"Cannot update read-only attribute {ro[0]}")
    if extra:
        return bad_request(f"Unrecognized attribute(s) '{', '.join(extra)}'")
    err = errors[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "missing":
        return bad_request(f"Failed to parse request. Required attribute '{loc}' not specified")
    return bad_request(f"Invalid input for {loc}. Reason: {err['msg']} (value: {err.get('input')!r}).")


# --- rendering ---------------------------------------------------------------------------------------


def _ts(value: dt.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _common(obj: Any, tags: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "id": obj.id,
        "name": obj.name,
        "description": obj.description,
        "project_id": obj.project_id,
        "tenant_id": obj.project_id,
        "tags": sorted(tags.get(obj.id, [])),
        "created_at": _ts(obj.created_at),
        "updated_at": _ts(obj.updated_at or obj.created_at),
        "revision_number": obj.revision_number,
    }


def render_network(n: m.Network, tags: dict[str, list[str]]) -> dict[str, Any]:
    return {
        **_common(n, tags),
        "admin_state_up": n.admin_state_up,
        "status": n.status,
        "shared": n.shared,
        "router:external": n.external,
        "mtu": n.mtu,
        "subnets": [s.id for s in n.subnets],
        "availability_zones": [],
        "availability_zone_hints": [],
        "port_security_enabled": n.port_security_enabled,
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "is_default": False,
        "l2_adjacency": True,
        "qos_policy_id": None,
        "provider:network_type": "local",
        "provider:physical_network": None,
        "provider:segmentation_id": None,
    }


def render_subnet(s: m.Subnet, tags: dict[str, list[str]]) -> dict[str, Any]:
    return {
        **_common(s, tags),
        "network_id": s.network_id,
        "ip_version": s.ip_version,
        "cidr": s.cidr,
        "gateway_ip": s.gateway_ip,
        "allocation_pools": s.allocation_pools,
        "enable_dhcp": s.enable_dhcp,
        "dns_nameservers": s.dns_nameservers,
        "host_routes": s.host_routes,
        "ipv6_ra_mode": s.ipv6_ra_mode,
        "ipv6_address_mode": s.ipv6_address_mode,
        "subnetpool_id": None,
        "segment_id": None,
        "service_types": [],
    }


def render_port(p: m.Port, tags: dict[str, list[str]]) -> dict[str, Any]:
    return {
        **_common(p, tags),
        "network_id": p.network_id,
        "admin_state_up": p.admin_state_up,
        "status": p.status,
        "mac_address": p.mac_address,
        "fixed_ips": [{"subnet_id": ip.subnet_id, "ip_address": ip.ip_address} for ip in p.fixed_ips],
        "device_id": p.device_id,
        "device_owner": p.device_owner,
        "security_groups": [],
        "allowed_address_pairs": [],
        "extra_dhcp_opts": [],
        "binding:vnic_type": "normal",
        "binding:host_id": "",
        "binding:profile": {},
        "binding:vif_type": "unbound",
        "binding:vif_details": {},
        "port_security_enabled": p.port_security_enabled,
        "qos_policy_id": None,
        "qos_network_policy_id": None,
        "dns_name": "",
        "dns_assignment": [],
    }


def load_tags(session: Session, ids: list[str]) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {}
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(m.Tag.resource_id, m.Tag.tag).where(m.Tag.resource_id.in_(ids[start : start + 500]))
        )
        for rid, tag in rows:
            tags.setdefault(rid, []).append(tag)
    return tags


# --- policy ------------------------------------------------------------------------------------------


def is_admin(ctx: RequestContext) -> bool:
    return ctx.is_admin or "admin" in ctx.roles


def _mine(column: Any, ctx: RequestContext) -> Any:
    return column == ctx.project_id if ctx.project_id else false()


def _visible_networks(ctx: RequestContext) -> Any:
    return or_(_mine(m.Network.project_id, ctx), m.Network.shared.is_(True), m.Network.external.is_(True))


def _visible_subnets(ctx: RequestContext) -> Any:
    shared = select(m.Network.id).where(m.Network.shared.is_(True))
    return or_(_mine(m.Subnet.project_id, ctx), m.Subnet.network_id.in_(shared))


def _visible_ports(ctx: RequestContext) -> Any:
    owned = select(m.Network.id).where(_mine(m.Network.project_id, ctx))
    return or_(_mine(m.Port.project_id, ctx), m.Port.network_id.in_(owned))


def _require_owner(ctx: RequestContext, obj: Any, action: str) -> None:
    if not is_admin(ctx) and obj.project_id != ctx.project_id:
        raise forbidden(action)


def _project_for_create(ctx: RequestContext, body: _Owned) -> str:
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


def _visible_network(session: Session, ctx: RequestContext, network_id: str) -> m.Network:
    stmt = select(m.Network).where(m.Network.id == network_id)
    if not is_admin(ctx):
        stmt = stmt.where(_visible_networks(ctx))
    network = session.scalar(stmt)
    if network is None:
        raise e.not_found("Network", network_id)
    return network


def _set_tags(session: Session, resource_id: str, tags: list[str]) -> None:
    session.execute(m.Tag.__table__.delete().where(m.Tag.resource_id == resource_id))
    for tag in dict.fromkeys(tags):
        session.add(m.Tag(resource_id=resource_id, tag=tag))


# --- resource operations -----------------------------------------------------------------------------


def _create_network(session: Session, ctx: RequestContext, body: NetworkCreate) -> m.Network:
    if not is_admin(ctx) and body.shared:
        raise forbidden("create_network:shared")
    if not is_admin(ctx) and body.router_external:
        raise forbidden("create_network:router:external")
    network = m.Network(
        id=m.new_id(),
        project_id=_project_for_create(ctx, body),
        name=body.name,
        description=body.description,
        admin_state_up=body.admin_state_up,
        shared=body.shared,
        external=body.router_external,
        mtu=body.mtu,
        port_security_enabled=body.port_security_enabled,
        revision_number=1,
    )
    session.add(network)
    return network


def _update_network(session: Session, ctx: RequestContext, network: m.Network, changes: dict[str, Any]) -> None:
    for key in ("shared", "router_external"):
        if key in changes and not is_admin(ctx):
            raise forbidden(f"update_network:{key.replace('_', ':')}")
    if changes.get("shared") is False and network.shared:
        others = select(m.Port.id).where(m.Port.network_id == network.id, m.Port.project_id != network.project_id)
        if session.scalar(others.limit(1)):
            raise e.NetError(
                409,
                "InvalidSharedSetting",
                f"Unable to reconfigure sharing settings for network {network.id}. Multiple tenants are using it.",
            )
    if "router_external" in changes:
        changes["external"] = changes.pop("router_external")
    for key, value in changes.items():
        setattr(network, key, value)
    e.bump(network)


def _create_subnet(session: Session, ctx: RequestContext, body: SubnetCreate) -> m.Subnet:
    project = _project_for_create(ctx, body)
    network = _visible_network(session, ctx, body.network_id)
    if not is_admin(ctx) and network.project_id != project:
        raise forbidden("create_subnet")
    spec = e.SubnetSpec(
        cidr=body.cidr,
        ip_version=body.ip_version,
        name=body.name,
        description=body.description,
        enable_dhcp=body.enable_dhcp,
        ipv6_ra_mode=body.ipv6_ra_mode,
        ipv6_address_mode=body.ipv6_address_mode,
    )
    given = body.model_fields_set
    if "gateway_ip" in given:
        spec.gateway_ip = body.gateway_ip
    if body.allocation_pools is not None:
        spec.allocation_pools = [p.model_dump() for p in body.allocation_pools]
    if body.dns_nameservers is not None:
        spec.dns_nameservers = body.dns_nameservers
    if body.host_routes is not None:
        spec.host_routes = [r.model_dump() for r in body.host_routes]
    return e.create_subnet(session, network, project, spec)


def _update_subnet(session: Session, ctx: RequestContext, subnet: m.Subnet, changes: dict[str, Any]) -> None:
    e.update_subnet(session, subnet, changes)


def _ip_requests(items: list[FixedIp] | None) -> list[e.IpRequest] | None:
    if items is None:
        return None
    return [e.IpRequest(subnet_id=i.subnet_id, ip_address=i.ip_address) for i in items]


def _create_port(session: Session, ctx: RequestContext, body: PortCreate) -> m.Port:
    project = _project_for_create(ctx, body)
    network = _visible_network(session, ctx, body.network_id)
    if not is_admin(ctx) and network.project_id != ctx.project_id:
        if any(ip.ip_address for ip in body.fixed_ips or []):
            raise forbidden("create_port:fixed_ips:ip_address")
        if body.mac_address:
            raise forbidden("create_port:mac_address")
    return e.create_port(
        session,
        network,
        project,
        _ip_requests(body.fixed_ips),
        name=body.name,
        description=body.description,
        admin_state_up=body.admin_state_up,
        device_id=body.device_id,
        device_owner=body.device_owner,
        port_security_enabled=body.port_security_enabled,
        mac_address=body.mac_address.lower() if body.mac_address else None,
    )


def _update_port(session: Session, ctx: RequestContext, port: m.Port, changes: dict[str, Any]) -> None:
    changes.pop("security_groups", None)
    changes.pop("allowed_address_pairs", None)
    changes.pop("binding_vnic_type", None)
    if port.managed and {"fixed_ips", "device_id", "device_owner"} & set(changes):
        raise e.NetError(
            409,
            "ServicePortInUse",
            f"Port {port.id} is the VIP port of load balancer {port.device_id[3:]}: "
            "its fixed_ips, device_id and device_owner cannot be changed.",
        )
    if "fixed_ips" in changes:
        requests = _ip_requests([FixedIp(**i) for i in changes.pop("fixed_ips") or []]) or []
        network = session.get(m.Network, port.network_id)
        assert network is not None
        e.replace_ips(session, network, port, requests)
    e.update_port(port, changes)


def _delete_port(session: Session, port: m.Port) -> None:
    """A VIP port quadriga created goes away with its load balancer, never on its own."""
    if port.managed:
        raise e.NetError(
            409,
            "ServicePortInUse",
            f"Port {port.id} cannot be deleted directly via the port API: has device owner {port.device_owner}.",
        )
    e.delete_port(session, port)


@dataclass
class Kind:
    """What the generic handlers need to know about one resource type."""

    singular: str
    plural: str
    label: str
    model: Any
    render: Callable[[Any, dict[str, list[str]]], dict[str, Any]]
    visible: Callable[[RequestContext], Any]
    create_body: type[_Body]
    update_body: type[_Body]
    create: Callable[[Session, RequestContext, Any], Any]
    update: Callable[[Session, RequestContext, Any, dict[str, Any]], None]
    remove: Callable[[Session, Any], None]
    columns: dict[str, Any]
    readonly: set[str]
    constants: dict[str, Any] = field(default_factory=dict)
    options: tuple[Any, ...] = ()


def _cols(model: Any, *names: str) -> dict[str, Any]:
    cols = {n: getattr(model, n) for n in ("id", "name", "description", "project_id", "revision_number", *names)}
    cols["tenant_id"] = model.project_id
    return cols


_READONLY = {"id", "project_id", "tenant_id", "created_at", "updated_at", "revision_number", "status", "tags"}

NETWORK = Kind(
    singular="network",
    plural="networks",
    label="Network",
    model=m.Network,
    render=render_network,
    visible=_visible_networks,
    create_body=NetworkCreate,
    update_body=NetworkUpdate,
    create=_create_network,
    update=_update_network,
    remove=e.delete_network,
    columns={
        **_cols(m.Network, "admin_state_up", "status", "shared", "mtu", "port_security_enabled"),
        "router:external": m.Network.external,
    },
    readonly=_READONLY | {"subnets", "availability_zones"},
    constants={"is_default": False, "provider:network_type": "local", "ipv4_address_scope": None},
    options=(selectinload(m.Network.subnets),),
)
SUBNET = Kind(
    singular="subnet",
    plural="subnets",
    label="Subnet",
    model=m.Subnet,
    render=render_subnet,
    visible=_visible_subnets,
    create_body=SubnetCreate,
    update_body=SubnetUpdate,
    create=_create_subnet,
    update=_update_subnet,
    remove=e.delete_subnet,
    columns=_cols(
        m.Subnet, "network_id", "ip_version", "cidr", "gateway_ip", "enable_dhcp", "ipv6_ra_mode", "ipv6_address_mode"
    ),
    readonly=_READONLY | {"network_id", "cidr", "ip_version", "ipv6_ra_mode", "ipv6_address_mode", "subnetpool_id"},
    constants={"subnetpool_id": None, "segment_id": None},
)
PORT = Kind(
    singular="port",
    plural="ports",
    label="Port",
    model=m.Port,
    render=render_port,
    visible=_visible_ports,
    create_body=PortCreate,
    update_body=PortUpdate,
    create=_create_port,
    update=_update_port,
    remove=_delete_port,
    columns=_cols(
        m.Port,
        "network_id",
        "admin_state_up",
        "status",
        "mac_address",
        "device_id",
        "device_owner",
        "port_security_enabled",
    ),
    readonly=_READONLY | {"network_id", "mac_address"},
    constants={"binding:vnic_type": "normal", "qos_policy_id": None, "dns_name": ""},
    options=(selectinload(m.Port.fixed_ips),),
)
KINDS = (NETWORK, SUBNET, PORT)


# --- listing -----------------------------------------------------------------------------------------

_NOT_FILTERS = {
    "fields",
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "page_reverse",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
}


def _coerce(column: Any, raw: str, name: str) -> Any:
    if isinstance(column.type, Boolean):
        low = raw.lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise bad_request(f"Invalid input for operation: '{raw}' cannot be converted to boolean for {name}.")
    if isinstance(column.type, Integer):
        try:
            return int(raw)
        except ValueError:
            raise bad_request(f"Invalid input for operation: '{raw}' is not an integer for {name}.") from None
    return raw


def _matches_constant(value: Any, raws: list[str]) -> bool:
    text = "" if value is None else str(value).lower()
    return any(r.lower() == text or (value is None and r.lower() in ("none", "null")) for r in raws)


def _fixed_ip_filter(raw: str) -> Any:
    key, _, value = raw.partition("=")
    clauses = [m.PortIP.port_id == m.Port.id]
    if key == "ip_address":
        clauses.append(m.PortIP.ip_address == value)
    elif key == "subnet_id":
        clauses.append(m.PortIP.subnet_id == value)
    elif key == "ip_address_substr":
        clauses.append(m.PortIP.ip_address.contains(value))
    else:
        raise bad_request(f"Invalid input for operation: '{raw}' is not a valid fixed_ips filter.")
    return exists().where(*clauses)


def _tag_filters(params: Any, id_col: Any) -> list[Any]:
    def has(tag: str) -> Any:
        return exists().where(m.Tag.resource_id == id_col, m.Tag.tag == tag)

    def names(key: str) -> list[str]:
        return [t for raw in params.getlist(key) for t in raw.split(",") if t]

    out = []
    if tags := names("tags"):
        out.append(and_(*(has(t) for t in tags)))
    if tags := names("tags-any"):
        out.append(or_(*(has(t) for t in tags)))
    if tags := names("not-tags"):
        out.append(~and_(*(has(t) for t in tags)))
    if tags := names("not-tags-any"):
        out.append(~or_(*(has(t) for t in tags)))
    return out


def _sort_keys(kind: Kind, params: Any) -> list[tuple[Any, bool]]:
    keys = params.getlist("sort_key")
    dirs = params.getlist("sort_dir")
    out = []
    for i, key in enumerate(keys):
        if key not in kind.columns:
            raise bad_request(f"{key} is an invalid attribute for sort_key")
        direction = dirs[i] if i < len(dirs) else "asc"
        if direction not in ("asc", "desc"):
            raise bad_request(f"{direction} is an invalid value for sort_dir, valid values are: asc, desc")
        out.append((kind.columns[key], direction == "asc"))
    if not out:
        out = [(kind.model.created_at, True)]
    out.append((kind.model.id, out[-1][1]))
    return out


def _after(marker: Any, keys: list[tuple[Any, bool]]) -> Any:
    """Rows strictly after the marker row in the (lexicographic) sort order; NULL sorts lowest."""
    clauses = []
    for i, (col, asc) in enumerate(keys):
        value = getattr(marker, col.key)
        prefix = [k == getattr(marker, k.key) for k, _ in keys[:i]]
        if value is None:
            step = col.is_not(None) if asc else false()
        else:
            step = col > value if asc else or_(col < value, col.is_(None))
        clauses.append(and_(*prefix, step))
    return or_(*clauses)


def _fields(item: dict[str, Any], params: Any) -> dict[str, Any]:
    wanted = [f for raw in params.getlist("fields") for f in raw.split(",") if f]
    return {k: v for k, v in item.items() if k in wanted} if wanted else item


def list_resources(session: Session, kind: Kind, ctx: RequestContext, params: Any, url: str) -> dict[str, Any]:
    stmt = select(kind.model)
    if not is_admin(ctx):
        stmt = stmt.where(kind.visible(ctx))
    for name in params:
        if name in _NOT_FILTERS:
            continue
        raws = params.getlist(name)
        if name in kind.columns:
            col = kind.columns[name]
            stmt = stmt.where(col.in_([_coerce(col, r, name) for r in raws]))
        elif name in kind.constants and not _matches_constant(kind.constants[name], raws):
            stmt = stmt.where(false())
        elif kind is PORT and name == "fixed_ips":
            stmt = stmt.where(*(_fixed_ip_filter(r) for r in raws))
    stmt = stmt.where(*_tag_filters(params, kind.model.id))
    keys = _sort_keys(kind, params)
    reverse = params.get("page_reverse", "false").lower() == "true"
    if reverse:
        keys = [(col, not asc) for col, asc in keys]
    if marker_id := params.get("marker"):
        marker = session.get(kind.model, marker_id)
        if marker is None:
            raise bad_request(f"Marker {marker_id} could not be found.")
        stmt = stmt.where(_after(marker, keys))
    stmt = stmt.order_by(*(col.asc().nulls_first() if asc else col.desc().nulls_last() for col, asc in keys))
    limit = None
    if params.get("limit"):
        try:
            limit = int(params["limit"])
        except ValueError:
            raise bad_request(f"Limit must be an integer 0 or greater and not '{params['limit']}'") from None
        if limit < 0:
            raise bad_request(f"Limit must be an integer 0 or greater and not '{limit}'")
        limit = limit or None
    if limit:
        stmt = stmt.limit(limit)
    rows = list(session.scalars(stmt.options(*kind.options)))
    if reverse:
        rows.reverse()
    tags = load_tags(session, [r.id for r in rows])
    out: dict[str, Any] = {kind.plural: [_fields(kind.render(r, tags), params) for r in rows]}
    if limit:
        links = []
        if rows and len(rows) >= limit:
            links.append({"rel": "next", "href": f"{url}?limit={limit}&marker={rows[-1].id}"})
        if rows and marker_id:
            links.append({"rel": "previous", "href": f"{url}?limit={limit}&marker={rows[0].id}&page_reverse=True"})
        out[f"{kind.plural}_links"] = links
    return out


# --- stand-ins for resources the clients probe -------------------------------------------------------

_EXTENSIONS = {
    "security-group": ("security-group", "The security groups extension."),
    "standard-attr-tag": ("Tag support for resources with standard attribute", "Enables to set tag on resources."),
    "router": ("Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 Neutron networks."),
    "quotas": ("Quota management support", "Expose functions for quotas management per project"),
    "port-security": ("Port Security", "Provides port security"),
    "allowed-address-pairs": ("Allowed Address Pairs", "Provides allowed address pairs"),
    "qos": ("Quality of Service", "The Quality of Service extension."),
    "binding": ("Port Binding", "Expose port bindings of a virtual port to external application"),
    "external-net": ("Neutron external network", "Adds external network attribute to network resource."),
    "subnet_allocation": ("Subnet Allocation", "Enables allocation of subnets from a subnet pool"),
}
_SG_NAMESPACE = uuid.UUID("5b8ad0c9-3f3c-4b0e-9d63-0d1b61f1a7f2")


def _extension(alias: str) -> dict[str, Any]:
    name, description = _EXTENSIONS[alias]
    return {
        "alias": alias,
        "name": name,
        "description": description,
        "updated": "2013-01-01T10:00:00-00:00",
        "links": [],
    }


def default_security_group(project_id: str) -> dict[str, Any]:
    """Every project's "default" group, derived from the project id (nothing to store)."""
    sg_id = str(uuid.uuid5(_SG_NAMESPACE, f"sg:{project_id}"))

    def rule(direction: str, ethertype: str, remote: str | None) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid5(_SG_NAMESPACE, f"{sg_id}:{direction}:{ethertype}")),
            "security_group_id": sg_id,
            "project_id": project_id,
            "tenant_id": project_id,
            "direction": direction,
            "ethertype": ethertype,
            "protocol": None,
            "port_range_min": None,
            "port_range_max": None,
            "remote_ip_prefix": None,
            "remote_group_id": remote,
            "description": "",
            "revision_number": 0,
        }

    return {
        "id": sg_id,
        "name": "default",
        "description": "Default security group",
        "project_id": project_id,
        "tenant_id": project_id,
        "stateful": True,
        "shared": False,
        "tags": [],
        "revision_number": 1,
        "security_group_rules": [
            rule(d, eth, sg_id if d == "ingress" else None) for d in ("ingress", "egress") for eth in ("IPv4", "IPv6")
        ],
    }


def _security_groups(db: Database, ctx: RequestContext) -> list[dict[str, Any]]:
    projects = {ctx.project_id} if ctx.project_id else set()
    if is_admin(ctx):
        with db.read() as session:
            projects |= set(session.scalars(select(m.Network.project_id).distinct()))
    return [default_security_group(p) for p in sorted(projects)]


def _scalar_filter(items: list[dict[str, Any]], params: Any) -> list[dict[str, Any]]:
    for name in params:
        if name in _NOT_FILTERS or not items or name not in items[0]:
            continue
        raws = params.getlist(name)
        items = [i for i in items if not isinstance(i[name], list | dict) and _matches_constant(i[name], raws)]
    return items


# --- the app -----------------------------------------------------------------------------------------


class _JsonSuffix:
    """Accept Neutron's optional `.json` suffix on every path."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith(".json"):
            scope = dict(scope, path=scope["path"][:-5])
            if scope.get("raw_path", b"").endswith(b".json"):
                scope["raw_path"] = scope["raw_path"][:-5]
        await self.app(scope, receive, send)


async def _json_body(request: Request) -> Any:
    """The request's JSON document, read with a size cap (413 beyond 1 MiB)."""
    too_large = e.NetError(413, "HTTPRequestEntityTooLarge", "Request is too large.")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > c.MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > c.MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise bad_request("Resource body required")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad_request("Malformed request body") from None


def _context(request: Request) -> RequestContext:
    return request.app.state.authenticator.authenticate(request)


Ctx = Annotated[RequestContext, Depends(_context)]
Body = Annotated[Any, Depends(_json_body)]


def _validate(model: type[_Body], data: Any, readonly: frozenset[str] | set[str] = frozenset()) -> Any:
    if not isinstance(data, dict):
        raise bad_request("Body contains invalid data")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _body_error(exc, readonly) from None


def _unwrap(kind: Kind, data: Any) -> Any:
    if not isinstance(data, dict) or kind.singular not in data:
        raise bad_request(f"Unable to find '{kind.singular}' in request body")
    if len(data) != 1:
        raise bad_request(f"Unrecognized attribute(s) '{', '.join(k for k in data if k != kind.singular)}'")
    return data[kind.singular]


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return neutron_fault(exc.status, getattr(exc, "type", None), exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return neutron_fault(400, None, f"Invalid input: {exc.errors()[0].get('msg', '') if exc.errors() else ''}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "The resource could not be found." if exc.status_code == 404 else str(exc.detail)
        return neutron_fault(exc.status_code, None, message)

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", req.method, req.url.path)
        return neutron_fault(
            500, "HTTPInternalServerError", "Request Failed: internal server error while processing your request."
        )


def create_app(db: Database, authenticator: Authenticator) -> FastAPI:
    """The Neutron-compatible API over `db`; mount it at the root of its own port (clients expect `/v2.0`)."""
    app = FastAPI(title="quadriga networking", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.authenticator = authenticator
    app.add_middleware(_JsonSuffix)
    _install_handlers(app)

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    @app.get("/")
    def versions(request: Request) -> dict[str, Any]:
        link = {"href": f"{base(request)}/v2.0/", "rel": "self"}
        return {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [link]}]}

    @app.get("/v2.0")
    @app.get("/v2.0/")
    def resources(request: Request) -> dict[str, Any]:
        names = [("network", "networks"), ("subnet", "subnets"), ("port", "ports"), ("subnetpool", "subnetpools")]
        return {
            "resources": [
                {"name": n, "collection": col, "links": [{"href": f"{base(request)}/v2.0/{col}", "rel": "self"}]}
                for n, col in names
            ]
        }

    @app.get("/v2.0/extensions")
    def extensions(ctx: Ctx) -> dict[str, Any]:
        return {"extensions": [_extension(a) for a in _EXTENSIONS]}

    @app.get("/v2.0/extensions/{alias}")
    def extension(alias: str, ctx: Ctx) -> dict[str, Any]:
        if alias not in _EXTENSIONS:
            raise e.NetError(404, "HTTPNotFound", f"Extension with alias {alias} does not exist")
        return {"extension": _extension(alias)}

    @app.get("/v2.0/subnetpools")
    def subnetpools(ctx: Ctx) -> dict[str, Any]:
        return {"subnetpools": []}

    @app.get("/v2.0/qos/policies")
    def qos_policies(ctx: Ctx) -> dict[str, Any]:
        return {"policies": []}

    @app.get("/v2.0/security-groups")
    def security_groups(request: Request, ctx: Ctx) -> dict[str, Any]:
        items = _scalar_filter(_security_groups(db, ctx), request.query_params)
        return {"security_groups": [_fields(i, request.query_params) for i in items]}

    @app.get("/v2.0/security-groups/{sg_id}")
    def security_group(sg_id: str, request: Request, ctx: Ctx) -> dict[str, Any]:
        for sg in _security_groups(db, ctx):
            if sg["id"] == sg_id:
                return {"security_group": _fields(sg, request.query_params)}
        raise e.NetError(404, "SecurityGroupNotFound", f"Security group {sg_id} does not exist")

    for kind in KINDS:
        _resource_routes(app, db, kind)
    return app


def _resource_routes(app: FastAPI, db: Database, kind: Kind) -> None:
    """CRUD and tag routes of one resource type."""
    path = f"/v2.0/{kind.plural}"

    def fetch(session: Session, ctx: RequestContext, ident: str) -> Any:
        stmt = select(kind.model).where(kind.model.id == ident).options(*kind.options)
        if not is_admin(ctx):
            stmt = stmt.where(kind.visible(ctx))
        obj = session.scalar(stmt)
        if obj is None:
            raise e.not_found(kind.label, ident)
        return obj

    def show(session: Session, obj: Any) -> dict[str, Any]:
        session.flush()
        session.refresh(obj)
        return kind.render(obj, load_tags(session, [obj.id]))

    def create_one(session: Session, ctx: RequestContext, data: Any) -> dict[str, Any]:
        body = _validate(kind.create_body, data)
        obj = kind.create(session, ctx, body)
        if body.tags:
            _set_tags(session, obj.id, body.tags)
        return show(session, obj)

    @app.get(path, name=f"list_{kind.plural}")
    def list_(request: Request, ctx: Ctx) -> dict[str, Any]:
        with db.read() as session:
            return list_resources(
                session, kind, ctx, request.query_params, f"{str(request.base_url).rstrip('/')}{path}"
            )

    @app.post(path, status_code=201, name=f"create_{kind.singular}")
    def create(ctx: Ctx, data: Body) -> dict[str, Any]:
        with db.write() as session:
            if isinstance(data, dict) and kind.plural in data and len(data) == 1:
                if not isinstance(data[kind.plural], list):
                    raise bad_request("Body contains invalid data")
                return {kind.plural: [create_one(session, ctx, item) for item in data[kind.plural]]}
            return {kind.singular: create_one(session, ctx, _unwrap(kind, data))}

    @app.get(path + "/{ident}", name=f"show_{kind.singular}")
    def get(ident: str, request: Request, ctx: Ctx) -> dict[str, Any]:
        with db.read() as session:
            obj = fetch(session, ctx, ident)
            item = kind.render(obj, load_tags(session, [obj.id]))
        return {kind.singular: _fields(item, request.query_params)}

    @app.put(path + "/{ident}", name=f"update_{kind.singular}")
    def update(ident: str, ctx: Ctx, data: Body) -> dict[str, Any]:
        body = _validate(kind.update_body, _unwrap(kind, data), kind.readonly)
        with db.write() as session:
            obj = fetch(session, ctx, ident)
            _require_owner(ctx, obj, f"update_{kind.singular}")
            kind.update(session, ctx, obj, body.model_dump(exclude_unset=True))
            return {kind.singular: show(session, obj)}

    @app.delete(path + "/{ident}", status_code=204, name=f"delete_{kind.singular}")
    def remove(ident: str, ctx: Ctx) -> Response:
        with db.write() as session:
            obj = fetch(session, ctx, ident)
            _require_owner(ctx, obj, f"delete_{kind.singular}")
            kind.remove(session, obj)
        return Response(status_code=204)

    @app.get(path + "/{ident}/tags")
    def get_tags(ident: str, ctx: Ctx) -> dict[str, Any]:
        with db.read() as session:
            obj = fetch(session, ctx, ident)
            return {"tags": sorted(load_tags(session, [obj.id]).get(obj.id, []))}

    @app.put(path + "/{ident}/tags")
    def replace_tags(ident: str, ctx: Ctx, data: Body) -> dict[str, Any]:
        body = _validate(TagsBody, data)
        with db.write() as session:
            obj = fetch(session, ctx, ident)
            _require_owner(ctx, obj, f"update_{kind.singular}:tags")
            _set_tags(session, obj.id, body.tags)
            e.bump(obj)
        return {"tags": sorted(set(body.tags))}

    @app.delete(path + "/{ident}/tags", status_code=204)
    def clear_tags(ident: str, ctx: Ctx) -> Response:
        with db.write() as session:
            obj = fetch(session, ctx, ident)
            _require_owner(ctx, obj, f"update_{kind.singular}:tags")
            _set_tags(session, obj.id, [])
            e.bump(obj)
        return Response(status_code=204)

    @app.get(path + "/{ident}/tags/{tag}", status_code=204)
    def has_tag(ident: str, tag: str, ctx: Ctx) -> Response:
        with db.read() as session:
            obj = fetch(session, ctx, ident)
            if tag not in load_tags(session, [obj.id]).get(obj.id, []):
                raise _tag_not_found(kind, ident, tag)
        return Response(status_code=204)

    @app.put(path + "/{ident}/tags/{tag}", status_code=201)
    def add_tag(ident: str, tag: str, ctx: Ctx) -> Response:
        if len(tag) > 255:
            raise bad_request(f"Invalid input for tag. Reason: '{tag[:20]}...' exceeds maximum length of 255.")
        with db.write() as session:
            obj = fetch(session, ctx, ident)
            _require_owner(ctx, obj, f"update_{kind.singular}:tags")
            if session.get(m.Tag, (obj.id, tag)) is None:
                session.add(m.Tag(resource_id=obj.id, tag=tag))
                e.bump(obj)
        return Response(status_code=201)

    @app.delete(path + "/{ident}/tags/{tag}", status_code=204)
    def remove_tag(ident: str, tag: str, ctx: Ctx) -> Response:
        with db.write() as session:
            obj = fetch(session, ctx, ident)
            _require_owner(ctx, obj, f"update_{kind.singular}:tags")
            row = session.get(m.Tag, (obj.id, tag))
            if row is None:
                raise _tag_not_found(kind, ident, tag)
            session.delete(row)
            e.bump(obj)
        return Response(status_code=204)


def _tag_not_found(kind: Kind, ident: str, tag: str) -> e.NetError:
    return e.NetError(404, "TagNotFound", f"Tag {tag} could not be found for {kind.singular} {ident}.")
