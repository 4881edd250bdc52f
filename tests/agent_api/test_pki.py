"""The control channel's PKI: one CA per state directory, reused; issued certificates that verify against it;
private keys 0600; bundles re-issued before they expire."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from quadriga.certs import pki


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ca_is_created_once_and_reused(tmp_path: Path) -> None:
    first = pki.CertificateAuthority.load_or_create(tmp_path / "pki")
    second = pki.CertificateAuthority.load_or_create(tmp_path / "pki")
    assert first.cert_pem == second.cert_pem
    assert _mode(tmp_path / "pki" / "ca.key") == 0o600
    assert _mode(tmp_path / "pki") == 0o700
    lifetime = first.cert.not_valid_after_utc - first.cert.not_valid_before_utc
    assert lifetime > dt.timedelta(days=3600)


def test_issued_certificates_verify_against_the_ca(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority.load_or_create(tmp_path)
    cert_pem, key_pem = pki.issue_agent(ca, "agent-7", ["10.0.0.7", "edge7.example.com"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(ca.cert)
    assert ca.signed(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1", "10.0.0.7"}
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "agent-7", "edge7.example.com"}
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    other = pki.CertificateAuthority.load_or_create(tmp_path / "other")
    assert not other.signed(cert_pem)
    assert b"PRIVATE KEY" in key_pem


def test_bundles_have_private_keys(tmp_path: Path) -> None:
    controller = pki.ensure_controller_bundle(tmp_path)
    agent = pki.ensure_local_agent_bundle(tmp_path, "agent-1", ["127.0.0.1"])
    assert controller.cert == tmp_path / "pki" / "controller.pem"
    assert agent.key == tmp_path / "pki" / "agents" / "agent-1.key"
    for bundle in (controller, agent):
        assert bundle.exists() and bundle.ca == tmp_path / "pki" / "ca.pem"
        assert _mode(bundle.key) == 0o600
    usage = x509.load_pem_x509_certificate(controller.cert.read_bytes()).extensions
    assert list(usage.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_valid_bundles_are_kept(tmp_path: Path) -> None:
    bundle = pki.ensure_local_agent_bundle(tmp_path, "agent-1", ["127.0.0.1"])
    before = bundle.cert.read_bytes()
    assert pki.ensure_local_agent_bundle(tmp_path, "agent-1", ["127.0.0.1"]).cert.read_bytes() == before


def test_expiring_bundles_are_reissued(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority.load_or_create(pki.pki_dir(tmp_path))
    controller = pki.controller_bundle(tmp_path)
    pki.write_bundle(controller, *ca.issue("quadriga-controller", server=False, client=True, days=20), ca.cert_pem)
    agent = pki.agent_bundle(tmp_path, "agent-1")
    pki.write_bundle(agent, *pki.issue_agent(ca, "agent-1", [], days=20), ca.cert_pem)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    for bundle in (pki.ensure_controller_bundle(tmp_path), pki.ensure_local_agent_bundle(tmp_path, "agent-1", [])):
        assert pki.not_after(bundle.cert.read_bytes()) > soon + dt.timedelta(days=300)
        assert _mode(bundle.key) == 0o600


def test_bundles_are_reissued_for_new_addresses_and_a_new_ca(tmp_path: Path) -> None:
    bundle = pki.ensure_local_agent_bundle(tmp_path, "agent-1", ["127.0.0.1"])
    first = bundle.cert.read_bytes()
    second = pki.ensure_local_agent_bundle(tmp_path, "agent-1", ["192.0.2.5"]).cert.read_bytes()
    assert second != first and b"192.0.2.5" not in second  # PEM: check the SAN instead
    san = x509.load_pem_x509_certificate(second).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "192.0.2.5" in {str(a) for a in san.value.get_values_for_type(x509.IPAddress)}
    for name in ("ca.pem", "ca.key"):
        (tmp_path / "pki" / name).unlink()
    third = pki.ensure_local_agent_bundle(tmp_path, "agent-1", ["192.0.2.5"]).cert.read_bytes()
    assert third != second
    assert pki.CertificateAuthority.load_or_create(pki.pki_dir(tmp_path)).signed(third)


def test_half_a_ca_or_a_foreign_key_is_an_error(tmp_path: Path) -> None:
    pki.CertificateAuthority.load_or_create(tmp_path / "a")
    pki.CertificateAuthority.load_or_create(tmp_path / "b")
    (tmp_path / "a" / "ca.key").write_bytes((tmp_path / "b" / "ca.key").read_bytes())
    with pytest.raises(pki.PKIError, match="not the key"):
        pki.CertificateAuthority.load_or_create(tmp_path / "a")
    (tmp_path / "b" / "ca.pem").unlink()
    with pytest.raises(pki.PKIError, match="half of a CA"):
        pki.CertificateAuthority.load_or_create(tmp_path / "b")


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "-x", "x" * 65, "sp ace"])
def test_agent_names_are_plain(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        pki.ensure_local_agent_bundle(tmp_path, name, [])


def test_addresses_must_be_ips_or_dns_names(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority.load_or_create(tmp_path)
    with pytest.raises(ValueError, match="neither"):
        pki.issue_agent(ca, "agent-1", ["not a name!"])
