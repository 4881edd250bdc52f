"""Orphan collection on an agent: HAProxy processes whose engine directory is gone, engine directories that
never served, and (as root) namespaces and veths with this agent's instance tag but no engine are removed at
start and on request; another agent's engines and anything else on the host are left alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quadriga.agent.agent import Agent
from quadriga.agent.client import AgentClient
from quadriga.agent.engine import SPEC_FILE
from quadriga.agent.host import AgentHost
from quadriga.certs import pki
from quadriga.engine import spec as s
from quadriga.network.drivers.loopback import LoopbackDriver
from quadriga.network.drivers.netns import NETNS_DIR, instance_for
from tests.agent.helpers import OPTIONS, answers, make_spec, member, new_vip
from tests.support.dataplane import haproxy_pids, udp_proxy_pids
from tests.support.udp import UdpEcho

ENGINE = "engine-1"


@pytest.fixture
def other_agent(haproxy: str) -> Iterator[Agent]:
    """An agent on a state directory of its own: its engines are not the first agent's orphans."""
    directory = Path(tempfile.mkdtemp(prefix="qo-"))
    agent = Agent(directory, LoopbackDriver(), haproxy=haproxy, options=OPTIONS)
    try:
        yield agent
    finally:
        agent.shutdown()
        shutil.rmtree(directory, ignore_errors=True)


def test_haproxy_of_a_deleted_engine_directory_is_stopped_and_no_other(
    make_agent: Callable[[], Agent], backends, state_dir: Path, other_agent: Agent
) -> None:
    (b0,) = backends(1)
    crashed = make_agent()
    vip, theirs = new_vip(), new_vip()
    crashed.apply(ENGINE, make_spec(vip, [member(b0)]))
    other_agent.apply(ENGINE, make_spec(theirs, [member(b0)]))  # the same engine id, another agent
    stray = haproxy_pids(state_dir)
    assert stray and answers(vip, 1) == ["b0"]
    shutil.rmtree(state_dir / "engines" / ENGINE)  # e.g. a state directory restored from a backup
    del crashed

    agent = make_agent()
    assert agent.recover() == {}
    collected = agent.collect_orphans()
    assert collected == [f"haproxy {ENGINE} (pids {sorted(stray)})"]
    assert haproxy_pids(state_dir) == []
    assert answers(theirs, 1) == ["b0"] and other_agent.report(ENGINE) is not None
    assert agent.collect_orphans() == []


def test_a_udp_proxy_of_a_deleted_engine_directory_is_stopped(make_agent: Callable[[], Agent], state_dir: Path) -> None:
    echo = UdpEcho("u0")
    try:
        crashed = make_agent()
        spec = make_spec(new_vip(), [])
        udp = s.ListenerSpec(id="udp", protocol="UDP", protocol_port=5353, default_pool_id="udp-pool")
        udp_pool = s.PoolSpec(
            id="udp-pool",
            protocol="UDP",
            lb_algorithm="ROUND_ROBIN",
            members=(s.MemberSpec(id="u0", address="127.0.0.1", protocol_port=echo.port),),
        )
        crashed.apply(ENGINE, spec.model_copy(update={"listeners": (udp,), "pools": (udp_pool,)}))
        stray = udp_proxy_pids(state_dir)
        assert len(stray) == 1
        shutil.rmtree(state_dir / "engines" / ENGINE)
        del crashed
        agent = make_agent()
        assert agent.recover() == {}
        collected = agent.collect_orphans()
        assert f"udp proxy {ENGINE} (pids {stray})" in collected
        assert udp_proxy_pids(state_dir) == [] and haproxy_pids(state_dir) == []
    finally:
        echo.stop()


def test_an_engine_directory_that_never_served_a_spec_is_removed(
    make_agent: Callable[[], Agent], backends, state_dir: Path
) -> None:
    (b0,) = backends(1)
    crashed = make_agent()
    crashed.apply(ENGINE, make_spec(new_vip(), [member(b0)]))
    crashed.apply("engine-2", make_spec(new_vip(), [member(b0)]))
    # A crash after HAProxy started but before the spec was saved: a running engine nobody knows what serves.
    (state_dir / "engines" / ENGINE / SPEC_FILE).unlink()
    del crashed
    agent = make_agent()
    agent.recover()
    assert agent.collect_orphans() == [f"engine directory {ENGINE}"]
    assert not (state_dir / "engines" / ENGINE).exists()
    assert len(haproxy_pids(state_dir / "engines" / ENGINE)) == 0
    assert len(haproxy_pids(state_dir / "engines" / "engine-2")) >= 2  # master and worker, untouched
    assert agent.report("engine-2") is not None


# --- namespaces and veths (root) ------------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _namespaces() -> set[str]:
    return set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()


@pytest.fixture
def hand_made() -> Iterator[list[str]]:
    """Names of namespaces and links a test creates by hand: removed afterwards if still there."""
    made: list[str] = []
    yield made
    for name in made:
        if name in _namespaces():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        elif Path(f"/sys/class/net/{name}").exists():
            subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=30)


def _orphan_namespace(instance: str, engine_id: str, made: list[str]) -> str:
    """A namespace named as the netns driver names an engine's, with a veth to the host carrying its alias."""
    ns, veth = f"qg-{instance}-{engine_id}", f"qv{instance}{engine_id[:9]}"
    made += [ns, veth]
    _ip("netns", "add", ns)
    _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("link", "set", veth, "alias", f"quadriga engine {engine_id} network net-1")
    return ns


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root (CI runs these as root)")
def test_orphan_namespaces_of_this_instance_are_collected_at_start_and_on_request(
    state_dir: Path, hand_made: list[str]
) -> None:
    instance = instance_for(state_dir / "agent")
    other = next(f"{n:04x}" for n in range(0xFFFF, 0, -1) if f"{n:04x}" != instance)
    ghost = _orphan_namespace(instance, "ghost1", hand_made)
    theirs = _orphan_namespace(other, "ghost1", hand_made)  # another quadriga's: never ours to remove
    unrelated = f"qtest-{os.getpid()}"
    hand_made.append(unrelated)
    _ip("netns", "add", unrelated)
    bundle = pki.ensure_local_agent_bundle(state_dir, "orphans", ["127.0.0.1"])
    host = AgentHost("orphans", state_dir / "agent", bundle, port=0, network_driver="netns").start()
    try:
        assert ghost not in _namespaces()
        assert not Path(f"/sys/class/net/qv{instance}ghost1").exists()
        assert {theirs, unrelated} <= _namespaces()
        assert Path(f"/sys/class/net/qv{other}ghost1").exists()
        # Periodically: the controller asks over the API.
        late = _orphan_namespace(instance, "ghost2", hand_made)
        with AgentClient(host.url, pki.ensure_controller_bundle(state_dir)) as client:
            assert client.collect_orphans() == [
                f"veth qv{instance}ghost2 (quadriga engine ghost2 network net-1)",
                f"namespace {late}",
            ]
            assert client.collect_orphans() == []
        assert late not in _namespaces() and {theirs, unrelated} <= _namespaces()
    finally:
        host.stop()
    assert {theirs, unrelated} <= _namespaces()
