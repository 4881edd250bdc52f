"""A pool of spare engines: started, idle HAProxy masters with an empty config, each in its own network
namespace, that a new engine adopts instead of being built from scratch (namespace, sysctls, HAProxy's
start), so a create or a failover only plugs its VIPs and reloads. The pool refills in the background.

A spare lives in `<state dir>/spares/<spare id>/` and keeps that directory for life: HAProxy's command line
names its config there, and a reload re-executes that command line, so the directory can never move.
An engine that adopts a spare is therefore a symbolic link `engines/<engine id> -> ../spares/<spare id>`,
and its namespace is renamed to the engine's (`NetworkDriver.rename`; the namespace and the processes in
it stay the same). Veths are not made in advance: their names and bridges depend on the engine's networks.

Spares serve nothing, so a restarted agent does not adopt the ones a previous process left: it removes
every spare no engine links to, and makes new ones."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
from pathlib import Path

from quadriga.agent.haproxy import Haproxy, HaproxyError, write_atomic
from quadriga.engine.render import RenderOptions, render
from quadriga.engine.spec import EngineSpec
from quadriga.network.drivers.base import NetworkDriver, NetworkError

log = logging.getLogger("quadriga.agent")

SPARES = "spares"
RETRY_AFTER = 5.0  # seconds before the pool tries again after a spare could not be made
# Refilling waits this long after a spare was taken: making a spare (a namespace, HAProxy's start) competes
# for the CPU with the create that took it, which is still plugging and reloading.
REFILL_DELAY = 1.0


class SparePool:
    """Up to `size` idle spares. Thread-safe."""

    def __init__(
        self, directory: Path, network: NetworkDriver, *, size: int, haproxy: str, options: RenderOptions
    ) -> None:
        self.directory = directory
        self.network = network
        self.size = size
        self.haproxy = haproxy
        self.options = options
        self._idle: list[str] = []
        self._busy: set[str] = set()  # being made or adopted: their namespaces are not orphans either
        self._claimed_at = 0.0  # time.monotonic() of the last claim
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, in_use: set[Path]) -> None:
        """Remove spares a previous agent left that no engine uses (`in_use`: the spare directories engines
        link to), then fill the pool in the background."""
        if self.directory.is_dir():
            for path in sorted(self.directory.iterdir()):
                if path.resolve() not in in_use:
                    self._discard(path.name)
        if self.size > 0:
            self._thread = threading.Thread(target=self._fill, name="spares", daemon=True)
            self._thread.start()

    def ids(self) -> set[str]:
        """The spares idle, being made or being adopted (whose namespaces are not orphans)."""
        with self._lock:
            return set(self._idle) | self._busy

    def idle(self) -> set[str]:
        with self._lock:
            return set(self._idle)

    def claim(self, engine_id: str, link: Path) -> bool:
        """Make an idle spare engine `engine_id`: rename its namespace and link `link` (the engine's
        directory, which must not exist) to it. False when no spare is idle or the adoption failed (the
        caller then builds the engine from scratch)."""
        with self._lock:
            spare_id = self._idle.pop(0) if self._idle else None
            self._claimed_at = time.monotonic()
            if spare_id is not None:
                self._busy.add(spare_id)
        if spare_id is None:
            return False
        self._wake.set()
        try:
            return self._adopt(spare_id, engine_id, link)
        finally:
            with self._lock:
                self._busy.discard(spare_id)

    def _adopt(self, spare_id: str, engine_id: str, link: Path) -> bool:
        directory = self.directory / spare_id
        master = Haproxy(directory, binary=self.haproxy).master_pid()
        try:
            if master is None:
                raise HaproxyError(f"spare {spare_id} has no running HAProxy")
            self.network.rename(spare_id, engine_id, master)
            os.symlink(os.path.relpath(directory, link.parent), link)
        except (HaproxyError, NetworkError, OSError) as exc:
            log.warning("engine=%s spare=%s not adopted, building from scratch: %s", engine_id, spare_id, exc)
            with _logged(spare_id):
                self.network.unplug(engine_id)
            self._discard(spare_id)
            return False
        log.info("engine=%s adopted spare=%s (haproxy master %s)", engine_id, spare_id, master)
        return True

    def shutdown(self) -> None:
        """Stop refilling and remove the idle spares."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            idle, self._idle = self._idle, []
        for spare_id in idle:
            self._discard(spare_id)
        if self.directory.is_dir() and not any(self.directory.iterdir()):
            self.directory.rmdir()

    # --- the pool's thread ---------------------------------------------------------------------------

    def _fill(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            with self._lock:
                missing = self.size - len(self._idle)
            if missing <= 0:
                self._wake.wait()
                continue
            if (quiet := self._claimed_at + REFILL_DELAY - time.monotonic()) > 0:
                self._stop.wait(quiet)
                continue
            spare_id = f"spare-{secrets.token_hex(4)}"
            started = time.monotonic()
            with self._lock:
                self._busy.add(spare_id)
            try:
                self._make(spare_id)
                made = not self._stop.is_set()
            except (HaproxyError, NetworkError, OSError) as exc:
                log.error("spare=%s could not be made (retrying in %.0f s): %s", spare_id, RETRY_AFTER, exc)
                made = False
                self._stop.wait(RETRY_AFTER)
            with self._lock:
                self._busy.discard(spare_id)
                if made:
                    self._idle.append(spare_id)
            if not made:
                self._discard(spare_id)
                continue
            log.info("spare=%s ready in %.0f ms", spare_id, (time.monotonic() - started) * 1000)

    def _make(self, spare_id: str) -> None:
        directory = self.directory / spare_id
        directory.mkdir(mode=0o700, parents=True)
        haproxy = Haproxy(directory, binary=self.haproxy, command_prefix=self.network.command_prefix(spare_id))
        empty = EngineSpec(revision=0, loadbalancer_id=spare_id)
        write_atomic(haproxy.config, render(empty, haproxy.paths, self.options))
        self.network.plug(spare_id, empty)
        haproxy.start()

    def _discard(self, spare_id: str) -> None:
        directory = self.directory / spare_id
        with _logged(spare_id):
            Haproxy(directory, binary=self.haproxy).stop()
        with _logged(spare_id):
            self.network.unplug(spare_id)
        shutil.rmtree(directory, ignore_errors=True)
        log.info("spare=%s removed", spare_id)


class _logged:
    """Log and swallow what removing a spare fails at: it serves nothing, and the rest is still removed."""

    def __init__(self, spare_id: str) -> None:
        self.spare_id = spare_id

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> bool:
        if isinstance(exc, HaproxyError | NetworkError | OSError):
            log.error("spare=%s not fully removed: %s", self.spare_id, exc)
            return True
        return False
