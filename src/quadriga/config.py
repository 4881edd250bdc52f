"""Settings: defaults, then a TOML config file, then command-line flags (each overrides the one before).

Example config file:

    [api]
    host = "127.0.0.1"
    port = 9876
    auth_strategy = "noauth"      # or "header", or "keystone" (then [keystone] is needed)
    default_project = "demo"

    [auth]                        # Keystone role -> quadriga role, in order, first match wins ("*": any
    role_mapping = [              # role); the default reproduces Octavia's default policy (README)
        {keystone = "admin", quadriga = "admin"},
        {keystone = "lb-operator", quadriga = "member"},
        {keystone = "*", quadriga = "observer"},
    ]
    default_role = "observer"     # for callers none of whose roles matches (unset: they are refused)

    [keystone]                    # auth_strategy = "keystone": X-Auth-Token is validated by this Keystone
    auth_url = "http://127.0.0.1:5000/v3"
    username = "quadriga"         # the service user quadriga validates tokens as (role service or admin),
                                  # and reads a remote key manager ([keymanager] url) as
    password = "..."
    project_name = "service"
    user_domain_name = "Default"
    project_domain_name = "Default"
    cache_seconds = 60            # a validated token is trusted this long (never past its expiry)
    cache_size = 10000            # validated tokens remembered at most
    timeout = 3.0                 # seconds before an unanswered Keystone is a 503

    [network]
    port = 9696
    private_cidr = "10.10.0.0/24"  # the subnets of the networks created at the first start
    public_cidr = "172.24.4.0/24"  # (loopback driver: 127.10.0.0/24 and 127.24.4.0/24)

    [keymanager]                  # the tenants' secret store (a Barbican-compatible API) at http://host:port/v1
    port = 9311                   # 0: any free port
    url = ""                      # a real Barbican to use instead (http://barbican:9311); then none is served
                                  # (with auth_strategy = "keystone": asked with the [keystone] user's token)
    key_files = []                # payload encryption keys (Fernet), the first one encrypts (default:
                                  # secrets.key in the state directory, created at the first start)

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

    [health]                      # heartbeats and automatic failover
    listen = "127.0.0.1:5555"     # the health receiver's UDP address (port 0: any free port)
    key_files = []                # accepted heartbeat keys, the first one signs (default: heartbeat.key in
                                  # the state directory, created at the first start); see quadriga.health.keys
    receivers = []                # more receivers the in-process agent sends to, e.g. ["10.0.0.2:5555"]
    interval = 1.0                # seconds between two heartbeats of an engine
    timeout = 3.0                 # an engine silent this long is failed over
    breaker = true                # no automatic failover when many engines fall silent at once:
    breaker_share = 0.5           #   more than this share of the engines,
    breaker_min = 3               #   and at least this many (so small clouds still fail over)

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
from quadriga.api import rolemap


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "quadriga"


@dataclass
class KeystoneSettings:
    """[keystone]: where tokens are validated and as whom (the field names are the file's keys)."""

    auth_url: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    project_name: str = "service"
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    cache_seconds: float = 60.0
    cache_size: int = 10000
    timeout: float = 3.0


AUTH_STRATEGIES = ("noauth", "header", "keystone")


@dataclass
class Settings:
    state_dir: Path = field(default_factory=default_state_dir)
    host: str = "127.0.0.1"
    port: int = 9876
    network_port: int = 9696
    keymanager_port: int = 9311
    keymanager_url: str | None = None  # a real Barbican instead of the built-in store
    keymanager_key_files: list[str] = field(default_factory=list)  # empty: secrets.key in the state dir
    database_url: str | None = None
    auth_strategy: str = "noauth"
    default_project: str = "demo"
    keystone: KeystoneSettings = field(default_factory=KeystoneSettings)
    provider: str = "amphora"
    provider_delay: float = 0.0
    poll_interval: float = 1.0
    network_driver: str = "auto"  # loopback, netns or auto (netns when root)
    private_cidr: str | None = None  # the seeded networks' subnets (default: by network driver)
    public_cidr: str | None = None
    agent_host: str = "127.0.0.1"  # where the in-process agent's mutual-TLS API listens
    agent_port: int = 9443
    health_listen: str = "127.0.0.1:5555"  # the health receiver (UDP host:port)
    heartbeat_key_files: list[str] = field(default_factory=list)  # empty: heartbeat.key in the state dir
    health_receivers: list[str] = field(default_factory=list)  # more receivers for the in-process agent
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 3.0
    failover_breaker: bool = True
    breaker_share: float = 0.5
    breaker_min: int = 3
    purge_after_days: float = 7.0  # DELETED load balancers and engines stay listed this long
    housekeeping_interval: float = 60.0
    agent_cert_validity_days: float = 365.0
    agent_cert_renew_days: float = 30.0
    spare_engines: int = 0
    quota_defaults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(c.QUOTA_RESOURCES, -1))
    role_mapping: rolemap.RoleMapping = rolemap.DEFAULT

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'quadriga.sqlite'}"

    @property
    def key_files(self) -> list[Path]:
        """The heartbeat key files, the signing one first."""
        return [Path(p).expanduser() for p in self.heartbeat_key_files] or [self.state_dir / "heartbeat.key"]

    @property
    def lb_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def network_endpoint(self) -> str:
        return f"http://{self.host}:{self.network_port}/"

    @property
    def keymanager_endpoint(self) -> str:
        """The key manager's root (clients add /v1): the configured Barbican, else the built-in store."""
        if self.keymanager_url:
            return self.keymanager_url.rstrip("/").removesuffix("/v1")
        return f"http://{self.host}:{self.keymanager_port}"


