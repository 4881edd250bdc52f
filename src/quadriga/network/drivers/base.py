"""The network driver interface: how an engine's VIPs are made reachable on its host.

* `loopback` (no root needed): VIPs are 127.x.y.z addresses, which Linux routes to `lo` without any set-up;
  HAProxy binds them on the host. Nothing is created, so nothing needs removing.
* `netns` (root): every network is a Linux bridge on the host that holds the subnet's gateway address;
  every engine runs in its own network namespace with a veth on its VIP network and the VIP on it, and a
  default route via the gateway. The host reaches VIPs through the bridge; a server on the host listening on
  the gateway address can be a member.

Every name a driver creates starts with a prefix derived from the agent's state directory (`instance`), so
two quadriga instances on one machine never touch each other's objects, and `leftovers()` can tell what
this instance still has."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from quadriga.engine.spec import EngineSpec


class NetworkError(Exception):
    """The driver could not plug or unplug; the message says what failed and what to do."""


@dataclass(frozen=True)
class Plugged:
    """Where an engine runs once plugged."""

    namespace: str | None  # the network namespace HAProxy must run in (None: the host's)
    lb_network_ip: str | None  # the engine's address on its network (shown in the amphora API)
    device: str | None = None  # the interface of the VIPs' network where the engine runs (netns: eth0)


class NetworkDriver(ABC):
    name: str = "base"

    @abstractmethod
    def check_vip(self, address: str, cidr: str | None) -> str | None:
        """None when this driver can serve a VIP at `address` (on a subnet `cidr`), else the reason it cannot
        (the API answers 400 with it)."""

    @abstractmethod
    def plug(self, engine_id: str, spec: EngineSpec, process: int | None = None) -> Plugged:
        """Make `spec`'s VIPs reachable for engine `engine_id`. Idempotent: plugging again with the same or a
        changed spec converges (VIPs added or removed). `process` is the pid of the engine's HAProxy when it
        already runs: the network it runs in is the one to converge."""

    @abstractmethod
    def unplug(self, engine_id: str) -> None:
        """Remove whatever `plug` created for `engine_id`. Idempotent; a no-op for an unknown engine."""

    @abstractmethod
    def command_prefix(self, engine_id: str) -> list[str]:
        """The argv prefix that runs a command where the engine lives (`ip netns exec <ns>`, or nothing)."""

    @abstractmethod
    def cleanup(self) -> None:
        """Remove everything this instance created (every engine's plumbing and every shared object such as
        bridges). Called when the agent stops."""

    @abstractmethod
    def leftovers(self) -> list[str]:
        """Names of the objects of this instance that exist right now (for tests and orphan collection)."""

    def collect_orphans(self, known: Callable[[], set[str]]) -> list[str]:
        """Remove the per-engine objects of this instance whose engine is not in `known()` (asked after the
        objects are listed, so an engine being plugged right now is known). Returns what was removed. A
        driver that creates nothing per engine has nothing to collect."""
        return []

    def rename(self, engine_id: str, new_id: str, pid: int) -> None:
        """Make what was plugged for `engine_id` (where process `pid` runs) `new_id`'s, as if plugged for it:
        how a new engine adopts a spare (`quadriga.agent.spares`). Nothing to do for a driver that creates
        nothing per engine."""
        return None
