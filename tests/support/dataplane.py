"""End-to-end helpers: a `quadriga serve` with real engines, backends on its private network, and requests
through real VIPs.

Network safety: `check_target` refuses to send anything to an address that is neither loopback nor routed
through a bridge this quadriga created (names starting with `qb`), so a test can never send traffic off this
machine, even when something went wrong with the set-up."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from quadriga.backends import Backend
from quadriga.network.drivers.netns import instance_for
from tests.support.server import QuadrigaServer

ACTIVE_TIMEOUT = 15.0


def network_driver() -> str:
    """netns where we can (root, as in CI), loopback otherwise."""
    return "netns" if os.geteuid() == 0 else "loopback"


def check_target(address: str) -> None:
    """Fail unless `address` is loopback or reached through one of quadriga's own bridges."""
    if ipaddress.ip_address(address).is_loopback:
        return
    route = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True, timeout=10).stdout
    words = route.split()
    device = words[words.index("dev") + 1] if "dev" in words else ""
    assert device.startswith("qb"), f"refusing to send traffic to {address}: it is routed via {route.strip()!r}"


def program_pids(program: str, directory: Path) -> list[int]:
    """Live `program` processes whose command line names a file under `directory` (a zombie has none)."""
    return _pids(directory, lambda argv: argv[0].endswith(os.fsencode(program)))


def haproxy_pids(directory: Path) -> list[int]:
    """Live HAProxy processes of the engines under `directory`."""
    return program_pids("haproxy", directory)


def udp_proxy_pids(directory: Path) -> list[int]:
    """Live UDP proxies (`python -m quadriga.udp`) of the engines under `directory`."""
    return _pids(directory, lambda argv: b"quadriga.udp" in argv)


def _pids(directory: Path, match: Callable[[list[bytes]], bool]) -> list[int]:
    prefix = os.fsencode(directory)
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if match(argv) and any(a.startswith(prefix) for a in argv):
            pids.append(int(name))
    return pids


def kill_engine(state_dir: Path, engine_id: str) -> list[int]:
    """What a dying engine looks like: SIGKILL its HAProxy processes (master and workers, found by their
    command lines naming the engine's directory) and delete its namespace (netns driver). Returns the pids."""
    agent_dir = state_dir / "agent"
    pids = haproxy_pids(agent_dir / "engines" / engine_id)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    namespace = f"qg-{instance_for(agent_dir)}-{engine_id}"
    if namespace in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        subprocess.run(["ip", "netns", "delete", namespace], check=True, timeout=10)
    return pids


def network_objects(state_dir: Path) -> list[str]:
    """Namespaces and links carrying this quadriga's instance tag."""
    tag = instance_for(state_dir / "agent")
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    names += [line.split(":")[1].strip().split("@")[0] for line in _links()]
    return [n for n in names if tag in n]


def _links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.count(":") >= 2]


