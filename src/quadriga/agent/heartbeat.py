"""The agent's heartbeat sender: every `interval`, one signed UDP datagram per engine to every health
receiver it knows, carrying the engine's report (`quadriga.health.codec`).

Statistics travel as deltas since the previous heartbeat, so a receiver only adds them up. HAProxy's
counters are per process and restart at every reload, hence, per listener:

- a listener first seen by this sender after its first pass is new (a new engine or listener, whose
  counters started at 0): all of its counters are new;
- on this sender's first pass every listener is only taken as the baseline: the agent may have been
  restarted under a running HAProxy, whose counters the previous agent process already sent;
- a counter below the value last sent means HAProxy restarted them (a reload): the current values are
  all new (what was counted between the last heartbeat and the reload is lost, as with any poll);
- while an engine does not run (or its stats cannot be read) its baselines are kept;
- the baselines move only once at least one receiver took the datagram, so a delta that reached nobody
  is carried into the next one.

Member statuses rarely change, and they are most of a large load balancer's payload, so a heartbeat
carries them when they changed since the last heartbeat that did, and at least every `members_every`
heartbeats (which also brings a receiver that has just started up to date); the others are `partial`.

The sequence number counts every datagram this sender makes, across all its engines: it only has to grow
per engine, and one counter cannot go back when an engine disappears and comes back. The boot id must
grow across restarts of the agent; the default, the wall clock at start, does unless the clock steps back
across a restart, so an agent can pass a counter it keeps on disk instead."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from quadriga.engine.report import EngineReport
from quadriga.health.codec import MAX_ERROR, Heartbeat, ListenerBeat, Payload, TooLarge, check_key, encode

log = logging.getLogger("quadriga.health")

COUNTERS = ("bytes_in", "bytes_out", "total_connections", "request_errors")

Counters = tuple[int, ...]  # the values of COUNTERS, in that order
ZERO: Counters = (0,) * len(COUNTERS)


@dataclass(frozen=True)
class _Sent:
    """What the receivers got last for one engine."""

    counters: dict[str, Counters] = field(default_factory=dict)  # listener id -> counter values
    members: dict[str, dict[str, str]] | None = None  # the members in the last heartbeat that carried them
    beats_without_members: int = 0


class ReportSource(Protocol):
    """What the sender needs of an agent (`quadriga.agent.agent.Agent` is one)."""

    def reports(self) -> list[EngineReport]: ...


def counter_deltas(now: Counters, last: Counters) -> Counters:
    """What to send for one listener whose counters were `last` at the last heartbeat that left."""
    if any(v < prev for v, prev in zip(now, last, strict=True)):
        return now  # HAProxy restarted its counters (a reload): everything counted since is new
    return tuple(v - prev for v, prev in zip(now, last, strict=True))


class HeartbeatSender:
    """Sends heartbeats for `source`'s engines to `receivers` ((IP address, port) pairs) from a thread."""

    def __init__(
        self,
        source: ReportSource,
        receivers: Sequence[tuple[str, int]],
        key_id: str,
        key: bytes,
        *,
        interval: float = 1.0,
        members_every: int = 10,
        boot: int | None = None,
    ) -> None:
        self.source = source
        self.receivers = [(str(ipaddress.ip_address(host)), int(port)) for host, port in receivers]
        self.interval = interval
        self.members_every = members_every
        self.boot = time.time_ns() if boot is None else boot
        self.set_key(key_id, key)
        self._seq = 0
        self._sent: dict[str, _Sent] = {}  # engine id -> what receivers got last
        self._primed = False  # False until the first pass that read reports
        self._sockets: dict[int, socket.socket] = {}  # address family -> socket
        self._failing: set[tuple[str, int]] = set()  # receivers whose last send failed
        self._warned: set[tuple[str, str]] = set()  # (engine id, problem) already logged
        self._reports_failing = False
        self._counts = {"sent": 0, "send_errors": 0, "report_errors": 0, "skipped": 0, "too_large": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.paused = False  # True: send nothing (a drill for the controller's failover circuit breaker)

    def set_key(self, key_id: str, key: bytes) -> None:
        """Sign with this key from the next heartbeat on (receivers must accept it first)."""
        check_key(key_id, key)
        self._key = (key_id, bytes(key))

    def counters(self) -> dict[str, int]:
        """sent (datagrams), send_errors, report_errors, skipped (engines whose report could not be
        encoded), too_large (heartbeats whose members were left out to fit the datagram)."""
        return dict(self._counts)

    # --- life --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Send from a thread of its own. Start it after the agent recovered its engines: engines that
        show up after the first pass count as new (all their counters are sent)."""
        self._thread = threading.Thread(target=self._run, name="heartbeat-sender", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sending and close the sockets. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def __enter__(self) -> HeartbeatSender:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            try:
                self.send_once()
            except Exception:  # the sender must outlive any bug in one pass
                log.exception("heartbeat pass failed")
            deadline += self.interval
            delay = deadline - time.monotonic()
            if delay < 0:  # fell behind (a slow pass): keep the cadence, do not send a burst
                deadline, delay = time.monotonic(), 0
            self._stop.wait(delay)

    # --- one pass ----------------------------------------------------------------------------------------

    def send_once(self) -> int:
        """Send one heartbeat per engine to every receiver. Returns how many datagrams left."""
        if self.paused:
            return 0
        try:
            reports = self.source.reports()
        except Exception as exc:
            self._counts["report_errors"] += 1
            if not self._reports_failing:
                log.warning("no heartbeats: the engines' reports cannot be read (%s)", exc)
                self._reports_failing = True
            return 0
        if self._reports_failing:
            log.info("heartbeats resume: the engines' reports can be read again")
            self._reports_failing = False
        sent = 0
        for report in reports:
            sent += self._send_report(report)
        seen = {r.engine_id for r in reports}
        for engine_id in set(self._sent) - seen:  # removed engines
            del self._sent[engine_id]
        self._warned = {w for w in self._warned if w[0] in seen}
        self._primed = True
        return sent

    def _send_report(self, report: EngineReport) -> int:
        last = self._sent.get(report.engine_id) or _Sent()
        self._seq += 1
        try:
            listeners, counters, previous = self._listeners(report, last.counters)
            members = report.members != last.members or last.beats_without_members + 1 >= self.members_every
            datagram, members = self._encode(report, listeners, members)
        except Exception as exc:  # one engine's odd report must not silence the others
            self._counts["skipped"] += 1
            self._warn_once(report.engine_id, "skipped", f"no heartbeat: the report cannot be encoded ({exc})")
            return 0
        sent = sum(self._send(datagram, address) for address in self.receivers)
        if not sent:
            self._sent[report.engine_id] = replace(last, counters=previous)
        elif members:
            self._sent[report.engine_id] = _Sent(counters, report.members, 0)
        else:
            self._sent[report.engine_id] = _Sent(counters, last.members, last.beats_without_members + 1)
        return sent

    def _encode(self, report: EngineReport, listeners: dict[str, ListenerBeat], members: bool) -> tuple[bytes, bool]:
        """The datagram, and whether it carries the members (asked for, and they fit)."""
        key_id, key = self._key
        payload = Payload(
            loadbalancer_id=report.loadbalancer_id,
            revision=report.revision,
            running=report.running,
            lb_network_ip=report.lb_network_ip,
            error=None if report.error is None else _printable(report.error),
            listeners=listeners,
            members=report.members if members else {},
            partial=not members,
        )
        try:
            return encode(Heartbeat(key_id, report.engine_id, self.boot, self._seq, time.time(), payload), key), members
        except TooLarge:
            if not members:
                raise
        self._counts["too_large"] += 1
        self._warn_once(report.engine_id, "too_large", "too many members for one datagram: sending it without them")
        payload = payload.model_copy(update={"members": {}, "partial": True})
        return encode(Heartbeat(key_id, report.engine_id, self.boot, self._seq, time.time(), payload), key), False

    def _listeners(
        self, report: EngineReport, last: dict[str, Counters]
    ) -> tuple[dict[str, ListenerBeat], dict[str, Counters], dict[str, Counters]]:
        """The listeners' deltas, the baselines once they are sent, and the baselines if nobody gets them."""
        if not report.running:
            return {}, last, last
        beats: dict[str, ListenerBeat] = {}
        baselines: dict[str, Counters] = {}
        previous: dict[str, Counters] = {}
        for listener_id, listener in report.listeners.items():
            now = tuple(getattr(listener, name) for name in COUNTERS)
            before = last.get(listener_id)
            if before is None:  # on the first pass only a baseline (see the module doc); later, a new listener
                before = ZERO if self._primed else now
            previous[listener_id], baselines[listener_id] = before, now
            deltas = counter_deltas(now, before)
            beats[listener_id] = ListenerBeat(
                status=listener.status,
                active_connections=listener.active_connections,
                **dict(zip(COUNTERS, deltas, strict=True)),
            )
        return beats, baselines, previous

    def _send(self, datagram: bytes, address: tuple[str, int]) -> int:
        try:
            self._socket(address[0]).sendto(datagram, address)
        except OSError as exc:
            self._counts["send_errors"] += 1
            if address not in self._failing:
                self._failing.add(address)
                log.warning("heartbeats to %s:%s fail (%s); retrying every interval", *address, exc)
            return 0
        self._counts["sent"] += 1
        if address in self._failing:
            self._failing.discard(address)
            log.info("heartbeats to %s:%s are sent again", *address)
        return 1

    def _socket(self, host: str) -> socket.socket:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        sock = self._sockets.get(family)
        if sock is None:
            sock = self._sockets[family] = socket.socket(family, socket.SOCK_DGRAM)
            sock.settimeout(self.interval)  # a full send buffer must not stall the pass forever
        return sock

    def _warn_once(self, engine_id: str, problem: str, message: str) -> None:
        if (engine_id, problem) not in self._warned:
            self._warned.add((engine_id, problem))
            log.warning("engine=%s %s", engine_id, message)


def _printable(text: str) -> str:
    """An engine's error text as the payload takes it: cut to MAX_ERROR, valid UTF-8, no NUL."""
    return text[:MAX_ERROR].encode("utf-8", "replace").decode("utf-8").replace("\x00", "?")
