"""ACTIVE_STANDBY helpers shared by the e2e tests and bench/ha_bench.py: a flavor that asks for the topology,
the engines of a pair, which one holds the VIP, and killing an engine the hard way (SIGKILL to its keepalived
and HAProxy, by pid) or freezing it (SIGSTOP: a hung engine, which nothing restarts behind the test's back)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quadriga.network.drivers.netns import instance_for
from tests.support.dataplane import Cloud, haproxy_pids, program_pids


@contextlib.contextmanager
def active_standby_flavor(cloud: Cloud) -> Iterator[str]:
    """A flavor (and its profile) with loadbalancer_topology ACTIVE_STANDBY, removed afterwards."""
    profile = cloud.ok(
        cloud.api.post(
            "/v2/lbaas/flavorprofiles",
            json={
                "flavorprofile": {
                    "name": "active-standby",
                    "provider_name": "amphora",
                    "flavor_data": '{"loadbalancer_topology": "ACTIVE_STANDBY"}',
                }
            },
        ),
        201,
    )["flavorprofile"]
    flavor = cloud.ok(
        cloud.api.post(
            "/v2/lbaas/flavors", json={"flavor": {"name": "ha", "flavor_profile_id": profile["id"], "enabled": True}}
        ),
        201,
    )["flavor"]
    try:
        yield flavor["id"]
    finally:
        cloud.api.delete(f"/v2/lbaas/flavors/{flavor['id']}")
        cloud.api.delete(f"/v2/lbaas/flavorprofiles/{profile['id']}")


def amphorae(cloud: Cloud, lb_id: str) -> list[dict[str, Any]]:
    return cloud.ok(cloud.api.get("/v2/octavia/amphorae", params={"loadbalancer_id": lb_id}), 200)["amphorae"]


def live_pair(cloud: Cloud, lb_id: str) -> dict[str, dict[str, Any]]:
    """The ALLOCATED engines of a load balancer by role."""
    return {a["role"]: a for a in amphorae(cloud, lb_id) if a["status"] == "ALLOCATED"}


def engine_dir(cloud: Cloud, engine_id: str) -> Path:
    assert cloud.server.state_dir is not None
    return cloud.server.state_dir / "agent" / "engines" / engine_id


def namespace(cloud: Cloud, engine_id: str) -> str:
    assert cloud.server.state_dir is not None
    return f"qg-{instance_for(cloud.server.state_dir / 'agent')}-{engine_id}"


def holds(cloud: Cloud, engine_id: str, address: str) -> bool:
    """Whether `address` is configured in the engine's namespace (keepalived put it there: MASTER)."""
    out = subprocess.run(
        ["ip", "-n", namespace(cloud, engine_id), "-o", "addr", "show"], capture_output=True, text=True, timeout=10
    ).stdout
    return f" {address}/" in out


def wait_holder(cloud: Cloud, engine_ids: list[str], vip: str, timeout: float = 10.0) -> str:
    """The one engine of `engine_ids` that holds the VIP, once exactly one does."""
    deadline = time.monotonic() + timeout
    while True:
        holders = [e for e in engine_ids if holds(cloud, e, vip)]
        if len(holders) == 1:
            return holders[0]
        assert time.monotonic() < deadline, f"VIP {vip} held by {holders} of {engine_ids}"
        time.sleep(0.05)


def keepalived_pids(directory: Path) -> list[int]:
    """Live keepalived processes of the engines under `directory`."""
    return program_pids("keepalived", directory)


def kill_engine(directory: Path, sig: signal.Signals = signal.SIGKILL) -> list[int]:
    """Send `sig` to the engine's keepalived and HAProxy processes: SIGKILL is a crashed engine (no goodbye
    advert; the controller's status collector restarts it), SIGSTOP a hung one. Returns the pids."""
    pids = keepalived_pids(directory) + haproxy_pids(directory)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return pids


def vrrp_state(cloud: Cloud, engine_id: str) -> str:
    """The state keepalived's notify script last recorded for the engine (MASTER, BACKUP, FAULT), or ""."""
    try:
        return (engine_dir(cloud, engine_id) / "keepalived.state").read_text().strip()
    except OSError:
        return ""


def keepalived_logs(cloud: Cloud, engine_ids: list[str]) -> str:
    """The end of the engines' keepalived logs, for a failure message."""
    parts = []
    for engine_id in engine_ids:
        log = engine_dir(cloud, engine_id) / "keepalived.log"
        parts.append(f"--- keepalived of {engine_id}:\n" + (log.read_text()[-2500:] if log.exists() else "no log"))
    return "\n".join(parts)


def wait_vrrp_state(cloud: Cloud, engine_id: str, state: str, timeout: float = 10.0, peer: str = "") -> None:
    deadline = time.monotonic() + timeout
    while (got := vrrp_state(cloud, engine_id)) != state:
        if time.monotonic() > deadline:
            logs = keepalived_logs(cloud, [engine_id, peer] if peer else [engine_id])
            raise AssertionError(f"engine {engine_id} is {got or 'unknown'}, not {state}:\n{logs}")
        time.sleep(0.05)
