"""The health recorder: turns batches of heartbeats (`HeartbeatReceiver`'s `on_batch`) into the database's
operating statuses and listener statistics, in one transaction per batch, with a handful of queries
whatever the batch size.

Several receivers may run at once and every agent sends each heartbeat to all of them, so the same
heartbeat reaches the database several times: the engine's row keeps the (boot, seq) of the last heartbeat
applied, and under its row lock only newer heartbeats count. Statistics are the sums of the deltas the
heartbeats carry, so they only grow.

It also keeps, in memory, when each engine last said that it serves (a heartbeat from a running HAProxy):
the failover watchdog of the same process reads it. A heartbeat saying HAProxy does not run is no sign of
life (as in Octavia, where an amphora reporting fewer listeners than it should is failed over).

An engine that serves an older revision than its agent confirmed (it lost its config, e.g. restored from
an older spec) has its load balancer marked stale, and the reconciler pushes the config again without
touching provisioning statuses."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from quadriga import constants as c
from quadriga import status
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.health.codec import Heartbeat, ListenerBeat, Payload
from quadriga.providers.engine import ALLOCATED, AMP_DELETED

log = logging.getLogger("quadriga.health")

COUNTERS = ("bytes_in", "bytes_out", "total_connections", "request_errors")
MAX_STORED = (1 << 63) - 1  # the largest boot and seq the database stores
LOG_EVERY = 60.0  # seconds between two log lines about heartbeats of unknown engines


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
        self._members: dict[str, dict[str, dict[str, str]]] = {}  # engine id -> HAProxy's words, last sent
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
        unknown (engines the database does not have), stale_config (re-pushes asked for)."""
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
                engine_beats.sort(key=lambda h: (h.boot, h.seq))
                full = next((h.payload for h in reversed(engine_beats) if not h.payload.partial), None)
                if full is not None:
                    self._members[engine_id] = full.members
        if not beats:
            return
        self._note_serving(beats)
        with self.db.write() as session:
            stale = self._write(session, beats)
        if stale:
            self.wake_reconciler()

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

    def _write(self, session: Session, beats: dict[str, list[Heartbeat]]) -> bool:
        """Apply the new heartbeats; True when a load balancer needs its config pushed again."""
        amps = session.scalars(
            select(m.Amphora)
            .where(m.Amphora.id.in_(beats), m.Amphora.status != AMP_DELETED)
            .order_by(m.Amphora.id)  # one lock order for every recorder: no deadlock between them
            .with_for_update()
        ).all()
        self._count_unknown(set(beats) - {a.id for a in amps})
        fresh: dict[str, tuple[m.Amphora, list[Heartbeat]]] = {}
        changed: dict[str, Payload] = {}  # engine id -> what its statuses must be computed from
        duplicates = 0
        for amp in amps:
            before = (amp.heartbeat_boot, amp.heartbeat_seq)
            last = (-1, -1) if amp.heartbeat_boot is None else (amp.heartbeat_boot, amp.heartbeat_seq or 0)
            new = [
                h for h in beats[amp.id] if (h.boot, h.seq) > last and h.payload.loadbalancer_id == amp.load_balancer_id
            ]
            duplicates += len(beats[amp.id]) - len(new)
            if not new:
                continue
            amp.heartbeat_boot, amp.heartbeat_seq, amp.heartbeat_at = new[-1].boot, new[-1].seq, m.utcnow()
            fresh[amp.id] = (amp, new)
            if amp.status == ALLOCATED:
                payload = self._effective(amp.id, new[-1].payload)
                previous = self._applied.get(amp.id)
                written = previous[1] if previous is not None and previous[0] == before else None
                key = _status_key(payload, written)
                if key != written or _lost(amp, payload):
                    changed[amp.id] = payload
                self._applied[amp.id] = ((amp.heartbeat_boot, amp.heartbeat_seq), key)
        with self._lock:
            self._counts["duplicate"] += duplicates
            self._counts["applied"] += sum(len(new) for _, new in fresh.values())
        if not fresh:
            return False
        _add_statistics(session, fresh.values())
        lbs = _load_trees(session, {fresh[engine_id][0].load_balancer_id or "" for engine_id in changed})
        stale = False
        for engine_id, payload in changed.items():
            amp = fresh[engine_id][0]
            lb = lbs.get(amp.load_balancer_id or "")
            if lb is None or lb.provisioning_status in (c.DELETED, c.PENDING_DELETE):
                continue
            _set_operating(lb, payload)
            stale |= self._check_config(lb, amp, payload)
        return stale

    def _effective(self, engine_id: str, payload: Payload) -> Payload:
        """The latest heartbeat, with the members of the latest one that carried them: member statuses
        depend on HAProxy's words and on the tree (a member's weight), so they are computed again from the
        words. Only a recorder that has not seen them since it started keeps the stored statuses."""
        members = self._members.get(engine_id)
        if payload.partial and members is not None:
            return payload.model_copy(update={"members": members, "partial": False})
        return payload

    def _check_config(self, lb: m.LoadBalancer, amp: m.Amphora, payload: Payload) -> bool:
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
        with self._lock:
            self._counts["stale_config"] += 1
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


