"""The embedded networking service's operations, shared by its Neutron-compatible API and by the
load-balancer API (VIP allocation).

Every function works inside the caller's transaction and never commits: a load balancer and its VIP
port are written together or not at all. Errors of the Neutron API are `NetError`s carrying Neutron's
exception type name; the VIP functions raise the load-balancer API's (Octavia's) errors instead."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from quadriga.api.errors import ApiError, BadRequest, Conflict, Validation
from quadriga.db import models as m
from quadriga.db.session import column_values
from quadriga.network import ipam

VIP_OWNER = "Octavia"
DHCP_OWNER = "network:dhcp"
UNSET: Any = object()  # "not in the request", as opposed to an explicit null


class NetError(ApiError):
    """An error of the Neutron API: HTTP status, Neutron's exception type and its message."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message, status)
        self.type = type_


def not_found(kind: str, ident: str) -> NetError:
    return NetError(404, f"{kind}NotFound", f"{kind} {ident} could not be found.")


def invalid(message: str) -> NetError:
    return NetError(400, "InvalidInput", f"Invalid input for operation: {message}")


def bump(obj: Any) -> None:
    """Neutron's revision_number: clients use it for compare-and-swap, so every change counts."""
    obj.revision_number = (obj.revision_number or 0) + 1


# --- networks ----------------------------------------------------------------------------------------


def delete_network(session: Session, network: m.Network) -> None:
    """Delete a network with its subnets; refused (409) while a port other than DHCP remains on it."""
    ports = list(session.scalars(select(m.Port).where(m.Port.network_id == network.id)))
    if any(p.device_owner != DHCP_OWNER for p in ports):
        raise NetError(
            409,
            "NetworkInUse",
            f"Unable to complete operation on network {network.id}. "
            "There are one or more ports still in use on the network.",
        )
    for port in ports:
        delete_port(session, port)
    session.flush()
    for subnet in list(network.subnets):
        _delete_tags(session, subnet.id)
        session.delete(subnet)
    _delete_tags(session, network.id)
    session.delete(network)


def _delete_tags(session: Session, resource_id: str) -> None:
    session.execute(delete(m.Tag).where(m.Tag.resource_id == resource_id))


# --- subnets -----------------------------------------------------------------------------------------


@dataclass
class SubnetSpec:
    """A subnet request after schema validation; UNSET marks what the client left out."""

    cidr: str
    ip_version: int
    name: str = ""
    description: str = ""
    gateway_ip: Any = UNSET
    allocation_pools: Any = UNSET
    enable_dhcp: bool = True
    dns_nameservers: Any = UNSET
    host_routes: Any = UNSET
    ipv6_ra_mode: str | None = None
    ipv6_address_mode: str | None = None


def _parse_cidr(cidr: str, ip_version: int) -> ipam.IPNetwork:
    try:
        return ipam.parse_cidr(cidr, ip_version)
    except ValueError as exc:
        raise invalid(str(exc)) from None


def _gateway(net: ipam.IPNetwork, gateway: str | None) -> str | None:
    try:
        return ipam.validate_gateway(net, gateway)
    except ipam.IpamError as exc:
        raise invalid(str(exc)) from None


def _pools(net: ipam.IPNetwork, gateway: str | None, pools: list[dict[str, str]]) -> list[dict[str, str]]:
    try:
        return ipam.validate_pools(net, gateway, pools)
    except ipam.GatewayInPool as exc:
        raise NetError(409, "GatewayConflictWithAllocationPools", str(exc)) from None
    except ipam.PoolsOverlap as exc:
        raise NetError(409, "OverlappingAllocationPools", str(exc)) from None
    except ipam.PoolOutOfBounds as exc:
        raise NetError(400, "OutOfBoundsAllocationPool", str(exc)) from None
    except ipam.InvalidPool as exc:
        raise NetError(400, "InvalidAllocationPool", str(exc)) from None


