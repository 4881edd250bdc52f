"""Fixed-IP allocation for the embedded network: allocation pools, the lowest free address, EUI-64.

Addresses are handled as integers and pools as (first, last) ranges, so a /16 (or an IPv6 /64) never gets
materialized; the used addresses of a subnet are read once per allocation. Addresses are stored in their
canonical text form (`str(ipaddress.ip_address(...))`), which the primary key of `port_ips` relies on."""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quadriga.db import models as m
from quadriga.db.session import column_values

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
EUI64_MODES = ("slaac", "dhcpv6-stateless")


class IpamError(Exception):
    """A request the subnet cannot satisfy; the callers turn it into their own API error."""


class InvalidPool(IpamError):
    """An allocation pool that is malformed (start after end, not addresses of the subnet's family)."""


class PoolOutOfBounds(InvalidPool):
    pass


class PoolsOverlap(InvalidPool):
    pass


class GatewayInPool(InvalidPool):
    pass


class AllocationError(IpamError):
    """No address for a port: which subnet, and the requested address if there was one."""

    def __init__(self, subnet_id: str, address: str | None = None) -> None:
        super().__init__(address or subnet_id)
        self.subnet_id = subnet_id
        self.address = address


class AddressNotInSubnet(AllocationError):
    pass


class AddressInUse(AllocationError):
    pass


class SubnetFull(AllocationError):
    pass


def canonical(address: str) -> str:
    """The stored form of an address; raises ValueError for anything that is not an IP address."""
    return str(ipaddress.ip_address(address))


def parse_cidr(cidr: str, ip_version: int | None = None) -> IPNetwork:
    """A subnet CIDR as Neutron accepts it: a network address (no host bits) of the given IP version."""
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError:
        raise ValueError(f"'{cidr}' is not a valid IP subnet.") from None
    net = iface.network
    if "/" not in cidr:
        raise ValueError(f"'{cidr}' is not a valid IP subnet.")
    if iface.ip != net.network_address:
        raise ValueError(f"'{cidr}' isn't a recommended CIDR, '{net}' is recommended")
    if ip_version is not None and net.version != ip_version:
        raise ValueError("Cidr and ip version mismatch")
    first, last = host_bounds(net)
    if first > last:
        raise ValueError(f"Invalid CIDR {cidr}: the prefix is too long to hold any host.")
    return net


def host_bounds(net: IPNetwork) -> tuple[int, int]:
    """First and last assignable address: skips the network address, and the broadcast address on IPv4."""
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    return first, last


def default_gateway(net: IPNetwork) -> str:
    return str(net.network_address + 1)


def default_pools(net: IPNetwork, gateway: str | None) -> list[dict[str, str]]:
    """All host addresses except the gateway, as Neutron generates them."""
    first, last = host_bounds(net)
    ranges = [(first, last)]
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        if first <= gw <= last:
            ranges = [(first, gw - 1), (gw + 1, last)]
    ranges = [(lo, hi) for lo, hi in ranges if lo <= hi]
    return [_pool_dict(net, lo, hi) for lo, hi in ranges]


def _pool_dict(net: IPNetwork, lo: int, hi: int) -> dict[str, str]:
    cls = type(net.network_address)
    return {"start": str(cls(lo)), "end": str(cls(hi))}


def validate_gateway(net: IPNetwork, gateway: str | None) -> str | None:
    """The canonical gateway; it must be a host address of the subnet."""
    if gateway is None:
        return None
    try:
        gw = ipaddress.ip_address(gateway)
    except ValueError:
        raise IpamError(f"'{gateway}' is not a valid IP address") from None
    first, last = host_bounds(net)
    if gw.version != net.version or not first <= int(gw) <= last:
        raise IpamError(f"Gateway is not valid on subnet: {gateway} is not a host address of {net}.")
    return str(gw)


