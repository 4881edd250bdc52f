"""Whatever quadriga creates it removes again, and a SIGKILL at any point is repaired by a restart."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quadriga.network.drivers.netns import NetnsDriver, instance_for
from tests.support.dataplane import Cloud, haproxy_pids, network_driver, network_objects, running_cloud


@pytest.fixture
def state() -> Iterator[Path]:
    """A short state directory: HAProxy's unix sockets live inside it, and their paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="qg-"))
    yield path / "state"
    shutil.rmtree(path, ignore_errors=True)


def own_cloud(state: Path) -> contextlib.AbstractContextManager[Cloud]:
    """A server of its own, on a private subnet that the session's server (tests/e2e/conftest.py) does not use."""
    cidr = "127.232.0.0/24" if network_driver() == "loopback" else "10.232.0.0/24"
    return running_cloud(state_dir=state, extra_args=["--private-cidr", cidr])


def simple_graph(cloud: Cloud, name: str) -> dict:
    backend = cloud.backend(name)
    return {
        "name": name,
        "listeners": [
            {
                "protocol": "HTTP",
                "protocol_port": 80,
                "default_pool": {
                    "name": "pool",
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                    "members": [cloud.member(backend)],
                },
            }
        ],
    }


def test_stopping_serve_leaves_nothing_behind(state: Path):
    with own_cloud(state) as cloud:
        lb = cloud.create_lb(**simple_graph(cloud, "left"))
        assert cloud.answers(lb["vip_address"], 1) == ["left"]
        assert haproxy_pids(state), "an engine should be running"
        if network_driver() == "netns":
            assert network_objects(state), "the engine's namespace and bridge should exist"
    assert cloud.server.returncode == 0
    assert haproxy_pids(state) == []
    assert network_objects(state) == []
    engines = state / "agent" / "engines"
    assert not engines.exists() or list(engines.iterdir()) == []


def test_deleting_a_load_balancer_removes_its_engine(state: Path):
    with own_cloud(state) as cloud:
        lb = cloud.create_lb(**simple_graph(cloud, "gone"))
        assert len(haproxy_pids(state)) >= 1
        cloud.delete_lb(lb["id"])
        deadline = time.monotonic() + 5
        while haproxy_pids(state) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert haproxy_pids(state) == []
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert instance_for(state / "agent") not in namespaces
        amps = cloud.api.get("/v2/octavia/amphorae", params={"loadbalancer_id": lb["id"]}).json()["amphorae"]
        assert amps == []  # DELETED engines are no longer listed


@pytest.mark.parametrize("moment", [0.0, 0.05, 0.3])
def test_sigkill_of_serve_is_repaired_by_a_restart(state: Path, moment: float):
    with own_cloud(state) as cloud:
        server = cloud.server
        body = {"vip_subnet_id": cloud.subnet["id"], **simple_graph(cloud, "phoenix")}
        created = cloud.api.post("/v2/lbaas/loadbalancers", json={"loadbalancer": body})
        assert created.status_code == 201, created.text
        lb_id = created.json()["loadbalancer"]["id"]
        time.sleep(moment)
        server.kill()
        server.restart()  # same ports, state directory and database
        lb = cloud.wait_active(lb_id, timeout=30)
        assert cloud.answers(lb["vip_address"], 2) == ["phoenix", "phoenix"]
        pending = [
            obj
            for kind in ("listeners", "pools")
            for obj in cloud.api.get(f"/v2/lbaas/{kind}").json()[kind]
            if obj["provisioning_status"].startswith("PENDING")
        ]
        assert pending == []
    assert haproxy_pids(state) == []


@pytest.mark.skipif(network_driver() != "netns", reason="engines have namespaces with the netns driver only")
def test_a_deleted_namespace_keeps_serving_across_a_restart_of_serve(state: Path):
    # `ip netns del` removes the name only: HAProxy keeps the namespace and VIP alive. A restarted serve
    # adopts the engine and must name that namespace again, not plug a fresh one that takes the VIP away.
    with own_cloud(state) as cloud:
        lb = cloud.create_lb(**simple_graph(cloud, "nameless"))
        (amp,) = cloud.api.get("/v2/octavia/amphorae", params={"loadbalancer_id": lb["id"]}).json()["amphorae"]
        namespace = NetnsDriver(instance_for(state / "agent")).namespace(amp["id"])
        subprocess.run(["ip", "netns", "del", namespace], check=True)
        assert cloud.answers(lb["vip_address"], 1) == ["nameless"]
        cloud.server.kill()
        cloud.server.restart()
        assert (Path("/run/netns") / namespace).exists()
        assert cloud.answers(lb["vip_address"], 2) == ["nameless", "nameless"]
    assert haproxy_pids(state) == []
    assert network_objects(state) == []
