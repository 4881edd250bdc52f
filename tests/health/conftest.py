"""Fixtures for the heartbeat tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from quadriga.providers.engine import EngineProvider
from tests.support.api_harness import Api, make_api
from tests.support.scripted_agent import ScriptedAgent


@pytest.fixture
def udp_capture() -> Iterator[socket.socket]:
    """A plain UDP socket on 127.0.0.1 that tests read datagrams from."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


@pytest.fixture
def agent() -> ScriptedAgent:
    return ScriptedAgent()


@pytest.fixture
def api(tmp_path, agent: ScriptedAgent) -> Iterator[Api]:
    """The real API and reconciler on a real database, with engines on a scripted agent."""
    yield from make_api(tmp_path, extra_providers=lambda db: {"amphora": EngineProvider(db, {"agent-1": agent})})
