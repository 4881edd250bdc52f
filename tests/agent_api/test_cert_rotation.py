"""Agent certificate rotation over real mutual TLS: the agent presents the renewed certificate in the next
handshake without restarting, refuses certificates it cannot use (keeping its own), and the controller's
rotation marks the engines busy, records the new expiry, and retries an agent that was down."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from quadriga.agent.api import AgentServer, Identity, create_app
from quadriga.agent.certificate import AgentCertificate
from quadriga.agent.client import AgentClient, AgentError
from quadriga.certs import pki
from quadriga.controller.certificates import CertificateRotation
from quadriga.db import models as m
from quadriga.db.migrate import upgrade
from quadriga.db.session import Database
from tests.agent_api.conftest import AGENT_NAME, Pki, make_pki
from tests.agent_api.fakes import FakeAgent

SHORT = 60 / 86400  # one minute, in days


@dataclass
class Rig:
    state_dir: Path
    pki: Pki
    ca: pki.CertificateAuthority
    certificate: AgentCertificate
    server: AgentServer
    client: AgentClient

    def restart_server(self, port: int = 0) -> None:
        """A new agent process on `port`: it loads the bundle from disk, as a restarted agent does."""
        self.certificate = AgentCertificate(self.pki.agent)
        app = create_app(FakeAgent(), Identity(AGENT_NAME, "loopback", certificate=self.certificate))
        self.server = AgentServer(app, self.pki.agent, "127.0.0.1", port, certificate=self.certificate)
        self.server.start()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    keys = make_pki(tmp_path)
    ca = pki.CertificateAuthority.load_or_create(pki.pki_dir(tmp_path))
    certificate = AgentCertificate(keys.agent)
    app = create_app(FakeAgent(), Identity(AGENT_NAME, "loopback", certificate=certificate))
    server = AgentServer(app, keys.agent, "127.0.0.1", 0, certificate=certificate)
    server.start()
    client = AgentClient(server.url, keys.controller)
    rig = Rig(tmp_path, keys, ca, certificate, server, client)
    try:
        yield rig
    finally:
        rig.client.close()
        rig.server.stop()


def test_a_renewed_certificate_is_presented_at_the_next_handshake_without_restart(rig: Rig) -> None:
    before = rig.client.presented_certificate()
    assert rig.client.info().certificate_serial == f"{before.serial_number:X}"  # a pooled connection from now on
    new_pem = rig.ca.sign_request(rig.client.request_certificate(), AGENT_NAME, days=2)
    info = rig.client.install_certificate(new_pem)
    after = rig.client.presented_certificate()
    new_serial = pki.x509.load_pem_x509_certificate(new_pem).serial_number
    assert after.serial_number == new_serial != before.serial_number
    assert info.certificate_serial == f"{new_serial:X}"
    assert after.not_valid_after_utc < before.not_valid_after_utc  # 2 days, where the first had a year
    assert after.subject == before.subject and after.extensions.get_extension_for_class(
        pki.x509.SubjectAlternativeName
    ) == before.extensions.get_extension_for_class(pki.x509.SubjectAlternativeName)
    assert rig.server.running
    # On disk too, so a restarted agent presents it; nothing staged is left behind.
    assert rig.pki.agent.cert.read_bytes() == new_pem
    assert sorted(p.name for p in rig.pki.agent.cert.parent.iterdir() if p.name.endswith(".new")) == []
    port = rig.server.port
    rig.server.stop()
    rig.restart_server(port)
    assert rig.client.presented_certificate().serial_number == new_serial


def _refused(rig: Rig, cert_pem: bytes, status: int, match: str) -> None:
    before = rig.client.presented_certificate().serial_number
    files = rig.pki.agent.cert.read_bytes(), rig.pki.agent.key.read_bytes()
    with pytest.raises(AgentError, match=match) as caught:
        rig.client.install_certificate(cert_pem)
    assert caught.value.status == status
    assert rig.client.presented_certificate().serial_number == before
    assert (rig.pki.agent.cert.read_bytes(), rig.pki.agent.key.read_bytes()) == files


def test_a_certificate_from_another_ca_is_refused(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("other-ca")
    foreign_ca = pki.CertificateAuthority.load_or_create(pki.pki_dir(other))
    forged = foreign_ca.sign_request(rig.client.request_certificate(), AGENT_NAME)
    _refused(rig, forged, 400, "not signed by this agent's CA")


def test_a_certificate_for_another_key_is_refused(rig: Rig) -> None:
    rig.client.request_certificate()
    cert_pem, _key = pki.issue_agent(rig.ca, AGENT_NAME, ["127.0.0.1"])  # our CA, but not the pending key
    _refused(rig, cert_pem, 400, "not for the key of the pending signing request")


def test_a_certificate_without_a_pending_request_or_garbage_is_refused(rig: Rig) -> None:
    cert_pem, _key = pki.issue_agent(rig.ca, AGENT_NAME, ["127.0.0.1"])
    _refused(rig, cert_pem, 409, "no certificate signing request is pending")
    rig.client.request_certificate()
    _refused(rig, b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", 400, "not a PEM")
    response = rig.client._http.put("/v1/certificate", json={"cert": "x"})  # the wrong body
    assert response.status_code == 400 and "certificate" in response.json()["faultstring"]


def test_a_client_certificate_is_refused_as_the_agent_certificate(rig: Rig) -> None:
    # Signed by our CA for the pending key, but for the controller's role: the agent must not serve with it.
    csr = pki.x509.load_pem_x509_csr(rig.client.request_certificate())
    cert_pem = rig.ca._sign(csr.public_key(), AGENT_NAME, [], server=False, client=True, days=1)
    _refused(rig, cert_pem, 400, "not for a TLS server")


def test_an_interrupted_replacement_is_completed_or_dropped(tmp_path: Path) -> None:
    bundle = make_pki(tmp_path).agent
    ca = pki.CertificateAuthority.load_or_create(pki.pki_dir(tmp_path))
    new_cert, new_key = pki.issue_agent(ca, AGENT_NAME, [])
    staged_cert = bundle.cert.with_name(bundle.cert.name + ".new")
    staged_key = bundle.key.with_name(bundle.key.name + ".new")
    # A crash after the key was renamed into place, before the certificate was.
    pki.write_file(staged_cert, new_cert)
    pki.write_file(bundle.key, new_key, secret=True)
    AgentCertificate(bundle)
    assert (bundle.cert.read_bytes(), bundle.key.read_bytes()) == (new_cert, new_key)
    assert not staged_cert.exists()
    # A crash while staging the key: the current pair stays.
    pki.write_file(staged_key, b"half a key")
    AgentCertificate(bundle)
    assert (bundle.cert.read_bytes(), bundle.key.read_bytes()) == (new_cert, new_key)
    assert not staged_key.exists()


# --- the controller's rotation --------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'q.sqlite'}")
    upgrade(database.engine)
    with database.write() as session:
        session.add_all(
            [
                m.Amphora(id="amp-1", load_balancer_id="lb-1", agent=AGENT_NAME, status="ALLOCATED"),
                m.Amphora(id="amp-2", load_balancer_id="lb-2", agent="agent-2", status="ALLOCATED"),
            ]
        )
    yield database
    database.dispose()


def _amphora(db: Database, amp_id: str) -> m.Amphora:
    with db.read() as session:
        amp = session.scalars(select(m.Amphora).where(m.Amphora.id == amp_id)).one()
        session.expunge(amp)
        return amp


def test_rotation_renews_a_certificate_due_for_renewal_and_records_it(rig: Rig, db: Database) -> None:
    busy_while_signing: list[bool] = []

    def sign(csr: bytes, name: str) -> bytes:
        busy_while_signing.append(_amphora(db, "amp-1").cert_busy)
        return rig.ca.sign_request(csr, name, days=SHORT * 10)

    first = rig.client.presented_certificate()
    # What the server knew at start: the rows are still written at the first pass (they may be older).
    known = {AGENT_NAME: first.not_valid_after_utc}
    not_due = CertificateRotation(
        db, {AGENT_NAME: rig.client}, sign, renew_before=dt.timedelta(days=30), expirations=known
    )
    # The first certificate has a year: not due with 30 days' notice, due with 400.
    assert not_due.run_once() == 0 and busy_while_signing == []
    assert _amphora(db, "amp-1").cert_expiration == first.not_valid_after_utc.replace(tzinfo=None)
    due = CertificateRotation(db, {AGENT_NAME: rig.client}, sign, renew_before=dt.timedelta(days=400))
    assert due.run_once() == 1
    second = rig.client.presented_certificate()
    assert second.serial_number != first.serial_number
    amp = _amphora(db, "amp-1")
    assert busy_while_signing == [True] and amp.cert_busy is False
    assert amp.cert_expiration == second.not_valid_after_utc.replace(tzinfo=None)
    assert _amphora(db, "amp-2").cert_expiration is None  # another agent's engine


def test_rotation_while_the_agent_is_down_is_logged_once_and_retried(
    rig: Rig, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    sign_calls: list[str] = []

    def sign(csr: bytes, name: str) -> bytes:
        sign_calls.append(name)
        return rig.ca.sign_request(csr, name, days=SHORT * 10)

    rotation = CertificateRotation(db, {AGENT_NAME: rig.client}, sign, renew_before=dt.timedelta(days=400))
    before = rig.pki.agent.cert.read_bytes()
    port = rig.server.port
    rig.server.stop()
    with caplog.at_level(logging.WARNING, logger="quadriga.certificates"):
        assert rotation.run_once() == 0
        assert rotation.run_once() == 0
    warnings = [r for r in caplog.records if r.name == "quadriga.certificates" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "logged once" in warnings[0].getMessage()
    assert sign_calls == [] and rig.pki.agent.cert.read_bytes() == before
    amp = _amphora(db, "amp-1")
    assert amp.cert_busy is False and amp.cert_expiration is None
    rig.restart_server(port)
    assert rotation.run_once() == 1
    assert sign_calls == [AGENT_NAME]
    assert rig.client.presented_certificate().not_valid_after_utc < dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert _amphora(db, "amp-1").cert_expiration is not None


def test_rotation_when_the_agent_dies_between_request_and_install(rig: Rig, db: Database) -> None:
    """The agent restarts after answering the signing request: its pending key is gone, so the install is
    refused (409), nothing changes, and the next pass renews it from a new request."""
    port = rig.server.port

    def sign_then_restart(csr: bytes, name: str) -> bytes:
        rig.server.stop()
        rig.restart_server(port)
        return rig.ca.sign_request(csr, name, days=SHORT * 10)

    rotation = CertificateRotation(db, {AGENT_NAME: rig.client}, sign_then_restart, renew_before=dt.timedelta(400))
    before = rig.client.presented_certificate().serial_number
    assert rotation.run_once() == 0
    assert rig.client.presented_certificate().serial_number == before
    assert _amphora(db, "amp-1").cert_busy is False
    rotation.sign = lambda csr, name: rig.ca.sign_request(csr, name, days=SHORT * 10)
    assert rotation.run_once() == 1
    assert rig.client.presented_certificate().serial_number != before