FILE_KEYS = {
    ("api", "host"): "host",
    ("api", "port"): "port",
    ("api", "auth_strategy"): "auth_strategy",
    ("api", "default_project"): "default_project",
    ("api", "provider"): "provider",
    ("network", "port"): "network_port",
    ("network", "private_cidr"): "private_cidr",
    ("network", "public_cidr"): "public_cidr",
    ("keymanager", "port"): "keymanager_port",
    ("keymanager", "url"): "keymanager_url",
    ("keymanager", "key_files"): "keymanager_key_files",
    ("database", "url"): "database_url",
    ("state", "dir"): "state_dir",
    ("controller", "poll_interval"): "poll_interval",
    ("controller", "purge_after_days"): "purge_after_days",
    ("controller", "housekeeping_interval"): "housekeeping_interval",
    ("agent", "network_driver"): "network_driver",
    ("agent", "host"): "agent_host",
    ("agent", "port"): "agent_port",
    ("health", "listen"): "health_listen",
    ("health", "key_files"): "heartbeat_key_files",
    ("health", "receivers"): "health_receivers",
    ("health", "interval"): "heartbeat_interval",
    ("health", "timeout"): "heartbeat_timeout",
    ("health", "breaker"): "failover_breaker",
    ("health", "breaker_share"): "breaker_share",
    ("health", "breaker_min"): "breaker_min",
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
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            where = str(exc).replace("at end of document", f"at end of document, line {text.count(chr(10)) + 1}")
            raise ConfigError(f"cannot read config file {path}: {where}") from None
        for section, values in data.items():
            if section == "auth" and isinstance(values, dict):
                values = dict(values)
                try:
                    settings.role_mapping = rolemap.from_config(
                        values.pop("role_mapping", None), values.pop("default_role", None), text
                    )
                except rolemap.RoleMappingError as exc:
                    raise ConfigError(f"{path}, {exc}") from None
            if section == "quotas":
                unknown = set(values) - set(c.QUOTA_RESOURCES)
                if unknown:
                    raise ConfigError(f"{path}: unknown quota(s) {sorted(unknown)}; known: {sorted(c.QUOTA_RESOURCES)}")
                settings.quota_defaults.update({k: int(v) for k, v in values.items()})
                continue
            if section == "keystone":
                known = {f.name for f in fields(KeystoneSettings)}
                for key, value in values.items():
                    if key not in known:
                        raise ConfigError(f"{path}: unknown setting [keystone] {key}; known: {sorted(known)}")
                    setattr(settings.keystone, key, value)
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
    if settings.auth_strategy not in AUTH_STRATEGIES:
        raise ConfigError(f"auth_strategy must be noauth, header or keystone, not {settings.auth_strategy!r}")
    if settings.auth_strategy == "keystone":
        _check_keystone(settings.keystone)
    for name in ("private_cidr", "public_cidr"):
        value = getattr(settings, name)
        if value is not None:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise ConfigError(f"{name} {value!r} is not a subnet: {exc}") from None
    _check_health(settings)
    _check_keymanager(settings)
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


def host_port(value: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """("host", port) from "host:port" ("[::1]:5555" for IPv6); ValueError with the reason otherwise."""
    host, sep, port = str(value).rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    low = 0 if allow_zero else 1
    if not sep or not host or not port.isdigit() or not low <= int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (IPv6: [::1]:9443)")
    return host, int(port)


def _check_health(settings: Settings) -> None:
    try:
        host, _ = host_port(settings.health_listen, allow_zero=True)
        ipaddress.ip_address(host)
        for receiver in settings.health_receivers:
            ipaddress.ip_address(host_port(receiver)[0])
    except ValueError as exc:
        raise ConfigError(f"[health] listen and receivers take IP:port: {exc}") from None
    if not 0 < settings.heartbeat_interval < settings.heartbeat_timeout:
        raise ConfigError("[health] needs 0 < interval < timeout")
    if not 0 < settings.breaker_share <= 1 or settings.breaker_min < 1:
        raise ConfigError("[health] breaker_share must be in (0, 1] and breaker_min at least 1")


def _check_keystone(ks: KeystoneSettings) -> None:
    if not isinstance(ks.auth_url, str) or not ks.auth_url.startswith(("http://", "https://")):
        raise ConfigError(f"[keystone] auth_url must be Keystone's http(s):// URL (…/v3), not {ks.auth_url!r}")
    for name in ("username", "password", "project_name", "user_domain_name", "project_domain_name"):
        if not isinstance(getattr(ks, name), str) or not getattr(ks, name):
            raise ConfigError(f"[keystone] {name} is needed with auth_strategy = keystone (a non-empty string)")
    numbers = {"cache_seconds": (0, 86400), "timeout": (0.1, 60)}
    for name, (low, high) in numbers.items():
        value = getattr(ks, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise ConfigError(f"[keystone] {name} must be a number from {low} to {high}, not {value!r}")
    if isinstance(ks.cache_size, bool) or not isinstance(ks.cache_size, int) or ks.cache_size < 0:
        raise ConfigError(f"[keystone] cache_size must be a whole number, 0 or more, not {ks.cache_size!r}")


def _check_keymanager(settings: Settings) -> None:
    port = settings.keymanager_port
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
        raise ConfigError(f"[keymanager] port must be a port number (0: any free one), not {port!r}")
    settings.keymanager_url = settings.keymanager_url or None
    if settings.keymanager_url and not str(settings.keymanager_url).startswith(("http://", "https://")):
        raise ConfigError(f"[keymanager] url must be an http:// or https:// URL, not {settings.keymanager_url!r}")
    if not isinstance(settings.keymanager_key_files, list):
        raise ConfigError("[keymanager] key_files must be a list of file names")


def clouds_yaml(settings: Settings) -> str:
    """The clouds.yaml that points the OpenStack clients at this quadriga.

    `auth.endpoint` is the key manager's /v1: python-barbicanclient's `openstack secret` commands ignore
    key_manager_endpoint_override and, with auth_type none, send every request under that endpoint; the
    load-balancer and networking clients follow their overrides, and openstacksdk follows
    key_manager_endpoint_override (with or without /v1: it discovers the version). With auth_strategy
    keystone it is a password login to fill in: the endpoints come from Keystone's catalog."""
    if settings.auth_strategy == "keystone":
        return (
            "clouds:\n"
            "  quadriga:\n"
            "    auth_type: password\n"
            "    auth:\n"
            f"      auth_url: {settings.keystone.auth_url}\n"
            "      username: YOUR-USER\n"
            "      password: YOUR-PASSWORD\n"
            "      project_name: YOUR-PROJECT\n"
            "      user_domain_name: Default\n"
            "      project_domain_name: Default\n"
            "    region_name: RegionOne\n"
        )
    return (
        "clouds:\n"
        "  quadriga:\n"
        "    auth_type: none\n"
        "    auth:\n"
        f"      endpoint: {settings.keymanager_endpoint}/v1\n"
        f"    load_balancer_endpoint_override: {settings.lb_endpoint}\n"
        f"    network_endpoint_override: {settings.network_endpoint}\n"
        f"    key_manager_endpoint_override: {settings.keymanager_endpoint}/v1\n"
        "    region_name: RegionOne\n"
    )
