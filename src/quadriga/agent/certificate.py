"""The agent's own server certificate, renewed while the agent runs.

The controller renews it before it expires (`quadriga.controller.certificates`), in two calls over the
mutual-TLS API:

1. `POST /v1/certificate/request`: the agent makes a new key, keeps it in memory, and answers a certificate
   signing request for it with the subject and SANs of its current certificate.
2. `PUT /v1/certificate`: the controller sends the certificate its CA signed for that request. The agent
   checks it (our CA issued it, for the pending key, for a server, valid now), writes certificate and key
   (crash-safe, see `pki.replace_leaf`) and loads them into the listening TLS context: the next handshake
   presents the new certificate, connections already open keep theirs, nothing restarts, and engines and
   their HAProxy are not involved at all. A certificate that fails a check is refused and changes nothing.

Why a signing request rather than Octavia's push of certificate and key: the agent's private key is made
on its host and never leaves it (never on the wire, never in the controller's memory or logs), so a leaked
controller log or a captured request cannot impersonate an agent; the controller only ever holds the CA key
it already needs. The old certificate stays valid until it expires (there is no revocation), so a rotation
that fails half-way leaves the agent reachable with the certificate it had."""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import threading

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from quadriga.certs.pki import Bundle, finish_replace, replace_leaf

log = logging.getLogger("quadriga.agent")


class CertificateRefused(Exception):
    """The pushed certificate is not one this agent can use; it keeps its current certificate."""


class NoPendingRequest(CertificateRefused):
    """A certificate arrived for no signing request (or for one a newer request replaced)."""


class AgentCertificate:
    """The certificate the agent's API presents, and its renewal. Thread-safe."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        finish_replace(bundle)  # a renewal a crash interrupted
        self._lock = threading.Lock()
        self._pending: ec.EllipticCurvePrivateKey | None = None
        self._contexts: list[ssl.SSLContext] = []
        self._current = x509.load_pem_x509_certificate(bundle.cert.read_bytes())

    @property
    def current(self) -> x509.Certificate:
        return self._current

    def serve(self, context: ssl.SSLContext) -> None:
        """Load renewed certificates into `context` (a listening server's) from now on."""
        with self._lock:
            self._contexts.append(context)

    def request(self) -> bytes:
        """A new key (kept until a certificate for it arrives) and a signing request for it, as PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = x509.CertificateSigningRequestBuilder().subject_name(self._current.subject)
        try:
            san = self._current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            builder = builder.add_extension(san, critical=False)
        except x509.ExtensionNotFound:
            pass
        csr = builder.sign(key, hashes.SHA256())
        with self._lock:
            self._pending = key
        log.info("certificate signing request made (current serial %x)", self._current.serial_number)
        return csr.public_bytes(serialization.Encoding.PEM)

    def install(self, cert_pem: bytes) -> x509.Certificate:
        """Check `cert_pem` against the pending request and our CA, then make it the one the API presents.
        Raises CertificateRefused (nothing changed) when it is not usable."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise CertificateRefused(f"not a PEM certificate: {exc}") from None
        with self._lock:
            key = self._pending
            if key is None:
                raise NoPendingRequest("no certificate signing request is pending: request one first")
            self._check(cert, key)
            key_pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            replace_leaf(self.bundle, cert.public_bytes(serialization.Encoding.PEM), key_pem)
            for context in self._contexts:
                context.load_cert_chain(str(self.bundle.cert), str(self.bundle.key))
            previous, self._current, self._pending = self._current, cert, None
        log.info(
            "certificate renewed: serial %x -> %x, valid until %s",
            previous.serial_number,
            cert.serial_number,
            cert.not_valid_after_utc.isoformat(),
        )
        return cert

    def _check(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        if cert.public_key() != key.public_key():
            raise CertificateRefused("the certificate is not for the key of the pending signing request")
        ca = x509.load_pem_x509_certificate(self.bundle.ca.read_bytes())
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateRefused("the certificate is not signed by this agent's CA") from None
        if cert.subject != self._current.subject:
            raise CertificateRefused(f"the certificate names {cert.subject.rfc4514_string()}, not this agent")
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = x509.ExtendedKeyUsage([])
        if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
            raise CertificateRefused("the certificate is not for a TLS server")
        now = dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            raise CertificateRefused(
                f"the certificate is not valid now (from {cert.not_valid_before_utc} to {cert.not_valid_after_utc})"
            )
