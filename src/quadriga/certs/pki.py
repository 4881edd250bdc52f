"""The control channel's PKI: a private CA that signs the controller's client certificate and every agent's
server certificate, so controller and agents authenticate each other with mutual TLS and trust nothing else.

Layout under `<state_dir>/pki/` (the directory is 0700, every key 0600):

    ca.pem, ca.key                       the CA (ECDSA P-256, ~10 years), created on first start, reused after
    controller.pem, controller.key       the controller's client certificate
    agents/<name>.pem, agents/<name>.key an agent's server certificate (SANs: loopback names + its addresses)

An agent on another host gets a bundle directory of its own (`agent.pem`, `agent.key`, `ca.pem`) from
`quadriga pki issue-agent`. Client and server certificates carry only their own extended key usage, so an
agent's certificate cannot act as the controller, nor the controller's as an agent."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from quadriga.engine.spec import DOMAIN_NAME_PATTERN

CA_DAYS = 3650
CERT_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)
CLOCK_SKEW = dt.timedelta(minutes=5)  # certificates start a little in the past: hosts' clocks differ
CONTROLLER_NAME = "quadriga-controller"
LOCAL_SANS = ("127.0.0.1", "::1", "localhost")
# An agent's name becomes a file name and a certificate name: plain characters only.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class PKIError(Exception):
    """The PKI on disk is unusable (e.g. a CA certificate that does not match its key); says what to do."""


@dataclass(frozen=True)
class Bundle:
    """Where one party's certificate, key and the CA certificate it trusts live."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def in_directory(cls, directory: Path, stem: str) -> Bundle:
        return cls(cert=directory / f"{stem}.pem", key=directory / f"{stem}.key", ca=directory / "ca.pem")

    def exists(self) -> bool:
        return self.cert.is_file() and self.key.is_file() and self.ca.is_file()


