"""The recorder against everything else that locks load balancers (the watchdog's failovers, API changes,
the reconciler): one lock order (load balancers in id order first) and a bounded retry of a batch that
lost a conflict, so that no batch is lost and nobody fails. Meaningful on PostgreSQL (row locks,
deadlock detection; scripts/test.sh runs it there too); on SQLite writers are serialized anyway."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from quadriga import constants as c
from quadriga.controller.failover import FailoverWatchdog
from quadriga.db import models as m
from quadriga.db.session import transient
from quadriga.health.recorder import ATTEMPTS, HeartbeatRecorder
from tests.health.served import serve_lb, statistics
from tests.support.api_harness import Api

ROUNDS = 40
LBS = 4


def test_recorder_with_concurrent_failovers_and_updates_loses_nothing(api: Api):
    served = [serve_lb(api, name=f"lb{n}") for n in range(LBS)]
    recorder = HeartbeatRecorder(api.db)
    errors: list[BaseException] = []
    done = threading.Event()

    def record() -> None:
        try:
            for seq in range(1, ROUNDS + 1):
                # members flip every round: every batch also writes operating statuses of every tree
                words = ("UP", "DOWN") if seq % 2 else ("DOWN", "UP")
                beats = [
                    one.beat(seq, members={one.pool_id: dict(zip(one.members, words, strict=True))})
                    for one in reversed(served)  # batch order must not matter
                ]
                recorder.record(beats)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def lb_then_engines() -> int:
        """What the watchdog and the failover API do: lock load balancers, then write their engines."""
        passes = 0
        while not done.is_set():
            try:
                with api.db.write() as session:
                    ids = [one.lb_id for one in served]
                    session.execute(
                        select(m.LoadBalancer.id)
                        .where(m.LoadBalancer.id.in_(ids))
                        .order_by(m.LoadBalancer.id)
                        .with_for_update()
                    ).all()
                    session.execute(
                        update(m.Amphora).where(m.Amphora.load_balancer_id.in_(ids)).values(status_reason=f"p{passes}")
                    )
                    time.sleep(0.005)  # hold the locks a little, as a real failover does
                    session.execute(
                        update(m.Member)
                        .where(m.Member.id.in_([mb for one in served for mb in one.members]))
                        .values(name=f"p{passes}")
                    )
                passes += 1
            except BaseException as exc:
                errors.append(exc)
                return passes
        return passes

    counted: list[int] = []
    worker = threading.Thread(target=record)
    locker = threading.Thread(target=lambda: counted.append(lb_then_engines()))
    worker.start()
    locker.start()
    # meanwhile: API changes (lock the load balancer, bump its revision; the reconciler pushes them)
    for n in range(6):
        if done.is_set():
            break
        one = served[n % LBS]
        api.wait_lb(one.lb_id)
        api.ok(api.put(f"/v2/lbaas/loadbalancers/{one.lb_id}", {"loadbalancer": {"description": f"d{n}"}}), 200)
    worker.join(timeout=120)
    locker.join(timeout=30)
    assert not worker.is_alive() and not locker.is_alive()
    assert not errors, errors
    assert counted and counted[0] > 0  # the other transactions really ran alongside
    assert recorder.counters()["applied"] == ROUNDS * LBS
    for one in served:  # every heartbeat's deltas counted exactly once
        assert statistics(api, one)["bytes_in"] == 100 * ROUNDS


def test_automatic_failover_during_heartbeats(api: Api):
    """The real watchdog fails an engine over (load balancer lock, then engine) while batches of the
    others' heartbeats are written: both succeed."""
    served = [serve_lb(api, name=f"lb{n}") for n in range(LBS)]
    recorder = HeartbeatRecorder(api.db)
    silent = served[0]
    dog = FailoverWatchdog(api.db, api.reconciler.providers, recorder.last_serving, timeout=0.2, breaker=False)
    dog.on_start()
    failed_over = 0
    for seq in range(1, 30):
        recorder.record([one.beat(seq) for one in served[1:]])
        if not failed_over:  # once: its replacement sends no heartbeats either
            failed_over = dog.run_once()
        time.sleep(0.02)
    assert failed_over == 1
    assert recorder.counters()["applied"] == 29 * (LBS - 1) and "retried" not in recorder.counters()
    api.wait_lb(silent.lb_id)
    with api.db.read() as s:
        assert s.get(m.Amphora, silent.engine_id).status == "DELETED"
        lb = s.get(m.LoadBalancer, served[1].lb_id)
        assert lb.provisioning_status == c.ACTIVE and lb.operating_status in (c.ONLINE, c.DEGRADED)


def test_a_batch_that_lost_a_conflict_is_retried_then_applied(api: Api, monkeypatch, caplog):
    served = serve_lb(api)
    recorder = HeartbeatRecorder(api.db)
    real, failures = recorder._write, [OperationalError("UPDATE ...", {}, Exception("database is locked"))] * 2

    def flaky(session, beats):
        if failures:
            raise failures.pop()
        return real(session, beats)

    monkeypatch.setattr(recorder, "_write", flaky)
    with caplog.at_level(logging.WARNING, logger="quadriga.health"):
        recorder.record([served.beat(1)])
    assert recorder.counters()["retried"] == 2 and recorder.counters()["applied"] == 1
    assert statistics(api, served)["bytes_in"] == 100
    assert "hit a database conflict (attempt 1 of 4), retrying" in caplog.text


def test_a_batch_failing_otherwise_or_too_often_is_not_retried_forever(api: Api, monkeypatch):
    served = serve_lb(api)
    recorder = HeartbeatRecorder(api.db)
    calls = []

    def failing(error: Exception):
        def write(session, beats):
            calls.append(1)
            raise error

        return write

    monkeypatch.setattr(recorder, "_write", failing(OperationalError("x", {}, Exception("database is locked"))))
    with pytest.raises(OperationalError):
        recorder.record([served.beat(1)])
    assert len(calls) == ATTEMPTS
    calls.clear()
    monkeypatch.setattr(recorder, "_write", failing(IntegrityError("x", {}, Exception("NOT NULL constraint failed"))))
    with pytest.raises(IntegrityError):
        recorder.record([served.beat(1)])
    assert len(calls) == 1 and "applied" not in recorder.counters()


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def test_which_database_errors_are_worth_another_try():
    assert transient(OperationalError("x", {}, _PgError("40P01")))  # deadlock detected
    assert transient(OperationalError("x", {}, _PgError("40001")))  # serialization failure
    assert transient(OperationalError("x", {}, Exception("database is locked")))  # SQLite's busy timeout
    assert not transient(IntegrityError("x", {}, _PgError("23505")))  # unique violation: the same again
    assert not transient(OperationalError("x", {}, Exception("no such table: amphorae")))
