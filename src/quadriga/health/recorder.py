"""The health recorder: turns batches of heartbeats (`HeartbeatReceiver`'s `on_batch`) into the database's
operating statuses and listener statistics, in one transaction per batch, with a handful of queries
whatever the batch size.

Several receivers may run at once and every agent sends each heartbeat to all of them, so the same
heartbeat reaches the database several times: the engine's row keeps the (boot, seq) of the last heartbeat
applied, and under its load balancer's row lock only newer heartbeats count. A batch that loses a
deadlock or a serialization conflict (or SQLite's busy wait) is tried again, a few times. Statistics
are the sums of the deltas the heartbeats carry, so they only grow.

It also keeps, in memory, when each engine last said that it serves (a heartbeat from a running HAProxy):
the failover watchdog of the same process reads it. A heartbeat saying HAProxy does not run is no sign of
life (as in Octavia, where an amphora reporting fewer listeners than it should is failed over).

An engine that serves an older revision than its agent confirmed (it lost its config, e.g. restored from
an older spec) has its load balancer marked stale, and the reconciler pushes the config again without
touching provisioning statuses."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import Row, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, selectinload

from quadriga import constants as c
from quadriga import status
from quadriga.db import models as m
from quadriga.db.session import Database, transient
from quadriga.health import bulk
from quadriga.health.bulk import COUNTERS, StatisticsDelta
from quadriga.health.codec import Heartbeat, ListenerBeat, Payload
from quadriga.providers.engine import ALLOCATED, AMP_DELETED

log = logging.getLogger("quadriga.health")

MAX_STORED = (1 << 63) - 1  # the largest boot and seq the database stores
LOG_EVERY = 60.0  # seconds between two log lines about heartbeats of unknown engines
ATTEMPTS = 4  # tries of a batch that lost a deadlock, a serialization conflict or SQLite's busy wait
AMP_COLUMNS = (
    m.Amphora.id,
    m.Amphora.load_balancer_id,
    m.Amphora.status,
    m.Amphora.applied_revision,
    m.Amphora.heartbeat_boot,
    m.Amphora.heartbeat_seq,
)


@dataclass
class Written:
    """What one batch's transaction did; counted and remembered only once it committed."""

    applied: int = 0
    duplicates: int = 0
    stale: bool = False
    # engine id -> ((boot, seq) written, the status key its statuses are now computed from)
    keys: dict[str, tuple[tuple[int, int], tuple[object, ...]]] = field(default_factory=dict)


