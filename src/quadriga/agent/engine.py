"""One engine: a directory with the HAProxy config of one load balancer, the spec it was rendered from,
and the HAProxy process that serves it.

`Engine.apply(spec)` makes the engine serve `spec`:

1. Render the config into `haproxy.cfg.new` and run `haproxy -c` on it. A config HAProxy rejects stops
   here (`EngineRejected`): the running config and process are not touched, and neither is the network.
   A check that did not finish (killed, timed out) judged nothing: `HaproxyError`, to be retried.
2. If only members changed (added, removed, weight, admin state) and HAProxy runs, apply the change with
   the runtime API: no reload, no new worker, established connections untouched. The checked config then
   replaces `haproxy.cfg`, so the next reload starts from the same state.
3. Otherwise (or when a runtime command fails) plug the network, swap the config in (atomic rename) and
   reload seamlessly, or start HAProxy. If HAProxy's master cannot load it, the previous config file is
   put back (the old worker still serves it) and the apply fails with `EngineRejected`. If HAProxy died
   before or during the reload, it is started with the new config (re-plugged: its namespace may be gone).

An ACTIVE_STANDBY engine (`spec.ha`) also runs keepalived (`quadriga.agent.keepalived`), which holds the VIPs
while this engine is MASTER: it is started or reloaded once HAProxy serves the spec, repaired by any apply
(the controller's re-push), adopted or restarted by `recover`, and stopped before HAProxy by `remove`.

UDP listeners are served by the engine's UDP proxy (`quadriga.agent.udp`), which runs next to HAProxy in the
same namespace while the spec has UDP listeners: converged after HAProxy by every apply (a proxy that cannot
serve the spec fails the apply and keeps its previous config), adopted or restarted by `recover`, stopped by
`remove`. Its listener counters and member statuses join HAProxy's in the report.

`spec.json` holds the spec the engine serves; it is written only once HAProxy serves it, so after a crash
the agent knows what runs (`recover`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pydantic import ValidationError

from quadriga.agent.haproxy import ConfigRejected, Haproxy, HaproxyError, write_atomic
from quadriga.agent.keepalived import Keepalived, KeepalivedError
from quadriga.agent.runtime import RuntimeApi, RuntimeApiError
from quadriga.agent.udp import UdpProxy, UdpProxyError
from quadriga.engine.render import (
    EMPTY_SERVER_STATE,
    RenderError,
    RenderOptions,
    backend_name,
    backends_of_pool,
    prune_support_files,
    render,
    server_params,
    write_support_files,
)
from quadriga.engine.report import EngineReport, ListenerReport
from quadriga.engine.spec import EngineSpec, MemberSpec, PoolSpec
from quadriga.engine.udp import serves_udp, udp_config
from quadriga.network.drivers.base import NetworkDriver, NetworkError, Plugged

log = logging.getLogger("quadriga.agent")

SPEC_FILE = "spec.json"
NEW_CONFIG = "haproxy.cfg.new"
# A report is read for every heartbeat: a hung HAProxy must answer within this or count as not serving.
STATS_TIMEOUT = 1.0
# How often `report` may try to start a UDP proxy that died.
UDP_RESTART_INTERVAL = 10.0
# HAProxy's server statuses from the least to the most able to serve (the first word counts: "UP 1/3").
STATUS_RANK = {"DOWN": 0, "MAINT": 1, "DRAIN": 2, "NOLB": 3, "no": 4, "UP": 5}

RuntimeStep = Callable[[RuntimeApi], None]


class StaleRevision(Exception):
    """The spec is older than the one the engine serves: applying it would roll the engine back."""


class EngineRejected(Exception):
    """HAProxy refused the spec's config (or could not load it); the engine keeps its previous config."""

    def __init__(self, engine_id: str, reason: str) -> None:
        super().__init__(f"engine {engine_id}: {reason}")
        self.reason = reason


