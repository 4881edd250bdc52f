"""`quadriga serve`: the embedded shape — the load-balancer API, the networking API and the controller
in one process, sharing one database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from quadriga.api.app import create_app
from quadriga.api.auth import make_authenticator
from quadriga.api.common import Services
from quadriga.config import Settings, clouds_yaml
from quadriga.controller.reconciler import Reconciler
from quadriga.db.migrate import upgrade
from quadriga.db.session import Database
from quadriga.network import embedded
from quadriga.network.api import create_app as create_network_app
from quadriga.providers.base import ProviderDriver
from quadriga.providers.noop import NoopProvider

log = logging.getLogger("quadriga.server")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: `serve` stops both servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_providers(settings: Settings) -> dict[str, ProviderDriver]:
    return {"noop": NoopProvider(delay=settings.provider_delay)}


def prepare_database(settings: Settings) -> Database:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    upgrade(db.engine)
    with db.write() as session:
        embedded.seed_defaults(session, settings.default_project)
    return db


async def _serve(settings: Settings, db: Database, reconciler: Reconciler) -> None:
    authenticator = make_authenticator(settings.auth_strategy, settings.default_project)
    providers = reconciler.providers
    svc = Services(
        db=db,
        authenticator=authenticator,
        providers=providers,
        default_provider=settings.provider,
        wake=reconciler.wake,
        quota_defaults=dict(settings.quota_defaults),
        enforce_quotas=settings.auth_strategy != "noauth",
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
    loop = asyncio.get_running_loop()

    def stop() -> None:
        log.info("stopping")
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(server.serve() for server in servers))
    if not all(server.started for server in servers):
        raise SystemExit("quadriga: a listener could not start (is the port in use?); see the log above")


def serve(settings: Settings) -> None:
    db = prepare_database(settings)
    reconciler = Reconciler(db, make_providers(settings), poll_interval=settings.poll_interval)
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
    reconciler.start()
    try:
        asyncio.run(_serve(settings, db, reconciler))
    finally:
        reconciler.stop()
        db.dispose()
