"""Helpers of the agent tests: real HTTP backends, engine specs, traffic, and HAProxy process lookup."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quadriga import backends
from quadriga.engine import spec as s
from quadriga.engine.render import RenderOptions
from tests.support.dataplane import haproxy_pids, udp_proxy_pids

OPTIONS = RenderOptions(max_connections=4000, hard_stop_after_s=10)
PORT = 8080
# A /16 of its own per test process, one VIP per engine: engines of two tests never share an address.
_VIP_NET = 200 + os.getpid() % 50
_vip_counter = itertools.count(1)


@contextlib.contextmanager
def engines_state_dir() -> Iterator[Path]:
    """A short state directory for agents (unix socket paths are limited to 107 bytes), removed afterwards;
    any HAProxy or UDP proxy still running with a config from it is killed and fails the test."""
    directory = Path(tempfile.mkdtemp(prefix="qa-"))
    try:
        yield directory
    finally:
        leftovers = haproxy_pids(directory) + udp_proxy_pids(directory)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
        assert not leftovers, f"haproxy or UDP proxy processes {leftovers} outlived the test"


# --- backends ----------------------------------------------------------------------------------------------------


class Backend:
    """A member on 127.0.0.1 that answers every GET with its own name. `stop()` closes its port, `start()`
    opens the same port again."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._server: backends.Backend | None = None
        self.start()

    def start(self) -> None:
        self._server = backends.Backend(self.name, "127.0.0.1", self.port).start()
        self.port = self._server.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
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
        return [c.get(f"http://{vip}:{port}/").raise_for_status().text.strip() for _ in range(count)]


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 8.0) -> Any:
    """Poll `condition` until it is truthy (and return it); fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def numbered(factory: Callable[[str], Any], prefix: str) -> Iterator[Callable[[int], list[Any]]]:
    """A fixture body: `start(n)` starts `n` servers named <prefix>0, <prefix>1, ... (numbered across calls);
    all are stopped after the test."""
    started: list[Any] = []

    def start(count: int) -> list[Any]:
        new = [factory(f"{prefix}{len(started) + i}") for i in range(count)]
        started.extend(new)
        return new

    yield start
    for server in started:
        server.stop()