class CertificateAuthority:
    """The CA's key and certificate, and the issuing of leaf certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.key = key
        self.cert = cert

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        """The CA in `directory` (ca.pem, ca.key), created there first if there is none. A lock makes two
        processes starting together agree on one CA instead of each writing its own."""
        with _locked(directory):
            return cls._load_or_create(directory)

    @classmethod
    def _load_or_create(cls, directory: Path) -> CertificateAuthority:
        cert_path, key_path = directory / "ca.pem", directory / "ca.key"
        if cert_path.exists() and key_path.exists():
            return cls._load(cert_path, key_path)
        if cert_path.exists() or key_path.exists():
            raise PKIError(
                f"{directory} holds only half of a CA (ca.pem and ca.key must both exist): restore the missing "
                "file, or remove both to create a new CA (every issued certificate must then be re-issued)"
            )
        ca = cls._create()
        write_file(key_path, _key_pem(ca.key), secret=True)
        write_file(cert_path, ca.cert_pem)
        return ca

    @classmethod
    def _load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise PKIError(f"{key_path} is not the key of {cert_path}")
        return cls(key, cert)

    @classmethod
    def _create(cls) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quadriga control-channel CA")])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self,
        common_name: str,
        *,
        server: bool,
        client: bool,
        ip_sans: Iterable[str] = (),
        dns_sans: Iterable[str] = (),
        days: float = CERT_DAYS,
    ) -> tuple[bytes, bytes]:
        """A new key and a certificate for it signed by this CA, as PEM (cert, key). The certificate never
        outlives the CA."""
        if not (server or client):
            raise ValueError("a certificate must be for a server, a client or both")
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_sans)]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(ip_sans)]
        cert = self._sign(key.public_key(), common_name, sans, server=server, client=client, days=days)
        return cert, _key_pem(key)

    def sign_request(self, csr_pem: bytes, name: str, days: float = CERT_DAYS) -> bytes:
        """An agent's new server certificate (PEM) for the key of its certificate signing request. The request
        must be self-consistent (signed by its own key) and name the agent `name`; its SANs are kept (the agent
        copies them from the certificate it has, which this CA issued)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PKIError(f"not a PEM certificate signing request: {exc}") from None
        if not csr.is_signature_valid:
            raise PKIError("the certificate signing request is not signed by its own key")
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [n.value for n in names] != [name]:
            raise PKIError(f"the certificate signing request names {[n.value for n in names]}, not agent {name!r}")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise PKIError("the certificate signing request's key is not an EC key")
        try:
            sans = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = []
        return self._sign(public_key, name, sans, server=True, client=False, days=days)

    def _sign(
        self,
        public_key: ec.EllipticCurvePublicKey,
        common_name: str,
        sans: list[x509.GeneralName],
        *,
        server: bool,
        client: bool,
        days: float,
    ) -> bytes:
        now = _now()
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def signed(self, cert_pem: bytes) -> bool:
        """Whether `cert_pem` was issued by this CA (a bundle from a CA that was since replaced was not)."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def not_after(cert_pem: bytes) -> dt.datetime:
    """When the certificate expires (UTC)."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def write_file(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Write `path` atomically (a temporary file, fsync, rename), so a reader never sees half a key; keys are
    created 0600 from the start rather than chmod-ed afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bundle(bundle: Bundle, cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> None:
    """Write a bundle's three files, each atomically (the set is not: a server loading it during a re-issue can
    see the new key with the old certificate, fail, and succeed on its next try)."""
    write_file(bundle.key, key_pem, secret=True)
    write_file(bundle.cert, cert_pem)
    write_file(bundle.ca, ca_pem)


def _staged(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def replace_leaf(bundle: Bundle, cert_pem: bytes, key_pem: bytes) -> None:
    """Replace a bundle's certificate and key so that a crash at any moment leaves either the old pair or the
    new one: both are written beside the current files first (`*.new`, key first), then renamed, key first;
    `finish_replace` completes a replacement a crash interrupted."""
    write_file(_staged(bundle.key), key_pem, secret=True)
    write_file(_staged(bundle.cert), cert_pem)
    finish_replace(bundle)


def finish_replace(bundle: Bundle) -> None:
    """Complete or drop a `replace_leaf` that stopped half-way. A staged certificate exists only once its key
    is staged in full, so its presence decides: rename both into place; a staged key alone is dropped."""
    staged_key, staged_cert = _staged(bundle.key), _staged(bundle.cert)
    if staged_cert.exists():
        if staged_key.exists():
            os.replace(staged_key, bundle.key)
        os.replace(staged_cert, bundle.cert)
    else:
        staged_key.unlink(missing_ok=True)


def pki_dir(state_dir: Path) -> Path:
    return state_dir / "pki"


def controller_bundle(state_dir: Path) -> Bundle:
    return Bundle.in_directory(pki_dir(state_dir), "controller")


def agent_bundle(state_dir: Path, name: str) -> Bundle:
    directory = pki_dir(state_dir)
    check_name(name)
    return Bundle(
        cert=directory / "agents" / f"{name}.pem", key=directory / "agents" / f"{name}.key", ca=directory / "ca.pem"
    )


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"agent name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )


def agent_sans(name: str, addresses: Iterable[str]) -> tuple[list[str], list[str]]:
    """The (IP, DNS) SANs of an agent's certificate: the loopback names, its name and its addresses (an
    address that is not an IP address is a DNS name)."""
    ips: list[str] = []
    dns: list[str] = []
    for value in (*LOCAL_SANS, name, *addresses):
        try:
            ips.append(str(ipaddress.ip_address(value)))
        except ValueError:
            if not re.fullmatch(DOMAIN_NAME_PATTERN, value.replace("_", "-")):
                raise ValueError(f"{value!r} is neither an IP address nor a DNS name") from None
            dns.append(value.lower())
    return list(dict.fromkeys(ips)), list(dict.fromkeys(dns))


def issue_agent(
    ca: CertificateAuthority, name: str, addresses: Iterable[str], days: float = CERT_DAYS
) -> tuple[bytes, bytes]:
    """An agent's server certificate and key (PEM)."""
    check_name(name)
    ips, dns = agent_sans(name, addresses)
    return ca.issue(name, server=True, client=False, ip_sans=ips, dns_sans=dns, days=days)


def ensure_local_agent_bundle(
    state_dir: Path,
    name: str,
    addresses: Iterable[str],
    *,
    days: float = CERT_DAYS,
    renew_before: dt.timedelta = RENEW_BEFORE,
) -> Bundle:
    """The bundle of the agent `name` under `state_dir`, issued now (valid `days`) if it is missing, expires
    within `renew_before`, is not from the current CA, or does not cover `addresses`."""
    bundle = agent_bundle(state_dir, name)
    ips, dns = agent_sans(name, addresses)
    with _locked(pki_dir(state_dir)):
        ca = CertificateAuthority._load_or_create(pki_dir(state_dir))
        if _needs_issue(ca, bundle, ips, dns, renew_before):
            write_bundle(bundle, *issue_agent(ca, name, addresses, days), ca.cert_pem)
    return bundle


def ensure_controller_bundle(state_dir: Path) -> Bundle:
    """The controller's client bundle under `state_dir`, issued now if missing, expiring or from another CA."""
    bundle = controller_bundle(state_dir)
    with _locked(pki_dir(state_dir)):
        ca = CertificateAuthority._load_or_create(pki_dir(state_dir))
        if _needs_issue(ca, bundle, [], []):
            write_bundle(bundle, *ca.issue(CONTROLLER_NAME, server=False, client=True), ca.cert_pem)
    return bundle


def _needs_issue(
    ca: CertificateAuthority, bundle: Bundle, ips: list[str], dns: list[str], renew_before: dt.timedelta = RENEW_BEFORE
) -> bool:
    if not (bundle.cert.is_file() and bundle.key.is_file()):
        return True
    cert_pem = bundle.cert.read_bytes()
    if not ca.signed(cert_pem) or not_after(cert_pem) - _now() < renew_before:
        return True
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return bool(ips or dns)
    have_ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    have_dns = set(san.get_values_for_type(x509.DNSName))
    return not (set(ips) <= have_ips and set(dns) <= have_dns)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold the PKI directory's lock: creating the CA and issuing a bundle are read-check-write sequences that
    two processes (the API and a controller, say) must not interleave."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
