"""Settings: defaults, then a TOML config file, then command-line flags (each overrides the one before).

Example config file:

    [api]
    host = "127.0.0.1"
    port = 9876
    auth_strategy = "noauth"      # or "header"
    default_project = "demo"

    [network]
    port = 9696
    private_cidr = "10.10.0.0/24"  # the subnets of the networks created at the first start
    public_cidr = "172.24.4.0/24"  # (loopback driver: 127.10.0.0/24 and 127.24.4.0/24)

    [database]
    url = "postgresql://quadriga@127.0.0.1/quadriga"

    [agent]                       # the in-process agent of `quadriga serve`
    network_driver = "auto"       # netns (root) or loopback; auto picks netns where it can
    host = "127.0.0.1"
    port = 9443
    cert_validity_days = 365      # agent certificates are renewed, with no restart, when
    cert_renew_days = 30          # fewer days than this are left (fractions of a day work)
    spare_engines = 0             # started, idle engines that new engines adopt (faster creates)

    [controller]
    housekeeping_interval = 60    # seconds between purges, orphan collections and certificate checks

    [quotas]                      # defaults for projects without custom quotas; -1 = unlimited
    loadbalancer = -1
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from quadriga import constants as c


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "quadriga"


@dataclass
class Settings:
    state_dir: Path = field(default_factory=default_state_dir)
    host: str = "127.0.0.1"
    port: int = 9876
    network_port: int = 9696
    database_url: str | None = None
    auth_strategy: str = "noauth"
    default_project: str = "demo"
    provider: str = "amphora"
    provider_delay: float = 0.0
    poll_interval: float = 1.0
    network_driver: str = "auto"  # loopback, netns or auto (netns when root)
    private_cidr: str | None = None  # the seeded networks' subnets (default: by network driver)
    public_cidr: str | None = None
    agent_host: str = "127.0.0.1"  # where the in-process agent's mutual-TLS API listens
    agent_port: int = 9443
    collect_interval: float = 1.0  # seconds between two reads of the engines' statuses
    purge_after_days: float = 7.0  # DELETED load balancers and engines stay listed this long
    housekeeping_interval: float = 60.0
    agent_cert_validity_days: float = 365.0
    agent_cert_renew_days: float = 30.0
    spare_engines: int = 0
    quota_defaults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(c.QUOTA_RESOURCES, -1))

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'quadriga.sqlite'}"

    @property
    def lb_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def network_endpoint(self) -> str:
        return f"http://{self.host}:{self.network_port}/"


FILE_KEYS = {
    ("api", "host"): "host",
    ("api", "port"): "port",
    ("api", "auth_strategy"): "auth_strategy",
    ("api", "default_project"): "default_project",
    ("api", "provider"): "provider",
    ("network", "port"): "network_port",
    ("network", "private_cidr"): "private_cidr",
    ("network", "public_cidr"): "public_cidr",
    ("database", "url"): "database_url",
    ("state", "dir"): "state_dir",
    ("controller", "poll_interval"): "poll_interval",
    ("controller", "collect_interval"): "collect_interval",
    ("controller", "purge_after_days"): "purge_after_days",
    ("controller", "housekeeping_interval"): "housekeeping_interval",
    ("agent", "network_driver"): "network_driver",
    ("agent", "host"): "agent_host",
    ("agent", "port"): "agent_port",
    ("agent", "cert_validity_days"): "agent_cert_validity_days",
    ("agent", "cert_renew_days"): "agent_cert_renew_days",
    ("agent", "spare_engines"): "spare_engines",
}


NETWORK_DRIVERS = ("auto", "loopback", "netns")


class ConfigError(Exception):
    pass


def load(path: Path | None, overrides: dict[str, Any]) -> Settings:
    """Build Settings from a config file (optional) and flag values (None = not given)."""
    settings = Settings()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        for section, values in data.items():
            if section == "quotas":
                unknown = set(values) - set(c.QUOTA_RESOURCES)
                if unknown:
                    raise ConfigError(f"{path}: unknown quota(s) {sorted(unknown)}; known: {sorted(c.QUOTA_RESOURCES)}")
                settings.quota_defaults.update({k: int(v) for k, v in values.items()})
                continue
            for key, value in values.items():
                attr = FILE_KEYS.get((section, key))
                if attr is None:
                    raise ConfigError(f"{path}: unknown setting [{section}] {key}")
                setattr(settings, attr, value)
    names = {f.name for f in fields(Settings)}
    for key, value in overrides.items():
        if value is not None and key in names:
            setattr(settings, key, value)
    settings.state_dir = Path(settings.state_dir).expanduser()
    if settings.auth_strategy not in ("noauth", "header"):
        raise ConfigError(f"auth_strategy must be noauth or header, not {settings.auth_strategy!r}")
    for name in ("private_cidr", "public_cidr"):
        value = getattr(settings, name)
        if value is not None:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise ConfigError(f"{name} {value!r} is not a subnet: {exc}") from None
    if not 0 < settings.agent_cert_renew_days < settings.agent_cert_validity_days:
        raise ConfigError(
            f"cert_renew_days ({settings.agent_cert_renew_days}) must be above 0 and below cert_validity_days "
            f"({settings.agent_cert_validity_days}), or certificates would be renewed at every check"
        )
    spares = settings.spare_engines
    if not isinstance(spares, int) or isinstance(spares, bool) or not 0 <= spares <= 100:
        raise ConfigError(f"spare_engines must be a whole number from 0 to 100, not {settings.spare_engines!r}")
    if settings.housekeeping_interval <= 0:
        raise ConfigError(f"housekeeping_interval must be above 0, not {settings.housekeeping_interval}")
    if settings.network_driver not in NETWORK_DRIVERS:
        raise ConfigError(
            f"network_driver must be one of {', '.join(NETWORK_DRIVERS)}, not {settings.network_driver!r}"
        )
    return settings


def clouds_yaml(settings: Settings) -> str:
    """The clouds.yaml that points the OpenStack clients at this quadriga."""
    return (
        "clouds:\n"
        "  quadriga:\n"
        "    auth_type: none\n"
        "    auth:\n"
        f"      endpoint: {settings.lb_endpoint}\n"
        f"    load_balancer_endpoint_override: {settings.lb_endpoint}\n"
        f"    network_endpoint_override: {settings.network_endpoint}\n"
        "    region_name: RegionOne\n"
    )
