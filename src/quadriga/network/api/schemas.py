"""The request bodies of the networking API, as pydantic models: what each attribute may hold and which
attributes a create or an update accepts. Unknown attributes are refused (`extra="forbid"`), as Neutron
does; `parsing.validate` turns pydantic's errors into Neutron's messages."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

Name = Annotated[str, Field(max_length=255)]
TagName = Annotated[str, Field(min_length=1, max_length=255)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Owned(Body):
    project_id: Name | None = None
    tenant_id: Name | None = None
    tags: list[TagName] = []


class NetworkUpdate(Body):
    name: Name = ""
    description: Name = ""
    admin_state_up: bool = True
    shared: bool = False
    router_external: bool = Field(False, alias="router:external")
    mtu: int = Field(1500, ge=68, le=9216)
    port_security_enabled: bool = True


class NetworkCreate(NetworkUpdate, Owned):
    pass


class Pool(Body):
    start: str
    end: str


class Route(Body):
    destination: str
    nexthop: str


class SubnetUpdate(Body):
    name: Name = ""
    description: Name = ""
    gateway_ip: str | None = None
    allocation_pools: list[Pool] | None = None
    enable_dhcp: bool = True
    dns_nameservers: list[str] | None = None
    host_routes: list[Route] | None = None


class SubnetCreate(SubnetUpdate, Owned):
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


class FixedIp(Body):
    subnet_id: str | None = None
    ip_address: str | None = None


class PortUpdate(Body):
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


class PortCreate(PortUpdate, Owned):
    network_id: str
    mac_address: str | None = Field(None, pattern=r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")


class TagsBody(Body):
    tags: list[TagName]
