"""TLSLoader: what a certificate, CA or CRL ref resolves to, and every refusal the API turns into a 400."""

from __future__ import annotations

import base64
import functools
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from quadriga.certs.tls import CertificateError, TLSLoader, check_crls_match_cas, check_purpose, check_sni
from quadriga.engine.spec import CertificateSpec
from quadriga.keymanager import KeyManagerUnavailable
from tests.support.certs import TestCA
from tests.support.secrets import DictSecrets

P = "project-a"
PKCS8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()


@pytest.fixture(scope="module")
def pki() -> dict:
    root = TestCA("root CA")
    mid = TestCA("intermediate one", parent=root)
    low = TestCA("intermediate two", parent=mid)
    return {
        "root": root,
        "low": low,
        "leaf": low.issue("www.example.com", ["www.example.com", "example.com"]),
        "other": TestCA("other CA"),
    }


@pytest.fixture
def store() -> DictSecrets:
    return DictSecrets()


@pytest.fixture
def loader(store) -> TLSLoader:
    return TLSLoader(store)


def refused(call, *args, contains: str) -> str:
    with pytest.raises(CertificateError) as err:
        call(*args)
    message = str(err.value)
    ref = next(a for a in args if isinstance(a, str) and a.startswith("http"))
    assert message.startswith(f"Could not retrieve certificate: ['{ref}']. "), message
    assert contains in message, message
    assert "-----" not in message  # no PEM (and so no key material) in the text
    return message


def test_pkcs12_bundle_gives_normalized_pem_with_chain_in_order(pki, store, loader):
    leaf = pki["leaf"]
    bundle = loader.certificate(store.secret(P, leaf.pkcs12()), P)
    assert x509.load_pem_x509_certificate(bundle.certificate.encode()) == leaf.cert
    assert [x509.load_pem_x509_certificate(p.encode()) for p in bundle.intermediates] == leaf.chain
    assert bundle.private_key.startswith("-----BEGIN PRIVATE KEY-----")
    assert bundle.names == ("www.example.com", "example.com")
    combined = bundle.combined_pem()
    assert combined.count("BEGIN CERTIFICATE") == 3 and combined.rstrip().endswith("-----END PRIVATE KEY-----")


def test_pem_blob_and_container_with_encrypted_key(pki, store, loader):
    leaf = pki["leaf"]
    from_pem = loader.certificate(store.secret(P, leaf.cert_pem + leaf.chain_pem + leaf.key_pem, "text/plain"), P)
    encrypted = leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"s3")
    )
    ref = store.container(
        P, certificate=leaf.cert_pem, private_key=encrypted, private_key_passphrase=b"s3", intermediates=leaf.chain_pem
    )
    from_container = loader.certificate(ref, P)
    assert from_pem == from_container
    assert "ENCRYPTED" not in from_container.private_key


def test_names_fall_back_to_a_host_name_common_name(pki, store, loader):
    by_cn = pki["root"].issue("api.example.net")
    assert loader.certificate(store.secret(P, by_cn.pkcs12()), P).names == ("api.example.net",)
    empty_chain = store.container(P, certificate=by_cn.cert_pem, private_key=by_cn.key_pem, intermediates="")
    assert loader.certificate(empty_chain, P).intermediates == ()
    nameless = pki["root"].issue("quadriga test server")
    ref = store.secret(P, nameless.pkcs12())
    bundle = loader.certificate(ref, P)  # fine as a default certificate
    assert bundle.names == ()
    refused(check_sni, bundle, ref, contains="no DNS name")


def test_keys_and_signatures_openssl_refuses_are_refused(pki, store, loader, tmp_path):
    """HAProxy (OpenSSL's security level 2) fails to load these: `haproxy -c` would reject the engine."""
    weak = pki["root"].issue("weak.example.com", ["weak.example.com"], key=ec.generate_private_key(ec.SECP192R1()))
    refused(loader.certificate, store.secret(P, weak.pkcs12()), P, contains="EC key of 'CN=weak.example.com' has 192")
    ca = pki["root"]
    (tmp_path / "ca.pem").write_text(ca.cert_pem + ca.key.private_bytes(*PKCS8).decode())
    run = functools.partial(subprocess.run, check=True, capture_output=True, cwd=tmp_path)
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
         "k.pem", "-out", "r.csr", "-subj", "/CN=sha1.example.com"])  # fmt: skip
    run(["openssl", "x509", "-req", "-sha1", "-in", "r.csr", "-CA", "ca.pem", "-set_serial", "7", "-out", "c.pem"])
    pem = (tmp_path / "c.pem").read_text() + (tmp_path / "k.pem").read_text()
    refused(loader.certificate, store.secret(P, pem), P, contains="is signed with SHA1")


