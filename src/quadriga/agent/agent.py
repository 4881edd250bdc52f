"""The agent: the set of engines on this host, under `<state dir>/engines/<engine id>/`, and the network
driver that plugs them.

Calls for one engine are serialized by a lock of its own; different engines proceed in parallel. An
engine's HAProxy runs daemonized and outlives the agent process: a new agent `recover()`s the engines it
finds on disk (adopting the live ones, restarting the dead ones from the spec they last served), while
`shutdown()` takes everything down (processes, network plumbing, files)."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from quadriga.agent.engine import Engine, EngineRejected, StaleRevision
from quadriga.agent.haproxy import Haproxy, HaproxyError
from quadriga.agent.orphans import haproxy_engines, udp_proxy_engines
from quadriga.agent.spares import SPARES, SparePool
from quadriga.agent.udp import UdpProxy, UdpProxyError
from quadriga.engine.regex import haproxy_binary
from quadriga.engine.render import RenderOptions
from quadriga.engine.report import EngineReport
from quadriga.engine.spec import ID_PATTERN, EngineSpec
from quadriga.network.drivers.base import NetworkDriver, NetworkError

__all__ = ["Agent", "EngineRejected", "StaleRevision"]

log = logging.getLogger("quadriga.agent")

ENGINES = "engines"
# How long `reports` waits for an engine busy with a change before its last report stands in: the
# heartbeats of every engine come from one pass, and one slow change must not silence the others.
REPORT_WAIT = 0.2


class Agent:
    """This host's engines. Thread-safe."""

    def __init__(
        self,
        state_dir: Path,
        network: NetworkDriver,
        *,
        haproxy: str | None = None,
        options: RenderOptions | None = None,
        spares: int = 0,
    ) -> None:
        self.engines_dir = Path(state_dir).absolute() / ENGINES
        self.network = network
        binary = haproxy or haproxy_binary()
        if binary is None:
            raise HaproxyError("HAProxy is not installed: install it (`apt-get install -y haproxy`) or pass its path")
        self.haproxy = binary
        self.options = options or RenderOptions()
        self._lock = threading.Lock()  # guards _engines
        self._engines: dict[str, tuple[Engine, threading.Lock]] = {}
        self._last_reports: dict[str, EngineReport] = {}  # guarded by _lock
        self.spares = SparePool(
            self.engines_dir.parent / SPARES, network, size=spares, haproxy=self.haproxy, options=self.options
        )

    # --- the engine API --------------------------------------------------------------------------------

    def apply(self, engine_id: str, spec: EngineSpec) -> EngineReport:
        """Make engine `engine_id` serve `spec` (creating it if new). Raises StaleRevision, EngineRejected,
        NetworkError or HaproxyError; the engine then serves what it served before."""
        with self._locked(engine_id, create=True) as engine:
            assert engine is not None
            link = self.engines_dir / engine_id
            if engine.spec is None and not link.exists() and not link.is_symlink():
                self.engines_dir.mkdir(parents=True, exist_ok=True)
                if self.spares.claim(engine_id, link):  # a new engine: from a spare if one is idle
                    engine = self._replace(engine_id, self._engine(engine_id))
            return engine.apply(spec)

    def remove(self, engine_id: str) -> None:
        """Stop the engine's HAProxy, unplug it and delete its files. Idempotent."""
        with self._locked(engine_id, create=False) as engine:
            if engine is None:
                self.network.unplug(engine_id)
                (self.engines_dir / engine_id).unlink(missing_ok=True)  # a link to a spare that is gone
                return
            engine.remove()
            (self.engines_dir / engine_id).unlink(missing_ok=True)  # an adopted spare's link
            with self._lock:
                del self._engines[engine_id]

    def report(self, engine_id: str) -> EngineReport | None:
        """The engine's report; None for an engine that does not exist or never served a spec."""
        with self._locked(engine_id, create=False) as engine:
            return None if engine is None else engine.report()

    def reports(self) -> list[EngineReport]:
        """The reports of every engine that serves a spec. An engine whose lock a change holds (a reload, a
        removal waiting for a hung HAProxy) for more than REPORT_WAIT is reported as it was last: the
        heartbeats of all engines come from one pass, and one busy engine must not make the others look
        silent (and be failed over)."""
        with self._lock:
            entries = sorted(self._engines.items())
        reports = []
        for engine_id, (_engine, lock) in entries:
            if lock.acquire(timeout=REPORT_WAIT):
                try:
                    with self._lock:
                        current = self._engines.get(engine_id)
                    report = current[0].report() if current is not None and current[1] is lock else None
                finally:
                    lock.release()
            else:
                with self._lock:
                    report = self._last_reports.get(engine_id)
            if report is not None:
                reports.append(report)
        with self._lock:
            self._last_reports = {r.engine_id: r for r in reports if r.engine_id in self._engines}
        return reports

    # --- the agent's own life --------------------------------------------------------------------------

    def recover(self) -> dict[str, str]:
        """Take over the engines a previous agent process left on disk: adopt those whose HAProxy still
        runs, restart the others from the spec they served (so their traffic comes back), remove those
        that never served one. Returns what happened to each engine ("adopted", "restarted", "removed" or
        "failed: <why>")."""
        outcome: dict[str, str] = {}
        for engine_id in self._engine_ids_on_disk():
            try:
                with self._locked(engine_id, create=True) as engine:
                    assert engine is not None
                    outcome[engine_id] = engine.recover()
                    if engine.spec is None:
                        with self._lock:
                            del self._engines[engine_id]
            except (EngineRejected, NetworkError, HaproxyError, ValueError) as exc:
                outcome[engine_id] = f"failed: {exc}"
            log.info("recover engine=%s: %s", engine_id, outcome[engine_id])
        return outcome

    def collect_orphans(self) -> list[str]:
        """Remove what no engine of this agent owns: engine directories that never served a spec (a crash
        during the first apply), HAProxy processes and UDP proxies whose engine directory is gone, and this instance's
        namespaces and veths of unknown engines. Each kind is listed before the known engines are read, so an
        engine being created right now (known before it has a directory, a process or a namespace) is never
        touched. Returns what was removed; each is logged, and what fails is logged and left for next time."""
        collected: list[str] = []
        on_disk = set(self._engine_ids_on_disk())
        for engine_id in sorted(on_disk - self._known()):
            with _orphan_errors(f"engine directory {engine_id}"):
                self.remove(engine_id)
                collected.append(f"engine directory {engine_id}")
        processes = haproxy_engines(self.engines_dir)
        proxies = udp_proxy_engines(self.engines_dir)
        known = self._known() | set(self._engine_ids_on_disk())
        for engine_id, pids in sorted(proxies.items()):
            if engine_id not in known:
                with _orphan_errors(f"udp proxy {engine_id}"):
                    UdpProxy(self.engines_dir / engine_id).stop()
                    collected.append(f"udp proxy {engine_id} (pids {pids})")
        for engine_id, pids in sorted(processes.items()):
            if engine_id not in known:
                with _orphan_errors(f"haproxy {engine_id}"):
                    Haproxy(self.engines_dir / engine_id, binary=self.haproxy).stop()
                    collected.append(f"haproxy {engine_id} (pids {pids})")
        for what in collected:
            log.warning("collected orphan %s: no engine of this agent owns it", what)
        with _orphan_errors("network objects"):
            collected += self.network.collect_orphans(
                lambda: self._known() | set(self._engine_ids_on_disk()) | self.spares.ids()
            )
        return collected

    def _known(self) -> set[str]:
        with self._lock:
            return set(self._engines)

    def start_spares(self) -> None:
        """Remove the spares a previous agent left unused, and keep the pool filled from now on."""
        in_use = {(self.engines_dir / e).resolve() for e in self._engine_ids_on_disk()}
        self.spares.start(in_use)

    def shutdown(self) -> None:
        """Take every engine down (HAProxy, network, files) and clean up the network driver. Raises an
        ExceptionGroup of what could not be removed, after trying everything."""
        self.spares.shutdown()
        with self._lock:
            engine_ids = set(self._engines)
        errors: list[Exception] = []
        for engine_id in sorted(engine_ids | set(self._engine_ids_on_disk())):
            try:
                self.remove(engine_id)
            except (NetworkError, HaproxyError, UdpProxyError, OSError, ValueError) as exc:
                log.error("shutdown: engine=%s not removed: %s", engine_id, exc)
                errors.append(exc)
        try:
            self.network.cleanup()
        except NetworkError as exc:
            log.error("shutdown: network cleanup failed: %s", exc)
            errors.append(exc)
        if self.engines_dir.exists() and not any(self.engines_dir.iterdir()):
            self.engines_dir.rmdir()
        if errors:
            raise ExceptionGroup("agent shutdown left something behind", errors)
        log.info("agent shut down: %d engines removed", len(engine_ids))

    # --- helpers ---------------------------------------------------------------------------------------

    @contextmanager
    def _locked(self, engine_id: str, *, create: bool) -> Iterator[Engine | None]:
        """The engine, with its lock held (None when it does not exist and `create` is false)."""
        if not re.fullmatch(ID_PATTERN, engine_id):
            raise ValueError(f"invalid engine id {engine_id!r}: it must match {ID_PATTERN}")
        while True:
            with self._lock:
                entry = self._engines.get(engine_id)
                directory = self.engines_dir / engine_id
                if entry is None and (create or directory.is_dir()):
                    entry = self._engines[engine_id] = (self._engine(engine_id), threading.Lock())
            if entry is None:
                yield None
                return
            with entry[1]:
                with self._lock:
                    current = self._engines.get(engine_id)
                if current is entry:  # not removed while this call waited for the lock
                    yield entry[0]
                    return

    def _engine(self, engine_id: str) -> Engine:
        directory = self.engines_dir / engine_id
        if directory.is_symlink():  # an adopted spare: HAProxy knows it by the spare's own path
            directory = Path(os.path.normpath(directory.parent / directory.readlink()))
        return Engine(engine_id, directory, self.network, haproxy=self.haproxy, options=self.options)

    def _replace(self, engine_id: str, engine: Engine) -> Engine:
        """Swap the engine object of `engine_id` (whose lock the caller holds); callers waiting for the lock
        see a new entry and look it up again."""
        with self._lock:
            self._engines[engine_id] = (engine, self._engines[engine_id][1])
        return engine

    def _engine_ids_on_disk(self) -> list[str]:
        if not self.engines_dir.is_dir():
            return []
        found = []
        for path in sorted(self.engines_dir.iterdir()):
            if path.is_dir() and re.fullmatch(ID_PATTERN, path.name):
                found.append(path.name)
            else:
                log.warning("ignoring %s: not an engine directory", path)
        return found


@contextmanager
def _orphan_errors(what: str) -> Iterator[None]:
    """Orphans are collected again at the next pass: a failure is logged, and the rest is still collected."""
    try:
        yield
    except (NetworkError, HaproxyError, UdpProxyError, OSError, ValueError) as exc:
        log.error("orphan %s not collected (tried again at the next pass): %s", what, exc)
