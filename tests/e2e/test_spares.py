"""Spare engines in a real `quadriga serve` (netns driver as root): load balancers adopt started, idle
engines, whose namespaces take the engines' names, serve traffic through their VIPs, and the pool refills.
Housekeeping runs twice a second meanwhile: orphan collection never takes a spare (idle, being made or
being adopted) for an orphan."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from quadriga.network.drivers.netns import NETNS_DIR, instance_for
from tests.agent.helpers import wait_for
from tests.support.dataplane import Cloud, free_private_cidr, network_driver, running_cloud

SPARES = 2


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    config = tmp_path_factory.mktemp("spares") / "quadriga.toml"
    config.write_text("[controller]\nhousekeeping_interval = 0.5\n")
    args = ["--spare-engines", str(SPARES), "--config", str(config)]
    if network_driver() == "netns":
        args += ["--private-cidr", free_private_cidr()]
    with running_cloud(extra_args=args) as cloud:
        yield cloud


def _idle(state_dir: Path) -> set[str]:
    spares = state_dir / "spares"
    engines = state_dir / "engines"
    used = {p.resolve() for p in engines.iterdir()} if engines.is_dir() else set()
    return {p.name for p in spares.iterdir() if p.resolve() not in used} if spares.is_dir() else set()


def test_load_balancers_adopt_spares_and_the_pool_refills(cloud: Cloud) -> None:
    agent_dir = Path(cloud.server.state_dir or "") / "agent"
    wait_for(lambda: len(_idle(agent_dir)) == SPARES, "the pool to fill", timeout=15.0)
    created = []
    for name in ("spare-a", "spare-b", "spare-c"):
        backend = cloud.backend(name)
        pool = {"name": "p", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "members": [cloud.member(backend)]}
        lb = cloud.create_lb(name=name, listeners=[{"protocol": "HTTP", "protocol_port": 80, "default_pool": pool}])
        created.append(lb)
        assert cloud.answers(lb["vip_address"], 2) == [name, name]
    log = cloud.server.log_path.read_text()
    assert "collected orphan" not in log and "not adopted" not in log
    adopted = re.findall(r"engine=(\S+) adopted spare=(\S+)", log)
    assert len(adopted) >= 2, log[-3000:]
    for engine_id, spare_id in adopted:
        link = agent_dir / "engines" / engine_id
        assert link.is_symlink() and link.readlink().name == spare_id
        if network_driver() == "netns":
            instance = instance_for(agent_dir)
            namespaces = os.listdir(NETNS_DIR)
            assert f"qg-{instance}-{engine_id}" in namespaces and f"qg-{instance}-{spare_id}" not in namespaces
    wait_for(lambda: len(_idle(agent_dir)) == SPARES, "the pool to refill", timeout=15.0)
    for lb in created:
        cloud.delete_lb(lb["id"])
    for _engine_id, spare_id in adopted:
        assert not (agent_dir / "spares" / spare_id).exists()
