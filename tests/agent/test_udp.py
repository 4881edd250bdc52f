"""UDP listeners on a real engine: the engine's UDP proxy process balances real datagrams between UDP echo members
on 127.0.0.1, checks them (UDP-CONNECT), keeps flows across member changes, and reports in HAProxy's words."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from quadriga.agent.agent import Agent
from quadriga.agent.engine import EngineRejected
from quadriga.agent.udp import UdpProxy
from quadriga.engine import spec as s
from quadriga.engine.udp import UdpConfig, UdpListener, UdpMember, UdpPool
from tests.agent.helpers import new_vip, numbered, wait_for
from tests.support.dataplane import haproxy_pids, udp_proxy_pids
from tests.support.udp import UdpClient, UdpEcho, spread, udp_answers

ENGINE = "engine-1"
PORT = 5353


@pytest.fixture
def echoes() -> Iterator[Callable[[int], list[UdpEcho]]]:
    """Starts `n` UDP echo members named u0, u1, ... (see `numbered`)."""
    yield from numbered(UdpEcho, "u")


def udp_member(echo: UdpEcho, **kw: Any) -> s.MemberSpec:
    return s.MemberSpec(id=echo.name, address="127.0.0.1", protocol_port=echo.port, **kw)


UDP_CONNECT = s.HealthMonitorSpec(type="UDP-CONNECT", delay=1, timeout=1, max_retries=1, max_retries_down=1)


def udp_spec(
    vip: str,
    members: list[s.MemberSpec],
    *,
    revision: int = 1,
    listener: dict[str, Any] | None = None,
    **pool: Any,
) -> s.EngineSpec:
    """A UDP pool "pool" (ROUND_ROBIN unless `pool` says otherwise) behind one UDP listener on `vip`:5353."""
    pool_spec = s.PoolSpec(
        **({"id": "pool", "protocol": "UDP", "lb_algorithm": "ROUND_ROBIN", "members": tuple(members)} | pool)
    )
    li = s.ListenerSpec(
        **({"id": "udp", "protocol": "UDP", "protocol_port": PORT, "default_pool_id": "pool"} | (listener or {}))
    )
    return s.EngineSpec(revision=revision, loadbalancer_id="lb", vips=(vip,), listeners=(li,), pools=(pool_spec,))


def members_of(agent: Agent) -> dict[str, str]:
    report = agent.report(ENGINE)
    assert report is not None
    return report.members.get("pool", {})


def test_round_robin_spreads_flows_and_the_report_speaks_haproxy(agent: Agent, echoes, state_dir: Path) -> None:
    vip, pool = new_vip(), echoes(3)
    report = agent.apply(ENGINE, udp_spec(vip, [udp_member(e) for e in pool], health_monitor=UDP_CONNECT))

    assert report.running and report.error is None
    assert report.members == {"pool": {"u0": "UP", "u1": "UP", "u2": "UP"}}
    assert report.listeners["udp"].status == "OPEN"
    assert spread(udp_answers(vip, PORT, 9)) == {"u0": 3, "u1": 3, "u2": 3}
    later = agent.report(ENGINE)
    assert later is not None
    li = later.listeners["udp"]
    assert li.total_connections == 9 and li.bytes_in == sum(len(f"n{i}") for i in range(9)) > 0
    assert li.bytes_out > li.bytes_in  # the members prefix their name
    # HAProxy runs with no frontend at all next to it, and only one UDP proxy serves the engine.
    directory = state_dir / "engines" / ENGINE
    assert "frontend" not in (directory / "haproxy.cfg").read_text() and haproxy_pids(directory)
    assert len(udp_proxy_pids(directory)) == 1


def test_weights_idle_flows_and_least_connections(agent: Agent, echoes) -> None:
    vip, (a, b) = new_vip(), echoes(2)
    short = {"timeout_client_data": 500}  # ms: flows idle for longer end
    agent.apply(ENGINE, udp_spec(vip, [udp_member(a, weight=3), udp_member(b, weight=1)], listener=short))
    assert spread(udp_answers(vip, PORT, 8)) == {"u0": 6, "u1": 2}

    def active() -> int:
        report = agent.report(ENGINE)
        assert report is not None
        return report.listeners["udp"].active_connections

    assert active() == 8
    wait_for(lambda: active() == 0, "idle flows to end", timeout=5)
    spec = udp_spec(vip, [udp_member(a), udp_member(b)], revision=2, lb_algorithm="LEAST_CONNECTIONS", listener=short)
    agent.apply(ENGINE, spec)
    held = [UdpClient(vip, PORT) for _ in range(3)]  # three live flows: two on one member, one on the other
    try:
        first = [c.ask() for c in held]
        assert sorted(spread(first).values()) == [1, 2]
        fewer = min(spread(first), key=lambda name: spread(first)[name])
        with UdpClient(vip, PORT) as fresh:
            assert fresh.ask() == fewer
    finally:
        for c in held:
            c.close()


def test_source_ip_persistence_keeps_a_client_with_its_member(agent: Agent, echoes) -> None:
    vip, pool = new_vip(), echoes(3)
    persistence = s.SessionPersistenceSpec(type="SOURCE_IP", persistence_timeout=30)
    agent.apply(ENGINE, udp_spec(vip, [udp_member(e) for e in pool], session_persistence=persistence))
    # Every new flow from 127.0.0.1 (new source ports) goes to one member; another client address may differ.
    (only,) = spread(udp_answers(vip, PORT, 6))
    assert only in ("u0", "u1", "u2")
    (other,) = spread(udp_answers(vip, PORT, 4, source="127.0.0.2"))
    assert other in ("u0", "u1", "u2")
    # SOURCE_IP as the algorithm: the same, by hash, without a table.
    agent.apply(ENGINE, udp_spec(vip, [udp_member(e) for e in pool], revision=2, lb_algorithm="SOURCE_IP"))
    assert len(spread(udp_answers(vip, PORT, 6))) == 1


def test_a_stopped_member_goes_down_and_flows_move_to_the_others(agent: Agent, echoes) -> None:
    vip, (a, b, c) = new_vip(), echoes(3)
    agent.apply(ENGINE, udp_spec(vip, [udp_member(e) for e in (a, b, c)], health_monitor=UDP_CONNECT))
    with UdpClient(vip, PORT) as client:
        first = client.ask()
        victim = {"u0": a, "u1": b, "u2": c}[first or ""]
        victim.stop()  # its port is closed: ICMP port unreachable
        wait_for(lambda: members_of(agent).get(victim.name) == "DOWN", f"{victim.name} DOWN", timeout=10)
        # The same client (same flow key) is answered by another member now, and so is every new flow.
        assert client.ask() not in (victim.name, None)
    answers = udp_answers(vip, PORT, 6)
    assert None not in answers and victim.name not in answers
    victim.start()  # the same port again
    wait_for(lambda: members_of(agent).get(victim.name) == "UP", f"{victim.name} UP again", timeout=10)
    assert victim.name in udp_answers(vip, PORT, 6)


@pytest.mark.parametrize("kind", ["TCP", "HTTP"])
def test_tcp_and_http_monitors_check_the_monitor_port(agent: Agent, echoes, backends, kind: str) -> None:
    vip, (a, b), (web,) = new_vip(), echoes(2), backends(1)
    extra = {"url_path": "/", "expected_codes": "200", "http_method": "GET"} if kind == "HTTP" else {}
    hm = s.HealthMonitorSpec(type=kind, delay=1, timeout=1, max_retries=1, max_retries_down=1, **extra)
    # u0 is checked on the HTTP backend's port (monitor_port), u1 on its own UDP port, where nothing speaks TCP.
    members = [udp_member(a, monitor_port=web.port), udp_member(b)]
    agent.apply(ENGINE, udp_spec(vip, members, health_monitor=hm))
    wait_for(lambda: members_of(agent) == {"u0": "UP", "u1": "DOWN"}, "u0 UP, u1 DOWN", timeout=10)
    assert set(udp_answers(vip, PORT, 4)) == {"u0"}
    web.stop()
    wait_for(lambda: members_of(agent)["u0"] == "DOWN", "u0 DOWN with its monitor port closed", timeout=10)
    assert udp_answers(vip, PORT, 1, timeout=0.3) == [None]


def test_a_ping_monitor_marks_reachable_members_up(agent: Agent, echoes) -> None:
    # Only loopback may be pinged here, and every 127/8 address answers: the check runs and passes. A member
    # that does not answer is the UDP-CONNECT, TCP and HTTP tests' job (same rise/fall code).
    vip, (a, b) = new_vip(), echoes(2)
    hm = s.HealthMonitorSpec(type="PING", delay=1, timeout=1, max_retries=1, max_retries_down=1)
    agent.apply(ENGINE, udp_spec(vip, [udp_member(a), udp_member(b)], health_monitor=hm))
    wait_for(lambda: members_of(agent) == {"u0": "UP", "u1": "UP"}, "both members UP by PING", timeout=10)
    assert set(udp_answers(vip, PORT, 4)) == {"u0", "u1"}


def test_member_changes_keep_the_other_flows(agent: Agent, echoes, state_dir: Path) -> None:
    vip, (a, b, c) = new_vip(), echoes(3)
    agent.apply(ENGINE, udp_spec(vip, [udp_member(a), udp_member(b)]))
    directory = state_dir / "engines" / ENGINE
    (proxy,) = udp_proxy_pids(directory)
    with UdpClient(vip, PORT) as client:
        mine = client.ask()
        other = a if mine == b.name else b
        keep = b if mine == b.name else a
        # Add u2 and remove the member this flow does not use: the flow stays with its member.
        agent.apply(ENGINE, udp_spec(vip, [udp_member(keep), udp_member(c)], revision=2))
        assert [client.ask() for _ in range(4)] == [mine] * 4
        assert udp_proxy_pids(directory) == [proxy]  # reloaded, not restarted
        assert set(udp_answers(vip, PORT, 4)) == {keep.name, c.name}
        assert other.name not in members_of(agent)
        # Weight 0 drains: the flow stays, no new flow goes there.
        agent.apply(ENGINE, udp_spec(vip, [udp_member(keep, weight=0), udp_member(c)], revision=3))
        assert client.ask() == mine
        assert set(udp_answers(vip, PORT, 3)) == {c.name}
        # Removing its member moves the flow.
        agent.apply(ENGINE, udp_spec(vip, [udp_member(c)], revision=4))
        assert client.ask() == c.name


def test_admin_down_listener_pool_and_member(agent: Agent, echoes) -> None:
    vip, (a, b) = new_vip(), echoes(2)
    report = agent.apply(ENGINE, udp_spec(vip, [udp_member(a), udp_member(b, admin_state_up=False)]))
    assert report.members == {"pool": {"u0": "no check", "u1": "MAINT"}}
    assert set(udp_answers(vip, PORT, 4)) == {"u0"}

    report = agent.apply(ENGINE, udp_spec(vip, [udp_member(a), udp_member(b)], revision=2, admin_state_up=False))
    assert report.members == {"pool": {"u0": "MAINT", "u1": "MAINT"}}
    assert udp_answers(vip, PORT, 2, timeout=0.3) == [None, None]

    report = agent.apply(
        ENGINE, udp_spec(vip, [udp_member(a), udp_member(b)], revision=3, listener={"admin_state_up": False})
    )
    assert report.listeners["udp"].status == "STOP"
    assert udp_answers(vip, PORT, 2, timeout=0.3) == [None, None]

    report = agent.apply(ENGINE, udp_spec(vip, [udp_member(a), udp_member(b)], revision=4))
    assert report.listeners["udp"].status == "OPEN" and set(udp_answers(vip, PORT, 4)) == {"u0", "u1"}


def test_connection_limit_bounds_the_flows(agent: Agent, echoes) -> None:
    vip, (a,) = new_vip(), echoes(1)
    agent.apply(ENGINE, udp_spec(vip, [udp_member(a)], listener={"connection_limit": 2}))
    held = [UdpClient(vip, PORT) for _ in range(3)]
    try:
        assert [c.ask(timeout=0.5) for c in held] == ["u0", "u0", None]
        report = agent.report(ENGINE)
        assert report is not None and report.listeners["udp"].status == "FULL"
        assert report.listeners["udp"].active_connections == 2
    finally:
        for c in held:
            c.close()


def test_a_udp_port_that_cannot_be_bound_leaves_the_previous_config_serving(agent: Agent, echoes) -> None:
    vip, (a,) = new_vip(), echoes(1)
    agent.apply(ENGINE, udp_spec(vip, [udp_member(a)]))
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind((vip, PORT + 1))
    try:
        with pytest.raises(EngineRejected, match="cannot bind UDP"):
            agent.apply(ENGINE, udp_spec(vip, [udp_member(a)], revision=2, listener={"protocol_port": PORT + 1}))
        assert udp_answers(vip, PORT, 2) == ["u0", "u0"]
        report = agent.report(ENGINE)
        assert report is not None and report.revision == 1 and "cannot bind UDP" in (report.error or "")
    finally:
        blocker.close()
    agent.apply(ENGINE, udp_spec(vip, [udp_member(a)], revision=2, listener={"protocol_port": PORT + 1}))
    assert udp_answers(vip, PORT + 1, 2) == ["u0", "u0"]


def test_a_killed_udp_proxy_is_started_again_by_the_next_report(agent: Agent, echoes, state_dir: Path) -> None:
    vip, (a,) = new_vip(), echoes(1)
    agent.apply(ENGINE, udp_spec(vip, [udp_member(a)]))
    (proxy,) = udp_proxy_pids(state_dir)
    os.kill(proxy, signal.SIGKILL)
    wait_for(lambda: proxy not in udp_proxy_pids(state_dir), "the proxy to die")
    report = agent.report(ENGINE)
    assert report is not None and report.listeners["udp"].status == "OPEN"
    (again,) = udp_proxy_pids(state_dir)
    assert again != proxy and udp_answers(vip, PORT, 2) == ["u0", "u0"]


def test_udp_and_tcp_listeners_share_a_port_and_the_proxy_follows_the_spec(
    make_agent: Callable[[], Agent], echoes, backends, state_dir: Path
) -> None:
    from tests.agent.helpers import answers, member

    agent = make_agent()
    vip, (a,), (web,) = new_vip(), echoes(1), backends(1)
    udp = udp_spec(vip, [udp_member(a)], listener={"protocol_port": 8080})
    http_pool = s.PoolSpec(id="web", protocol="HTTP", lb_algorithm="ROUND_ROBIN", members=(member(web),))
    http = s.ListenerSpec(id="http", protocol="HTTP", protocol_port=8080, default_pool_id="web")
    both = udp.model_copy(update={"listeners": (*udp.listeners, http), "pools": (*udp.pools, http_pool)})
    agent.apply(ENGINE, both)
    assert udp_answers(vip, 8080, 2) == ["u0", "u0"] and answers(vip, 2) == ["b0", "b0"]
    directory = state_dir / "engines" / ENGINE
    (proxy,) = udp_proxy_pids(directory)

    # A restarted agent adopts the running proxy; a dead one is started again.
    agent = make_agent()
    assert agent.recover() == {ENGINE: "adopted"}
    assert udp_proxy_pids(directory) == [proxy]
    # The UDP listener goes away: so does the proxy, and HAProxy keeps serving.
    agent.apply(ENGINE, both.model_copy(update={"revision": 2, "listeners": (http,), "pools": (http_pool,)}))
    assert udp_proxy_pids(directory) == [] and answers(vip, 2) == ["b0", "b0"]
    agent.remove(ENGINE)
    assert udp_proxy_pids(state_dir) == [] and haproxy_pids(state_dir) == []


def test_flows_stop_short_of_the_file_descriptor_limit(state_dir: Path, echoes) -> None:
    """Every flow holds a socket: a proxy out of file descriptors could no longer answer its status socket nor
    run its health checks. New flows beyond what its descriptor limit allows are dropped instead; the flows it
    has keep going and it keeps answering."""
    (a,) = echoes(1)
    vip = new_vip()
    member = UdpMember(id="u0", address="127.0.0.1", port=a.port, check_address="127.0.0.1", check_port=a.port)
    config = UdpConfig(
        revision=1,
        listeners=(UdpListener(id="udp", vips=(vip,), port=PORT, pool_id="pool"),),
        pools=(UdpPool(id="pool", algorithm="ROUND_ROBIN", members=(member,)),),
    )
    directory = state_dir / "fd-limit"
    directory.mkdir()
    proxy = UdpProxy(directory, command_prefix=["prlimit", "--nofile=80:80"])
    clients = [UdpClient(vip, PORT) for _ in range(90)]
    try:
        assert proxy.ensure(config) == "started"
        answers = [c.ask(timeout=1.0 if i == 0 else 0.1) for i, c in enumerate(clients)]
        status = proxy.status()
        assert status is not None and 0 < status["listeners"]["udp"]["active_connections"] < 80
        assert answers[0] == "u0" and answers[-1] is None, spread(answers)
        assert clients[0].ask() == "u0"
    finally:
        for c in clients:
            c.close()
        proxy.stop()


def test_a_udp_proxy_that_cannot_start_fails_the_apply_at_once(agent: Agent, echoes) -> None:
    """A first config the proxy cannot serve ends it at once: the apply (and a report, which starts a dead proxy
    again) must not wait out the start timeout, which would stall the agent's heartbeats."""
    vip, (a,) = new_vip(), echoes(1)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind((vip, PORT))
    try:
        started = time.monotonic()
        with pytest.raises(EngineRejected, match="cannot bind UDP"):
            agent.apply(ENGINE, udp_spec(vip, [udp_member(a)]))
        assert time.monotonic() - started < 5
    finally:
        blocker.close()