class Engine:
    """The files and the HAProxy of one engine. Not thread-safe: the agent serializes calls per engine."""

    def __init__(
        self,
        engine_id: str,
        directory: Path,
        network: NetworkDriver,
        *,
        haproxy: str = "haproxy",
        options: RenderOptions | None = None,
    ) -> None:
        self.engine_id = engine_id
        self.directory = Path(directory).absolute()
        self.network = network
        self.options = options or RenderOptions()
        self.haproxy = Haproxy(self.directory, binary=haproxy, command_prefix=network.command_prefix(engine_id))
        self.keepalived = Keepalived(self.directory, command_prefix=network.command_prefix(engine_id))
        self.udp = UdpProxy(self.directory, command_prefix=network.command_prefix(engine_id))
        self._udp_retry_at = 0.0  # when `report` may next try to start a dead UDP proxy again
        # HAProxy took a spec that was not saved (the UDP proxy refused it after): it runs something else than
        # `self.spec`, so the next apply reloads it rather than working out runtime API calls from `self.spec`.
        self._haproxy_ahead = False
        self.error: str | None = None  # why the last apply failed
        self.spec: EngineSpec | None = self._load_spec()  # what HAProxy serves
        self.plugged: Plugged | None = None  # where the network driver put it (known once plugged)

    # --- applying --------------------------------------------------------------------------------------

    def apply(self, spec: EngineSpec) -> EngineReport:
        """Make the engine serve `spec` (see the module docstring); return the resulting report.
        Raises StaleRevision, EngineRejected, NetworkError or HaproxyError (HAProxy failed without judging the
        spec); in each case the engine serves what it did."""
        current = self.spec
        if current is not None and spec.revision < current.revision:
            raise StaleRevision(
                f"engine {self.engine_id}: revision {spec.revision} is older than the served {current.revision}"
            )
        running = self.haproxy.master_pid() is not None
        if running and spec == current and not self._haproxy_ahead:
            log.info("engine=%s revision=%s already served", self.engine_id, spec.revision)
            self._converge_udp(spec)
            self._converge_vrrp(spec)
            self.error = None
            return self._report(spec)
        if current is not None and spec.revision == current.revision and spec != current:
            log.warning("engine=%s revision=%s changed content under the same revision", self.engine_id, spec.revision)
        try:
            self._stage(spec)
            if running and current is not None and not self._haproxy_ahead and self._apply_at_runtime(current, spec):
                os.replace(self.directory / NEW_CONFIG, self.haproxy.config)
                how = "runtime API"
            else:
                self._swap(spec, running)
                how = "reload" if running else "start"
        except EngineRejected as exc:
            self.error = exc.reason
            raise
        except NetworkError as exc:
            self.error = str(exc)
            raise
        self._haproxy_ahead = True
        self._converge_udp(spec)
        self._save_spec(spec)
        self._haproxy_ahead = False
        self._converge_vrrp(spec)
        self.error = None
        log.info("engine=%s revision=%s applied by %s", self.engine_id, spec.revision, how)
        return self._report(spec)

    def _stage(self, spec: EngineSpec) -> None:
        """Render `spec` into haproxy.cfg.new and have HAProxy check it."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            text = render(spec, self.haproxy.paths, self.options)
        except RenderError as exc:
            raise EngineRejected(self.engine_id, str(exc)) from exc
        write_support_files(spec, self.haproxy.paths)
        staged = self.directory / NEW_CONFIG
        write_atomic(staged, text)
        try:
            warnings = self.haproxy.check(staged)
        except ConfigRejected as exc:
            log.warning("engine=%s revision=%s rejected by haproxy -c: %s", self.engine_id, spec.revision, exc)
            raise EngineRejected(self.engine_id, f"HAProxy rejected revision {spec.revision}: {exc}") from exc
        if warnings:
            log.warning("engine=%s revision=%s haproxy -c warnings: %s", self.engine_id, spec.revision, warnings)

    def _apply_at_runtime(self, current: EngineSpec, spec: EngineSpec) -> bool:
        """True when the runtime API applied the whole change; False when it needs a reload."""
        steps = runtime_steps(current, spec, self.haproxy.paths.extra_dir)
        if steps is None:
            return False
        try:
            for step in steps:
                step(self.haproxy.runtime)
        except RuntimeApiError as exc:
            log.warning("engine=%s revision=%s runtime API failed, reloading: %s", self.engine_id, spec.revision, exc)
            return False
        return True

    def _swap(self, spec: EngineSpec, running: bool) -> None:
        """Plug the network, put the staged config in place and reload (or start) HAProxy with it."""
        config = self.haproxy.config
        previous = config.read_text() if config.exists() else None
        served = self.spec
        # Plugging costs 2-3 `ip` processes: a reload re-plugs only when the VIPs change; a start always does
        # (it also repairs plumbing lost with the process, e.g. a deleted namespace).
        vips_changed = served is None or (served.vips, served.subnets) != (spec.vips, spec.subnets)
        if not running or self.plugged is None or vips_changed:
            self.plugged = self._plug(spec)
        os.replace(self.directory / NEW_CONFIG, config)
        try:
            if running:
                running = self._reload(served, spec)  # False: HAProxy died meanwhile, so it is started below
            if not running:
                self.haproxy.start()
        except HaproxyError as exc:
            log.error("engine=%s revision=%s not loaded by haproxy: %s", self.engine_id, spec.revision, exc)
            self._roll_back(previous, running)
            raise EngineRejected(self.engine_id, f"HAProxy did not load revision {spec.revision}: {exc}") from exc
        prune_support_files(spec, self.haproxy.paths)

    def _reload(self, served: EngineSpec | None, spec: EngineSpec) -> bool:
        """Reload HAProxy with the swapped-in config. Returns False, after clearing what is left of it, when
        HAProxy died before or during the reload: that says nothing about the config, which is to be started,
        not rejected. Raises HaproxyError when the running master refused the config."""
        try:
            self.haproxy.reload(lambda state: carried_state(state, served, spec))
        except HaproxyError as exc:
            if self.haproxy.master_pid() is not None:
                raise
            log.warning(
                "engine=%s revision=%s haproxy died during the reload, starting it: %s",
                self.engine_id,
                spec.revision,
                exc,
            )
            self.haproxy.stop()  # workers of a killed master
            self.plugged = self._plug(spec)  # its namespace may have died with it
            return False
        return True

    def _plug(self, spec: EngineSpec) -> Plugged:
        """Plug the network for `spec`, around the HAProxy that runs (if one does)."""
        return self.network.plug(self.engine_id, spec, process=self.haproxy.master_pid())

    def _roll_back(self, previous: str | None, running: bool) -> None:
        if previous is None:
            self.haproxy.config.unlink(missing_ok=True)
        else:
            write_atomic(self.haproxy.config, previous)
        if not running:
            self.haproxy.stop()  # a start that never served may have left a master behind
        if self.spec is not None:
            try:
                self._plug(self.spec)
            except NetworkError as exc:
                log.error("engine=%s cannot restore the network of the served revision: %s", self.engine_id, exc)

    def _converge_udp(self, spec: EngineSpec) -> None:
        """Run the UDP proxy with `spec`'s UDP listeners, or not at all. A proxy that cannot serve them fails the
        apply (EngineRejected) and keeps serving its previous config."""
        try:
            done = self.udp.ensure(udp_config(spec))
        except (UdpProxyError, ValueError) as exc:
            self.error = f"UDP proxy: {exc}"
            log.error("engine=%s revision=%s %s", self.engine_id, spec.revision, self.error)
            raise EngineRejected(self.engine_id, self.error) from exc
        if done != "unchanged":
            log.info("engine=%s revision=%s udp proxy %s", self.engine_id, spec.revision, done)

    def _converge_vrrp(self, spec: EngineSpec) -> None:
        """Run keepalived as `spec` asks (ACTIVE_STANDBY), or not at all (SINGLE). HAProxy serves `spec` already;
        a keepalived that cannot run fails the apply (EngineRejected), since the engine cannot take the VIPs."""
        try:
            if spec.ha is None:
                if self.keepalived.pid() is not None:
                    self.keepalived.stop()
                return
            if self.plugged is None or self.plugged.device is None:
                self.plugged = self._plug(spec)
            if self.plugged.device is None:
                raise KeepalivedError(f"the {self.network.name} network driver names no device for the VIPs")
            done = self.keepalived.ensure(spec, self.plugged.device, self.haproxy.pid_file)
        except KeepalivedError as exc:
            self.error = str(exc)
            raise EngineRejected(self.engine_id, f"keepalived: {exc}") from exc
        if done != "unchanged":
            log.info("engine=%s revision=%s keepalived %s as %s", self.engine_id, spec.revision, done, spec.ha.role)

    # --- reporting -------------------------------------------------------------------------------------

    def report(self) -> EngineReport | None:
        """HAProxy's view of the engine; None when it never served a spec. A UDP proxy that died (while HAProxy
        serves) is started again here, at most every UDP_RESTART_INTERVAL: reports are asked for every heartbeat,
        and nothing else would notice, since the engine as a whole still serves."""
        if self.spec is None:
            return None
        now = time.monotonic()
        if now >= self._udp_retry_at and serves_udp(self.spec) and self.udp.pid() is None:
            self._udp_retry_at = now + UDP_RESTART_INTERVAL
            if self.haproxy.master_pid() is not None:
                log.warning("engine=%s udp proxy is not running: starting it", self.engine_id)
                with contextlib.suppress(EngineRejected):
                    self._converge_udp(self.spec)
        return self._report(self.spec)

    def _report(self, spec: EngineSpec) -> EngineReport:
        report = EngineReport(
            engine_id=self.engine_id,
            loadbalancer_id=spec.loadbalancer_id,
            revision=spec.revision,
            running=False,
            error=self.error,
            lb_network_ip=self.plugged.lb_network_ip if self.plugged else None,
            vrrp_state=self.keepalived.state() if spec.ha else None,
        )
        if self.haproxy.master_pid() is None:
            return report
        try:
            rows = self.haproxy.runtime.show_stat(timeout=STATS_TIMEOUT)
        except RuntimeApiError as exc:
            log.warning("engine=%s no stats: %s", self.engine_id, exc)
            return report
        listeners, members = stats_by_object(rows)
        if serves_udp(spec) and (status := self.udp.status(timeout=STATS_TIMEOUT)) is not None:
            listeners.update({lid: ListenerReport(**li) for lid, li in status["listeners"].items()})
            members.update(status["members"])
        return report.model_copy(update={"running": True, "listeners": listeners, "members": members})

    # --- lifecycle -------------------------------------------------------------------------------------

    def recover(self) -> str:
        """After an agent restart: adopt a running HAProxy, restart a dead one from the served spec, or
        remove an engine that never served one. Returns what it did."""
        if self.haproxy.adopt():
            if self.spec is not None:
                self.plugged = self._plug(self.spec)  # repairs lost plumbing; tells the address
                self._converge_udp(self.spec)  # adopts a running UDP proxy, restarts a dead one
                self._converge_vrrp(self.spec)  # adopts a running keepalived, restarts a dead one
            return "adopted"
        if self.spec is None:
            self.remove()
            return "removed"
        self.haproxy.stop()  # whatever is left of it (workers of a dead master, a master that does not answer)
        self.apply(self.spec)
        return "restarted"

    def remove(self) -> None:
        """Stop keepalived (its peer takes the VIPs at once) and HAProxy, unplug the network and delete the
        directory. Idempotent."""
        try:
            self.keepalived.stop()
        except KeepalivedError as exc:  # only a process stuck in the kernel survives SIGKILL: go on
            log.error("engine=%s %s", self.engine_id, exc)
        try:
            self.udp.stop()
        except UdpProxyError as exc:
            log.error("engine=%s %s", self.engine_id, exc)
        self.haproxy.stop()
        self.network.unplug(self.engine_id)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.spec = None
        log.info("engine=%s removed", self.engine_id)

    def _load_spec(self) -> EngineSpec | None:
        path = self.directory / SPEC_FILE
        try:
            return EngineSpec.model_validate_json(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as exc:
            log.error("engine=%s unreadable %s, treated as never applied: %s", self.engine_id, path, exc)
            return None

    def _save_spec(self, spec: EngineSpec) -> None:
        write_atomic(self.directory / SPEC_FILE, spec.model_dump_json())
        self.spec = spec


# --- member changes through the runtime API ------------------------------------------------------------


def runtime_steps(current: EngineSpec, spec: EngineSpec, extra_dir: Path) -> list[RuntimeStep] | None:
    """The runtime API calls that turn `current` into `spec`, or None when more than members changed
    (or a member changed more than its weight and admin state) and a reload is needed. New members are
    added first and removed ones deleted last, so capacity never dips during the change. `extra_dir` holds
    the TLS files a new member's server line names (HAProxy has them loaded already when another server of
    the pool uses them; otherwise `add server` fails and the change is reloaded instead)."""
    if _without_members(current) != _without_members(spec):
        return None
    adds: list[RuntimeStep] = []
    changes: list[RuntimeStep] = []
    deletes: list[RuntimeStep] = []
    for pool in spec.pools:
        before = {m.id: m for m in current.pool(pool.id).members}
        backends = _backends(spec, pool)
        for member in pool.members:
            old = before.pop(member.id, None)
            if old is None:
                adds += _add_member(pool, member, backends, extra_dir)
            elif old != member:
                if old.model_copy(update={"weight": member.weight, "admin_state_up": member.admin_state_up}) != member:
                    return None  # address, port, backup or monitor settings: only a reload changes those
                changes += _change_member(pool, old, member, backends)
        for gone in before:
            deletes += _delete_member(gone, backends)
    return adds + changes + deletes


def _without_members(spec: EngineSpec) -> EngineSpec:
    pools = tuple(p.model_copy(update={"members": ()}) for p in spec.pools)
    return spec.model_copy(update={"revision": 0, "pools": pools})


def _backends(spec: EngineSpec, pool: PoolSpec) -> list[tuple[str, str]]:
    """(backend name, listener protocol) of every backend that carries `pool`."""
    names = set(backends_of_pool(spec, pool.id))
    pairs = [(backend_name(pool.id, li.id), li.protocol) for li in spec.listeners]
    return [(name, protocol) for name, protocol in pairs if name in names]


def _admin_state(pool: PoolSpec, member: MemberSpec) -> str:
    return "ready" if member.admin_state_up and pool.admin_state_up else "maint"


def _add_member(
    pool: PoolSpec, member: MemberSpec, backends: list[tuple[str, str]], extra_dir: Path
) -> list[RuntimeStep]:
    # HAProxy creates a dynamic server in maintenance with its checks off.
    host = f"[{member.address}]" if ":" in member.address else member.address
    address = f"{host}:{member.protocol_port}"
    checked = pool.health_monitor is not None and pool.health_monitor.admin_state_up
    steps: list[RuntimeStep] = []
    for backend, protocol in backends:
        params = server_params(pool, member, extra_dir=extra_dir, listener_protocol=protocol)
        steps.append(partial(RuntimeApi.add_server, backend=backend, server=member.id, address=address, params=params))
        if checked:
            steps.append(partial(RuntimeApi.enable_health, backend=backend, server=member.id))
        if _admin_state(pool, member) == "ready":
            steps.append(partial(RuntimeApi.set_state, backend=backend, server=member.id, state="ready"))
    return steps


def _change_member(
    pool: PoolSpec, old: MemberSpec, member: MemberSpec, backends: list[tuple[str, str]]
) -> list[RuntimeStep]:
    steps: list[RuntimeStep] = []
    for backend, _protocol in backends:
        if old.weight != member.weight:
            steps.append(partial(RuntimeApi.set_weight, backend=backend, server=member.id, weight=member.weight))
        if old.admin_state_up != member.admin_state_up:
            state = _admin_state(pool, member)
            steps.append(partial(RuntimeApi.set_state, backend=backend, server=member.id, state=state))
    return steps


def _delete_member(member_id: str, backends: list[tuple[str, str]]) -> list[RuntimeStep]:
    # HAProxy deletes only a server in maintenance without connections; one still busy fails the step,
    # and the reload that follows lets the old worker finish its connections.
    steps: list[RuntimeStep] = []
    for backend, _protocol in backends:
        steps.append(partial(RuntimeApi.set_state, backend=backend, server=member_id, state="maint"))
        steps.append(partial(RuntimeApi.del_server, backend=backend, server=member_id))
    return steps


# --- the server state a reload carries over -----------------------------------------------------------


def carried_state(state: str, served: EngineSpec | None, spec: EngineSpec) -> str:
    """The part of the old worker's `show servers state` the new worker may inherit: the health of
    members whose health monitor, TLS settings, addresses and ports did not change, so a reload neither sends traffic
    to a member known to be down nor waits for checks to find the others up.

    The rest is dropped or neutralized, because HAProxy applies a saved state over the config: it would
    restore a runtime weight or maintenance over the config's, a saved port over a changed one, and a
    "stopped" state of a member that has no checks would keep it down for good. Weight and admin state
    therefore always come from the config (the spec)."""
    lines = state.splitlines()
    if served is None or len(lines) < 2 or not lines[1].startswith("# "):
        return EMPTY_SERVER_STATE
    columns = lines[1][2:].split()
    kept = lines[:2]
    for line in lines[2:]:
        row = dict(zip(columns, line.split(), strict=False))
        if len(row) == len(columns) and _health_carries(served, spec, row["be_name"], row["srv_name"]):
            row["srv_admin_state"] = "0"
            row["srv_uweight"] = row["srv_iweight"]
            kept.append(" ".join(row[c] for c in columns))
    return "\n".join(kept) + "\n"


def _health_carries(served: EngineSpec, spec: EngineSpec, backend: str, server: str) -> bool:
    pool_id = backend.partition(":")[0]
    try:
        before, after = served.pool(pool_id), spec.pool(pool_id)
    except KeyError:
        return False
    hm = after.health_monitor
    if hm is None or not hm.admin_state_up or hm != before.health_monitor:
        return False
    if before.tls != after.tls:  # another CA, CRL or client certificate may well judge the member otherwise
        return False
    old = next((m for m in before.members if m.id == server), None)
    new = next((m for m in after.members if m.id == server), None)
    return old is not None and new is not None and _probe(old) == _probe(new)


def _probe(member: MemberSpec) -> tuple[object, ...]:
    return (member.address, member.protocol_port, member.monitor_address, member.monitor_port)


# --- show stat -> report -------------------------------------------------------------------------------


def stats_by_object(rows: list[dict[str, str]]) -> tuple[dict[str, ListenerReport], dict[str, dict[str, str]]]:
    """Listeners (frontends) by id, and member statuses by pool and member id. Backends are named
    `<pool>:<listener>`; a pool behind two listeners reports each member's worse status."""
    listeners: dict[str, ListenerReport] = {}
    members: dict[str, dict[str, str]] = {}
    for row in rows:
        proxy, server = row["pxname"], row["svname"]
        if server == "FRONTEND":
            listeners[proxy] = ListenerReport(
                status=row["status"],
                bytes_in=_int(row.get("bin")),
                bytes_out=_int(row.get("bout")),
                active_connections=_int(row.get("scur")),
                total_connections=_int(row.get("stot")),
                request_errors=_int(row.get("ereq")),
            )
        elif ":" in proxy:
            pool = members.setdefault(proxy.partition(":")[0], {})
            if server != "BACKEND":
                pool[server] = _worse(pool.get(server), row["status"])
    return listeners, members


def _worse(a: str | None, b: str) -> str:
    if a is None:
        return b
    return min(a, b, key=lambda status: STATUS_RANK.get(status.split(" ")[0], -1))


def _int(value: str | None) -> int:
    return int(value) if value else 0
