"""How networks, subnets and ports look on the wire: Neutron's attribute names, including the ones the
embedded service has no use for (provider, binding, QoS, DNS), with the values a plain Neutron shows."""

from __future__ import annotations

from typing import Any

from quadriga.api.views import TagMap, ts
from quadriga.db import models as m


def _common(obj: Any, tags: TagMap) -> dict[str, Any]:
    return {
        "id": obj.id,
        "name": obj.name,
        "description": obj.description,
        "project_id": obj.project_id,
        "tenant_id": obj.project_id,
        "tags": tags.get(obj.id, []),
        "created_at": ts(obj.created_at, "Z"),
        "updated_at": ts(obj.updated_at or obj.created_at, "Z"),
        "revision_number": obj.revision_number,
    }


def network(n: m.Network, tags: TagMap) -> dict[str, Any]:
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


def subnet(s: m.Subnet, tags: TagMap) -> dict[str, Any]:
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


def port(p: m.Port, tags: TagMap) -> dict[str, Any]:
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
