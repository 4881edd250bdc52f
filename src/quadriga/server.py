"""`quadriga serve`: the embedded shape — the load-balancer API, the networking API, the tenants' secret store
(a Barbican-compatible key-manager API, unless a real Barbican is configured), the controller (the
reconciler, the failover watchdog, housekeeping), a health receiver and an agent with its engines, in one
process, sharing one database. The controller reaches the agent over its mutual-TLS API, exactly as it
reaches an agent on another host, and the agent sends its heartbeats over UDP to the receiver (and to any
other receivers configured), exactly as from another host.

SIGUSR1 pauses (and a second one resumes) the in-process agent's heartbeats: a fire drill for the
failover circuit breaker, logged loudly."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn

from quadriga.agent.client import AgentClient
from quadriga.agent.heartbeat import HeartbeatSender
from quadriga.agent.host import AgentHost
from quadriga.agent.keepalived import keepalived_binary
from quadriga.api.app import create_app
from quadriga.api.auth import make_authenticator
from quadriga.api.common import Services
from quadriga.certs.pki import (
    CertificateAuthority,
    ensure_controller_bundle,
    ensure_local_agent_bundle,
    not_after,
    pki_dir,
)
from quadriga.certs.tls import TLSLoader, TLSMaterial
from quadriga.config import Settings, clouds_yaml, host_port
from quadriga.controller.certificates import CertificateRotation
from quadriga.controller.failover import FailoverWatchdog
from quadriga.controller.housekeeping import Housekeeping
from quadriga.controller.reconciler import Reconciler
from quadriga.db.migrate import upgrade
from quadriga.db.session import Database
from quadriga.health.service import HealthService, reachable
from quadriga.keymanager import Secrets, secrets_for
from quadriga.keymanager.api import create_app as create_keymanager_app
from quadriga.keymanager.crypto import KeyFileError
from quadriga.keymanager.store import LocalSecrets
from quadriga.network import embedded
from quadriga.network.api import create_app as create_network_app
from quadriga.network.drivers.netns import instance_for
from quadriga.providers.base import ProviderDriver
from quadriga.providers.engine import EngineProvider
from quadriga.providers.noop import NoopProvider
from quadriga.service_token import ServiceToken

log = logging.getLogger("quadriga.server")
LOCAL_AGENT = "local"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: `serve` stops both servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class DataPlane:
    """The in-process agent and the controller's client for it."""

    def __init__(self, settings: Settings) -> None:
        bundle = ensure_local_agent_bundle(
            settings.state_dir,
            LOCAL_AGENT,
            [settings.agent_host],
            days=settings.agent_cert_validity_days,
            renew_before=dt.timedelta(days=settings.agent_cert_renew_days),
        )
        self.host = AgentHost(
            name=LOCAL_AGENT,
            state_dir=settings.state_dir / "agent",
            bundle=bundle,
            host=settings.agent_host,
            port=settings.agent_port,
            network_driver=settings.network_driver,
            spare_engines=settings.spare_engines,
        ).start()
        self.client = AgentClient(self.host.url, ensure_controller_bundle(settings.state_dir))
        self.agents = {LOCAL_AGENT: self.client}
        # What each agent's certificate expires at; certificate rotation keeps it current.
        self.cert_expirations = {LOCAL_AGENT: not_after(bundle.cert.read_bytes())}
        self.sender: HeartbeatSender | None = None

    def seed_cidrs(self, settings: Settings) -> dict[str, str]:
        """The subnets of the networks created at the first start: loopback VIPs need 127/8."""
        cidrs = embedded.LOOPBACK_CIDRS if self.host.driver.name == "loopback" else embedded.DEFAULT_CIDRS
        given = {"private": settings.private_cidr, "public": settings.public_cidr}
        return cidrs | {name: cidr for name, cidr in given.items() if cidr}

    def providers(self, db: Database, settings: Settings, tls: TLSMaterial) -> dict[str, ProviderDriver]:
        engine = EngineProvider(
            db,
            self.agents,
            tls=tls,
            check_vip=self.host.driver.check_vip,
            cert_expiration=self._cert_expiration,
            active_standby_unavailable=self.active_standby_unavailable(),
        )
        return {"noop": NoopProvider(delay=settings.provider_delay), engine.name: engine}

    def start_heartbeats(self, settings: Settings, health: HealthService) -> None:
        """Send the engines' heartbeats to this process's receiver and the configured others."""
        receivers = [reachable(health.receiver.address)] + [host_port(r) for r in settings.health_receivers]
        key_id, key = next(iter(health.keys.items()))
        self.sender = HeartbeatSender(self.host.agent, receivers, key_id, key, interval=settings.heartbeat_interval)
        self.sender.start()
        log.info(
            "agent %s sends heartbeats every %.1f s to %s (key %s)",
            LOCAL_AGENT,
            settings.heartbeat_interval,
            ", ".join(f"{h}:{p}" for h, p in receivers),
            key_id,
        )

    def active_standby_unavailable(self) -> str | None:
        """Why this agent cannot run ACTIVE_STANDBY pairs (None when it can): they share a VIP between two
        network namespaces through keepalived."""
        if self.host.driver.name != "netns":
            return f"it needs the netns network driver, and this server runs the {self.host.driver.name} driver"
        if keepalived_binary() is None:
            return "keepalived is not installed on the agent's host (apt-get install keepalived)"
        return None

    def _cert_expiration(self, agent: str) -> dt.datetime | None:
        expires = self.cert_expirations.get(agent)
        return expires.replace(tzinfo=None) if expires else None

    def rotation(self, db: Database, settings: Settings) -> CertificateRotation:
        ca = CertificateAuthority.load_or_create(pki_dir(settings.state_dir))
        days = settings.agent_cert_validity_days
        return CertificateRotation(
            db,
            self.agents,
            lambda csr, name: ca.sign_request(csr, name, days),
            renew_before=dt.timedelta(days=settings.agent_cert_renew_days),
            expirations=self.cert_expirations,
        )

    def stop(self) -> None:
        if self.sender is not None:
            self.sender.stop()
        self.client.close()
        self.host.stop()


