"""Render the keepalived config of an ACTIVE_STANDBY engine (`spec.ha`), and the two small scripts it runs.

Why it looks the way it does:

* **Unicast VRRP, version 3**, from the engine's own address to its peer's: nothing multicast leaves the
  bridge, and VRRPv3 counts the advertisement interval in centiseconds, so adverts every 250 ms make the
  standby take over about 0.8 s (3 intervals plus skew) after the active engine goes silent, and at once
  when keepalived stops cleanly (it sends priority 0).
* **Both start as BACKUP with `nopreempt`**: the higher priority wins the first election, and an engine
  that comes back (a failover's replacement) never takes the VIPs from the one serving them: one move per
  failure, not two.
* **A check script** (`haproxy-check`) tells keepalived whether this engine's HAProxy master is alive; when
  it is not, the instance goes to FAULT, drops the VIPs and the peer takes over.
* **The VIPs are keepalived's**: the network driver plugs only the engine's own address; keepalived adds
  the VIPs on the engine that is MASTER and announces them (gratuitous ARP / unsolicited NA), so the host
  and the clients on the bridge switch to the new owner's MAC.
* **A notify script** writes the instance's state (MASTER, BACKUP, FAULT, STOP) to a file, which the
  agent reports."""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from pathlib import Path

from quadriga.engine.render import JINJA
from quadriga.engine.spec import EngineSpec

CONFIG = "keepalived.conf"
STATE = "keepalived.state"


@dataclass(frozen=True)
class KeepalivedPaths:
    """The files of an engine's keepalived, all in the engine's directory."""

    config: Path
    pid_file: Path  # the parent process
    vrrp_pid_file: Path  # its VRRP child
    check_script: Path
    notify_script: Path
    state_file: Path
    log_file: Path

    @classmethod
    def under(cls, directory: Path) -> KeepalivedPaths:
        d = Path(directory)
        return cls(
            d / CONFIG,
            d / "keepalived.pid",
            d / "keepalived-vrrp.pid",
            d / "haproxy-check",
            d / "keepalived-notify",
            d / STATE,
            d / "keepalived.log",
        )

    def all(self) -> list[Path]:
        return [getattr(self, name) for name in self.__dataclass_fields__]


def _keepalived_string(value: str) -> str:
    # keepalived reads a quoted string up to the next '"'; it has no escapes.
    if '"' in value or "\n" in value:
        raise ValueError(f"{value!r} cannot be written into a keepalived config")
    return f'"{value}"'


def render_keepalived(spec: EngineSpec, paths: KeepalivedPaths, device: str) -> str:
    """keepalived.conf for `spec` (which must have `ha`), VIPs on `device` of the engine's namespace."""
    ha = spec.ha
    if ha is None:
        raise ValueError("render_keepalived needs an ACTIVE_STANDBY spec")
    version = ipaddress.ip_address(ha.address).version
    vips, excluded = [], []
    for vip, prefix in vip_prefixes(spec):
        # A VRRPv3 instance carries the addresses of its own family; the others move with it, unannounced.
        (vips if ipaddress.ip_address(vip).version == version else excluded).append(f"{vip}/{prefix}")
    return JINJA.get_template("keepalived.conf.j2").render(
        spec=spec,
        ha=ha,
        device=device,
        advert=f"{ha.advert_ms / 1000:.2f}",
        vips=vips,
        excluded=excluded,
        check_script=_keepalived_string(str(paths.check_script)),
        notify_script=_keepalived_string(str(paths.notify_script)),
    )


def vip_prefixes(spec: EngineSpec) -> list[tuple[str, int]]:
    """Each VIP with the prefix length of its subnet (as the network driver would configure it)."""
    out = []
    for vip in spec.vips:
        subnet = spec.subnet_of(vip)
        prefix = ipaddress.ip_network(subnet.cidr).prefixlen if subnet else ipaddress.ip_address(vip).max_prefixlen
        out.append((vip, prefix))
    return out


def check_script(haproxy_pid_file: Path) -> str:
    """The track script: success while the HAProxy master named in `haproxy_pid_file` runs."""
    return JINJA.get_template("haproxy-check.sh.j2").render(pid_file=shlex.quote(str(haproxy_pid_file)))


def notify_script(paths: KeepalivedPaths) -> str:
    """keepalived's notify script: called with (INSTANCE, name, state, priority); records the state."""
    return JINJA.get_template("keepalived-notify.sh.j2").render(state_file=shlex.quote(str(paths.state_file)))
