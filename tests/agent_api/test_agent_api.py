"""The agent API's answers: reports on success, Octavia's fault body with the right 4xx on every bad input,
and the agent left untouched whenever a request is refused."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from quadriga.agent.api import AgentServer
from quadriga.agent.client import AgentClient, AgentRejected, AgentStale, AgentUnavailable
from quadriga.agent.haproxy import HaproxyError
from quadriga.network.drivers.base import NetworkError
from tests.agent_api.fakes import FakeAgent, spec, spec_json, ssl_context

MIB = 1024 * 1024


def _fault(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"faultcode", "faultstring", "debuginfo"}
    assert body["faultcode"] == ("Client" if status < 500 else "Server")
    return body["faultstring"]


def test_apply_list_get_delete(client: AgentClient, agent: FakeAgent) -> None:
    client.apply("engine-1", spec(revision=1))
    client.apply("engine-2", spec(revision=7, lb="lb-2"))
    assert sorted((r.engine_id, r.revision) for r in client.reports()) == [("engine-1", 1), ("engine-2", 7)]
    report = client.report("engine-2")
    assert report is not None and report.loadbalancer_id == "lb-2"
    client.remove("engine-2")
    assert client.report("engine-2") is None


def test_delete_is_idempotent(http: httpx.Client, agent: FakeAgent) -> None:
    assert http.put("/v1/engines/engine-1", json=spec_json()).status_code == 200
    assert http.delete("/v1/engines/engine-1").status_code == 204
    assert http.delete("/v1/engines/engine-1").status_code == 204
    assert "engine-1" not in agent.engines


def test_unknown_engine_is_404(http: httpx.Client, client: AgentClient) -> None:
    assert "engine-9" in _fault(http.get("/v1/engines/engine-9"), 404)
    assert client.report("engine-9") is None


def test_malformed_json_is_400(http: httpx.Client, agent: FakeAgent) -> None:
    message = _fault(http.put("/v1/engines/engine-1", content=b'{"revision": 1,'), 400)
    assert message.startswith("Invalid engine spec:")
    _fault(http.put("/v1/engines/engine-1", content=b""), 400)
    _fault(http.put("/v1/engines/engine-1", content=b"\xff\xfe not utf-8"), 400)
    assert agent.mutations == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"revision": -1}, "revision"),
        ({"vips": ["not-an-ip"]}, "vips.0"),
        ({"listeners": [{"id": "l1", "protocol": "HTTP", "protocol_port": 80, "default_pool_id": "nope"}]}, "nope"),
        ({"surprise": True}, "surprise"),
        ({"loadbalancer_id": "a b"}, "loadbalancer_id"),
    ],
)
def test_a_spec_that_fails_validation_is_400(http: httpx.Client, agent: FakeAgent, change: dict, where: str) -> None:
    body = spec_json() | change
    message = _fault(http.put("/v1/engines/engine-1", json=body), 400)
    assert message.startswith("Invalid engine spec:") and where in message
    assert agent.mutations == []


def test_a_json_body_that_is_no_object_is_400(http: httpx.Client, agent: FakeAgent) -> None:
    _fault(http.put("/v1/engines/engine-1", json=[1, 2]), 400)
    assert agent.mutations == []


def test_a_bad_engine_id_is_400(http: httpx.Client, client: AgentClient, agent: FakeAgent) -> None:
    assert "not valid" in _fault(http.put("/v1/engines/bad id", json=spec_json()), 400)
    _fault(http.get("/v1/engines/bad id"), 400)
    _fault(http.delete("/v1/engines/bad id"), 400)
    with pytest.raises(AgentRejected):
        client.apply("..", spec())
    assert agent.engines == {}


def _oversized(size: int) -> bytes:
    # Valid JSON, so only the size can be the reason for refusing it.
    body = spec_json()
    body["listeners"][0]["id"] = "l1"
    padding = size - len(json.dumps(body))
    return json.dumps(body).replace('"revision": 1', '"revision": 1' + " " * padding).encode()


def test_an_oversized_body_is_413(http: httpx.Client, agent: FakeAgent) -> None:
    response = http.put("/v1/engines/engine-1", content=_oversized(2 * MIB))
    assert "limit" in _fault(response, 413)
    assert agent.calls == []


def test_an_oversized_chunked_body_is_413(http: httpx.Client, agent: FakeAgent) -> None:
    body = _oversized(2 * MIB)

    def chunks():
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    response = http.put("/v1/engines/engine-1", content=chunks())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    _fault(response, 413)
    assert agent.calls == []


def test_an_invalid_content_length_is_refused(server: AgentServer, ours, agent: FakeAgent) -> None:
    context = ssl_context(ours.agent.ca, ours.controller)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"PUT /v1/engines/engine-1 HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
        answer = tls.recv(65536)
    assert answer.split(b"\r\n", 1)[0].split()[1] == b"400"
    assert agent.calls == []


def test_a_body_at_the_limit_is_accepted(http: httpx.Client, agent: FakeAgent) -> None:
    assert http.put("/v1/engines/engine-1", content=_oversized(MIB)).status_code == 200


def test_a_stale_revision_is_409(http: httpx.Client, client: AgentClient, agent: FakeAgent) -> None:
    client.apply("engine-1", spec(revision=5))
    message = _fault(http.put("/v1/engines/engine-1", json=spec_json(revision=4)), 409)
    assert "revision 5" in message
    with pytest.raises(AgentStale, match="revision 5"):
        client.apply("engine-1", spec(revision=3))
    assert agent.engines["engine-1"].revision == 5


def test_a_config_haproxy_rejects_is_422_with_its_reason(http: httpx.Client, client: AgentClient, agent) -> None:
    client.apply("engine-1", spec(revision=1))
    agent.reject_with = "[ALERT] parsing [haproxy.cfg:12]: unknown keyword 'bogus'"
    assert _fault(http.put("/v1/engines/engine-1", json=spec_json(revision=2)), 422) == agent.reject_with
    with pytest.raises(AgentRejected) as caught:
        client.apply("engine-1", spec(revision=2))
    assert (caught.value.status, caught.value.message) == (422, agent.reject_with)
    assert agent.engines["engine-1"].revision == 1  # the old config keeps running


def test_a_network_failure_is_503_and_retryable(http: httpx.Client, client: AgentClient, agent: FakeAgent) -> None:
    agent.fail_with = NetworkError("ip link add failed: File exists")
    assert "File exists" in _fault(http.put("/v1/engines/engine-1", json=spec_json()), 503)
    with pytest.raises(AgentUnavailable, match="File exists"):
        client.apply("engine-1", spec())


def test_haproxy_failing_without_a_verdict_is_503_and_retryable(
    http: httpx.Client, client: AgentClient, agent: FakeAgent
) -> None:
    agent.fail_with = HaproxyError("haproxy -c was killed by signal 9 before it judged haproxy.cfg.new")
    assert "killed by signal 9" in _fault(http.put("/v1/engines/engine-1", json=spec_json()), 503)
    with pytest.raises(AgentUnavailable, match="killed"):
        client.apply("engine-1", spec())


@pytest.mark.parametrize("failure", [NetworkError("netns del failed: Device busy"), HaproxyError("survived SIGKILL")])
def test_a_removal_that_fails_is_503_and_retryable(
    http: httpx.Client, client: AgentClient, agent: FakeAgent, failure: Exception
) -> None:
    assert http.put("/v1/engines/engine-1", json=spec_json()).status_code == 200
    agent.fail_with = failure
    assert str(failure) in _fault(http.delete("/v1/engines/engine-1"), 503)
    with pytest.raises(AgentUnavailable):
        client.remove("engine-1")
    agent.fail_with = None
    client.remove("engine-1")
    assert "engine-1" not in agent.engines


def test_an_agent_failure_is_500_and_retryable(http: httpx.Client, client: AgentClient, agent: FakeAgent) -> None:
    agent.fail_with = RuntimeError("disk full")
    assert "disk full" in _fault(http.put("/v1/engines/engine-1", json=spec_json()), 500)
    with pytest.raises(AgentUnavailable, match="disk full"):
        client.apply("engine-1", spec())


def test_framework_errors_use_the_fault_body(http: httpx.Client) -> None:
    _fault(http.get("/v1/nothing-here"), 404)
    _fault(http.post("/v1/engines/engine-1", json={}), 405)
    assert http.get("/docs").status_code == 404


def test_an_unreachable_agent_is_unavailable(ours) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it
    with AgentClient(f"https://127.0.0.1:{port}", ours.controller) as client, pytest.raises(AgentUnavailable):
        client.reports()
