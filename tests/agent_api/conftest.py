"""The agent API over real mutual TLS: a real uvicorn on an ephemeral loopback port, real certificates from
our PKI (and from a second, foreign CA), and a fake in place of `Agent` (the real one is tested elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from quadriga.agent.api import AgentServer, Identity, create_app
from quadriga.agent.certificate import AgentCertificate
from quadriga.agent.client import AgentClient, client_ssl_context
from quadriga.certs import pki
from tests.agent_api.fakes import FakeAgent

AGENT_NAME = "agent-1"


@dataclass(frozen=True)
class Pki:
    controller: pki.Bundle
    agent: pki.Bundle


def make_pki(state_dir: Path) -> Pki:
    return Pki(
        controller=pki.ensure_controller_bundle(state_dir),
        agent=pki.ensure_local_agent_bundle(state_dir, AGENT_NAME, ["127.0.0.1"]),
    )


@pytest.fixture(scope="session")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("ours"))


@pytest.fixture(scope="session")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Bundles from a second CA: certificates that look right but that our side must not trust."""
    return make_pki(tmp_path_factory.mktemp("foreign"))


@pytest.fixture(scope="session")
def fake_agent() -> FakeAgent:
    return FakeAgent()


@pytest.fixture(scope="session")
def server(ours: Pki, fake_agent: FakeAgent) -> Iterator[AgentServer]:
    identity = Identity(AGENT_NAME, "loopback", "2.6.12", AgentCertificate(ours.agent))
    app = create_app(fake_agent, identity, max_body=1024 * 1024)
    with AgentServer(app, ours.agent, "127.0.0.1", 0) as running:
        yield running


@pytest.fixture
def agent(fake_agent: FakeAgent) -> FakeAgent:
    fake_agent.reset()
    return fake_agent


@pytest.fixture
def client(server: AgentServer, ours: Pki, agent: FakeAgent) -> Iterator[AgentClient]:
    with AgentClient(server.url, ours.controller) as c:
        yield c


@pytest.fixture
def http(server: AgentServer, ours: Pki, agent: FakeAgent) -> Iterator[httpx.Client]:
    """A plain HTTP client with the controller's certificate, for requests AgentClient would never send."""
    with httpx.Client(base_url=server.url, verify=client_ssl_context(ours.controller), trust_env=False) as c:
        yield c
