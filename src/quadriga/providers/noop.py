"""The `noop` provider: no data plane. Changes still go through Octavia's status rules asynchronously
(PENDING_* -> ACTIVE on the controller's next pass), so API clients and tests see real behaviour;
operating statuses stay as created (OFFLINE, members NO_MONITOR), as with Octavia's noop driver. Its VIPs
may be on networks that exist only in the request and its certificate refs are not loaded, as with Octavia's
noop network driver and certificate manager."""

from __future__ import annotations

import time

from quadriga.db import models as m
from quadriga.providers.base import ProviderDriver

FLAVOR_METADATA = {
    "loadbalancer_topology": "The load balancer topology. One of: SINGLE - One engine per load balancer. "
    "ACTIVE_STANDBY - Two engines per load balancer.",
    "compute_flavor": "The engine size (accepted for compatibility; engines are processes).",
    "amp_image_tag": "Accepted for compatibility; engines have no image.",
}
AZ_METADATA = {
    "compute_zone": "The engine host group to place load balancers on.",
    "management_network": "Accepted for compatibility.",
    "valid_vip_networks": "List of network IDs that are allowed for VIP use.",
}


class NoopProvider(ProviderDriver):
    name = "noop"
    description = "The no-op provider: the API and status rules without a data plane."
    data_plane = False

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def get_supported_flavor_metadata(self) -> dict[str, str]:
        return FLAVOR_METADATA

    def get_supported_availability_zone_metadata(self) -> dict[str, str]:
        return AZ_METADATA

    def apply(self, lb: m.LoadBalancer) -> None:
        if self.delay:
            time.sleep(self.delay)
