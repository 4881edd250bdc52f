"""The `loopback` network driver: VIPs in 127.0.0.0/8, bound by HAProxy on the host. Needs no root and
creates nothing (Linux routes the whole 127/8 range to `lo`), so each load balancer still gets an address
of its own and listeners on the same port never collide."""

from __future__ import annotations

import ipaddress

from quadriga.engine.spec import EngineSpec
from quadriga.network.drivers.base import NetworkDriver, NetworkError, Plugged

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


class LoopbackDriver(NetworkDriver):
    name = "loopback"

    def check_vip(self, address: str, cidr: str | None) -> str | None:
        if ipaddress.ip_address(address) in LOOPBACK:
            return None
        return (
            f"the loopback network driver serves VIPs in {LOOPBACK} only, and {address} is not one: "
            "put the VIP on a subnet inside 127.0.0.0/8, or run quadriga as root with --network-driver netns"
        )

    def plug(self, engine_id: str, spec: EngineSpec, process: int | None = None) -> Plugged:
        if spec.ha is not None:
            raise NetworkError("ACTIVE_STANDBY engines need the netns network driver: here two cannot share a VIP")
        for vip in spec.vips:
            reason = self.check_vip(vip, None)
            if reason:
                raise NetworkError(reason)
        return Plugged(namespace=None, lb_network_ip=spec.vips[0] if spec.vips else None)

    def unplug(self, engine_id: str) -> None:
        return None

    def command_prefix(self, engine_id: str) -> list[str]:
        return []

    def cleanup(self) -> None:
        return None

    def leftovers(self) -> list[str]:
        return []
