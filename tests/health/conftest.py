"""Fixtures for the heartbeat tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.scripted_agent import engine_api, scripted_agent


@pytest.fixture
def udp_capture() -> Iterator[socket.socket]:
    """A plain UDP socket on 127.0.0.1 that tests read datagrams from."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


agent = pytest.fixture(scripted_agent, name="agent")
api = pytest.fixture(engine_api, name="api")
