"""Applying specs to a real engine: traffic reaches the members, member changes go through the runtime API
without a reload, other changes reload seamlessly, and a config HAProxy rejects never replaces a working
one."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from quadriga.agent.agent import Agent
from quadriga.agent.engine import EngineRejected, StaleRevision
from quadriga.agent.haproxy import Haproxy, HaproxyError
from quadriga.engine import spec as s
from quadriga.network.drivers.loopback import LoopbackDriver
from tests.agent.helpers import OPTIONS, PORT, answers, client, listener, make_spec, member, new_vip, wait_for
from tests.support.dataplane import haproxy_pids

ENGINE = "engine-1"


def served_by(state_dir: Path, engine_id: str = ENGINE) -> tuple[int, int]:
    """(master pid, pid of the worker that answers the stats socket) of an engine."""
    haproxy = Haproxy(state_dir / "engines" / engine_id)
    procs = haproxy.show_proc()
    worker = int(haproxy.runtime.show_info()["Pid"])
    assert procs.workers == (worker,)
    return procs.master, worker


def test_round_robin_reaches_every_member(agent: Agent, backends, state_dir: Path) -> None:
    vip, pool = new_vip(), backends(3)
    report = agent.apply(ENGINE, make_spec(vip, [member(b) for b in pool]))

    assert sorted(set(answers(vip, 9))) == ["b0", "b1", "b2"]
    assert report.running and report.revision == 1 and report.error is None
    assert report.listeners["http"].status == "OPEN"
    assert report.members == {"pool": {"b0": "no check", "b1": "no check", "b2": "no check"}}
    later = agent.report(ENGINE)
    assert later is not None and later.listeners["http"].total_connections >= 1
    assert later.listeners["http"].bytes_out > 0
    directory = state_dir / "engines" / ENGINE
    assert s.EngineSpec.model_validate_json((directory / "spec.json").read_text()).revision == 1
    assert (directory / "haproxy.cfg").read_text().startswith("# quadriga engine for load balancer lb, revision 1.")


def test_member_changes_use_the_runtime_api_without_a_reload(agent: Agent, backends, state_dir: Path) -> None:
    vip, (b0, b1, b2, b3) = new_vip(), backends(4)
    agent.apply(ENGINE, make_spec(vip, [member(b0), member(b1), member(b2)]))
    pids = served_by(state_dir)
    config = state_dir / "engines" / ENGINE / "haproxy.cfg"

    steps = [
        ([member(b0), member(b1, weight=0), member(b2)], {"b0", "b2"}),  # weight 0: no new requests
        ([member(b0), member(b1, weight=0), member(b2, admin_state_up=False)], {"b0"}),
        ([member(b0), member(b1, weight=0), member(b2, admin_state_up=False), member(b3)], {"b0", "b3"}),
        ([member(b1, weight=0), member(b2, admin_state_up=False), member(b3)], {"b3"}),  # b0 removed
        ([member(b1, weight=2), member(b2), member(b3)], {"b1", "b2", "b3"}),
    ]
    for revision, (members, expected) in enumerate(steps, start=2):
        report = agent.apply(ENGINE, make_spec(vip, members, revision=revision))
        assert report.revision == revision
        assert set(answers(vip, 12)) == expected, f"revision {revision}"
        assert served_by(state_dir) == pids, f"revision {revision} reloaded HAProxy"
        assert set(report.members["pool"]) == {m.id for m in members}
    # The config on disk follows the spec, so the next reload keeps the same members.
    text = config.read_text()
    assert "server b0 " not in text and f"server b1 127.0.0.1:{b1.port} weight 2" in text
    assert "revision 6." in text


def test_a_member_change_the_runtime_api_cannot_make_reloads(agent: Agent, backends, state_dir: Path) -> None:
    vip, (b0, b1) = new_vip(), backends(2)
    agent.apply(ENGINE, make_spec(vip, [member(b0), member(b1)]))
    master, worker = served_by(state_dir)

    agent.apply(ENGINE, make_spec(vip, [member(b0), member(b1, backup=True)], revision=2))

    assert set(answers(vip, 6)) == {"b0"}  # a backup member serves only when no other can
    assert served_by(state_dir)[0] == master and served_by(state_dir)[1] != worker


def test_adding_a_listener_reloads_seamlessly(agent: Agent, backends, state_dir: Path) -> None:
    vip, pool = new_vip(), backends(2)
    members = [member(b) for b in pool]
    agent.apply(ENGINE, make_spec(vip, members))
    master, worker = served_by(state_dir)

    spec = make_spec(vip, members, revision=2, listeners=[listener(), listener("alt", PORT + 1)])
    report = agent.apply(ENGINE, spec)

    assert served_by(state_dir)[0] == master and served_by(state_dir)[1] != worker
    assert set(answers(vip, 4, port=PORT + 1)) == {"b0", "b1"}
    assert set(answers(vip, 4)) == {"b0", "b1"}
    assert set(report.listeners) == {"http", "alt"}


def test_a_config_haproxy_rejects_never_replaces_the_working_one(agent: Agent, backends, state_dir: Path) -> None:
    vip, pool = new_vip(), backends(2)
    members = [member(b) for b in pool]
    agent.apply(ENGINE, make_spec(vip, members))
    pids = served_by(state_dir)
    config = (state_dir / "engines" / ENGINE / "haproxy.cfg").read_text()

    bad_rule = s.L7RuleSpec(id="r1", type="PATH", compare_type="REGEX", value="(")  # valid spec, invalid regex
    policy = s.L7PolicySpec(id="p1", action="REJECT", position=1, rules=(bad_rule,))
    with pytest.raises(EngineRejected) as caught:
        agent.apply(ENGINE, make_spec(vip, members, revision=2, listeners=[listener(l7policies=(policy,))]))

    assert "regex" in caught.value.reason and "(" in caught.value.reason
    assert set(answers(vip, 4)) == {"b0", "b1"}
    assert served_by(state_dir) == pids
    assert (state_dir / "engines" / ENGINE / "haproxy.cfg").read_text() == config
    report = agent.report(ENGINE)
    assert report is not None and report.revision == 1 and report.error == caught.value.reason
    # The next good spec clears the error.
    assert agent.apply(ENGINE, make_spec(vip, members, revision=3)).error is None


def test_a_first_spec_haproxy_rejects_leaves_no_engine_running(agent: Agent, backends, state_dir: Path) -> None:
    vip = new_vip()
    bad_rule = s.L7RuleSpec(id="r1", type="HOST_NAME", compare_type="REGEX", value="a[")
    policy = s.L7PolicySpec(id="p1", action="REJECT", position=1, rules=(bad_rule,))
    with pytest.raises(EngineRejected):
        agent.apply(
            ENGINE, make_spec(vip, [member(b) for b in backends(1)], listeners=[listener(l7policies=(policy,))])
        )

    assert agent.report(ENGINE) is None
    assert Haproxy(state_dir / "engines" / ENGINE).master_pid() is None


def test_stale_revisions_are_refused_and_the_same_spec_is_a_no_op(agent: Agent, backends, state_dir: Path) -> None:
    vip, pool = new_vip(), backends(2)
    members = [member(b) for b in pool]
    agent.apply(ENGINE, make_spec(vip, members, revision=5))
    pids = served_by(state_dir)

    with pytest.raises(StaleRevision):
        agent.apply(ENGINE, make_spec(vip, members[:1], revision=4))
    again = agent.apply(ENGINE, make_spec(vip, members, revision=5))

    assert again.revision == 5 and again.running
    assert served_by(state_dir) == pids
    assert set(answers(vip, 4)) == {"b0", "b1"}


def test_reloads_under_keep_alive_traffic_lose_no_request(agent: Agent, backends, state_dir: Path) -> None:
    vip, pool = new_vip(), backends(2)
    members = [member(b) for b in pool]
    agent.apply(ENGINE, make_spec(vip, members))
    master, first_worker = served_by(state_dir)
    done = threading.Event()
    results = {"ok": 0, "errors": []}

    def traffic() -> None:
        with client() as c:  # one keep-alive connection, reopened only when HAProxy closes it
            while not done.is_set():
                try:
                    c.get(f"http://{vip}:{PORT}/").raise_for_status()
                    results["ok"] += 1
                except httpx.HTTPError as exc:
                    results["errors"].append(repr(exc))

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        for revision in range(2, 12):  # a changed client timeout: a reload each time
            spec = make_spec(
                vip, members, revision=revision, listeners=[listener(timeout_client_data=50000 + revision)]
            )
            agent.apply(ENGINE, spec)
            time.sleep(0.25)
    finally:
        done.set()
        thread.join(timeout=10)

    assert results["errors"] == []
    assert results["ok"] > 100
    assert served_by(state_dir)[0] == master and served_by(state_dir)[1] != first_worker


@pytest.fixture
def taken_port() -> Iterator[tuple[str, int]]:
    """An address and port some other program holds (no SO_REUSEPORT, so HAProxy cannot bind it too)."""
    vip = new_vip()
    with socket.socket() as sock:
        sock.bind((vip, PORT + 5))
        sock.listen()
        yield vip, PORT + 5


def test_a_config_the_master_cannot_load_is_rolled_back(agent: Agent, backends, state_dir: Path, taken_port) -> None:
    vip, port = taken_port
    members = [member(b) for b in backends(2)]
    agent.apply(ENGINE, make_spec(vip, members))
    master, worker = served_by(state_dir)
    config = (state_dir / "engines" / ENGINE / "haproxy.cfg").read_text()

    # haproxy -c accepts it (it binds nothing), but the master cannot bind the port when it loads it.
    with pytest.raises(EngineRejected, match="could not load"):
        agent.apply(ENGINE, make_spec(vip, members, revision=2, listeners=[listener(), listener("alt", port)]))

    assert served_by(state_dir) == (master, worker)
    assert (state_dir / "engines" / ENGINE / "haproxy.cfg").read_text() == config
    assert set(answers(vip, 4)) == {"b0", "b1"}
    report = agent.report(ENGINE)
    assert report is not None and report.revision == 1 and "could not load" in (report.error or "")
    # The master took the failure in its stride: the next good spec reloads as usual.
    agent.apply(ENGINE, make_spec(vip, members, revision=3, listeners=[listener(), listener("alt", port + 1)]))
    assert served_by(state_dir)[0] == master
    assert set(answers(vip, 4, port=port + 1)) == {"b0", "b1"}


def test_an_engine_that_cannot_start_leaves_nothing_running(
    agent: Agent, backends, state_dir: Path, taken_port
) -> None:
    vip, port = taken_port
    with pytest.raises(EngineRejected, match="cannot bind|Starting frontend"):
        agent.apply(ENGINE, make_spec(vip, [member(b) for b in backends(1)], listeners=[listener(port=port)]))

    assert agent.report(ENGINE) is None
    assert haproxy_pids(state_dir) == []


def test_when_the_runtime_api_refuses_a_change_a_reload_makes_it(agent: Agent, backends, state_dir: Path) -> None:
    vip, (b0, b1) = new_vip(), backends(2)

    def with_cookies(spec: s.EngineSpec) -> s.EngineSpec:
        pool = spec.pools[0].model_copy(update={"session_persistence": s.SessionPersistenceSpec(type="HTTP_COOKIE")})
        return spec.model_copy(update={"pools": (pool,)})

    agent.apply(ENGINE, with_cookies(make_spec(vip, [member(b0)])))
    master, worker = served_by(state_dir)

    # HAProxy 2.6 takes no `cookie` on a dynamic server: `add server` fails, and the agent reloads instead.
    agent.apply(ENGINE, with_cookies(make_spec(vip, [member(b0), member(b1)], revision=2)))

    assert served_by(state_dir)[0] == master and served_by(state_dir)[1] != worker
    # A new client for each request: no persistence cookie yet, so round robin shows both members.
    assert {answers(vip, 1)[0] for _ in range(4)} == {"b0", "b1"}


def test_haproxy_killed_before_a_reload_is_started_with_the_new_config(
    agent: Agent, backends, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HAProxy dying between the agent's "it runs" and its reload says nothing about the config: the change
    # is started, not rejected (a rejection would put valid objects in ERROR).
    vip, pool = new_vip(), backends(2)
    members = [member(b) for b in pool]
    agent.apply(ENGINE, make_spec(vip, members))
    reload = Haproxy.reload

    def killed_first(haproxy: Haproxy, *args: object, **kwargs: object) -> int:
        for pid in haproxy.processes():
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not haproxy_pids(state_dir), "haproxy to die")
        return reload(haproxy, *args, **kwargs)

    monkeypatch.setattr(Haproxy, "reload", killed_first)
    report = agent.apply(ENGINE, make_spec(vip, members, revision=2, listeners=[listener(), listener("alt", PORT + 1)]))

    assert report.running and report.revision == 2 and report.error is None
    assert set(answers(vip, 4, port=PORT + 1)) == {"b0", "b1"}
    assert set(answers(vip, 4)) == {"b0", "b1"}


def test_a_killed_config_check_is_no_rejection(agent: Agent, backends, state_dir: Path, haproxy: str) -> None:
    # `haproxy -c` killed by a signal (the OOM killer, an operator) judged nothing: the change must stay
    # retryable (HaproxyError, a 503 at the API), not be rejected for good (EngineRejected, ERROR).
    vip, pool = new_vip(), backends(2)
    members = [member(b) for b in pool]
    agent.apply(ENGINE, make_spec(vip, members))
    wrapper = state_dir / "haproxy-killed-check"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then kill -KILL $$; fi\nexec {haproxy} "$@"\n')
    wrapper.chmod(0o755)
    checks_killed = Agent(state_dir, LoopbackDriver(), haproxy=str(wrapper), options=OPTIONS)

    with pytest.raises(HaproxyError, match="killed by signal 9") as caught:
        checks_killed.apply(ENGINE, make_spec(vip, members, revision=2, listeners=[listener(), listener("alt", 9)]))

    assert not isinstance(caught.value, EngineRejected)
    assert set(answers(vip, 4)) == {"b0", "b1"}
    report = checks_killed.report(ENGINE)
    assert report is not None and report.revision == 1 and report.error is None
