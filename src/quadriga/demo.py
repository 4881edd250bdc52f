"""`quadriga demo`: everything at once, to see a load balancer carry traffic in a few seconds.

It runs `quadriga serve` in this process on a fresh state directory, starts three small HTTP backends on the
private network (bound on its gateway address, which the host holds), creates through the public Octavia API
one load balancer with an HTTP listener, a ROUND_ROBIN pool, the three members and an HTTP health monitor,
waits until it is ACTIVE and every member ONLINE, and prints the VIP's URL and six answers from it. It runs
until Ctrl-C, then deletes everything it made: engines, network objects, backends and the state directory."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from quadriga.backends import Backend
from quadriga.config import Settings, clouds_yaml
from quadriga.server import serve

log = logging.getLogger("quadriga.demo")
TIMEOUT = 30.0
LISTENER_PORT = 80 if os.geteuid() == 0 else 8080  # ports below 1024 need root


def run(settings: Settings) -> int:
    """Run the demo until SIGINT/SIGTERM. Returns the exit code."""
    state_dir = Path(tempfile.mkdtemp(prefix="quadriga-demo-"))
    settings.state_dir = state_dir
    backends: list[Backend] = []
    outcome: dict[str, Any] = {}

    def scenario() -> None:
        try:
            outcome["vip"] = _scenario(settings, backends)
        except Exception as exc:  # say what failed, then stop everything
            log.error("demo failed: %s", exc)
            outcome["error"] = exc
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        serve(settings, ready=scenario)
    finally:
        for backend in backends:
            backend.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        print("quadriga demo stopped; engines, network objects, backends and its state directory are removed.")
    return 1 if "error" in outcome else 0


def _scenario(settings: Settings, backends: list[Backend]) -> str:
    with httpx.Client(base_url=settings.lb_endpoint, timeout=10, trust_env=False) as api:
        subnet = _private_subnet(settings)
        for n in range(1, 4):
            backends.append(Backend(f"backend-{n}", subnet["gateway_ip"]).start())
        _step(f"three HTTP backends listen on {', '.join(f'{b.address}:{b.port}' for b in backends)}")
        body = {
            "loadbalancer": {
                "name": "demo",
                "vip_subnet_id": subnet["id"],
                "listeners": [
                    {
                        "name": "http",
                        "protocol": "HTTP",
                        "protocol_port": LISTENER_PORT,
                        "default_pool": {
                            "name": "web",
                            "protocol": "HTTP",
                            "lb_algorithm": "ROUND_ROBIN",
                            "members": [
                                {"name": b.name, "address": b.address, "protocol_port": b.port} for b in backends
                            ],
                            "healthmonitor": {
                                "type": "HTTP",
                                "delay": 1,
                                "timeout": 1,
                                "max_retries": 1,
                                "url_path": "/",
                            },
                        },
                    }
                ],
            }
        }
        started = time.monotonic()
        created = api.post("/v2/lbaas/loadbalancers", json=body)
        if created.status_code != 201:
            raise RuntimeError(f"creating the load balancer failed: {created.status_code} {created.text}")
        lb = created.json()["loadbalancer"]
        _step(f"POST /v2/lbaas/loadbalancers: load balancer {lb['id']} with VIP {lb['vip_address']}")
        lb = _wait(api, lb["id"])
        _step(f"ACTIVE and every member ONLINE after {time.monotonic() - started:.2f} s")
        vip = f"http://{lb['vip_address']}:{LISTENER_PORT}/"
        answers = []
        with httpx.Client(timeout=5, trust_env=False) as web:
            for _ in range(6):
                answers.append(web.get(vip).text.strip())
        print(f"\nVIP: {vip}", flush=True)
        for n, answer in enumerate(answers, 1):
            print(f"  request {n}: {answer}", flush=True)
        print(
            f"\nUse the openstack CLI with this clouds.yaml (export OS_CLIENT_CONFIG_FILE="
            f"{settings.state_dir / 'clouds.yaml'} OS_CLOUD=quadriga):\n{clouds_yaml(settings)}"
            "quadriga demo runs until Ctrl-C.",
            flush=True,
        )
        return vip


def _private_subnet(settings: Settings) -> dict[str, Any]:
    with httpx.Client(base_url=settings.network_endpoint, timeout=10, trust_env=False) as net:
        subnets = net.get("v2.0/subnets", params={"name": "private-subnet"}).json()["subnets"]
    if not subnets:
        raise RuntimeError("the private-subnet network is missing")
    return subnets[0]


def _wait(api: httpx.Client, lb_id: str) -> dict[str, Any]:
    """Wait until the load balancer is ACTIVE and its members ONLINE (as the health monitor sees them)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        lb = api.get(f"/v2/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"]
        if lb["provisioning_status"] == "ERROR":
            raise RuntimeError(f"the load balancer went to ERROR: {lb}")
        tree = api.get(f"/v2/lbaas/loadbalancers/{lb_id}/status").json()["statuses"]["loadbalancer"]
        members = [mb for li in tree["listeners"] for p in li["pools"] for mb in p["members"]]
        if lb["provisioning_status"] == "ACTIVE" and all(mb["operating_status"] == "ONLINE" for mb in members):
            return lb
        time.sleep(0.05)
    raise RuntimeError(f"the load balancer was not ACTIVE with every member ONLINE after {TIMEOUT:.0f} s")


def _step(message: str) -> None:
    print(f"==> {message}", file=sys.stdout, flush=True)
