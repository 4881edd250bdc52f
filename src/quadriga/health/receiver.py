"""The health receiver's UDP end: authenticate heartbeats, drop replays, hand the rest over in batches.

Two threads: one receives and checks datagrams, the other calls `on_batch`, so a slow database write
never stops the socket from being read (heartbeats wait in a bounded queue meanwhile). Liveness
(`last_seen`, `silent`) is recorded by the receiving thread as soon as a heartbeat is accepted, so a slow
or failing callback cannot make healthy engines look silent.

Replay protection, per engine: (boot, seq) must grow, and the sender's timestamp must be within
`max_skew` of this host's clock. The second rule bounds what an on-path attacker can replay to a receiver
that has just started (and so remembers nothing) or has evicted the engine. Engines this receiver does
not know are accepted like any other: the key proves the sender is one of ours, and the recorder (which
knows the engines in the database) ignores heartbeats of engines it does not have.

Several receivers may run at once, each on its own address: every agent sends each heartbeat to all of
them, and each receiver processes what it gets. The same heartbeat therefore reaches the recorder once
per receiver; the recorder applies it only if its (boot, seq) is newer than what is stored."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping

from quadriga.health.codec import MAX_DATAGRAM, Heartbeat, HeartbeatError, check_key, decode

log = logging.getLogger("quadriga.health")

LOG_EVERY = 10.0  # seconds between two log lines about the same kind of drop
RCVBUF = 4 << 20  # asked for; the kernel caps it at net.core.rmem_max


class HeartbeatReceiver:
    """A UDP heartbeat receiver on `bind` (host, port; port 0 picks one, see `address`). Thread-safe."""

    def __init__(
        self,
        bind: tuple[str, int],
        keys: Mapping[str, bytes],
        on_batch: Callable[[list[Heartbeat]], None],
        *,
        batch_size: int = 500,
        flush_interval: float = 0.1,
        max_skew: float | None = 30.0,
        max_engines: int = 100_000,
        max_pending: int = 50_000,
    ) -> None:
        self.bind = bind
        self.on_batch = on_batch
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_skew = max_skew
        self.max_engines = max_engines
        self.max_pending = max_pending
        self.set_keys(keys)
        self._lock = threading.Lock()  # guards _engines, _counts and _logged
        self._engines: OrderedDict[str, tuple[int, int, float]] = OrderedDict()  # id -> boot, seq, seen
        self._counts: Counter[str] = Counter()
        self._logged: dict[str, float] = {}
        self._cond = threading.Condition()  # guards _pending and _draining
        self._pending: list[Heartbeat] = []
        self._draining = False
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    # --- life --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket and start receiving. A receiver starts once."""
        family = socket.AF_INET6 if ipaddress.ip_address(self.bind[0]).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind(self.bind)
        except OSError:
            sock.close()
            raise
        sock.settimeout(0.1)  # how often the receiving thread looks at the stop flag
        self._sock = sock
        self._threads = [
            threading.Thread(target=self._receive_loop, name="health-receive", daemon=True),
            threading.Thread(target=self._deliver_loop, name="health-deliver", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info("health receiver listening on %s:%s", *self.address)

    def stop(self) -> None:
        """Stop receiving, deliver what was accepted, close the socket. Idempotent."""
        self._stop.set()
        if self._threads:
            self._threads[0].join(timeout=10)
            with self._cond:
                self._draining = True
                self._cond.notify()
            self._threads[1].join(timeout=30)
            self._threads = []
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> HeartbeatReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (after `start`)."""
        if self._sock is None:
            raise RuntimeError("the receiver is not started")
        host, port = self._sock.getsockname()[:2]
        return host, port

    def set_keys(self, keys: Mapping[str, bytes]) -> None:
        """Accept heartbeats signed with any of `keys` from now on (during a rotation: old and new)."""
        if not keys:
            raise ValueError("at least one heartbeat key is needed")
        for key_id, key in keys.items():
            check_key(key_id, key)
        self._keys = dict(keys)  # replaced whole: the receiving thread reads it without a lock

    # --- what it knows -----------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Every counter, for metrics: accepted, delivered, batches, callback_errors, evicted,
        `dropped.<reason>` and `key.<key id>` (heartbeats accepted per key: shows a rotation's progress)."""
        with self._lock:
            return dict(self._counts)

    def drops(self) -> dict[str, int]:
        """Dropped datagrams by reason."""
        return {k.removeprefix("dropped."): v for k, v in self.counters().items() if k.startswith("dropped.")}

    def last_seen(self, engine_id: str) -> float | None:
        """When (time.monotonic) the engine's last accepted heartbeat arrived; None if never (or forgotten)."""
        with self._lock:
            entry = self._engines.get(engine_id)
        return None if entry is None else entry[2]

    def silent(self, timeout: float) -> list[str]:
        """Engines whose last heartbeat is older than `timeout` seconds, longest silent first."""
        cutoff = time.monotonic() - timeout
        found = []
        with self._lock:
            for engine_id, (_, _, seen) in self._engines.items():  # ordered by `seen`
                if seen >= cutoff:
                    break
                found.append(engine_id)
        return found

    def forget(self, engine_id: str) -> None:
        """Stop tracking an engine (deleted, or replaced by a failover)."""
        with self._lock:
            self._engines.pop(engine_id, None)

    # --- processing --------------------------------------------------------------------------------------

    def handle(self, data: bytes, source: object = None) -> bool:
        """Process one datagram; True if it was accepted (the engine counts as seen, even when a full queue
        then drops its data as "overflow"). Never raises: whatever is wrong is counted."""
        try:
            heartbeat = decode(data, self._keys)
        except HeartbeatError as exc:
            self._drop(exc.reason, source, str(exc))
            return False
        except Exception as exc:  # a bug in decoding must not take the receiver down
            self._drop("error", source, repr(exc))
            return False
        if self.max_skew is not None and abs(heartbeat.timestamp - time.time()) > self.max_skew:
            age = time.time() - heartbeat.timestamp
            self._drop("expired", source, f"engine={heartbeat.engine_id} timestamp off by {age:.1f} s")
            return False
        reason = self._track(heartbeat)
        if reason is not None:
            self._drop(reason, source, f"engine={heartbeat.engine_id} boot={heartbeat.boot} seq={heartbeat.seq}")
            return False
        with self._cond:
            full = len(self._pending) >= self.max_pending
            if not full:
                self._pending.append(heartbeat)
                if len(self._pending) >= self.batch_size:
                    self._cond.notify()
        if full:
            self._drop("overflow", source, f"{self.max_pending} heartbeats wait for delivery already")
        return True

    def _track(self, heartbeat: Heartbeat) -> str | None:
        """Record the heartbeat as the engine's latest; the drop reason instead if it is not newer."""
        now = time.monotonic()
        with self._lock:
            last = self._engines.get(heartbeat.engine_id)
            if last is not None and (heartbeat.boot, heartbeat.seq) <= last[:2]:
                return "replayed" if (heartbeat.boot, heartbeat.seq) == last[:2] else "stale"
            self._engines[heartbeat.engine_id] = (heartbeat.boot, heartbeat.seq, now)
            self._engines.move_to_end(heartbeat.engine_id)
            while len(self._engines) > self.max_engines:
                self._engines.popitem(last=False)
                self._counts["evicted"] += 1
            self._counts["accepted"] += 1
            self._counts["key." + heartbeat.key_id] += 1
        if last is not None and heartbeat.boot != last[0]:
            log.info("engine=%s sender restarted (boot %d -> %d)", heartbeat.engine_id, last[0], heartbeat.boot)
        return None

    def _drop(self, reason: str, source: object, detail: str) -> None:
        with self._lock:
            self._counts["dropped." + reason] += 1
            loud = self._log_now(reason)
        if loud:
            log.warning(
                "heartbeat dropped reason=%s source=%s: %s (all counted; next log for this reason in %.0f s)",
                reason,
                _source(source),
                detail,
                LOG_EVERY,
            )

    def _log_now(self, topic: str) -> bool:
        """At most one log line per topic every LOG_EVERY seconds, so a flood cannot flood the logs too.
        The caller holds _lock."""
        now = time.monotonic()
        if now - self._logged.get(topic, -LOG_EVERY) < LOG_EVERY:
            return False
        self._logged[topic] = now
        return True

    def _receive_loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        buffer = bytearray(MAX_DATAGRAM + 1)  # one byte more: a datagram that fills it is too large
        view = memoryview(buffer)
        while not self._stop.is_set():
            try:
                size, source = sock.recvfrom_into(buffer)
            except TimeoutError:
                continue
            except OSError as exc:
                self._drop("receive_error", None, str(exc))
                self._stop.wait(0.01)  # a broken socket must not spin
                continue
            self.handle(bytes(view[:size]), source)

    def _deliver_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: len(self._pending) >= self.batch_size or self._draining, timeout=self.flush_interval
                )
                batch = self._pending[: self.batch_size]
                del self._pending[: self.batch_size]
                done = self._draining and not self._pending
            if batch:
                self._deliver(batch)
            if done:
                return

    def _deliver(self, batch: list[Heartbeat]) -> None:
        try:
            self.on_batch(batch)
        except Exception:
            with self._lock:
                self._counts["callback_errors"] += 1
                loud = self._log_now("callback")
            if loud:
                log.exception("heartbeat batch of %d lost: on_batch failed", len(batch))
            return
        with self._lock:
            self._counts["batches"] += 1
            self._counts["delivered"] += len(batch)


def _source(source: object) -> str:
    if isinstance(source, tuple) and len(source) >= 2:
        return f"{source[0]}:{source[1]}"
    return str(source)
