"""The spare pool: a new engine adopts a started, idle HAProxy (its master stays the same process) and serves
its spec through it; the pool refills; removal, restarts and shutdown leave no spare process behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quadriga.agent.agent import Agent
from quadriga.agent.haproxy import Haproxy
from quadriga.network.drivers.loopback import LoopbackDriver
from tests.agent.helpers import OPTIONS, answers, make_spec, member, new_vip, wait_for
from tests.support.dataplane import haproxy_pids


@pytest.fixture
def pooled(state_dir: Path, haproxy: str) -> Iterator[list[Agent]]:
    """Agents with a pool of two spares on the test's state dir; the last one is shut down afterwards."""
    made: list[Agent] = []
    yield made
    if made:
        made[-1].shutdown()


def _agent(made: list[Agent], state_dir: Path, haproxy: str) -> Agent:
    agent = Agent(state_dir, LoopbackDriver(), haproxy=haproxy, options=OPTIONS, spares=2)
    made.append(agent)
    agent.recover()
    agent.start_spares()
    wait_for(lambda: len(agent.spares.idle()) == 2, "two idle spares")
    return agent


def _masters(state_dir: Path) -> dict[str, int]:
    spares = state_dir / "spares"
    return {p.name: Haproxy(p).master_pid() or 0 for p in spares.iterdir()} if spares.is_dir() else {}


def test_a_new_engine_adopts_a_spare_and_the_pool_refills(
    pooled: list[Agent], state_dir: Path, haproxy: str, backends
) -> None:
    agent = _agent(pooled, state_dir, haproxy)
    idle = _masters(state_dir)
    assert len(idle) == 2 and all(idle.values())
    (b0,) = backends(1)
    vip = new_vip()
    report = agent.apply("engine-1", make_spec(vip, [member(b0)]))
    assert report.running and answers(vip, 2) == ["b0", "b0"]
    link = state_dir / "engines" / "engine-1"
    assert link.is_symlink()
    spare_id = link.readlink().name
    assert spare_id in idle and spare_id not in agent.spares.idle()
    # The spare's own HAProxy master serves the engine: adopted, not started anew.
    assert Haproxy(state_dir / "spares" / spare_id).master_pid() == idle[spare_id]
    wait_for(lambda: len(agent.spares.idle()) == 2, "the pool to refill")
    # Later changes go through the adopted engine as through any other.
    agent.apply("engine-1", make_spec(vip, [member(b0)], revision=2))
    assert answers(vip, 1) == ["b0"]
    agent.remove("engine-1")
    assert not link.exists() and not link.is_symlink()
    assert not (state_dir / "spares" / spare_id).exists()
    assert haproxy_pids(state_dir / "spares" / spare_id) == []


def test_a_restarted_agent_keeps_adopted_spares_and_replaces_idle_ones(
    pooled: list[Agent], state_dir: Path, haproxy: str, backends
) -> None:
    crashed = _agent(pooled, state_dir, haproxy)
    (b0,) = backends(1)
    vip = new_vip()
    crashed.apply("engine-1", make_spec(vip, [member(b0)]))
    wait_for(lambda: len(crashed.spares.idle()) == 2, "the pool to refill")
    old_idle = crashed.spares.idle()
    crashed.spares._stop.set()  # no shutdown, as after a crash; its filler thread dies with the process
    crashed.spares._wake.set()
    pooled.remove(crashed)

    agent = _agent(pooled, state_dir, haproxy)
    assert agent.report("engine-1") is not None and answers(vip, 1) == ["b0"]
    assert not old_idle & agent.spares.idle()
    for spare_id in old_idle:
        assert haproxy_pids(state_dir / "spares" / spare_id) == []


def test_shutdown_removes_the_spares(pooled: list[Agent], state_dir: Path, haproxy: str) -> None:
    agent = _agent(pooled, state_dir, haproxy)
    assert haproxy_pids(state_dir / "spares")
    agent.shutdown()
    pooled.clear()
    assert haproxy_pids(state_dir) == [] and not (state_dir / "spares").exists()
