"""The real `openstack secret ...` CLI (python-barbicanclient) against `quadriga serve`'s secret store, through
the clouds.yaml serve itself prints; the remote client (RemoteSecrets) against the same running store; and
the bad inputs over plain HTTP (a 10 MB payload does not fit in a command line).

One server of its own (noop provider, SQLite): the store's PostgreSQL path is covered in-process
(test_api.py), so these slow CLI runs are not repeated with tests/clients on PostgreSQL."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.keymanager import KeyManagerUnavailable, SecretNotFound
from quadriga.keymanager.remote import RemoteSecrets
from tests.clients.conftest import OpenStackCLI
from tests.support.certs import TestCA
from tests.support.server import QuadrigaServer, free_port

pytestmark = pytest.mark.clients
DEFAULT_PROJECT = "demo"


@pytest.fixture(scope="module")
def quadriga_server() -> Iterator[QuadrigaServer]:
    with QuadrigaServer(default_project=DEFAULT_PROJECT, provider="noop", network_driver="loopback") as server:
        yield server


@pytest.fixture(scope="module")
def secret_cli(quadriga_server: QuadrigaServer) -> OpenStackCLI:
    """The CLI configured by the clouds.yaml `serve` wrote, not a test-made one."""
    executable = Path(sys.executable).parent / "openstack"
    if not executable.exists():
        pytest.skip(f"the openstack CLI is not installed next to {sys.executable}")
    assert quadriga_server.state_dir is not None
    return OpenStackCLI(executable, quadriga_server.client_env(quadriga_server.state_dir / "clouds.yaml"))


@pytest.fixture(scope="module")
def http(quadriga_server: QuadrigaServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=quadriga_server.keymanager_url, trust_env=False, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def server_db(quadriga_server: QuadrigaServer) -> Iterator[Database]:
    assert quadriga_server.state_dir is not None
    db = Database(f"sqlite:///{quadriga_server.state_dir / 'quadriga.sqlite'}")
    yield db
    db.dispose()


def store(cli: OpenStackCLI, *args: str) -> str:
    return cli("secret", "store", *args, fmt=True)["Secret href"]


def listener_using(db: Database, **refs: Any) -> str:
    """A listener row holding `refs`, as the load-balancer API would store it (no engine behind it)."""
    with db.write() as s:
        lb = m.LoadBalancer(
            project_id=DEFAULT_PROJECT, provider="noop", provisioning_status="ACTIVE", applied_revision=1
        )
        s.add(lb)
        s.flush()
        listener = m.Listener(
            project_id=DEFAULT_PROJECT, load_balancer_id=lb.id, protocol="TERMINATED_HTTPS", protocol_port=443, **refs
        )
        s.add(listener)
    return listener.id


def test_store_get_list_container_and_delete_guard(secret_cli, server_db, http, quadriga_server, tmp_path):
    ca = TestCA()
    issued = ca.issue("cli.example.test", ["cli.example.test"])
    cert = store(secret_cli, "--name", "cli-cert", "-t", "text/plain", "-s", "certificate", "-p", issued.cert_pem)
    key = store(secret_cli, "--name", "cli-key", "-t", "text/plain", "-s", "private", "-p", issued.key_pem)
    bundle = issued.pkcs12()
    p12 = store(
        secret_cli, "--name", "cli-p12", "-t", "application/octet-stream", "-e", "base64",
        "-p", base64.b64encode(bundle).decode(),
    )  # fmt: skip
    shown = secret_cli("secret", "get", cert, fmt=True)
    assert shown["Status"] == "ACTIVE" and shown["Secret type"] == "certificate"
    assert secret_cli("secret", "get", cert, "--payload", fmt=True)["Payload"] == issued.cert_pem.strip()
    out = tmp_path / "bundle.p12"
    secret_cli("secret", "get", p12, "--file", str(out), "-t", "application/octet-stream", fmt=False)
    assert out.read_bytes() == bundle
    listed = {s["Name"]: s["Secret href"] for s in secret_cli("secret", "list", "--limit", "100")}
    assert {"cli-cert": cert, "cli-key": key, "cli-p12": p12}.items() <= listed.items()

    container = secret_cli(
        "secret", "container", "create", "--name", "cli-tls", "--type", "certificate",
        "--secret", f"certificate={cert}", "--secret", f"private_key={key}",
    )["Container href"]  # fmt: skip
    assert container in [c["Container href"] for c in secret_cli("secret", "container", "list")]

    listener_id = listener_using(server_db, default_tls_container_ref=container)
    for args in (("secret", "container", "delete", container), ("secret", "delete", key)):
        message = secret_cli.fails(*args)
        assert "409" in message or "Conflict" in message, message
        assert listener_id in message
    with server_db.write() as s:
        s.get(m.Listener, listener_id).provisioning_status = "DELETED"
    secret_cli("secret", "container", "delete", container)
    secret_cli("secret", "delete", key)
    project = {"X-Project-Id": DEFAULT_PROJECT}
    assert http.get(container.removeprefix(quadriga_server.keymanager_url), headers=project).status_code == 404
    assert http.get(key.removeprefix(quadriga_server.keymanager_url), headers=project).status_code == 404
    assert http.get(cert.removeprefix(quadriga_server.keymanager_url), headers=project).status_code == 200


def test_cli_bad_input_and_other_projects_ref(secret_cli, http):
    message = secret_cli.fails(
        "secret", "store", "-t", "application/octet-stream", "-e", "base64", "-p", "@@not base64@@", fmt=True
    )
    assert "Invalid payload for payload_content_encoding" in message
    r = http.post(
        "/v1/secrets",
        json={"payload": "theirs", "payload_content_type": "text/plain"},
        headers={"X-Project-Id": "other"},
    )
    assert r.status_code == 201
    message = secret_cli.fails("secret", "get", r.json()["secret_ref"], "--payload", fmt=True)
    assert "Not Found" in message and "theirs" not in message


def test_http_bad_input_is_refused_with_barbicans_body(http):
    before = http.get("/v1/secrets", headers={"X-Project-Id": "bad-input"}).json()["total"]
    huge = base64.b64encode(b"\x00" * (10 * 1024 * 1024)).decode()
    body = {"payload": huge, "payload_content_type": "application/octet-stream", "payload_content_encoding": "base64"}
    r = http.post("/v1/secrets", json=body, headers={"X-Project-Id": "bad-input"})
    assert r.status_code == 413 and r.json()["title"] == "Request Entity Too Large"
    r = http.post("/v1/secrets", content=b"\xff\xfe garbage", headers={"X-Project-Id": "bad-input"})
    assert r.status_code == 400 and r.json() == {"code": 400, "title": "Bad Request", "description": "Malformed JSON"}
    assert http.get("/v1/secrets", headers={"X-Project-Id": "bad-input"}).json()["total"] == before


def test_remote_client_reads_the_running_store_by_url(quadriga_server, http):
    ca = TestCA()
    issued = ca.issue("remote.example.test")
    headers = {"X-Project-Id": "remote"}
    cert = http.post(
        "/v1/secrets", json={"payload": issued.cert_pem, "payload_content_type": "text/plain"}, headers=headers
    ).json()["secret_ref"]
    body = {"type": "certificate", "secret_refs": [{"name": "certificate", "secret_ref": cert}]}
    container = http.post("/v1/containers", json=body, headers=headers).json()["container_ref"]
    remote = RemoteSecrets(quadriga_server.keymanager_url + "/v1")
    try:
        assert remote.fetch(cert, "remote").secret.payload == issued.cert_pem.strip().encode()
        fetched = remote.fetch(container, "remote")
        assert fetched.container_type == "certificate"
        assert fetched.secrets["certificate"].payload == issued.cert_pem.strip().encode()
        # The ref's host is not where it is looked up: the configured store is.
        assert remote.fetch(cert.replace("127.0.0.1", "barbican.invalid"), "remote").secret is not None
        with pytest.raises(SecretNotFound):
            remote.fetch(cert, "someone-else")
    finally:
        remote.close()
    down = RemoteSecrets(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(KeyManagerUnavailable):
            down.fetch(cert, "remote")
    finally:
        down.close()


def test_the_octavia_cookbook_tls_flow_with_the_cli(secret_cli):
    """Octavia's "TLS-terminated HTTPS load balancer" cookbook with the real CLI: a PKCS12 stored with
    `openstack secret store`, a TERMINATED_HTTPS listener that refers to it; a garbage secret is refused.
    The load balancer is the amphora provider's (an engine): the noop provider loads no certificate."""
    issued = TestCA().issue("cookbook.example.test", ["cookbook.example.test"])
    p12 = store(
        secret_cli, "--name", "cookbook", "-t", "application/octet-stream", "-e", "base64",
        "-p", base64.b64encode(issued.pkcs12()).decode(),
    )  # fmt: skip
    garbage = store(secret_cli, "--name", "garbage", "-t", "text/plain", "-p", "not a certificate")
    lb = secret_cli(
        "loadbalancer", "create", "--name", "cookbook", "--vip-subnet-id", "private-subnet", "--provider", "amphora",
        "--wait", fmt=True,
    )  # fmt: skip
    try:
        listener = secret_cli(
            "loadbalancer", "listener", "create", "--name", "https", "--protocol", "TERMINATED_HTTPS",
            "--protocol-port", "443", "--default-tls-container-ref", p12, "--wait", lb["id"], fmt=True,
        )  # fmt: skip
        assert (listener["default_tls_container_ref"], listener["provisioning_status"]) == (p12, "ACTIVE")
        message = secret_cli.fails(
            "loadbalancer", "listener", "create", "--protocol", "TERMINATED_HTTPS", "--protocol-port", "8443",
            "--default-tls-container-ref", garbage, lb["id"], fmt=True,
        )  # fmt: skip
        assert f"Could not retrieve certificate: ['{garbage}']" in message, message
        assert "(HTTP 400)" in message, message
        assert "in use" in secret_cli.fails("secret", "delete", p12)
    finally:
        secret_cli("loadbalancer", "delete", "--cascade", "--wait", lb["id"])
    secret_cli("secret", "delete", p12)
