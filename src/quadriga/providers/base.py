"""The provider interface, modelled on octavia-lib's ProviderDriver.

The API calls the per-object hooks inside its write transaction, before it commits: a hook that
raises `UnsupportedOption` (501) or `ProviderConflict` (409) rolls the whole request back, so nothing is
half-written. The hooks never touch a data plane. The controller later calls `apply()` with the whole
desired tree of one load balancer; that is where a provider does its real work, idempotently."""

from __future__ import annotations

from typing import Any

from quadriga.api.errors import ApiError, Conflict
from quadriga.db import models as m


class UnsupportedOption(ApiError):
    status = 501


class ProviderConflict(Conflict):
    pass


class ApplyError(Exception):
    """The data plane could not take a change; the message says why. The controller retries it."""


class RejectedChange(ApplyError):
    """The data plane refused the change itself (its config is invalid there): retrying cannot help, so the
    change goes to ERROR at once."""


class ProviderDriver:
    name = "base"
    description = ""
    # False for a provider without a data plane, which uses no network and no certificate: a VIP may name a
    # network, subnet or port the embedded networking does not have (it gets a stand-in) and certificate refs
    # are not loaded, as with Octavia's noop network driver and noop certificate manager.
    data_plane = True

    # --- validation hooks, called by the API before commit (defaults accept everything) ----------
    def loadbalancer_create(self, lb: m.LoadBalancer) -> None: ...
    def loadbalancer_update(self, old: dict[str, Any], lb: m.LoadBalancer) -> None: ...
    def loadbalancer_delete(self, lb: m.LoadBalancer, cascade: bool) -> None: ...
    def loadbalancer_failover(self, lb: m.LoadBalancer) -> None: ...
    def amphora_failover(self, amphora: m.Amphora) -> None: ...
    def listener_create(self, listener: m.Listener) -> None: ...
    def listener_update(self, old: dict[str, Any], listener: m.Listener) -> None: ...
    def listener_delete(self, listener: m.Listener) -> None: ...
    def pool_create(self, pool: m.Pool) -> None: ...
    def pool_update(self, old: dict[str, Any], pool: m.Pool) -> None: ...
    def pool_delete(self, pool: m.Pool) -> None: ...
    def member_create(self, member: m.Member) -> None: ...
    def member_update(self, old: dict[str, Any], member: m.Member) -> None: ...
    def member_delete(self, member: m.Member) -> None: ...
    def member_batch_update(self, pool: m.Pool, members: list[m.Member]) -> None: ...
    def health_monitor_create(self, hm: m.HealthMonitor) -> None: ...
    def health_monitor_update(self, old: dict[str, Any], hm: m.HealthMonitor) -> None: ...
    def health_monitor_delete(self, hm: m.HealthMonitor) -> None: ...
    def l7policy_create(self, policy: m.L7Policy) -> None: ...
    def l7policy_update(self, old: dict[str, Any], policy: m.L7Policy) -> None: ...
    def l7policy_delete(self, policy: m.L7Policy) -> None: ...
    def l7rule_create(self, rule: m.L7Rule) -> None: ...
    def l7rule_update(self, old: dict[str, Any], rule: m.L7Rule) -> None: ...
    def l7rule_delete(self, rule: m.L7Rule) -> None: ...

    # --- flavors and availability zones ----------------------------------------------------------
    def get_supported_flavor_metadata(self) -> dict[str, str]:
        return {}

    def get_supported_availability_zone_metadata(self) -> dict[str, str]:
        return {}

    def validate_flavor(self, flavor_data: dict[str, Any]) -> None:
        self._only_known_keys(flavor_data, self.get_supported_flavor_metadata(), "flavor")

    def validate_availability_zone(self, az_data: dict[str, Any]) -> None:
        self._only_known_keys(az_data, self.get_supported_availability_zone_metadata(), "availability zone")

    def _only_known_keys(self, data: dict[str, Any], supported: dict[str, str], what: str) -> None:
        """Octavia's ProviderUnsupportedOptionError (501) for metadata keys the provider does not know."""
        unknown = sorted(set(data) - set(supported))
        if unknown:
            raise UnsupportedOption(
                f"Provider '{self.name}' does not support a requested option: {what} metadata key(s) "
                f"{', '.join(unknown)}; supported: {', '.join(sorted(supported)) or 'none'}"
            )

    # --- the controller's side ---------------------------------------------------------------------
    def apply(self, lb: m.LoadBalancer) -> None:
        """Make the data plane run `lb`'s desired tree (or remove it when it is PENDING_DELETE).
        Raise ApplyError when that cannot be done."""
        raise NotImplementedError