def _addresses(values: list[str], ip_field: str) -> list[str]:
    out = []
    for value in values:
        try:
            out.append(ipam.canonical(value))
        except ValueError:
            raise NetError(
                400, "HTTPBadRequest", f"Invalid input for {ip_field}. Reason: '{value}' is not a valid IP address."
            ) from None
    if len(set(out)) != len(out):
        raise NetError(400, "HTTPBadRequest", f"Invalid input for {ip_field}. Reason: Duplicate items in the list.")
    return out


def _routes(routes: list[dict[str, str]]) -> list[dict[str, str]]:
    out = []
    for route in routes:
        try:
            dest = str(ipaddress.ip_network(route["destination"]))
            nexthop = ipam.canonical(route["nexthop"])
        except ValueError:
            raise NetError(
                400, "HTTPBadRequest", f"Invalid input for host_routes. Reason: {route} is not a valid route."
            ) from None
        out.append({"destination": dest, "nexthop": nexthop})
    return out


def _check_ipv6_modes(ip_version: int, ra: str | None, addr: str | None, net: ipam.IPNetwork) -> None:
    if ip_version == 4 and (ra or addr):
        attr, value = ("ipv6_ra_mode", ra) if ra else ("ipv6_address_mode", addr)
        raise invalid(f"{attr} set to '{value}' with ip_version set to 4 is not valid.")
    if ra and addr and ra != addr:
        raise invalid(
            f"ipv6_ra_mode set to '{ra}' with ipv6_address_mode set to '{addr}' is not valid. "
            "If both attributes are set, they must be the same value"
        )
    if (addr in ipam.EUI64_MODES or ra in ipam.EUI64_MODES) and net.prefixlen != 64:
        raise invalid(
            f"Invalid CIDR {net} for IPv6 address mode. OpenStack uses the EUI-64 address format, "
            "which requires the prefix to be /64"
        )


def create_subnet(session: Session, network: m.Network, project_id: str, spec: SubnetSpec) -> m.Subnet:
    """Validate and add a subnet: CIDR of the right version not overlapping the network's other subnets,
    gateway defaulting to the first host, pools defaulting to every other host."""
    net = _parse_cidr(spec.cidr, spec.ip_version)
    for other in network.subnets:
        if ipaddress.ip_network(other.cidr).overlaps(net):
            raise invalid(f"Requested subnet with cidr: {net} for network: {network.id} overlaps with another subnet.")
    _check_ipv6_modes(spec.ip_version, spec.ipv6_ra_mode, spec.ipv6_address_mode, net)
    gateway = ipam.default_gateway(net) if spec.gateway_ip is UNSET else _gateway(net, spec.gateway_ip)
    if spec.allocation_pools is UNSET or spec.allocation_pools is None:
        pools = ipam.default_pools(net, gateway)
    else:
        pools = _pools(net, gateway, spec.allocation_pools)
    subnet = m.Subnet(
        id=m.new_id(),
        project_id=project_id,
        network_id=network.id,
        name=spec.name,
        description=spec.description,
        ip_version=spec.ip_version,
        cidr=str(net),
        gateway_ip=gateway,
        allocation_pools=pools,
        enable_dhcp=spec.enable_dhcp,
        dns_nameservers=[]
        if spec.dns_nameservers in (UNSET, None)
        else _addresses(spec.dns_nameservers, "dns_nameservers"),
        host_routes=[] if spec.host_routes in (UNSET, None) else _routes(spec.host_routes),
        ipv6_ra_mode=spec.ipv6_ra_mode,
        ipv6_address_mode=spec.ipv6_address_mode,
        revision_number=1,
    )
    session.add(subnet)
    network.subnets.append(subnet)
    bump(network)
    return subnet


