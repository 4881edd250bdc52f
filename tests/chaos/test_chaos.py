"""The chaos suite: a seeded stream of creates, updates and deletes while `serve` (controller and agent),
HAProxy masters and workers are SIGKILLed at random moments and engines' namespaces are deleted. Once the
faults stop, within 30 s: nothing is PENDING_*, the database holds what the API acknowledged, and every VIP
serves what the database says (see `checks`). Then deleting everything and stopping serve leaves nothing.

A failure names its seed; replay it with QUADRIGA_CHAOS_SEED=<seed> (a comma-separated list runs several)
and QUADRIGA_CHAOS_STEPS=<steps> / QUADRIGA_CHAOS_BUDGET=<seconds> for a longer stream (a stream stops at
whichever limit comes first, so a slow machine plays a prefix of the same stream)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos import checks
from tests.chaos.scenario import Scenario
from tests.support.dataplane import Cloud, haproxy_pids, network_objects, running_cloud
from tests.support.server import KEEP_STATE_ENV

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

SEEDS = [int(s) for s in os.environ.get("QUADRIGA_CHAOS_SEED", "1,2").split(",") if s.strip()]
STEPS = int(os.environ.get("QUADRIGA_CHAOS_STEPS", "60"))
BUDGET = float(os.environ.get("QUADRIGA_CHAOS_BUDGET", "70"))  # seconds of faults per seed, at most
CONVERGE = 30.0  # seconds after the faults stop


@pytest.fixture
def state() -> Iterator[Path]:
    """A short state directory: HAProxy's unix sockets live inside it, and their paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="qc-"))
    yield path / "state"
    if os.environ.get(KEEP_STATE_ENV, "") in ("", "0"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_chaos(state: Path, seed: int) -> None:
    print(f"chaos seed {seed}, {STEPS} steps (replay: QUADRIGA_CHAOS_SEED={seed})")
    with running_cloud(state_dir=state) as cloud:
        scn = Scenario(cloud, seed)
        started = time.monotonic()
        try:
            scn.run(STEPS, BUDGET)
            stopped = time.monotonic()
            left = converge(scn)
            scn.note(f"converged in {time.monotonic() - stopped:.1f} s" if not left else "did not converge")
        finally:
            print("\n".join(scn.journal))
            print(f"seed {seed}: {time.monotonic() - started:.1f} s; the server's warnings and errors:")
            print("\n".join(logged(cloud, " WARNING ", " ERROR ")))
        context = f"seed {seed} (replay with QUADRIGA_CHAOS_SEED={seed}); server log: {cloud.server.log_path}"
        assert not scn.server_errors, f"{context}: the API answered 5xx:\n" + "\n".join(scn.server_errors)
        assert not left, f"{context}: {CONVERGE:.0f} s after the faults stopped:\n" + "\n".join(left)
        assert scn.model.live() or scn.model.deleted(), f"{context}: the scenario created nothing"
        # Every fault here is recoverable: no change may have been declared failed on the way (an object that
        # went to ERROR and back, e.g. a HAProxy killed during a reload taken for a rejected config).
        assert not (errors := logged(cloud, " ERROR ")), f"{context}: the server logged errors:\n" + "\n".join(errors)

        for lb in scn.model.live():
            response = scn.api.delete(f"/v2/lbaas/loadbalancers/{lb.id}", params={"cascade": "true"})
            assert response.status_code == 204, (lb.name, response.status_code, response.text)
        wait_for(lambda: not scn.read("/v2/lbaas/loadbalancers")["loadbalancers"], "every load balancer is gone")
        wait_for(lambda: not haproxy_pids(state), "no HAProxy runs once every load balancer is deleted")
        scn.api.close()
    assert cloud.server.returncode == 0, cloud.server.log_tail()
    assert haproxy_pids(state) == []
    assert network_objects(state) == []
    engines = state / "agent" / "engines"
    assert not engines.exists() or list(engines.iterdir()) == []


def logged(cloud: Cloud, *levels: str) -> list[str]:
    """The server's log lines (over all its restarts) at the given levels."""
    return [line for line in cloud.server.log_tail(1_000_000).splitlines() if any(lv in line for lv in levels)]


def converge(scn: Scenario) -> list[str]:
    """Poll the checks until they all hold or CONVERGE seconds pass; what still fails then."""
    deadline = time.monotonic() + CONVERGE
    while True:
        left = checks.problems(scn)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.2)