def test_only_host_names_count_as_names(pki, store, loader):
    """A SAN entry no server name can be (too long for DNS, a space) is not carried into the engine spec,
    which refuses such names: the API would accept a certificate the engine then fails on."""
    too_long = "a" * 63 + ("." + "b" * 63) * 4 + ".com"
    odd = pki["root"].issue("odd", [too_long, "ok.example.com", "bad name.example.com"])
    bundle = loader.certificate(store.secret(P, odd.pkcs12()), P)
    assert bundle.names == ("ok.example.com",)
    CertificateSpec(id="crt-1", kind="certificate", pem=bundle.combined_pem(), names=bundle.names)


def test_purpose_follows_extended_key_usage(pki, store, loader):
    server_ref = store.secret(P, pki["leaf"].pkcs12())
    client_ref = store.secret(P, pki["root"].issue("client one", client=True).pkcs12())
    server, client = loader.certificate(server_ref, P), loader.certificate(client_ref, P)
    check_purpose(server, server_ref)
    check_purpose(client, client_ref, client=True)
    refused(check_purpose, client, client_ref, contains="does not allow TLS server authentication (serverAuth)")
    with pytest.raises(CertificateError, match="members that verify it refuse it"):
        check_purpose(server, server_ref, client=True)


@pytest.mark.parametrize(
    ("payload", "contains"),
    [
        (b"\x00\x01garbage" * 10, "neither a PKCS12 bundle nor PEM"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", "does not parse"),
        (b"hello", "neither a PKCS12 bundle nor PEM"),
        (b"x" * (10 * 1024 * 1024), "more than the 64 KiB allowed"),
        (b"", "empty"),
    ],
    ids=["garbage", "garbage-pem", "text", "10MB", "empty"],
)
def test_unusable_payloads(store, loader, payload, contains):
    refused(loader.certificate, store.secret(P, payload), P, contains=contains)


def test_password_protected_pkcs12(pki, store, loader):
    ref = store.secret(P, pki["leaf"].pkcs12(b"wrong-for-octavia"))
    refused(loader.certificate, ref, P, contains="stores PKCS12 bundles without a password")


def test_base64_text_of_a_pkcs12(pki, store, loader):
    ref = store.secret(P, base64.encodebytes(pki["leaf"].pkcs12()), "text/plain")
    refused(loader.certificate, ref, P, contains="base64 text of a PKCS12 bundle")


def test_key_without_certificate_and_certificate_without_key(pki, store, loader):
    leaf = pki["leaf"]
    refused(loader.certificate, store.secret(P, leaf.key_pem), P, contains="no certificate")
    refused(loader.certificate, store.secret(P, leaf.cert_pem), P, contains="no private key")
    refused(loader.certificate, store.container(P, private_key=leaf.key_pem), P, contains="no certificate")
    refused(loader.certificate, store.container(P, certificate=leaf.cert_pem), P, contains="no private key")
    refused(loader.certificate, store.container(P, public_key=b"x"), P, contains="neither a 'certificate'")


def test_key_that_does_not_match(pki, store, loader):
    leaf, other = pki["leaf"], pki["root"].issue("x.example.com", ["x.example.com"])
    ref = store.secret(P, leaf.cert_pem + leaf.chain_pem + other.key_pem)
    refused(loader.certificate, ref, P, contains="does not match the certificate 'CN=www.example.com'")


def test_encrypted_key_needs_the_right_passphrase(pki, store, loader):
    leaf = pki["leaf"]
    encrypted = leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"s3")
    )
    ref = store.container(P, certificate=leaf.cert_pem + leaf.chain_pem, private_key=encrypted)
    refused(loader.certificate, ref, P, contains="no passphrase was given")
    ref = store.container(
        P, certificate=leaf.cert_pem + leaf.chain_pem, private_key=encrypted, private_key_passphrase=b"nope"
    )
    refused(loader.certificate, ref, P, contains="passphrase is wrong")


def test_expired_and_not_yet_valid(pki, store, loader):
    expired = pki["root"].issue("old.example.com", ["old.example.com"], days=-2)
    refused(loader.certificate, store.secret(P, expired.pkcs12()), P, contains="expired on")
    future = pki["root"].issue("new.example.com", ["new.example.com"], not_before_days=2, days=30)
    refused(loader.certificate, store.secret(P, future.pkcs12()), P, contains="not valid before")