def validate_pools(net: IPNetwork, gateway: str | None, pools: Iterable[Any]) -> list[dict[str, str]]:
    """Canonical pools: each inside the subnet's host range, none overlapping another or the gateway."""
    first, last = host_bounds(net)
    ranges: list[tuple[int, int]] = []
    for pool in pools:
        start, end = pool["start"], pool["end"]
        try:
            lo, hi = ipaddress.ip_address(start), ipaddress.ip_address(end)
        except ValueError:
            raise InvalidPool(f"The allocation pool {start}-{end} is not valid.") from None
        if lo.version != net.version or hi.version != net.version or lo > hi:
            raise InvalidPool(f"The allocation pool {start}-{end} is not valid.")
        if int(lo) < first or int(hi) > last:
            raise PoolOutOfBounds(f"The allocation pool {start}-{end} spans beyond the subnet cidr {net}.")
        ranges.append((int(lo), int(hi)))
    ranges.sort()
    for (lo1, hi1), (lo2, hi2) in zip(ranges, ranges[1:], strict=False):
        if lo2 <= hi1:
            a, b = _pool_text(net, lo1, hi1), _pool_text(net, lo2, hi2)
            raise PoolsOverlap(f"Found overlapping allocation pools: {a} and {b} for subnet {net}.")
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        for lo, hi in ranges:
            if lo <= gw <= hi:
                pool = _pool_text(net, lo, hi)
                raise GatewayInPool(f"Gateway ip {gateway} conflicts with allocation pool {pool}")
    return [_pool_dict(net, lo, hi) for lo, hi in ranges]


def _pool_text(net: IPNetwork, lo: int, hi: int) -> str:
    p = _pool_dict(net, lo, hi)
    return f"{p['start']}-{p['end']}"


def lowest_free(pools: list[tuple[int, int]], used: list[int]) -> int | None:
    """The lowest address of the pools not in `used` (sorted); skips runs of used addresses via bisect."""
    for lo, hi in sorted(pools):
        cand = lo
        i = bisect.bisect_left(used, cand)
        while i < len(used) and used[i] == cand:
            cand += 1
            i += 1
        if cand <= hi:
            return cand
    return None


def eui64(net: IPNetwork, mac: str) -> str:
    """The SLAAC address of `mac` in an IPv6 /64 (modified EUI-64, as Neutron computes it)."""
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    iid = octets[:3] + [0xFF, 0xFE] + octets[3:]
    return str(net.network_address + int.from_bytes(bytes(iid), "big"))


def address_ints(addresses: Iterable[str], version: int) -> set[int]:
    """The integers of canonical (stored) addresses of one IP version; ten times faster than ipaddress for
    a subnet's thousands of used addresses, which every allocation reads."""
    family, pton, to_int = socket.AF_INET6 if version == 6 else socket.AF_INET, socket.inet_pton, int.from_bytes
    return {to_int(pton(family, a), "big") for a in addresses}


def used_addresses(session: Session, subnet_id: str) -> set[str]:
    """The subnet's addresses in use (a /16 may hold thousands, read at every allocation)."""
    return set(column_values(session, select(m.PortIP.ip_address).where(m.PortIP.subnet_id == subnet_id)))


def allocate(
    session: Session,
    subnet: m.Subnet,
    address: str | None = None,
    *,
    mac: str | None = None,
    taken: Iterable[str] = (),
) -> str:
    """Choose a fixed IP on `subnet`: `address` if it is a free host address of the subnet, else the
    lowest free address of the allocation pools (the EUI-64 address on SLAAC subnets). `taken` holds
    addresses chosen earlier in the same request and not yet flushed. Nothing is written here."""
    net = ipaddress.ip_network(subnet.cidr)
    # Lock the subnet row (PostgreSQL) so concurrent writers serialize on it; SQLite already serializes.
    if session.get_bind().dialect.name != "sqlite":
        session.execute(select(m.Subnet.id).where(m.Subnet.id == subnet.id).with_for_update())
    used = used_addresses(session, subnet.id) | set(taken)
    if address is None and mac and net.version == 6 and subnet.ipv6_address_mode in EUI64_MODES:
        address = eui64(net, mac)
    if address is not None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise AddressNotInSubnet(subnet.id, address) from None
        first, last = host_bounds(net)
        if ip.version != net.version or not first <= int(ip) <= last or str(ip) == subnet.gateway_ip:
            raise AddressNotInSubnet(subnet.id, str(ip))
        if str(ip) in used:
            raise AddressInUse(subnet.id, str(ip))
        return str(ip)
    reserved = address_ints(used, net.version)
    if subnet.gateway_ip:
        reserved.add(int(ipaddress.ip_address(subnet.gateway_ip)))
    pools = [
        (int(ipaddress.ip_address(p["start"])), int(ipaddress.ip_address(p["end"])))
        for p in subnet.allocation_pools or []
    ]
    found = lowest_free(pools, sorted(reserved))
    if found is None:
        raise SubnetFull(subnet.id)
    return str(type(net.network_address)(found))
