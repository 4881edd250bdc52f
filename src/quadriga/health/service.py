"""A health receiver with its recorder: what `quadriga serve` runs next to its controller and
`quadriga health` runs alone."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path

from quadriga.config import Settings, host_port
from quadriga.db.session import Database
from quadriga.health.keys import DEFAULT_NAME, ensure_key_file, load_keys
from quadriga.health.receiver import HeartbeatReceiver
from quadriga.health.recorder import HeartbeatRecorder

log = logging.getLogger("quadriga.health")


def heartbeat_keys(settings: Settings) -> dict[str, bytes]:
    """The accepted keys (the signing one first); the default key file is created at the first start."""
    files = settings.key_files
    if files == [settings.state_dir / DEFAULT_NAME]:
        ensure_key_file(files[0])
    return load_keys(files)


def reachable(address: tuple[str, int]) -> tuple[str, int]:
    """Where a sender on this host reaches a receiver bound to `address` (a wildcard means loopback)."""
    host, port = address
    if ipaddress.ip_address(host).is_unspecified:
        host = "::1" if ipaddress.ip_address(host).version == 6 else "127.0.0.1"
    return host, port


class HealthService:
    """Receiver and recorder, started and stopped together."""

    def __init__(self, db: Database, settings: Settings, *, wake_reconciler: Callable[[], None] = lambda: None) -> None:
        self.keys = heartbeat_keys(settings)
        self.recorder = HeartbeatRecorder(db, wake_reconciler=wake_reconciler)
        self.receiver = HeartbeatReceiver(
            host_port(settings.health_listen, allow_zero=True), self.keys, self.recorder.record
        )
        self.key_files: list[Path] = settings.key_files

    def start(self) -> HealthService:
        self.receiver.start()
        log.info(
            "health receiver accepts heartbeat keys %s (from %s)",
            ", ".join(self.keys),
            ", ".join(map(str, self.key_files)),
        )
        return self

    def stop(self) -> None:
        self.receiver.stop()
        log.info("health receiver stopped: %s; recorder: %s", self.receiver.counters(), self.recorder.counters())
