"""Mutual TLS: only the controller's certificate from our CA gets a request through, and the controller
talks only to agents whose certificate is from our CA. Every refusal happens before the agent is called."""

from __future__ import annotations

import httpx
import pytest

from quadriga.agent.api import AgentServer, Identity, create_app
from quadriga.agent.client import AgentClient, AgentUnavailable
from tests.agent_api.fakes import FakeAgent, spec, ssl_context


def test_the_controller_certificate_is_accepted(client: AgentClient, agent: FakeAgent) -> None:
    report = client.apply("engine-1", spec(revision=3))
    assert (report.engine_id, report.revision, report.running) == ("engine-1", 3, True)
    assert agent.mutations == [("apply", "engine-1")]
    info = client.info()
    assert (info.name, info.network_driver, info.haproxy_version) == ("agent-1", "loopback", "2.6.12")
    assert info.certificate_not_after is not None


def _refused(server: AgentServer, context) -> None:
    with (
        httpx.Client(base_url=server.url, verify=context, trust_env=False, timeout=5) as http,
        pytest.raises(httpx.TransportError),
    ):
        http.put("/v1/engines/engine-1", json=spec().model_dump(mode="json"))


def test_no_client_certificate_is_refused(server: AgentServer, ours, agent: FakeAgent) -> None:
    _refused(server, ssl_context(ours.agent.ca))
    assert agent.calls == []


def test_a_client_certificate_from_another_ca_is_refused(server: AgentServer, ours, foreign, agent: FakeAgent) -> None:
    _refused(server, ssl_context(ours.agent.ca, foreign.controller))
    assert agent.calls == []


def test_an_agent_certificate_cannot_act_as_the_controller(server: AgentServer, ours, agent: FakeAgent) -> None:
    # Same CA, but issued for serverAuth only: it must not open the API to another agent.
    _refused(server, ssl_context(ours.agent.ca, ours.agent))
    assert agent.calls == []


def test_the_client_refuses_an_agent_from_another_ca(ours, foreign) -> None:
    impostor = FakeAgent()
    app = create_app(impostor, Identity("impostor", "loopback"))
    with (
        AgentServer(app, foreign.agent, "127.0.0.1", 0) as rogue,
        AgentClient(rogue.url, ours.controller) as client,
        pytest.raises(AgentUnavailable, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.apply("engine-1", spec())
    assert impostor.calls == []


def test_the_client_checks_the_agent_address(ours) -> None:
    # Our CA, but the certificate names 127.0.0.1, ::1, localhost and agent-1, and 127.0.0.2 is none of them.
    elsewhere = FakeAgent()
    with (
        AgentServer(create_app(elsewhere, Identity("agent-1", "loopback")), ours.agent, "127.0.0.2", 0) as other,
        AgentClient(other.url, ours.controller) as client,
        pytest.raises(AgentUnavailable, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.apply("engine-1", spec())
    assert elsewhere.calls == []