def test_chain_in_wrong_order_is_refused_with_the_expected_order(pki, store, loader):
    leaf = pki["leaf"]
    reversed_chain = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in reversed(leaf.chain))
    ref = store.secret(P, leaf.cert_pem + reversed_chain + leaf.key_pem)
    message = refused(loader.certificate, ref, P, contains="wrong order")
    assert "'CN=intermediate two', then 'CN=intermediate one'" in message


def test_chain_may_end_with_the_root(pki, store, loader):
    leaf = pki["leaf"]
    bundle = loader.certificate(
        store.secret(P, leaf.cert_pem + leaf.chain_pem + pki["root"].cert_pem + leaf.key_pem), P
    )
    assert len(bundle.intermediates) == 3


def test_leaf_after_its_intermediates_is_refused(pki, store, loader):
    leaf = pki["leaf"]
    ref = store.secret(P, leaf.chain_pem + leaf.cert_pem + leaf.key_pem)
    refused(loader.certificate, ref, P, contains="'CN=www.example.com', must come first")


def test_chain_that_does_not_lead_to_the_leaf(pki, store, loader):
    leaf, stranger = pki["leaf"], TestCA("stranger", parent=pki["other"])
    ref = store.container(
        P, certificate=leaf.cert_pem, private_key=leaf.key_pem, intermediates=stranger.cert_pem + leaf.chain_pem
    )
    refused(loader.certificate, ref, P, contains="'CN=stranger' did not issue")


def test_another_projects_ref_and_a_missing_one(pki, store, loader):
    ref = store.secret("project-b", pki["leaf"].pkcs12())
    refused(loader.certificate, ref, P, contains="No secret or container")
    refused(loader.ca_certificates, ref + "0", P, contains="No secret or container")


def test_key_manager_down_is_not_a_certificate_error(pki, store, loader):
    ref = store.secret(P, pki["leaf"].pkcs12())
    store.down = True
    with pytest.raises(KeyManagerUnavailable):
        loader.certificate(ref, P)


def test_ca_bundles(pki, store, loader):
    root, low = pki["root"], pki["low"]
    pem = loader.ca_certificates(store.secret(P, low.cert_pem + root.cert_pem, "text/plain"), P)
    assert [c.subject for c in x509.load_pem_x509_certificates(pem.encode())] == [low.cert.subject, root.cert.subject]
    assert loader.ca_certificates(store.container(P, certificate=root.cert_pem), P) == root.cert_pem
    der = root.cert.public_bytes(serialization.Encoding.DER)
    assert loader.ca_certificates(store.secret(P, der), P) == root.cert_pem
    leaf = pki["leaf"]
    refused(loader.ca_certificates, store.secret(P, leaf.cert_pem), P, contains="is not a CA certificate")
    refused(loader.ca_certificates, store.secret(P, b"\x30\x03junk"), P, contains="does not parse")
    refused(loader.ca_certificates, store.secret(P, root.cert_pem + leaf.key_pem), P, contains="holds a private key")


def test_crls(pki, store, loader):
    root, low = pki["root"], pki["low"]
    root.revoke(pki["leaf"])
    crl_pem = root.crl_pem()
    assert loader.crl(store.secret(P, crl_pem), P) == crl_pem
    der = x509.load_pem_x509_crl(crl_pem.encode()).public_bytes(serialization.Encoding.DER)
    assert loader.crl(store.secret(P, der), P) == crl_pem
    two = low.crl_pem() + crl_pem
    assert loader.crl(store.secret(P, two), P) == two
    refused(loader.crl, store.secret(P, b"-----BEGIN X509 CRL-----\nzz\n-----END X509 CRL-----\n"), P, contains="not a")
    refused(loader.crl, store.secret(P, pki["leaf"].cert_pem), P, contains="not a certificate revocation list")
    refused(loader.crl, store.container(P, certificate=crl_pem), P, contains="is a container")


def test_crls_must_match_the_ca_bundle(pki):
    root, low, other = pki["root"], pki["low"], pki["other"]
    ref = "http://km/v1/secrets/crl"
    check_crls_match_cas(root.crl_pem(), root.cert_pem, ref)
    check_crls_match_cas(low.crl_pem() + root.crl_pem(), low.cert_pem + root.cert_pem, ref)
    message = refused(check_crls_match_cas, other.crl_pem(), root.cert_pem, ref, contains="The CRL specified")
    assert "'CN=other CA' is not signed by any CA of the CA bundle" in message
    refused(
        check_crls_match_cas,
        root.crl_pem(),
        low.cert_pem + root.cert_pem,
        ref,
        contains="no CRL for 'CN=intermediate two'",
    )
