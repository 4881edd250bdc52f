"""Whatever quadriga creates it removes again, and a SIGKILL at any point is repaired by a restart."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from quadriga.network.drivers.netns import instance_for
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
        assert amps and all(a["status"] == "DELETED" for a in amps)


@pytest.mark.parametrize("moment", [0.0, 0.05, 0.3])
def test_sigkill_of_serve_is_repaired_by_a_restart(state: Path, moment: float):
    with own_cloud(state) as cloud:
        server = cloud.server
        body = {"vip_subnet_id": cloud.subnet["id"], **simple_graph(cloud, "phoenix")}
        created = cloud.api.post("/v2/lbaas/loadbalancers", json={"loadbalancer": body})
        assert created.status_code == 201, created.text
        lb_id = created.json()["loadbalancer"]["id"]
        time.sleep(moment)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        server.process = None
        server.start()  # new ports, same state directory
        cloud.api = httpx.Client(base_url=server.lb_url, timeout=30, trust_env=False)
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
