"""Agent tests run real HAProxy engines on 127.x VIPs (the loopback network driver) in front of real HTTP
backends on 127.0.0.1, and send real traffic through them.

Every test gets a short state directory of its own (unix socket paths are limited to 107 bytes), agents
that are shut down afterwards, and a safety net that kills any HAProxy still running with a config from
that directory (found through /proc/<pid>/cmdline, so nothing else is touched) and fails the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quadriga.agent.agent import Agent
from quadriga.engine.regex import haproxy_binary
from quadriga.network.drivers.loopback import LoopbackDriver
from tests.agent.helpers import OPTIONS, Backend, engines_state_dir, numbered


@pytest.fixture(scope="session")
def haproxy() -> str:
    binary = haproxy_binary()
    if binary is None:
        pytest.fail("HAProxy is not installed: `apt-get install -y haproxy` (the agent tests run it)", pytrace=False)
    return binary


@pytest.fixture
def state_dir() -> Iterator[Path]:
    with engines_state_dir() as directory:
        yield directory


@pytest.fixture
def make_agent(state_dir: Path, haproxy: str) -> Iterator[Callable[[], Agent]]:
    """Makes agents on the test's state dir; the last one made is shut down after the test (an earlier one
    plays an agent that crashed)."""
    made: list[Agent] = []

    def make() -> Agent:
        made.append(Agent(state_dir, LoopbackDriver(), haproxy=haproxy, options=OPTIONS))
        return made[-1]

    yield make
    if made:
        made[-1].shutdown()


@pytest.fixture
def agent(make_agent: Callable[[], Agent]) -> Agent:
    return make_agent()


@pytest.fixture
def backends() -> Iterator[Callable[[int], list[Backend]]]:
    """Starts `n` backends named b0, b1, ... (see `numbered`)."""
    yield from numbered(Backend, "b")
