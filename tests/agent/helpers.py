"""Helpers of the agent tests: real HTTP backends, engine specs, traffic, and HAProxy process lookup."""

from __future__ import annotations

import http.server
import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from quadriga.engine import spec as s
from quadriga.engine.render import RenderOptions

OPTIONS = RenderOptions(max_connections=4000, hard_stop_after_s=10)
PORT = 8080
# A /16 of its own per test process, one VIP per engine: engines of two tests never share an address.
_VIP_NET = 200 + os.getpid() % 50
_vip_counter = itertools.count(1)


# --- backends ----------------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real members

    def do_GET(self) -> None:
        body = self.server.name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # TCP health checks connect and close without a request


class Backend:
    """A member: an HTTP server on 127.0.0.1 that answers every GET with its own name. `stop()` closes its
    port, `start()` opens the same port again."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._server: _Server | None = None
        self.start()

    def start(self) -> None:
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.name = self.name  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --- specs -------------------------------------------------------------------------------------------------------


def new_vip() -> str:
    n = next(_vip_counter)
    return f"127.{_VIP_NET}.{n // 250}.{n % 250 + 1}"


def member(backend: Backend, **kw: Any) -> s.MemberSpec:
    return s.MemberSpec(id=backend.name, address="127.0.0.1", protocol_port=backend.port, **kw)


def listener(listener_id: str = "http", port: int = PORT, **kw: Any) -> s.ListenerSpec:
    return s.ListenerSpec(id=listener_id, protocol="HTTP", protocol_port=port, default_pool_id="pool", **kw)


def make_spec(
    vip: str,
    members: list[s.MemberSpec],
    *,
    revision: int = 1,
    monitor: s.HealthMonitorSpec | None = None,
    listeners: list[s.ListenerSpec] | None = None,
) -> s.EngineSpec:
    """A ROUND_ROBIN pool "pool" behind one HTTP listener on `vip`:8080 (or behind `listeners`)."""
    pool = s.PoolSpec(
        id="pool", protocol="HTTP", lb_algorithm="ROUND_ROBIN", members=tuple(members), health_monitor=monitor
    )
    return s.EngineSpec(
        revision=revision,
        loadbalancer_id="lb",
        vips=(vip,),
        listeners=tuple(listeners or [listener()]),
        pools=(pool,),
    )


# --- traffic -----------------------------------------------------------------------------------------------------


def client() -> httpx.Client:
    # trust_env=False: a proxy from the environment must never see this traffic.
    return httpx.Client(trust_env=False, timeout=5.0)


def answers(vip: str, count: int = 12, port: int = PORT) -> list[str]:
    """Who answered each of `count` requests to the VIP."""
    with client() as c:
        return [c.get(f"http://{vip}:{port}/").raise_for_status().text for _ in range(count)]


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 8.0) -> Any:
    """Poll `condition` until it is truthy (and return it); fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


# --- processes ---------------------------------------------------------------------------------------------------


def haproxy_pids_under(directory: Path) -> list[int]:
    """Live HAProxy processes whose command line names a file under `directory` (a zombie has none)."""
    prefix = os.fsencode(directory)
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"haproxy") and any(a.startswith(prefix) for a in argv):
            pids.append(int(name))
    return pids