def update_subnet(session: Session, subnet: m.Subnet, changes: dict[str, Any]) -> None:
    """Apply a PUT: the gateway and the pools are checked against each other and against used IPs."""
    net = ipaddress.ip_network(subnet.cidr)
    gateway = subnet.gateway_ip
    if "gateway_ip" in changes:
        gateway = _gateway(net, changes["gateway_ip"])
        if gateway is not None and gateway != subnet.gateway_ip:
            owner = session.scalar(
                select(m.PortIP.port_id).where(m.PortIP.subnet_id == subnet.id, m.PortIP.ip_address == gateway)
            )
            if owner:
                raise NetError(
                    409,
                    "GatewayIpInUse",
                    f"Current gateway ip {gateway} already in use by port {owner}. Unable to update.",
                )
    pools = subnet.allocation_pools
    if changes.get("allocation_pools") is not None:
        pools = changes["allocation_pools"]
    pools = _pools(net, gateway, pools)
    subnet.gateway_ip = gateway
    subnet.allocation_pools = pools
    for key in ("name", "description", "enable_dhcp"):
        if key in changes:
            setattr(subnet, key, changes[key])
    if "dns_nameservers" in changes:
        subnet.dns_nameservers = _addresses(changes["dns_nameservers"] or [], "dns_nameservers")
    if "host_routes" in changes:
        subnet.host_routes = _routes(changes["host_routes"] or [])
    bump(subnet)


def delete_subnet(session: Session, subnet: m.Subnet) -> None:
    """Delete a subnet; refused (409) while a port other than DHCP holds an address on it."""
    rows = session.execute(
        select(m.PortIP, m.Port.device_owner).join(m.Port).where(m.PortIP.subnet_id == subnet.id)
    ).all()
    if any(owner != DHCP_OWNER for _ip, owner in rows):
        raise NetError(
            409,
            "SubnetInUse",
            f"Unable to complete operation on subnet {subnet.id}: "
            "One or more ports have an IP allocation from this subnet.",
        )
    for ip, _owner in rows:
        session.delete(ip)
    bump(subnet.network)
    _delete_tags(session, subnet.id)
    session.delete(subnet)


# --- ports -------------------------------------------------------------------------------------------


def new_mac(session: Session, network_id: str) -> str:
    """A random MAC with OpenStack's fa:16:3e prefix, unique on the network."""
    for _ in range(16):
        mac = "fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        clash = select(m.Port.id).where(m.Port.network_id == network_id, m.Port.mac_address == mac)
        if column_values(session, clash).first() is None:
            return mac
    raise NetError(409, "MacAddressGenerationFailure", f"Unable to generate unique mac on network {network_id}.")


def _port_status(port: m.Port) -> str:
    return "ACTIVE" if port.device_id else "DOWN"


@dataclass
class IpRequest:
    subnet_id: str | None = None
    ip_address: str | None = None


def _resolve_ips(session: Session, network: m.Network, requests: list[IpRequest]) -> list[tuple[m.Subnet, str | None]]:
    """Turn a port's fixed_ips request into (subnet, address or None) pairs, Neutron's way."""
    subnets = list(network.subnets)
    out: list[tuple[m.Subnet, str | None]] = []
    for req in requests:
        address = None
        if req.ip_address is not None:
            try:
                address = ipam.canonical(req.ip_address)
            except ValueError:
                raise NetError(
                    400,
                    "HTTPBadRequest",
                    f"Invalid input for fixed_ips. Reason: '{req.ip_address}' is not a valid IP address.",
                ) from None
        if req.subnet_id is not None:
            subnet = next((s for s in subnets if s.id == req.subnet_id), None)
            if subnet is None:
                raise invalid(
                    f"Failed to create port on network {network.id}, "
                    f"because fixed_ips included invalid subnet {req.subnet_id}."
                )
        elif address is not None:
            ip = ipaddress.ip_address(address)
            subnet = next((s for s in subnets if ip in ipaddress.ip_network(s.cidr)), None)
            if subnet is None:
                raise NetError(
                    400,
                    "InvalidIpForNetwork",
                    f"IP address {address} is not a valid IP for any of the subnets on the specified network.",
                )
        else:
            raise invalid("fixed_ips entries need a subnet_id or an ip_address.")
        out.append((subnet, address))
    pairs = [(s.id, a) for s, a in out if a is not None]
    if len(set(pairs)) != len(pairs):
        raise invalid("Duplicate IP addresses in fixed_ips.")
    return out