def test_a_live_flow_keeps_its_clients_persistence(agent: Agent, echoes) -> None:
    """As IPVS keeps a persistence template while connections use it: a client whose flow is still busy after
    persistence_timeout still has its new flows sent to that flow's member."""
    vip, pool = new_vip(), echoes(3)
    persistence = s.SessionPersistenceSpec(type="SOURCE_IP", persistence_timeout=1)
    agent.apply(ENGINE, udp_spec(vip, [udp_member(e) for e in pool], session_persistence=persistence))
    with UdpClient(vip, PORT) as busy:
        mine = busy.ask()
        for _ in range(6):  # 2.4 s of traffic on this flow, past the 1 s of persistence
            time.sleep(0.4)
            assert busy.ask() == mine
        assert udp_answers(vip, PORT, 3) == [mine] * 3


def test_a_udp_failure_after_haproxy_changed_does_not_skew_the_next_apply(agent: Agent, echoes, backends) -> None:
    """HAProxy takes an apply before the UDP proxy: when the UDP proxy then refuses it, HAProxy runs that spec
    while the engine still reports the previous one, so the next apply must not be worked out at runtime from the
    previous one (a member disabled by the refused apply would stay disabled)."""
    from tests.agent.helpers import answers, member

    vip, (a,), (web,) = new_vip(), echoes(1), backends(1)

    def spec(revision: int, udp_port: int, web_up: bool) -> s.EngineSpec:
        udp = udp_spec(vip, [udp_member(a)], revision=revision, listener={"protocol_port": udp_port})
        pool = s.PoolSpec(
            id="web", protocol="HTTP", lb_algorithm="ROUND_ROBIN", members=(member(web, admin_state_up=web_up),)
        )
        http = s.ListenerSpec(id="http", protocol="HTTP", protocol_port=8080, default_pool_id="web")
        return udp.model_copy(update={"listeners": (*udp.listeners, http), "pools": (*udp.pools, pool)})

    agent.apply(ENGINE, spec(1, PORT, True))
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind((vip, PORT + 1))
    try:
        with pytest.raises(EngineRejected, match="cannot bind UDP"):
            agent.apply(ENGINE, spec(2, PORT + 1, False))
    finally:
        blocker.close()
    report = agent.apply(ENGINE, spec(3, PORT, True))  # back to revision 1's content
    assert report.members["web"] == {"b0": "no check"} and answers(vip, 2) == ["b0", "b0"]