class HeartbeatRecorder:
    """`record` is the receiver's `on_batch`. Thread-safe; `last_serving` may be read from any thread."""

    def __init__(self, db: Database, *, wake_reconciler: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self.wake_reconciler = wake_reconciler
        self._lock = threading.Lock()  # guards the dicts below (a race with `forget` costs only a cache entry)
        self._serving: dict[str, float] = {}  # engine id -> time.monotonic() of its last serving heartbeat
        self._down: set[str] = set()  # engines whose last heartbeat said HAProxy does not run (logged once)
        # engine id -> ((boot, seq) this recorder wrote, the status key it wrote statuses from): while the
        # row still holds that (boot, seq), the same key needs no status pass (no tree to load)
        self._applied: dict[str, tuple[tuple[int | None, int | None], tuple[object, ...]]] = {}
        # engine id -> HAProxy's words for its members, last sent, and their part of the status key
        self._members: dict[str, tuple[dict[str, dict[str, str]], tuple[object, ...]]] = {}
        self._counts: Counter[str] = Counter()
        self._unknown_logged = -LOG_EVERY

    # --- what the watchdog reads ---------------------------------------------------------------------------

    def last_serving(self, engine_id: str) -> float | None:
        """When (time.monotonic) a heartbeat last said the engine serves; None if none did yet."""
        return self._serving.get(engine_id)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop what is remembered of engines not in `keep` (deleted or replaced)."""
        keep = set(keep)
        with self._lock:
            self._serving = {k: v for k, v in self._serving.items() if k in keep}
            self._applied = {k: v for k, v in self._applied.items() if k in keep}
            self._members = {k: v for k, v in self._members.items() if k in keep}
            self._down &= keep

    def counters(self) -> dict[str, int]:
        """applied (heartbeats written), duplicate (already written, e.g. by another receiver's recorder),
        unknown (engines the database does not have), stale_config (re-pushes asked for), retried (batches
        tried again after a database conflict)."""
        with self._lock:
            return dict(self._counts)

    # --- one batch -----------------------------------------------------------------------------------------

    def record(self, batch: list[Heartbeat]) -> None:
        """Apply a batch of heartbeats (any engines, any order)."""
        beats: dict[str, list[Heartbeat]] = {}
        for heartbeat in batch:
            if heartbeat.boot > MAX_STORED or heartbeat.seq > MAX_STORED:  # signed 64-bit columns
                with self._lock:
                    self._counts["out_of_range"] += 1
                continue
            beats.setdefault(heartbeat.engine_id, []).append(heartbeat)
        with self._lock:
            for engine_id, engine_beats in beats.items():
                if len(engine_beats) > 1:
                    engine_beats.sort(key=_order)
                full = next((h.payload for h in reversed(engine_beats) if not h.payload.partial), None)
                if full is not None:
                    self._members[engine_id] = (full.members, _members_key(full.members))
        if not beats:
            return
        self._note_serving(beats)
        done = self._write_retrying(beats)
        with self._lock:
            self._applied.update(done.keys)
            self._counts["duplicate"] += done.duplicates
            self._counts["applied"] += done.applied
            self._counts["stale_config"] += done.stale
        if done.stale:
            self.wake_reconciler()

    def _write_retrying(self, beats: dict[str, list[Heartbeat]]) -> Written:
        """One transaction, tried again (a few times, after a short random pause) when the database gave
        it up to resolve a conflict: a deadlock with a transaction that locks in another order, a
        serialization failure, SQLite's busy timeout. Other errors, and the last attempt's, propagate (the
        receiver logs the batch as lost)."""
        attempt = 1
        while True:
            try:
                with self.db.write() as session:
                    return self._write(session, beats)
            except DBAPIError as exc:
                if attempt == ATTEMPTS or not transient(exc):
                    raise
                log.warning(
                    "heartbeat batch of %d engine(s) hit a database conflict (attempt %d of %d), retrying: %s",
                    len(beats),
                    attempt,
                    ATTEMPTS,
                    str(exc.orig).splitlines()[0] if exc.orig is not None else exc,
                )
                with self._lock:
                    self._counts["retried"] += 1
                time.sleep(random.uniform(0.01, 0.05) * attempt)
                attempt += 1

    def _note_serving(self, beats: dict[str, list[Heartbeat]]) -> None:
        now = time.monotonic()
        with self._lock:
            for engine_id, engine_beats in beats.items():
                payload = engine_beats[-1].payload
                if payload.running:
                    self._serving[engine_id] = now
                    if engine_id in self._down:
                        self._down.discard(engine_id)
                        log.info("engine=%s lb=%s serves again", engine_id, payload.loadbalancer_id)
                elif engine_id not in self._down:
                    self._down.add(engine_id)
                    log.warning(
                        "engine=%s lb=%s reports HAProxy not running (error: %s): it is failed over unless it "
                        "serves again within the heartbeat timeout",
                        engine_id,
                        payload.loadbalancer_id,
                        payload.error or "none",
                    )

    def _write(self, session: Session, beats: dict[str, list[Heartbeat]]) -> Written:
        """Apply the new heartbeats (Core statements: no ORM objects unless statuses change)."""
        # Lock order, everywhere: load balancers (in id order), then what hangs off them. The watchdog, the
        # API and the reconciler lock a load balancer before they touch its engines or its tree; so does the
        # recorder. The load balancer's lock also covers its engines' (boot, seq): a heartbeat is applied
        # only to the engine of the load balancer it names, so two recorders never apply heartbeats of the
        # same engine at once, and the engines are read after the lock (READ COMMITTED: the latest values).
        # FOR NO KEY UPDATE is what an UPDATE of the row takes; inserts of children (foreign keys) pass.
        # (SQLite has no row locks: its write transaction already excludes every other writer.)
        if not bulk.is_sqlite(session):
            lb_ids = {h.payload.loadbalancer_id for engine_beats in beats.values() for h in engine_beats}
            session.execute(
                select(m.LoadBalancer.id)
                .where(bulk.among(session, m.LoadBalancer.id, lb_ids))
                .order_by(m.LoadBalancer.id)
                .with_for_update(key_share=True)
            ).all()
        amps = session.execute(
            select(*AMP_COLUMNS).where(bulk.among(session, m.Amphora.id, beats), m.Amphora.status != AMP_DELETED)
        ).all()
        self._count_unknown(set(beats) - {a.id for a in amps})
        # load balancer id -> listener id -> connection_limit, of the engines' load balancers' listeners
        limits = _listener_limits(session, {amp.load_balancer_id for amp in amps})
        done = Written()
        fresh: dict[str, tuple[Row, list[Heartbeat]]] = {}
        changed: dict[str, Payload] = {}  # engine id -> what its statuses must be computed from
        for amp in amps:
            engine_beats = beats[amp.id]
            before = (amp.heartbeat_boot, amp.heartbeat_seq)
            last = (-1, -1) if amp.heartbeat_boot is None else (amp.heartbeat_boot, amp.heartbeat_seq or 0)
            lb_id = amp.load_balancer_id
            new = [h for h in engine_beats if (h.boot, h.seq) > last and h.payload.loadbalancer_id == lb_id]
            if len(new) != len(engine_beats):
                done.duplicates += len(engine_beats) - len(new)
                if not new:
                    continue
            done.applied += len(new)
            fresh[amp.id] = (amp, new)
            if amp.status == ALLOCATED:
                payload, known = new[-1].payload, self._members.get(amp.id)
                previous = self._applied.get(amp.id)
                written = previous[1] if previous is not None and previous[0] == before else None
                key = _status_key(payload, known, written, limits.get(amp.load_balancer_id, _NONE))
                if key != written or _lost(amp, payload):
                    changed[amp.id] = self._effective(payload, known[0] if known is not None else None)
                done.keys[amp.id] = ((new[-1].boot, new[-1].seq), key)
        if not fresh:
            return done
        now = m.utcnow()
        bulk.set_heartbeats(session, [(amp_id, new[-1].boot, new[-1].seq) for amp_id, (_, new) in fresh.items()], now)
        bulk.add_statistics(session, _statistics(fresh.values(), limits), now)
        lbs = _load_trees(session, {fresh[engine_id][0].load_balancer_id or "" for engine_id in changed})
        for engine_id, payload in changed.items():
            amp = fresh[engine_id][0]
            lb = lbs.get(amp.load_balancer_id or "")
            if lb is None or lb.provisioning_status in (c.DELETED, c.PENDING_DELETE):
                continue
            _set_operating(lb, payload)
            done.stale |= self._check_config(lb, amp, payload)
        return done

    @staticmethod
    def _effective(payload: Payload, words: dict[str, dict[str, str]] | None) -> Payload:
        """The latest heartbeat, with `words`, the members of the latest one that carried them: member
        statuses depend on HAProxy's words and on the tree (a member's weight), so they are computed again
        from the words. Only a recorder that has not seen them since it started keeps the stored statuses."""
        if payload.partial and words is not None:
            return payload.model_copy(update={"members": words, "partial": False})
        return payload

    def _check_config(self, lb: m.LoadBalancer, amp: Row, payload: Payload) -> bool:
        """Mark `lb` stale when its running engine serves an older revision than its agent confirmed."""
        if not _lost(amp, payload) or lb.lease_owner is not None or lb.revision != lb.applied_revision:
            return False
        log.warning(
            "engine=%s lb=%s lost its config (serves revision %d, had %d): pushing it again",
            amp.id,
            lb.id,
            payload.revision,
            amp.applied_revision,
        )
        lb.applied_revision = lb.revision - 1
        return True

    def _count_unknown(self, unknown: set[str]) -> None:
        if not unknown:
            return
        now = time.monotonic()
        with self._lock:
            self._counts["unknown"] += len(unknown)
            loud = now - self._unknown_logged >= LOG_EVERY
            if loud:
                self._unknown_logged = now
        if loud:
            log.warning(
                "heartbeats of %d engine(s) this database does not know, ignored (e.g. engine=%s): engines nobody "
                "manages (housekeeping removes them) or an agent that reports to the wrong controller; "
                "next log in %.0f s",
                len(unknown),
                sorted(unknown)[0],
                LOG_EVERY,
            )


_NONE: dict[str, int] = {}  # no listeners


def _order(heartbeat: Heartbeat) -> tuple[int, int]:
    return heartbeat.boot, heartbeat.seq


def _members_key(members: dict[str, dict[str, str]]) -> tuple[object, ...]:
    """The members' part of a status key: HAProxy's words, in a fixed order."""
    return tuple((p, tuple(sorted(ms.items()))) for p, ms in sorted(members.items()))


def _status_key(
    payload: Payload,
    known: tuple[dict[str, dict[str, str]], tuple[object, ...]] | None,
    written: tuple[object, ...] | None,
    limits: dict[str, int],
) -> tuple[object, ...]:
    """Everything of a heartbeat that operating statuses depend on. Every change to a load balancer's tree
    moves its revision, and the engine then serves (and reports) that revision: an unchanged key means
    unchanged statuses, as long as nobody else wrote statuses since (the caller passes `written`, the key
    the statuses in the database come from, only when it knows). Listeners count by the status they get
    (so that active connections, which move all the time, count only when they reach the listener's
    connection limit, `limits` by listener id). A partial heartbeat has the members of `words` (the last
    ones HAProxy sent, with their key: `known`), or of `written` when this recorder never saw them."""
    listeners = tuple((k, status.listener_operating(b, limits.get(k))) for k, b in sorted(payload.listeners.items()))
    if not payload.partial:
        members: object = _members_key(payload.members)
    elif known is not None:
        members = known[1]
    else:
        members = written[-1] if written is not None else "kept"
    return payload.revision, payload.running, listeners, members


def _lost(amp: Row, payload: Payload) -> bool:
    """The engine serves an older revision than its agent confirmed (it lost its config)."""
    return payload.running and amp.applied_revision is not None and payload.revision < amp.applied_revision


def _set_operating(lb: m.LoadBalancer, payload: Payload) -> None:
    objects = {obj.id: obj for obj in status.tree(lb)}
    for obj_id, value in status.operating(lb, payload, keep_members=payload.partial).items():
        if objects[obj_id].operating_status != value:
            objects[obj_id].operating_status = value


def _listener_limits(session: Session, lb_ids: set[str | None]) -> dict[str, dict[str, int]]:
    """Load balancer id -> listener id -> connection_limit, for the listeners of these load balancers."""
    rows = session.execute(
        select(m.Listener.id, m.Listener.load_balancer_id, m.Listener.connection_limit).where(
            bulk.among(session, m.Listener.load_balancer_id, lb_ids)
        )
    )
    limits: dict[str, dict[str, int]] = {}
    for listener_id, lb_id, limit in rows:
        limits.setdefault(lb_id, {})[listener_id] = limit
    return limits


def _statistics(
    fresh: Iterable[tuple[Row, list[Heartbeat]]], listeners: dict[str, dict[str, int]]
) -> list[StatisticsDelta]:
    """The heartbeats' counter deltas, summed per (listener, engine), for the load balancers' current
    `listeners` only (a heartbeat may still count a listener that was just deleted)."""
    deltas: list[StatisticsDelta] = []
    add = deltas.append
    for amp, new in fresh:
        current = listeners.get(amp.load_balancer_id, _NONE)
        amp_id, lb_id = amp.id, amp.load_balancer_id
        if len(new) == 1:  # the usual case: one heartbeat per engine and batch
            for listener_id, b in new[0].payload.listeners.items():
                if listener_id in current:
                    add(
                        (
                            listener_id,
                            amp_id,
                            lb_id,
                            b.bytes_in,
                            b.bytes_out,
                            b.total_connections,
                            b.request_errors,
                            b.active_connections,
                        )
                    )
            continue
        counted: dict[str, list[ListenerBeat]] = {}
        for heartbeat in new:
            for listener_id, beat in heartbeat.payload.listeners.items():
                if listener_id in current:
                    counted.setdefault(listener_id, []).append(beat)
        for listener_id, seen in counted.items():
            sums = (sum(getattr(beat, name) for beat in seen) for name in COUNTERS)
            add((listener_id, amp_id, lb_id, *sums, seen[-1].active_connections))
    return deltas


def _load_trees(session: Session, lb_ids: set[str]) -> dict[str, m.LoadBalancer]:
    """The load balancers with their whole trees, in a few queries."""
    rows = session.scalars(
        select(m.LoadBalancer)
        .where(bulk.among(session, m.LoadBalancer.id, lb_ids))
        .options(
            selectinload(m.LoadBalancer.listeners).selectinload(m.Listener.l7policies).selectinload(m.L7Policy.rules),
            selectinload(m.LoadBalancer.pools).selectinload(m.Pool.members),
            selectinload(m.LoadBalancer.pools).selectinload(m.Pool.health_monitor),
        )
    ).all()
    return {lb.id: lb for lb in rows}