def bind_keymanager(settings: Settings) -> socket.socket:
    """The key manager's listening socket, bound before the clouds.yaml is written so that port 0 (any
    free port) is known by then; `settings.keymanager_port` becomes the bound port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            settings.host, settings.keymanager_port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise SystemExit(
            f"quadriga: the key manager cannot listen on {settings.host}:{settings.keymanager_port}: {exc}"
        ) from None
    settings.keymanager_port = sock.getsockname()[1]
    return sock


def prepare_database(settings: Settings, cidrs: dict[str, str] = embedded.DEFAULT_CIDRS) -> Database:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    upgrade(db.engine)
    with db.write() as session:
        embedded.seed_defaults(session, settings.default_project, cidrs)
    return db


async def _serve(
    settings: Settings,
    db: Database,
    reconciler: Reconciler,
    ready: Callable[[], None] | None,
    sender: HeartbeatSender,
    secrets: Secrets,
    keymanager_socket: socket.socket | None,
    tls: TLSMaterial,
    service: ServiceToken | None,
) -> None:
    authenticator = make_authenticator(settings.auth_strategy, settings.default_project, settings.keystone, service)
    providers = reconciler.providers
    svc = Services(
        db=db,
        authenticator=authenticator,
        providers=providers,
        default_provider=settings.provider,
        wake=reconciler.wake,
        quota_defaults=dict(settings.quota_defaults),
        enforce_quotas=settings.auth_strategy != "noauth",
        tls=tls,
        secrets=secrets,
        role_mapping=settings.role_mapping,
    )
    servers = [
        _Server(
            uvicorn.Config(create_app(svc), host=settings.host, port=settings.port, log_config=None, access_log=False)
        ),
        _Server(
            uvicorn.Config(
                create_network_app(db, authenticator),
                host=settings.host,
                port=settings.network_port,
                log_config=None,
                access_log=False,
            )
        ),
    ]
    sockets: list[list[socket.socket] | None] = [None, None]
    if isinstance(secrets, LocalSecrets) and keymanager_socket is not None:
        app = create_keymanager_app(secrets, authenticator, wake=reconciler.wake)
        servers.append(_Server(uvicorn.Config(app, log_config=None, access_log=False)))
        sockets.append([keymanager_socket])
    loop = asyncio.get_running_loop()

    def stop() -> None:
        log.info("stopping")
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)

    def drill() -> None:
        sender.paused = not sender.paused
        if sender.paused:
            log.warning("SIGUSR1: heartbeats of the in-process agent PAUSED (a drill); SIGUSR1 again resumes them")
        else:
            log.warning("SIGUSR1: heartbeats of the in-process agent resumed")

    loop.add_signal_handler(signal.SIGUSR1, drill)

    async def announce() -> None:
        while not all(server.started for server in servers):
            if any(server.should_exit for server in servers):
                return
            await asyncio.sleep(0.02)
        if ready is not None:
            threading.Thread(target=ready, name="ready", daemon=True).start()

    await asyncio.gather(
        announce(), *(server.serve(sockets=socks) for server, socks in zip(servers, sockets, strict=True))
    )
    if not all(server.started for server in servers):
        raise SystemExit("quadriga: a listener could not start (is the port in use?); see the log above")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (a dependency; uvicorn also picks httptools by itself),
    else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; a platform without it runs asyncio
        return None
    return uvloop.new_event_loop


def serve(settings: Settings, ready: Callable[[], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM; `ready` (if given) is called in a thread once the APIs answer."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    dataplane = DataPlane(settings)
    try:
        db = prepare_database(settings, dataplane.seed_cidrs(settings))
    except Exception:
        dataplane.stop()
        raise
    try:
        service = ServiceToken(settings.keystone) if settings.auth_strategy == "keystone" else None
        secrets = secrets_for(settings, db, service)
        keymanager_socket = None if settings.keymanager_url else bind_keymanager(settings)
    except (KeyFileError, SystemExit) as exc:
        dataplane.stop()
        db.dispose()
        raise SystemExit(str(exc) if isinstance(exc, SystemExit) else f"quadriga: {exc}") from None
    tls = TLSLoader(secrets)  # the API checks refs and the controller reads them through the same loader
    reconciler = Reconciler(
        db,
        dataplane.providers(db, settings, tls),
        poll_interval=settings.poll_interval,
        owner=f"serve@{socket.gethostname()}:{instance_for(settings.state_dir)}",
    )
    try:
        health = HealthService(db, settings, wake_reconciler=reconciler.wake).start()
    except (OSError, ValueError) as exc:
        dataplane.stop()
        db.dispose()
        raise SystemExit(f"quadriga: the health receiver cannot start on {settings.health_listen}: {exc}") from None
    watchdog = FailoverWatchdog(
        db,
        reconciler.providers,
        health.recorder.last_serving,
        timeout=settings.heartbeat_timeout,
        breaker=settings.failover_breaker,
        breaker_share=settings.breaker_share,
        breaker_min=settings.breaker_min,
        wake_reconciler=reconciler.wake,
        forget=health.recorder.forget,
    )
    housekeeping = Housekeeping(
        db,
        dataplane.agents,
        purge_after=dt.timedelta(days=settings.purge_after_days),
        interval=settings.housekeeping_interval,
        rotation=dataplane.rotation(db, settings),
    )
    clouds = clouds_yaml(settings)
    (settings.state_dir / "clouds.yaml").write_text(clouds)
    print(f"# clouds.yaml (also in {settings.state_dir / 'clouds.yaml'}):\n{clouds}", flush=True)
    log.info(
        "serving load-balancer API on %s and networking API on %s (database %s, auth %s)",
        settings.lb_endpoint,
        settings.network_endpoint,
        db.engine.url.render_as_string(hide_password=True),
        settings.auth_strategy,
    )
    if settings.keymanager_url:
        log.info("key manager: the Barbican at %s (none served here)", settings.keymanager_endpoint)
    else:
        log.info("serving key-manager API (secret store) on %s/v1", settings.keymanager_endpoint)
    if settings.auth_strategy != "noauth":
        log.info("role mapping: %s", settings.role_mapping.describe())
    dataplane.start_heartbeats(settings, health)
    reconciler.start()
    watchdog.start()
    housekeeping.start()
    try:
        assert dataplane.sender is not None
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(
                _serve(settings, db, reconciler, ready, dataplane.sender, secrets, keymanager_socket, tls, service)
            )
    finally:
        housekeeping.stop()
        watchdog.stop()
        reconciler.stop()
        dataplane.stop()
        health.stop()
        db.dispose()
        if service is not None:
            service.close()