def _net_ipam_error(exc: ipam.AllocationError) -> NetError:
    if isinstance(exc, ipam.AddressInUse):
        return NetError(
            409, "IpAddressAlreadyAllocated", f"IP address {exc.address} already allocated in subnet {exc.subnet_id}"
        )
    if isinstance(exc, ipam.SubnetFull):
        return NetError(409, "IpAddressGenerationFailure", f"No more IP addresses available on subnet {exc.subnet_id}.")
    return NetError(400, "InvalidIpForSubnet", f"IP address {exc.address} is not a valid IP for the specified subnet.")


def _assign(session: Session, port: m.Port, pairs: list[tuple[m.Subnet, str | None]]) -> None:
    """Allocate the pairs' addresses to `port`; raises ipam.AllocationError."""
    taken: dict[str, set[str]] = {}
    for subnet, address in pairs:
        ip = ipam.allocate(session, subnet, address, mac=port.mac_address, taken=taken.get(subnet.id, ()))
        taken.setdefault(subnet.id, set()).add(ip)
        port.fixed_ips.append(m.PortIP(subnet_id=subnet.id, ip_address=ip))


def _assign_default(session: Session, network: m.Network, port: m.Port) -> None:
    """No fixed_ips in the request: one address from the first subnet that has one free."""
    for subnet in network.subnets:
        try:
            _assign(session, port, [(subnet, None)])
            return
        except ipam.SubnetFull:
            continue
    if network.subnets:
        raise NetError(409, "IpAddressGenerationFailure", f"No more IP addresses available on network {network.id}.")


def create_port(
    session: Session,
    network: m.Network,
    project_id: str,
    fixed_ips: list[IpRequest] | None = None,
    **attrs: Any,
) -> m.Port:
    """Add a port with its fixed IPs (by default the lowest free address of the first subnet with one)."""
    pairs = _resolve_ips(session, network, fixed_ips) if fixed_ips is not None else None
    mac = attrs.pop("mac_address", None)
    if mac is None:
        mac = new_mac(session, network.id)
    elif session.scalar(select(m.Port.id).where(m.Port.network_id == network.id, m.Port.mac_address == mac)):
        raise NetError(
            409,
            "MacAddressInUse",
            f"Unable to complete operation for network {network.id}. The mac address {mac} is in use.",
        )
    port = m.Port(id=m.new_id(), project_id=project_id, network_id=network.id, mac_address=mac, revision_number=1)
    for key, value in attrs.items():
        if value is not None:
            setattr(port, key, value)
    port.status = _port_status(port)
    try:
        if pairs is None:
            _assign_default(session, network, port)
        else:
            _assign(session, port, pairs)
    except ipam.AllocationError as exc:
        raise _net_ipam_error(exc) from None
    session.add(port)
    return port


def replace_ips(session: Session, network: m.Network, port: m.Port, requests: list[IpRequest]) -> None:
    """A PUT of fixed_ips: keep the requested addresses the port already has (an entry with only a
    subnet keeps the port's address there), allocate the others, release the rest."""
    current = {(ip.subnet_id, ip.ip_address): ip for ip in port.fixed_ips}
    keep: set[tuple[str, str]] = set()
    wanted: list[tuple[m.Subnet, str | None]] = []
    for subnet, address in _resolve_ips(session, network, requests):
        if address is None:
            address = next((a for s, a in current if s == subnet.id and (s, a) not in keep), None)
            if address is None:
                wanted.append((subnet, None))
                continue
        if (subnet.id, address) in current:
            keep.add((subnet.id, address))
        else:
            wanted.append((subnet, address))
    for key, ip in current.items():
        if key not in keep:
            port.fixed_ips.remove(ip)
    session.flush()
    try:
        _assign(session, port, wanted)
    except ipam.AllocationError as exc:
        raise _net_ipam_error(exc) from None


