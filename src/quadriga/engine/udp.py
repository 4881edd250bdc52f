"""Render an engine spec's UDP listeners into the config of the engine's UDP proxy (`quadriga.udp`).

HAProxy carries no UDP, and Octavia's keepalived/IPVS needs the kernel's ip_vs; the engine runs a user-space UDP
balancer next to HAProxy instead, configured by this JSON document (`UdpConfig`). As `render`, `udp_config` is a
pure function of the spec: every value is worked out here, so the proxy only reads plain numbers and addresses.

* A listener serves on every VIP at its port; a disabled listener (or load balancer) binds nothing (HAProxy's
  STOP). Its idle flow timeout is `timeout_client_data`; its flow limit `connection_limit` (None: unlimited).
* A member takes new flows when its pool and itself are enabled and its weight is above 0; `backup` members only
  when no other member is up. A disabled health monitor checks nothing ("no check"), as in HAProxy.
* SOURCE_IP session persistence keeps a client (its address masked by `persistence_granularity`) with its member
  for `persistence_timeout` seconds after its last new flow (Octavia's defaults: 360 s, one address)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from quadriga.engine.spec import Algorithm, EngineSpec, HealthMonitorSpec, PoolSpec, expand_expected_codes

DEFAULT_PERSISTENCE_TIMEOUT_S = 360  # Octavia's persistence_timeout for UDP pools
DEFAULT_IDLE_TIMEOUT_MS = 50000


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UdpMonitor(_Config):
    type: Literal["UDP-CONNECT", "HTTP", "TCP", "PING"]
    delay_s: float
    timeout_s: float
    rise: int
    fall: int
    http_method: str = "GET"
    url_path: str = "/"
    expected_codes: tuple[int, ...] = (200,)
    host: str | None = None  # the Host header of HTTP checks (domain_name)


class UdpMember(_Config):
    id: str
    address: str
    port: Annotated[int, Field(ge=1, le=65535)]
    weight: Annotated[int, Field(ge=0)] = 1
    backup: bool = False
    enabled: bool = True  # False: MAINT, no traffic
    check_address: str  # where health checks go (monitor_address or address)
    check_port: int


class UdpPool(_Config):
    id: str
    algorithm: Algorithm
    enabled: bool = True
    persistence_s: int | None = None  # SOURCE_IP session persistence: seconds a client keeps its member
    persistence_prefix: int | None = None  # the prefix length of the client network that persists together
    monitor: UdpMonitor | None = None
    members: tuple[UdpMember, ...] = ()


class UdpListener(_Config):
    id: str
    vips: tuple[str, ...]
    port: Annotated[int, Field(ge=1, le=65535)]
    enabled: bool = True
    max_flows: int | None = None  # None: no limit
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_MS / 1000
    allowed_cidrs: tuple[str, ...] = ()  # empty: every source
    pool_id: str | None = None


class UdpConfig(_Config):
    revision: int
    listeners: tuple[UdpListener, ...] = ()
    pools: tuple[UdpPool, ...] = ()

    def pool(self, pool_id: str | None) -> UdpPool | None:
        return next((p for p in self.pools if p.id == pool_id), None)


def serves_udp(spec: EngineSpec) -> bool:
    """Whether `spec` has a UDP listener, i.e. whether a UDP proxy runs for it (cheap: asked every heartbeat)."""
    return any(li.protocol == "UDP" for li in spec.listeners)


def udp_config(spec: EngineSpec) -> UdpConfig | None:
    """The UDP proxy's config for `spec`, None when `spec` has no UDP listener (then no UDP proxy runs)."""
    if not serves_udp(spec):
        return None
    listeners = [li for li in spec.listeners if li.protocol == "UDP"]
    pool_ids = {li.default_pool_id for li in listeners if li.default_pool_id}
    return UdpConfig(
        revision=spec.revision,
        listeners=tuple(
            UdpListener(
                id=li.id,
                vips=spec.vips,
                port=li.protocol_port,
                enabled=li.admin_state_up and spec.admin_state_up,
                max_flows=li.connection_limit if li.connection_limit > 0 else None,
                idle_timeout_s=(li.timeout_client_data or DEFAULT_IDLE_TIMEOUT_MS) / 1000,
                allowed_cidrs=li.allowed_cidrs,
                pool_id=li.default_pool_id,
            )
            for li in listeners
        ),
        pools=tuple(_pool(p) for p in spec.pools if p.id in pool_ids),
    )


def _pool(pool: PoolSpec) -> UdpPool:
    sp = pool.session_persistence
    persistence_s = prefix = None
    if sp is not None and sp.type == "SOURCE_IP":
        persistence_s = sp.persistence_timeout if sp.persistence_timeout is not None else DEFAULT_PERSISTENCE_TIMEOUT_S
        if sp.persistence_granularity:
            prefix = bin(int(ipaddress.ip_address(sp.persistence_granularity))).count("1")
    hm = pool.health_monitor
    return UdpPool(
        id=pool.id,
        algorithm=pool.lb_algorithm,
        enabled=pool.admin_state_up,
        persistence_s=persistence_s,
        persistence_prefix=prefix,
        monitor=_monitor(hm) if hm is not None and hm.admin_state_up else None,
        members=tuple(
            UdpMember(
                id=m.id,
                address=m.address,
                port=m.protocol_port,
                weight=m.weight,
                backup=m.backup,
                enabled=m.admin_state_up and pool.admin_state_up,
                check_address=m.monitor_address or m.address,
                check_port=m.monitor_port or m.protocol_port,
            )
            for m in pool.members
        ),
    )


def _monitor(hm: HealthMonitorSpec) -> UdpMonitor:
    # The type is one of spec.UDP_MONITOR_TYPES: PoolSpec refuses any other on a UDP pool.
    return UdpMonitor(
        type=hm.type,  # type: ignore[arg-type]
        delay_s=max(hm.delay, 1),
        timeout_s=max(hm.timeout, 1),
        rise=hm.max_retries,
        fall=hm.max_retries_down,
        http_method=hm.http_method or "GET",
        url_path=hm.url_path or "/",
        expected_codes=tuple(expand_expected_codes(hm.expected_codes or "200")),
        host=hm.domain_name,
    )