class Cloud:
    """The Octavia API of one running quadriga, with helpers for load balancers that carry traffic."""

    def __init__(self, server: QuadrigaServer) -> None:
        self.server = server
        self.api = httpx.Client(base_url=server.lb_url, timeout=30, trust_env=False)
        self.net = httpx.Client(base_url=server.net_url, timeout=30, trust_env=False)
        self.subnet = self.net.get("/v2.0/subnets", params={"name": "private-subnet"}).json()["subnets"][0]
        self.gateway: str = self.subnet["gateway_ip"]
        self._backends: list[Backend] = []

    def close(self) -> None:
        for backend in self._backends:
            backend.stop()
        self.api.close()
        self.net.close()

    # --- backends ------------------------------------------------------------------------------------
    def backend(self, name: str, port: int = 0) -> Backend:
        """An HTTP backend on the private network (the host's gateway address there), stopped at the end."""
        backend = Backend(name, self.gateway, port).start()
        self._backends.append(backend)
        return backend

    def member(self, backend: Backend, **fields: Any) -> dict[str, Any]:
        return {"address": backend.address, "protocol_port": backend.port, "name": backend.name, **fields}

    # --- the API -------------------------------------------------------------------------------------
    def ok(self, response: httpx.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, (response.status_code, response.text)
        return response.json() if response.content else {}

    def create_lb(self, **fields: Any) -> dict[str, Any]:
        """POST a load balancer (a whole graph if `fields` has listeners/pools) and wait until ACTIVE."""
        body = {"vip_subnet_id": self.subnet["id"], **fields}
        lb = self.ok(self.api.post("/v2/lbaas/loadbalancers", json={"loadbalancer": body}), 201)["loadbalancer"]
        return self.wait_active(lb["id"])

    def wait_active(self, lb_id: str, timeout: float = ACTIVE_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            lb = self.ok(self.api.get(f"/v2/lbaas/loadbalancers/{lb_id}"), 200)["loadbalancer"]
            if lb["provisioning_status"] == "ACTIVE":
                return lb
            assert lb["provisioning_status"] != "ERROR", f"load balancer went to ERROR: {lb}"
            assert time.monotonic() < deadline, f"load balancer not ACTIVE after {timeout}s: {lb}"
            time.sleep(0.05)

    def change(self, method: str, path: str, lb_id: str, body: Any = None, status: int = 200) -> dict[str, Any]:
        """One API change, then wait until the load balancer is ACTIVE again (the change is live)."""
        result = self.ok(self.api.request(method, path, json=body), status)
        self.wait_active(lb_id)
        return result

    def delete_lb(self, lb_id: str) -> None:
        """Delete (cascade) and wait until gone; a load balancer busy with a change (409: e.g. an automatic
        failover) is deleted once the change is done."""
        deadline = time.monotonic() + ACTIVE_TIMEOUT
        while (r := self.api.delete(f"/v2/lbaas/loadbalancers/{lb_id}", params={"cascade": "true"})).status_code == 409:
            assert time.monotonic() < deadline, f"load balancer {lb_id} still busy: {r.text}"
            time.sleep(0.1)
        assert r.status_code in (204, 404), r.text
        deadline = time.monotonic() + ACTIVE_TIMEOUT
        while self.api.get(f"/v2/lbaas/loadbalancers/{lb_id}").status_code != 404:
            assert time.monotonic() < deadline, f"load balancer {lb_id} not deleted"
            time.sleep(0.05)

    def statuses(self, lb_id: str) -> dict[str, Any]:
        return self.ok(self.api.get(f"/v2/lbaas/loadbalancers/{lb_id}/status"), 200)["statuses"]["loadbalancer"]

    def wait_member_status(self, lb_id: str, want: dict[str, str], timeout: float = 15.0) -> dict[str, str]:
        """Wait until the members named in `want` (name -> operating status) show those statuses."""
        deadline = time.monotonic() + timeout
        while True:
            tree = self.statuses(lb_id)
            got = {
                mb["name"]: mb["operating_status"]
                for li in tree["listeners"]
                for p in li["pools"]
                for mb in p["members"]
                if mb["name"] in want
            }
            if got == want:
                return got
            assert time.monotonic() < deadline, f"members are {got}, want {want}"
            time.sleep(0.1)

    # --- traffic -------------------------------------------------------------------------------------
    def get(self, vip: str, port: int = 80, path: str = "/", **kw: Any) -> httpx.Response:
        """One HTTP request through a VIP (new connection each time)."""
        check_target(vip)
        host = f"[{vip}]" if ":" in vip else vip
        with httpx.Client(timeout=kw.pop("timeout", 5), trust_env=False, verify=False) as client:
            return client.get(f"http://{host}:{port}{path}", **kw)

    def answers(self, vip: str, count: int, port: int = 80, path: str = "/", **kw: Any) -> list[str]:
        return [self.get(vip, port, path, **kw).text.strip() for _ in range(count)]


def engines(cloud: Cloud, lb_id: str) -> dict[str, str]:
    """The load balancer's amphorae: id -> status."""
    amps = cloud.ok(cloud.api.get("/v2/octavia/amphorae", params={"loadbalancer_id": lb_id}), 200)["amphorae"]
    return {a["id"]: a["status"] for a in amps}


def graph(cloud: Cloud, name: str) -> dict[str, Any]:
    """A load balancer body: an HTTP listener on port 80 and a pool with one backend answering `name`."""
    backend = cloud.backend(name)
    pool = {"name": "p", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "members": [cloud.member(backend)]}
    return {"name": name, "listeners": [{"protocol": "HTTP", "protocol_port": 80, "default_pool": pool}]}


def free_private_cidr() -> str:
    """A 10.x.y.0/24 that no route of this host overlaps. Test sessions running side by side on one host
    must not seed the same private subnet: two bridges holding one subnet would route one session's
    traffic to the other session's engines."""
    command = ["ip", "-j", "-4", "route", "show", "table", "all"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=10)
    taken = []
    for route in json.loads(out.stdout or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return str(net)
    raise RuntimeError("no free 10.x.y.0/24 on this host")


@contextlib.contextmanager
def running_cloud(**server_args: Any) -> Iterator[Cloud]:
    database = os.environ.get("QUADRIGA_TEST_SERVER_DATABASE", "sqlite")
    driver = server_args.pop("network_driver", network_driver())
    if driver == "netns" and "extra_args" not in server_args:
        server_args["extra_args"] = ["--private-cidr", free_private_cidr()]
    server = QuadrigaServer(provider="amphora", network_driver=driver, database=database, **server_args)
    with server:
        cloud = Cloud(server)
        try:
            yield cloud
        finally:
            cloud.close()