def _status_key(payload: Payload, written: tuple[object, ...] | None) -> tuple[object, ...]:
    """Everything of a heartbeat that operating statuses depend on. Every change to a load balancer's tree
    moves its revision, and the engine then serves (and reports) that revision: an unchanged key means
    unchanged statuses, as long as nobody else wrote statuses since (the caller passes `written`, the key
    the statuses in the database come from, only when it knows). A partial heartbeat keeps the members of
    `written`."""
    listeners = tuple((k, b.status, b.active_connections) for k, b in sorted(payload.listeners.items()))
    if payload.partial:
        members = written[-1] if written is not None else "kept"
    else:
        members = tuple((p, tuple(sorted(ms.items()))) for p, ms in sorted(payload.members.items()))
    return payload.revision, payload.running, listeners, members


def _lost(amp: m.Amphora, payload: Payload) -> bool:
    """The engine serves an older revision than its agent confirmed (it lost its config)."""
    return payload.running and amp.applied_revision is not None and payload.revision < amp.applied_revision


def _set_operating(lb: m.LoadBalancer, payload: Payload) -> None:
    objects = {obj.id: obj for obj in status.tree(lb)}
    for obj_id, value in status.operating(lb, payload, keep_members=payload.partial).items():
        if objects[obj_id].operating_status != value:
            objects[obj_id].operating_status = value


def _add_statistics(session: Session, fresh: Iterable[tuple[m.Amphora, list[Heartbeat]]]) -> None:
    """Add the heartbeats' counter deltas to the rows of the load balancers' current listeners."""
    fresh = list(fresh)
    rows = {
        (row.listener_id, row.amphora_id): row
        for row in session.scalars(
            select(m.ListenerStatistics).where(m.ListenerStatistics.amphora_id.in_([amp.id for amp, _ in fresh]))
        )
    }
    listeners = {
        (listener_id, lb_id)
        for listener_id, lb_id in session.execute(
            select(m.Listener.id, m.Listener.load_balancer_id).where(
                m.Listener.load_balancer_id.in_({amp.load_balancer_id for amp, _ in fresh})
            )
        )
    }
    now = m.utcnow()
    for amp, new in fresh:
        counted: dict[str, list[ListenerBeat]] = {}
        for heartbeat in new:
            for listener_id, beat in heartbeat.payload.listeners.items():
                if (listener_id, amp.load_balancer_id) in listeners:
                    counted.setdefault(listener_id, []).append(beat)
        for listener_id, seen in counted.items():
            row = rows.get((listener_id, amp.id))
            if row is None:
                row = m.ListenerStatistics(
                    listener_id=listener_id,
                    amphora_id=amp.id,
                    load_balancer_id=amp.load_balancer_id,
                    **dict.fromkeys((*COUNTERS, "active_connections"), 0),
                )
                session.add(row)
            for name in COUNTERS:
                setattr(row, name, getattr(row, name) + sum(getattr(beat, name) for beat in seen))
            row.active_connections = seen[-1].active_connections
            row.updated_at = now


def _load_trees(session: Session, lb_ids: set[str]) -> dict[str, m.LoadBalancer]:
    """The load balancers with their whole trees, in a few queries."""
    rows = session.scalars(
        select(m.LoadBalancer)
        .where(m.LoadBalancer.id.in_(lb_ids))
        .options(
            selectinload(m.LoadBalancer.listeners).selectinload(m.Listener.l7policies).selectinload(m.L7Policy.rules),
            selectinload(m.LoadBalancer.pools).selectinload(m.Pool.members),
            selectinload(m.LoadBalancer.pools).selectinload(m.Pool.health_monitor),
        )
    ).all()
    return {lb.id: lb for lb in rows}