def update_port(port: m.Port, changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        setattr(
            port, key, "" if value is None and key in ("name", "description", "device_id", "device_owner") else value
        )
    port.status = _port_status(port)
    bump(port)


def delete_port(session: Session, port: m.Port) -> None:
    _delete_tags(session, port.id)
    session.delete(port)


# --- the load balancer's VIP -------------------------------------------------------------------------


@dataclass
class Vip:
    address: str
    port_id: str
    subnet_id: str
    network_id: str


# The address of a stand-in VIP that names none (TEST-NET-2, as Octavia's noop network driver).
STAND_IN_ADDRESS = "198.51.100.1"


def stand_in_vip(port_id: str | None, network_id: str | None, subnet_id: str | None, address: str | None) -> Vip:
    """A VIP for a provider without a data plane on a network the embedded networking does not have:
    the ids and address the request names (made up where it names none); nothing is allocated or stored."""
    return Vip(
        address=address or STAND_IN_ADDRESS,
        port_id=port_id or m.new_id(),
        subnet_id=subnet_id or m.new_id(),
        network_id=network_id or m.new_id(),
    )


def _vip_from_port(session: Session, port_id: str, subnet_id: str | None, address: str | None, device_id: str) -> Vip:
    port = session.get(m.Port, port_id)
    if port is None:
        raise BadRequest(f"Port {port_id} not found.")
    if port.device_id:
        raise Validation(f"Port {port_id} is already used by device {port.device_id}.")
    ips = list(port.fixed_ips)
    if subnet_id:
        ip = next((i for i in ips if i.subnet_id == subnet_id), None)
        if ip is None:
            raise Validation("No VIP address found on the specified VIP port within the specified subnet.")
    elif address:
        ip = next((i for i in ips if i.ip_address == address), None)
        if ip is None:
            raise Validation("Specified VIP address not found on the specified VIP port.")
    elif len(ips) == 1:
        ip = ips[0]
    else:
        raise Validation("VIP port's subnet could not be determined. Please specify either a VIP subnet or address.")
    port.device_owner, port.device_id = VIP_OWNER, device_id
    port.status = _port_status(port)
    bump(port)
    return Vip(address=ip.ip_address, port_id=port.id, subnet_id=ip.subnet_id, network_id=port.network_id)


def _has_free_address(session: Session, subnet: m.Subnet) -> bool:
    try:
        ipam.allocate(session, subnet)
    except ipam.SubnetFull:
        return False
    return True


def _vip_subnet_on_network(session: Session, network_id: str, subnet_id: str | None, address: str | None) -> m.Subnet:
    network = session.get(m.Network, network_id)
    if network is None:
        raise BadRequest(f"Network {network_id} not found.")
    subnets = list(network.subnets)
    if subnet_id:
        subnet = next((s for s in subnets if s.id == subnet_id), None)
        if subnet is None:
            raise Validation(f"Subnet {subnet_id} not found on network {network_id}.")
        return subnet
    if address:
        ip = ipaddress.ip_address(address)
        subnet = next((s for s in subnets if ip in ipaddress.ip_network(s.cidr)), None)
        if subnet is None:
            raise Validation("Supplied network does not contain a subnet for VIP address specified.")
        return subnet
    if not subnets:
        raise Validation("Supplied network does not contain a subnet.")
    # Prefer IPv4, as Octavia does; within a version keep the network's subnet order.
    for subnet in sorted(subnets, key=lambda s: s.ip_version):
        if _has_free_address(session, subnet):
            return subnet
    raise Validation("Subnet(s) in the supplied network do not contain enough available IPs.")


def allocate_vip(
    session: Session,
    project_id: str,
    lb_id: str,
    *,
    port_id: str | None = None,
    network_id: str | None = None,
    subnet_id: str | None = None,
    address: str | None = None,
    stand_in: bool = False,
) -> Vip:
    """Find or create the VIP port of load balancer `lb_id`, following Octavia's rules for which of
    vip_port_id / vip_network_id / vip_subnet_id / vip_address decides what. With `stand_in` (a provider
    without a data plane) a port, network or subnet that does not exist gives a stand-in VIP instead of 400."""
    if address is not None:
        try:
            address = ipam.canonical(address)
        except ValueError:
            raise Validation(f"{address} is not a valid IP address.") from None
    # Held while the VIP is allocated: the session's identity map keeps only referenced objects, and the
    # lookups below would otherwise read the same row again.
    target = _vip_target(session, port_id, network_id, subnet_id) if stand_in else None
    if stand_in and target is None:
        return stand_in_vip(port_id, network_id, subnet_id, address)
    device_id = f"lb-{lb_id}"
    if port_id:
        return _vip_from_port(session, port_id, subnet_id, address, device_id)
    if network_id:
        subnet = _vip_subnet_on_network(session, network_id, subnet_id, address)
    elif subnet_id:
        found = session.get(m.Subnet, subnet_id)
        if found is None:
            raise BadRequest(f"Subnet {subnet_id} not found.")
        subnet = found
    else:
        raise Validation("VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id.")
    port = m.Port(
        id=m.new_id(),
        project_id=project_id,
        network_id=subnet.network_id,
        name=f"octavia-lb-{lb_id}",
        mac_address=new_mac(session, subnet.network_id),
        device_owner=VIP_OWNER,
        device_id=device_id,
        status="ACTIVE",
        managed=True,
        revision_number=1,
    )
    try:
        _assign(session, port, [(subnet, address)])
    except ipam.AddressInUse:
        raise Conflict(f"IP address {address} already allocated in subnet {subnet.id}") from None
    except ipam.SubnetFull:
        raise Conflict(f"No more IP addresses available on subnet {subnet.id}.") from None
    except ipam.AddressNotInSubnet:
        raise Validation(f"IP address {address} is not a valid IP for the specified subnet.") from None
    session.add(port)
    return Vip(address=port.fixed_ips[0].ip_address, port_id=port.id, subnet_id=subnet.id, network_id=subnet.network_id)


def _vip_target(session: Session, port_id: str | None, network_id: str | None, subnet_id: str | None) -> object | None:
    """What decides the VIP (the port, else the network, else the subnet), None when the embedded networking
    has no such object; True when none of the three is given (the caller's 400 follows)."""
    if port_id:
        return session.get(m.Port, port_id)
    if network_id:
        return session.get(m.Network, network_id)
    if subnet_id:
        return session.get(m.Subnet, subnet_id)
    return True


def release_vip(session: Session, port_id: str | None) -> None:
    """Undo allocate_vip: delete the port quadriga created, detach a port the user handed over.
    Idempotent: a missing port is fine."""
    if not port_id:
        return
    port = session.get(m.Port, port_id)
    if port is None or port in session.deleted:
        return
    if port.managed:
        delete_port(session, port)
    elif port.device_owner == VIP_OWNER:
        port.device_owner, port.device_id = "", ""
        port.status = _port_status(port)
        bump(port)


# --- defaults ----------------------------------------------------------------------------------------


def _seed_network(session: Session, project_id: str, name: str, cidr: str, **attrs: Any) -> None:
    network = m.Network(id=m.new_id(), project_id=project_id, name=name, revision_number=1, **attrs)
    session.add(network)
    create_subnet(session, network, project_id, SubnetSpec(cidr=cidr, ip_version=4, name=f"{name}-subnet"))


DEFAULT_CIDRS = {"private": "10.10.0.0/24", "public": "172.24.4.0/24"}
# With the loopback network driver VIPs must be loopback addresses.
LOOPBACK_CIDRS = {"private": "127.10.0.0/24", "public": "127.24.4.0/24"}


def seed_defaults(session: Session, project_id: str, cidrs: dict[str, str] = DEFAULT_CIDRS) -> None:
    """Create devstack's two networks ("private" for tenants, "public" external and shared) so a fresh
    quadriga can create a load balancer at once. Idempotent: does nothing once "private" exists."""
    if session.get_bind().dialect.name == "postgresql":
        # several API processes may start at once; only one of them may seed
        session.execute(text("SELECT pg_advisory_xact_lock(7243101)"))
    if session.scalar(select(m.Network.id).where(m.Network.name == "private").limit(1)):
        return
    _seed_network(session, project_id, "private", cidrs["private"])
    _seed_network(session, project_id, "public", cidrs["public"], shared=True, external=True)
