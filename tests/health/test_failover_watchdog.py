"""The failover watchdog: an engine silent for the timeout is replaced (after a grace period at start and
after placement), never twice; the circuit breaker holds failovers when many engines fall silent at once,
says so in their status_reason and in the log, and lets go when they come back."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import select

from quadriga.controller.failover import BREAKER_REASON, FailoverWatchdog
from quadriga.db import models as m
from tests.health.helpers import wait_for
from tests.health.served import Served, serve_lb
from tests.support.api_harness import Api
from tests.support.scripted_agent import ScriptedAgent

TIMEOUT = 0.4


class Heard:
    """The recorder's `last_serving`, by hand."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, engine_id: str) -> float | None:
        return self.times.get(engine_id)

    def now(self, *served: Served) -> None:
        for one in served:
            self.times[one.engine_id] = time.monotonic()


def watchdog(api: Api, heard: Heard, **options: object) -> FailoverWatchdog:
    dog = FailoverWatchdog(
        api.db, api.reconciler.providers, heard, timeout=TIMEOUT, wake_reconciler=api.reconciler.wake, **options
    )
    dog.on_start()
    return dog


def engines(api: Api, lb_id: str) -> dict[str, tuple[str, str | None]]:
    with api.db.read() as s:
        rows = s.scalars(select(m.Amphora).where(m.Amphora.load_balancer_id == lb_id))
        return {a.id: (a.status, a.status_reason) for a in rows}


def replaced(api: Api, served: Served) -> bool:
    now = engines(api, served.lb_id)
    return now[served.engine_id][0] == "DELETED" and any(
        status == "ALLOCATED" for eid, (status, _) in now.items() if eid != served.engine_id
    )


def test_a_silent_engine_is_replaced_after_the_grace_and_timeout(api: Api, agent: ScriptedAgent):
    served = serve_lb(api)
    heard = Heard()
    dog = watchdog(api, heard)
    assert dog.run_once() == 0  # grace: nothing was heard yet, but the watchdog just started
    time.sleep(TIMEOUT + 0.1)
    assert dog.run_once() == 1
    status, reason = engines(api, served.lb_id)[served.engine_id]
    assert status in ("PENDING_DELETE", "DELETED") and "no serving heartbeat" in (reason or "")
    assert dog.run_once() == 0  # in flight: not started twice
    other = watchdog(api, Heard())  # nor by another controller's watchdog
    other._first_seen = dict.fromkeys([served.engine_id], 0.0)  # as if it had watched it for long
    assert other.run_once() == 0
    assert wait_for(lambda: replaced(api, served), timeout=10)
    assert api.wait_lb(served.lb_id)["provisioning_status"] == "ACTIVE"
    assert served.engine_id in agent.removed
    # the new engine gets its own grace: no failover right after placement
    assert dog.run_once() == 0


def test_an_engine_that_keeps_sending_stays(api: Api):
    served = serve_lb(api)
    heard = Heard()
    dog = watchdog(api, heard)
    for _ in range(4):
        heard.now(served)
        time.sleep(TIMEOUT / 2)
        assert dog.run_once() == 0
    assert engines(api, served.lb_id)[served.engine_id] == ("ALLOCATED", None)


def test_a_load_balancer_busy_with_a_change_is_failed_over_after_it(api: Api):
    served = serve_lb(api)
    dog = watchdog(api, Heard())
    assert dog.run_once() == 0
    time.sleep(TIMEOUT + 0.1)
    with api.db.write() as s:
        s.get(m.LoadBalancer, served.lb_id).provisioning_status = "PENDING_UPDATE"
    assert dog.run_once() == 0
    with api.db.write() as s:
        s.get(m.LoadBalancer, served.lb_id).provisioning_status = "ACTIVE"
    assert dog.run_once() == 1


def test_the_breaker_holds_failover_when_most_engines_fall_silent(api: Api, caplog: pytest.LogCaptureFixture):
    fleet = [serve_lb(api, f"lb{i}") for i in range(4)]
    heard = Heard()
    dog = watchdog(api, heard, breaker_share=0.5, breaker_min=3)
    assert dog.run_once() == 0
    heard.now(fleet[0])
    time.sleep(TIMEOUT + 0.1)
    heard.now(fleet[0])
    with caplog.at_level(logging.WARNING, logger="quadriga.failover"):
        assert dog.run_once() == 0  # 3 of 4 silent: more than half, and at least 3
        assert dog.run_once() == 0
    assert [r.getMessage() for r in caplog.records].count(next(iter(caplog.records)).getMessage()) == 1
    assert "CIRCUIT BREAKER OPEN" in caplog.records[0].getMessage()
    for served in fleet[1:]:
        status, reason = engines(api, served.lb_id)[served.engine_id]
        assert status == "ALLOCATED" and reason is not None and reason.startswith(BREAKER_REASON)
        assert "3 of 4" in reason
    listed = api.ok(api.get("/v2/octavia/amphorae"), 200)["amphorae"]
    assert sum(BREAKER_REASON in (a.get("status_reason") or "") for a in listed) == 3
    assert engines(api, fleet[0].lb_id)[fleet[0].engine_id] == ("ALLOCATED", None)
    # the health path heals: reasons go, the close is logged, nothing was failed over
    caplog.clear()
    heard.now(*fleet)
    with caplog.at_level(logging.WARNING, logger="quadriga.failover"):
        assert dog.run_once() == 0
    assert any("circuit breaker closed" in r.getMessage() for r in caplog.records)
    for served in fleet:
        assert engines(api, served.lb_id)[served.engine_id] == ("ALLOCATED", None)


def test_a_small_cloud_still_fails_over_with_the_breaker_on(api: Api):
    """One silent engine of one: 100% silent, but fewer than breaker_min: an operator expects failover."""
    served = serve_lb(api)
    dog = watchdog(api, Heard(), breaker_share=0.5, breaker_min=3)
    assert dog.run_once() == 0
    time.sleep(TIMEOUT + 0.1)
    assert dog.run_once() == 1
    assert wait_for(lambda: replaced(api, served), timeout=10)


def test_with_the_breaker_off_every_silent_engine_is_replaced(api: Api):
    fleet = [serve_lb(api, f"lb{i}") for i in range(3)]
    dog = watchdog(api, Heard(), breaker=False, breaker_min=1)
    assert dog.run_once() == 0
    time.sleep(TIMEOUT + 0.1)
    assert dog.run_once() == 3
    assert wait_for(lambda: all(replaced(api, served) for served in fleet), timeout=15)
