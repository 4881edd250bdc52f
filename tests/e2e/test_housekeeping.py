"""Housekeeping in a real `quadriga serve` that runs it every second.

Certificate rotation: agent certificates live 30 s and are renewed with 20 s left; the agent presents new
certificates to new handshakes while traffic through a VIP never fails and the engine's HAProxy processes
stay the same (no restart, no failover); the amphorae API shows the new expiry.

Orphans: an engine no load balancer owns and a namespace with this instance's naming but no engine are
removed; a namespace of another program is not."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from quadriga.agent.client import AgentClient
from quadriga.certs.pki import controller_bundle
from quadriga.engine.spec import EngineSpec
from quadriga.network.drivers.netns import NETNS_DIR, instance_for
from tests.agent.helpers import wait_for
from tests.support.dataplane import Cloud, free_private_cidr, haproxy_pids, network_driver, running_cloud

VALIDITY_S, RENEW_S = 30, 20
CONFIG = f"""
[agent]
cert_validity_days = {VALIDITY_S / 86400}
cert_renew_days = {RENEW_S / 86400}

[controller]
housekeeping_interval = 1
"""


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    config = tmp_path_factory.mktemp("rotation") / "quadriga.toml"
    config.write_text(CONFIG)
    args = ["--config", str(config)]
    if network_driver() == "netns":
        args += ["--private-cidr", free_private_cidr()]
    with running_cloud(extra_args=args) as cloud:
        yield cloud


def _expiration(cloud: Cloud, lb_id: str) -> tuple[dt.datetime, bool]:
    (amp,) = cloud.ok(cloud.api.get("/v2/octavia/amphorae", params={"loadbalancer_id": lb_id}), 200)["amphorae"]
    return dt.datetime.fromisoformat(amp["cert_expiration"]), amp["cert_busy"]


def test_certificates_rotate_with_no_traffic_loss_and_no_engine_restart(cloud: Cloud) -> None:
    state_dir = Path(cloud.server.state_dir or "")
    backend = cloud.backend("rotating")
    pool = {"name": "p", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "members": [cloud.member(backend)]}
    lb = cloud.create_lb(name="rot", listeners=[{"protocol": "HTTP", "protocol_port": 80, "default_pool": pool}])
    vip = lb["vip_address"]
    engines_dir = state_dir / "agent" / "engines"
    pids = sorted(haproxy_pids(engines_dir))
    assert pids, "no HAProxy runs for the engine"
    first_expiry, _busy = _expiration(cloud, lb["id"])

    agent_url = f"https://127.0.0.1:{cloud.server.agent_port}"
    serials: list[int] = []
    failures: list[str] = []
    requests = 0
    with AgentClient(agent_url, controller_bundle(state_dir)) as agent:
        deadline = time.monotonic() + 2.5 * (VALIDITY_S - RENEW_S) + 10
        while time.monotonic() < deadline and len(set(serials)) < 3:
            serial = agent.presented_certificate().serial_number
            if not serials or serials[-1] != serial:
                serials.append(serial)
            for _ in range(5):
                requests += 1
                try:
                    response = cloud.get(vip, timeout=2)
                    if response.status_code != 200 or response.text.strip() != "rotating":
                        failures.append(f"{response.status_code} {response.text[:50]!r}")
                except httpx.HTTPError as exc:  # every failed request counts
                    failures.append(repr(exc))
                time.sleep(0.02)
    assert len(set(serials)) >= 3, f"the agent presented only {len(set(serials))} certificates: {serials}"
    assert failures == [], f"{len(failures)} of {requests} requests failed during rotation: {failures[:5]}"
    assert requests > 100
    assert sorted(haproxy_pids(engines_dir)) == pids, "the engine's HAProxy was restarted"
    last_expiry, busy = _expiration(cloud, lb["id"])
    assert last_expiry > first_expiry and not busy
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert now < last_expiry <= now + dt.timedelta(seconds=VALIDITY_S + 1)
    assert "certificate renewed" in cloud.server.log_path.read_text()
    cloud.delete_lb(lb["id"])


def test_orphans_are_collected_and_nothing_else(cloud: Cloud) -> None:
    state_dir = Path(cloud.server.state_dir or "")
    backend = cloud.backend("owned")
    pool = {"name": "p", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "members": [cloud.member(backend)]}
    lb = cloud.create_lb(name="owned", listeners=[{"protocol": "HTTP", "protocol_port": 80, "default_pool": pool}])
    (amp,) = cloud.ok(cloud.api.get("/v2/octavia/amphorae", params={"loadbalancer_id": lb["id"]}), 200)["amphorae"]
    engines_dir = state_dir / "agent" / "engines"
    # An engine no load balancer owns (as after a crash between the agent's apply and the database write): the
    # owned engine's spec on another address of the subnet, pushed straight to the agent.
    owned_spec = EngineSpec.model_validate_json((engines_dir / amp["id"] / "spec.json").read_text())
    subnet = ipaddress.ip_network(cloud.subnet["cidr"])
    stray_spec = owned_spec.model_copy(update={"vips": (str(subnet.broadcast_address - 1),)})
    with AgentClient(f"https://127.0.0.1:{cloud.server.agent_port}", controller_bundle(state_dir)) as agent:
        assert agent.apply("stray-engine", stray_spec).running
    assert haproxy_pids(engines_dir / "stray-engine")
    netns = network_driver() == "netns"
    unrelated = f"qtest-{os.getpid()}"
    ghost = f"qg-{instance_for(state_dir / 'agent')}-ghost"
    if netns:
        subprocess.run(["ip", "netns", "add", ghost], check=True, timeout=30)
        subprocess.run(["ip", "netns", "add", unrelated], check=True, timeout=30)
    try:
        wait_for(
            lambda: not haproxy_pids(engines_dir / "stray-engine"), "the stray engine's HAProxy to stop", timeout=15.0
        )
        wait_for(
            lambda: not (engines_dir / "stray-engine").exists(), "the stray engine's directory to go", timeout=15.0
        )
        if netns:
            wait_for(lambda: ghost not in os.listdir(NETNS_DIR), "the orphan namespace to go", timeout=15.0)
            assert unrelated in os.listdir(NETNS_DIR)
        assert cloud.answers(lb["vip_address"], 3) == ["owned"] * 3
        assert haproxy_pids(engines_dir / amp["id"])
    finally:
        if netns:
            for name in (ghost, unrelated):
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    log = cloud.server.log_path.read_text()
    assert "removed orphan engine stray-engine" in log
    cloud.delete_lb(lb["id"])
