"""Network drivers: how an engine's VIPs become reachable (see `base.NetworkDriver`)."""

from __future__ import annotations

import logging

from quadriga.network.drivers import netns
from quadriga.network.drivers.base import NetworkDriver, NetworkError
from quadriga.network.drivers.loopback import LoopbackDriver

log = logging.getLogger("quadriga.network")

DRIVER_NAMES = ("loopback", "netns", "auto")


def make_driver(name: str, instance: str) -> NetworkDriver:
    """The driver called `name`; `auto` takes netns where it can work (root, `ip netns`), else loopback, so a
    developer's laptop and a root CI host both start with no flag. `instance` prefixes what netns creates."""
    if name == "loopback":
        return LoopbackDriver()
    if name not in ("netns", "auto"):
        raise ValueError(f"unknown network driver {name!r}: use one of {', '.join(DRIVER_NAMES)}")
    reason = netns.unavailable()
    if name == "netns":
        if reason:
            raise NetworkError(f"the netns network driver cannot run here: {reason}; use loopback instead")
        return netns.NetnsDriver(instance)
    if reason:
        log.info("network driver: loopback (auto), because the netns driver cannot run here: %s", reason)
        return LoopbackDriver()
    log.info("network driver: netns (auto), because this process is root and `ip netns` works")
    return netns.NetnsDriver(instance)
