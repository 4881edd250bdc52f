"""Member status comes from HAProxy's health checks (the data plane), and survives reloads."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest

from quadriga.agent.agent import Agent
from quadriga.engine import spec as s
from quadriga.engine.report import EngineReport
from tests.agent.helpers import answers, listener, make_spec, member, new_vip, wait_for
from tests.support.dataplane import haproxy_pids

ENGINE = "engine-1"


def monitor(kind: str) -> s.HealthMonitorSpec:
    extra = {"http_method": "GET", "url_path": "/", "expected_codes": "200"} if kind == "HTTP" else {}
    return s.HealthMonitorSpec(type=kind, delay=1, timeout=1, max_retries=1, max_retries_down=1, **extra)


def statuses(agent: Agent) -> dict[str, str]:
    report = agent.report(ENGINE)
    assert isinstance(report, EngineReport)
    return {m: status.split(" ")[0] for m, status in report.members["pool"].items()}


@pytest.mark.parametrize("kind", ["TCP", "HTTP"])
def test_report_follows_a_member_going_down_and_up(agent: Agent, backends, kind: str) -> None:
    vip, (b0, b1) = new_vip(), backends(2)
    agent.apply(ENGINE, make_spec(vip, [member(b0), member(b1)], monitor=monitor(kind)))
    wait_for(lambda: statuses(agent) == {"b0": "UP", "b1": "UP"}, "both members UP")

    b1.stop()
    wait_for(lambda: statuses(agent) == {"b0": "UP", "b1": "DOWN"}, "b1 DOWN")
    assert set(answers(vip, 6)) == {"b0"}

    b1.start()
    wait_for(lambda: statuses(agent) == {"b0": "UP", "b1": "UP"}, "b1 UP again")
    assert set(answers(vip, 6)) == {"b0", "b1"}


def test_a_reload_keeps_what_the_checks_found(agent: Agent, backends) -> None:
    vip, (b0, b1) = new_vip(), backends(2)
    members = [member(b0), member(b1)]
    agent.apply(ENGINE, make_spec(vip, members, monitor=monitor("TCP")))
    b1.stop()
    wait_for(lambda: statuses(agent).get("b1") == "DOWN", "b1 DOWN")

    # A changed listener needs a reload; the new worker starts from the old one's server state.
    report = agent.apply(
        ENGINE,
        make_spec(vip, members, revision=2, monitor=monitor("TCP"), listeners=[listener(timeout_client_data=1234)]),
    )

    assert report.members["pool"]["b1"].startswith("DOWN")
    assert set(answers(vip, 6)) == {"b0"}


def test_a_member_added_at_runtime_is_checked_before_it_serves(agent: Agent, backends) -> None:
    vip, (b0, b1, b2) = new_vip(), backends(3)
    agent.apply(ENGINE, make_spec(vip, [member(b0), member(b1)], monitor=monitor("HTTP")))
    b2.stop()

    agent.apply(ENGINE, make_spec(vip, [member(b0), member(b1), member(b2)], revision=2, monitor=monitor("HTTP")))
    wait_for(lambda: statuses(agent).get("b2") == "DOWN", "the new member DOWN while its backend is stopped")
    assert set(answers(vip, 6)) == {"b0", "b1"}

    b2.start()
    wait_for(lambda: statuses(agent).get("b2") == "UP", "the new member UP")
    assert set(answers(vip, 9)) == {"b0", "b1", "b2"}


def test_a_hung_engine_holds_up_no_other_engines_report(agent: Agent, backends, state_dir) -> None:
    """Heartbeats of all engines come from one pass of `reports`: a hung HAProxy (SIGSTOP) answers nothing,
    and removing it waits for its processes. Neither may delay the other engines' reports (they would
    look silent and be failed over)."""
    (b0,) = backends(1)
    agent.apply("hung", make_spec(new_vip(), [member(b0)]))
    agent.apply("fine", make_spec(new_vip(), [member(b0)]))
    hung = haproxy_pids(state_dir / "engines" / "hung")
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        reports = {r.engine_id: r for r in agent.reports()}
        assert time.monotonic() - started < 3.0, "a hung HAProxy held up the reports"
        assert not reports["hung"].running and reports["fine"].running

        removal = threading.Thread(target=agent.remove, args=("hung",), daemon=True)
        removal.start()
        time.sleep(0.3)  # the removal holds the hung engine's lock while it waits for HAProxy to go
        started = time.monotonic()
        reports = {r.engine_id: r for r in agent.reports()}
        assert time.monotonic() - started < 1.0, "a removal in progress held up the reports"
        assert reports["fine"].running
    finally:
        for pid in hung:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    removal.join(timeout=30)
    assert "hung" not in {r.engine_id for r in agent.reports()}
