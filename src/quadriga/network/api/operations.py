"""What a create, update or delete request does once its body is valid: the policy checks that depend on
the request (shared, external, foreign fixed IPs or MACs, VIP ports), then the embedded service's
operations. Each runs inside the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quadriga.api.auth import RequestContext
from quadriga.db import models as m
from quadriga.network import embedded as e
from quadriga.network.api.access import is_admin, project_for_create, visible_network
from quadriga.network.api.errors import forbidden
from quadriga.network.api.schemas import FixedIp, NetworkCreate, PortCreate, SubnetCreate


def create_network(session: Session, ctx: RequestContext, body: NetworkCreate) -> m.Network:
    if not is_admin(ctx) and body.shared:
        raise forbidden("create_network:shared")
    if not is_admin(ctx) and body.router_external:
        raise forbidden("create_network:router:external")
    network = m.Network(
        id=m.new_id(),
        project_id=project_for_create(ctx, body),
        external=body.router_external,
        revision_number=1,
        **body.model_dump(include={"name", "description", "admin_state_up", "shared", "mtu", "port_security_enabled"}),
    )
    session.add(network)
    return network


def update_network(session: Session, ctx: RequestContext, network: m.Network, changes: dict[str, Any]) -> None:
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


def create_subnet(session: Session, ctx: RequestContext, body: SubnetCreate) -> m.Subnet:
    project = project_for_create(ctx, body)
    network = visible_network(session, ctx, body.network_id)
    if not is_admin(ctx) and network.project_id != project:
        raise forbidden("create_subnet")
    spec = e.SubnetSpec(
        **body.model_dump(
            include={"cidr", "ip_version", "name", "description", "enable_dhcp", "ipv6_ra_mode", "ipv6_address_mode"}
        )
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


def update_subnet(session: Session, ctx: RequestContext, subnet: m.Subnet, changes: dict[str, Any]) -> None:
    e.update_subnet(session, subnet, changes)


def _ip_requests(items: list[FixedIp] | None) -> list[e.IpRequest] | None:
    if items is None:
        return None
    return [e.IpRequest(subnet_id=i.subnet_id, ip_address=i.ip_address) for i in items]


def create_port(session: Session, ctx: RequestContext, body: PortCreate) -> m.Port:
    project = project_for_create(ctx, body)
    network = visible_network(session, ctx, body.network_id)
    if not is_admin(ctx) and network.project_id != ctx.project_id:
        if any(ip.ip_address for ip in body.fixed_ips or []):
            raise forbidden("create_port:fixed_ips:ip_address")
        if body.mac_address:
            raise forbidden("create_port:mac_address")
    attrs = body.model_dump(
        include={"name", "description", "admin_state_up", "device_id", "device_owner", "port_security_enabled"}
    )
    mac = body.mac_address.lower() if body.mac_address else None
    return e.create_port(session, network, project, _ip_requests(body.fixed_ips), mac_address=mac, **attrs)


def update_port(session: Session, ctx: RequestContext, port: m.Port, changes: dict[str, Any]) -> None:
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


def delete_port(session: Session, port: m.Port) -> None:
    """A VIP port quadriga created goes away with its load balancer, never on its own."""
    if port.managed:
        raise e.NetError(
            409,
            "ServicePortInUse",
            f"Port {port.id} cannot be deleted directly via the port API: has device owner {port.device_owner}.",
        )
    e.delete_port(session, port)
