"""The agent's keepalived for an ACTIVE_STANDBY engine (netns driver, root): started with the engine, holding
the VIP once it is MASTER (here it has no live peer), adopted by a restarted agent, restarted when it died,
and gone with its files and namespace when the engine is removed."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quadriga.agent.agent import Agent
from quadriga.agent.keepalived import Keepalived, keepalived_binary
from quadriga.engine import spec as s
from quadriga.network.drivers.netns import NetnsDriver, instance_for
from tests.agent.helpers import OPTIONS, wait_for
from tests.support.dataplane import free_private_cidr
from tests.support.ha import keepalived_pids

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or keepalived_binary() is None, reason="needs root (netns) and keepalived"
)


@pytest.fixture
def make_agent(state_dir: Path, haproxy: str) -> Iterator[Callable[[], Agent]]:
    """Agents with the netns driver on the test's state dir; the last one is shut down (bridges included), and
    any keepalived left under the state dir fails the test after being killed."""
    made: list[Agent] = []

    def make() -> Agent:
        made.append(Agent(state_dir, NetnsDriver(instance_for(state_dir)), haproxy=haproxy, options=OPTIONS))
        return made[-1]

    yield make
    if made:
        made[-1].shutdown()
    left = keepalived_pids(state_dir)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"keepalived {left} outlived the test"


def ha_spec() -> s.EngineSpec:
    net = ipaddress.ip_network(free_private_cidr())
    gateway, vip, own, peer = (str(net.network_address + i) for i in (1, 2, 3, 4))
    subnet = s.SubnetSpec(id="sn", network_id="net", cidr=str(net), gateway_ip=gateway)
    ha = s.HASpec(role="MASTER", priority=100, vrid=1, name="e1", address=own, peer_name="e2", peer_address=peer)
    return s.EngineSpec(revision=1, loadbalancer_id="lb", vips=(vip,), subnets=(subnet,), ha=ha)


def addresses(namespace: str) -> str:
    return subprocess.run(["ip", "-n", namespace, "-o", "addr"], capture_output=True, text=True, timeout=10).stdout


def test_keepalived_lives_and_dies_with_its_engine(make_agent: Callable[[], Agent], state_dir: Path):
    spec = ha_spec()
    assert spec.ha is not None
    agent = make_agent()
    report = agent.apply("e1", spec)
    assert report.lb_network_ip == spec.ha.address
    directory = state_dir / "engines" / "e1"
    keepalived = Keepalived(directory)
    namespace = NetnsDriver(instance_for(state_dir)).namespace("e1")
    assert f" {spec.ha.address}/" in addresses(namespace)
    wait_for(lambda: keepalived.state() == "MASTER", "keepalived to become MASTER without a peer")
    wait_for(lambda: f" {spec.vips[0]}/" in addresses(namespace), "keepalived to add the VIP")
    assert (agent.report("e1") or report).vrrp_state == "MASTER"
    first = keepalived.pid()

    assert make_agent().recover() == {"e1": "adopted"}
    assert keepalived.pid() == first, "a restarted agent adopts the running keepalived"

    os.kill(first or 0, signal.SIGKILL)
    wait_for(lambda: keepalived.pid() is None, "keepalived to die")
    agent = make_agent()
    assert agent.recover() == {"e1": "adopted"}
    assert keepalived.pid() not in (None, first), "a dead keepalived is restarted"
    wait_for(lambda: keepalived.state() == "MASTER", "the restarted keepalived to become MASTER")

    agent.remove("e1")
    assert keepalived_pids(state_dir) == []
    assert not directory.exists()
    assert namespace not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
