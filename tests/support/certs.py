"""Test PKI: CAs, server and client certificates, CRLs and PKCS12 bundles made with `cryptography`, so TLS
tests need no files and no openssl calls."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Issued:
    """A certificate and its key, with the chain of intermediates above it (issuer first)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def cert_pem(self) -> str:
        return _pem(self.cert)

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    @property
    def chain_pem(self) -> str:
        return "".join(_pem(c) for c in self.chain)

    def pkcs12(self, password: bytes | None = None) -> bytes:
        encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        return pkcs12.serialize_key_and_certificates(
            b"quadriga-test", self.key, self.cert, self.chain or None, encryption
        )


class TestCA:
    """A certificate authority (optionally below another one) that issues server and client certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str = "quadriga test CA", parent: TestCA | None = None) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.parent = parent
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name = parent.cert.subject if parent else subject
        signer = parent.key if parent else self.key
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(days=1))
            .not_valid_after(_now() + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(signer, hashes.SHA256())
        )
        self.revoked: list[x509.Certificate] = []

    @property
    def cert_pem(self) -> str:
        return _pem(self.cert)

    def chain(self) -> list[x509.Certificate]:
        """This CA's certificate and its parents' except the root: what a leaf's chain carries."""
        out, ca = [], self
        while ca.parent is not None:
            out.append(ca.cert)
            ca = ca.parent
        return out

    def issue(
        self,
        common_name: str,
        dns_names: list[str] | None = None,
        *,
        client: bool = False,
        days: int = 30,
        not_before_days: int = -1,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> Issued:
        """A server (or client) certificate; `days` < 0 gives an expired one; `key`: its key (a new P-256)."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        start = _now() + dt.timedelta(days=not_before_days)
        end = _now() + dt.timedelta(days=days)
        if end <= start:
            start = end - dt.timedelta(days=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
        )
        if dns_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
            )
        return Issued(builder.sign(self.key, hashes.SHA256()), key, self.chain())

    def revoke(self, issued: Issued) -> None:
        self.revoked.append(issued.cert)

    def crl_pem(self) -> str:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(_now() - dt.timedelta(minutes=5))
            .next_update(_now() + dt.timedelta(days=7))
        )
        for cert in self.revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(_now() - dt.timedelta(minutes=1))
                .build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
