"""The agent's own life: engines outlive an agent crash and are adopted, dead ones come back from their spec,
removal and shutdown leave nothing behind, and calls on one engine are serialized."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from quadriga.agent.agent import Agent
from quadriga.agent.engine import EngineRejected, StaleRevision
from quadriga.agent.haproxy import Haproxy
from quadriga.engine import spec as s
from tests.agent.helpers import (
    PORT,
    answers,
    client,
    listener,
    make_spec,
    member,
    new_vip,
    wait_for,
)
from tests.support.dataplane import haproxy_pids

ENGINE = "engine-1"


def test_a_new_agent_adopts_engines_a_crashed_one_left_running(
    make_agent: Callable[[], Agent], backends, state_dir: Path
) -> None:
    vip, (b0, b1, b2) = new_vip(), backends(3)
    crashed = make_agent()
    crashed.apply(ENGINE, make_spec(vip, [member(b0), member(b1)]))
    procs = Haproxy(state_dir / "engines" / ENGINE).show_proc()
    del crashed  # no shutdown: HAProxy keeps running, as after a crash of the agent process

    agent = make_agent()
    assert agent.recover() == {ENGINE: "adopted"}

    assert Haproxy(state_dir / "engines" / ENGINE).show_proc() == procs
    assert set(answers(vip, 4)) == {"b0", "b1"}
    report = agent.report(ENGINE)
    assert report is not None and report.running and report.revision == 1
    # The adopted engine knows what it serves: a member change still needs no reload.
    agent.apply(ENGINE, make_spec(vip, [member(b0), member(b1), member(b2)], revision=2))
    assert Haproxy(state_dir / "engines" / ENGINE).show_proc() == procs
    assert set(answers(vip, 6)) == {"b0", "b1", "b2"}


def test_recover_restarts_an_engine_whose_haproxy_died(
    make_agent: Callable[[], Agent], backends, state_dir: Path
) -> None:
    vip, pool = new_vip(), backends(2)
    make_agent().apply(ENGINE, make_spec(vip, [member(b) for b in pool], revision=7))
    for pid in haproxy_pids(state_dir):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not haproxy_pids(state_dir), "haproxy to die")
    with pytest.raises(httpx.ConnectError), client() as c:
        c.get(f"http://{vip}:{PORT}/")

    agent = make_agent()
    assert agent.recover() == {ENGINE: "restarted"}

    assert set(answers(vip, 4)) == {"b0", "b1"}
    report = agent.report(ENGINE)
    assert report is not None and report.running and report.revision == 7


def test_recover_removes_an_engine_that_never_served(make_agent: Callable[[], Agent], state_dir: Path) -> None:
    bad_rule = s.L7RuleSpec(id="r1", type="PATH", compare_type="REGEX", value="(")
    policy = s.L7PolicySpec(id="p1", action="REJECT", position=1, rules=(bad_rule,))
    with pytest.raises(EngineRejected):
        make_agent().apply(ENGINE, make_spec(new_vip(), [], listeners=[listener(l7policies=(policy,))]))
    assert (state_dir / "engines" / ENGINE).is_dir()

    agent = make_agent()
    assert agent.recover() == {ENGINE: "removed"}
    assert not (state_dir / "engines" / ENGINE).exists()
    assert agent.reports() == []


def test_remove_stops_the_engine_and_is_idempotent(agent: Agent, backends, state_dir: Path) -> None:
    vip = new_vip()
    agent.apply(ENGINE, make_spec(vip, [member(b) for b in backends(1)]))

    agent.remove(ENGINE)
    agent.remove(ENGINE)

    assert agent.report(ENGINE) is None
    assert haproxy_pids(state_dir) == []
    assert not (state_dir / "engines" / ENGINE).exists()
    with pytest.raises(httpx.ConnectError), client() as c:
        c.get(f"http://{vip}:{PORT}/")


def test_shutdown_leaves_no_process_and_no_engine_directory(agent: Agent, backends, state_dir: Path) -> None:
    pool = [member(b) for b in backends(2)]
    vips = [new_vip(), new_vip()]
    for n, vip in enumerate(vips):
        agent.apply(f"engine-{n}", make_spec(vip, pool))
    assert {r.engine_id for r in agent.reports()} == {"engine-0", "engine-1"}
    assert len(haproxy_pids(state_dir)) == 4  # a master and a worker each

    agent.shutdown()

    assert haproxy_pids(state_dir) == []
    assert list(state_dir.iterdir()) == []
    for vip in vips:
        with pytest.raises(httpx.ConnectError), client() as c:
            c.get(f"http://{vip}:{PORT}/")


@pytest.mark.parametrize("engine_id", ["../escape", "a/b", "", ".hidden", "x" * 65, "a\n", "a b"])
def test_engine_ids_must_be_plain_names(agent: Agent, engine_id: str) -> None:
    with pytest.raises(ValueError):
        agent.apply(engine_id, make_spec(new_vip(), []))
    with pytest.raises(ValueError):
        agent.report(engine_id)
    with pytest.raises(ValueError):
        agent.remove(engine_id)


def test_concurrent_applies_to_one_engine_are_serialized(agent: Agent, backends, state_dir: Path) -> None:
    vip, (b0, b1) = new_vip(), backends(2)
    outcomes: list[str] = []

    def apply(revision: int) -> None:
        members = [member(b0), member(b1, weight=revision)]
        try:
            agent.apply(ENGINE, make_spec(vip, members, revision=revision))
            outcomes.append("applied")
        except StaleRevision:
            outcomes.append("stale")

    threads = [threading.Thread(target=apply, args=(revision,)) for revision in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(outcomes) == 8 and "applied" in outcomes and set(outcomes) <= {"applied", "stale"}
    report = agent.report(ENGINE)
    assert report is not None and report.revision == 8
    assert set(answers(vip, 10)) == {"b0", "b1"}
    assert "weight 8" in (state_dir / "engines" / ENGINE / "haproxy.cfg").read_text()
