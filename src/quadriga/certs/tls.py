"""Tenants' TLS material: what a listener or pool ref resolves to, checked before anything is stored.

`TLSBundle` is a server (or client) certificate with its key and chain, ready for HAProxy; `CertificateError`
carries the sentence the API answers with a 400. Loading (PKCS12 bundles and PEM certificate containers),
the checks (parses, key matches, not expired, chain in order, names for SNI), CA bundles and CRLs live here:
`TLSLoader` implements `TLSMaterial` over a key manager's `Secrets`; `check_sni`, `check_purpose` and
`check_crls_match_cas` are the checks that depend on where a ref is used (`quadriga.certs.uses` applies them
per listener and pool field)."""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from quadriga.keymanager import Fetched, SecretNotFound, Secrets

MAX_BYTES = 64 * 1024  # a certificate, its key and a few intermediates take a few KiB
MAX_LIST_BYTES = 512 * 1024  # CA bundles and CRLs can be long; their PEM must fit an engine spec's file
MIN_RSA_BITS = 2048  # OpenSSL's default security level refuses smaller keys when HAProxy loads them
MIN_EC_BITS = 224  # the same level's bound for EC keys
WEAK_DIGESTS = ("md5", "sha1")  # signatures that level refuses in a certificate chain


class CertificateError(ValueError):
    """A ref's content is not usable TLS material; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class TLSBundle:
    """A certificate with its private key and intermediates (leaf's issuer first), all PEM."""

    certificate: str
    private_key: str  # unencrypted PKCS#8 PEM
    intermediates: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # DNS names the certificate is for (SAN DNS entries, else the CN)

    def combined_pem(self) -> str:
        """The one file HAProxy's `crt` takes: certificate, chain, key."""
        return "".join(
            p if p.endswith("\n") else p + "\n" for p in (self.certificate, *self.intermediates, self.private_key)
        )


class TLSMaterial(Protocol):
    """What the controller and the API need to turn listener and pool refs into files for HAProxy. Every
    method raises CertificateError (bad or missing content: a 400 at the API) or KeyManagerUnavailable."""

    def certificate(self, ref: str, project_id: str) -> TLSBundle:
        """A server or client certificate with key and chain (PKCS12 secret or certificate container)."""
        ...

    def ca_certificates(self, ref: str, project_id: str) -> str:
        """One or more CA certificates, PEM (client_ca_tls_container_ref, ca_tls_container_ref)."""
        ...

    def crl(self, ref: str, project_id: str) -> str:
        """Certificate revocation lists (one per CA of the bundle), PEM (client_crl_container_ref,
        crl_container_ref)."""
        ...


def refused(ref: str, reason: str) -> CertificateError:
    """The error for a ref that cannot be used. The text starts as Octavia's CertificateRetrievalException
    (clients match on it), then says why and what to do. `reason` never carries key material."""
    return CertificateError(f"Could not retrieve certificate: {[ref]}. {reason}")


def not_found(ref: str) -> CertificateError:
    """Nothing at `ref` for the project: missing, deleted or another project's (not told apart)."""
    return refused(
        ref,
        "No secret or container is stored at this ref for the load balancer's project: check the ref and "
        "that the secret belongs to the same project as the load balancer.",
    )


def check_sni(bundle: TLSBundle, ref: str) -> None:
    """An SNI certificate is chosen by the client's server name, so it must carry at least one DNS name."""
    if not bundle.names:
        raise refused(
            ref,
            "The certificate has no DNS name (no subjectAltName DNS entry and no host name as its common name), "
            "so no client's server name can select it: issue it with the host names it serves as "
            "subjectAltName DNS entries, or use it as the default certificate.",
        )


def check_purpose(bundle: TLSBundle, ref: str, *, client: bool = False) -> None:
    """A certificate whose extendedKeyUsage leaves out serverAuth (a listener's) or clientAuth (the client
    certificate a pool shows its members) fails the peer's verification on every connection."""
    usage = _extension(x509.load_pem_x509_certificate(bundle.certificate.encode()), x509.ExtendedKeyUsage)
    needed = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    if usage is None or needed in usage or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usage:
        return
    role, peer, name = ("client", "members", "clientAuth") if client else ("server", "clients", "serverAuth")
    raise refused(
        ref,
        f"The certificate's extendedKeyUsage does not allow TLS {role} authentication ({name}), so "
        f"{peer} that verify it refuse it: use a certificate issued for TLS {role} authentication.",
    )


def check_crls_match_cas(crl_pem: str, ca_pem: str, ref: str) -> None:
    """Each CRL must be signed by a CA of the bundle it goes with (one from another CA revokes nothing),
    and each CA of the bundle needs its CRL: HAProxy checks revocation at every level of a client's chain
    and refuses every client whose chain has a CA without one. `ref` is the CRLs' ref."""
    crls = _pem_crls(crl_pem.encode())
    cas = x509.load_pem_x509_certificates(ca_pem.encode())
    for crl in crls:
        if not any(_signed_crl(crl, ca) for ca in cas):
            raise refused(
                ref,
                f"The CRL specified is not valid for the certificate authority reference supplied: the CRL of "
                f"'{crl.issuer.rfc4514_string()}' is not signed by any CA of the CA bundle. Store the CRLs "
                "that the bundle's CAs publish.",
            )
    uncovered = [ca for ca in cas if not any(_signed_crl(crl, ca) for crl in crls)]
    if uncovered:
        missing = ", ".join(f"'{_subject(ca)}'" for ca in uncovered)
        raise refused(
            ref,
            f"There is no CRL for {missing} of the CA bundle: revocation is checked at every level of a "
            "client's chain, and a CA without its CRL makes every client certificate fail. Store the CRL of "
            "each CA of the bundle together, in one PEM.",
        )


def _signed_crl(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return ca.subject == crl.issuer and crl.is_signature_valid(ca.public_key())
    except (TypeError, ValueError):  # a CA key type CRL signatures cannot be checked with
        return False


class TLSLoader:
    """`TLSMaterial` over a key manager: fetches a ref for a project, parses it with `cryptography` and
    refuses anything HAProxy would fail on or serve wrongly, with a sentence naming the ref and the fix.

    A certificate ref is a secret (a PKCS12 bundle without a password, as Octavia stores them, or a PEM
    blob with certificate, key and intermediates) or a Barbican certificate container (secrets named
    certificate, private_key, optional private_key_passphrase and intermediates)."""

    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets

    # --- TLSMaterial ------------------------------------------------------------------------------

    def certificate(self, ref: str, project_id: str) -> TLSBundle:
        fetched = self._fetch(ref, project_id, MAX_BYTES, "a certificate with its key and intermediates")
        if fetched.secret is not None:
            cert, key, chain = _from_secret(ref, fetched.secret.payload)
        else:
            cert, key, chain = _from_container(ref, fetched)
        if cert is None:
            raise refused(ref, "It holds a private key but no certificate: store the certificate with its key.")
        if key is None:
            raise refused(
                ref,
                "It holds a certificate but no private key: store the certificate's private key with it "
                "(in the PKCS12 bundle, the PEM, or the container's private_key secret).",
            )
        _check_leaf_first(ref, cert, key, chain)
        _check_key(ref, cert, key)
        _check_strength(ref, [cert, *chain])
        _check_validity(ref, cert, "The certificate")
        _check_chain(ref, cert, chain)
        for inter in chain:
            _check_validity(ref, inter, f"The intermediate '{_subject(inter)}'")
        return TLSBundle(
            certificate=_pem(cert),
            private_key=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
            intermediates=tuple(_pem(c) for c in chain),
            names=_names(cert),
        )

    def ca_certificates(self, ref: str, project_id: str) -> str:
        fetched = self._fetch(ref, project_id, MAX_LIST_BYTES, "the CA certificates to trust")
        if fetched.secret is not None:
            payload = fetched.secret.payload
        else:
            parts = [fetched.secrets[n].payload for n in ("certificate", "intermediates") if n in fetched.secrets]
            if not parts:
                raise refused(ref, "The container has no 'certificate' secret: store the CA certificate(s) there.")
            payload = b"\n".join(parts)
        if _has_private_key(payload):
            raise refused(
                ref,
                "It holds a private key: a CA bundle holds only the CA certificates. Store them without the key.",
            )
        cas = _certificates(ref, payload, "CA certificates")
        for ca in cas:
            constraints = _extension(ca, x509.BasicConstraints)
            if constraints is not None and not constraints.ca:
                raise refused(
                    ref,
                    f"'{_subject(ca)}' is not a CA certificate (its basicConstraints say CA:FALSE): store the "
                    "certificate of the CA that issued the certificates to trust, not a leaf certificate.",
                )
            _check_validity(ref, ca, f"The CA certificate '{_subject(ca)}'")
        return "".join(_pem(ca) for ca in cas)

    def crl(self, ref: str, project_id: str) -> str:
        fetched = self._fetch(ref, project_id, MAX_LIST_BYTES, "the CRLs of the CAs")
        if fetched.secret is None:
            raise refused(ref, "It is a container: a CRL ref must name a secret holding the PEM (or DER) CRL.")
        payload = fetched.secret.payload
        try:
            crls = _pem_crls(payload) if b"-----BEGIN" in payload else [x509.load_der_x509_crl(payload)]
        except ValueError:
            crls = []
        if not crls:
            raise refused(
                ref, "It is not a certificate revocation list: store the CAs' CRLs in PEM (or one in DER) form."
            )
        now = dt.datetime.now(dt.UTC)
        for crl in crls:
            issuer = crl.issuer.rfc4514_string()
            if crl.next_update_utc is not None and crl.next_update_utc < now:
                raise refused(
                    ref,
                    f"The CRL of '{issuer}' is out of date: its next update was due "
                    f"{crl.next_update_utc:%Y-%m-%d %H:%M} UTC, and clients checked against it would all be "
                    "refused. Store the CA's current CRL.",
                )
            if crl.last_update_utc > now:
                raise refused(
                    ref,
                    f"The CRL of '{issuer}' is not valid before {crl.last_update_utc:%Y-%m-%d %H:%M} UTC: "
                    "check its issuer's clock.",
                )
        return "".join(crl.public_bytes(serialization.Encoding.PEM).decode() for crl in crls)

    # --- helpers ----------------------------------------------------------------------------------

    def _fetch(self, ref: str, project_id: str, limit: int, holds: str) -> Fetched:
        """The payload(s) behind `ref`, refused when empty or over `limit` bytes (`holds`: what it is for)."""
        try:
            fetched = self.secrets.fetch(ref, project_id)
        except SecretNotFound:
            raise not_found(ref) from None
        payloads = [fetched.secret] if fetched.secret is not None else list(fetched.secrets.values())
        size = sum(len(p.payload) for p in payloads)
        if not payloads or size == 0:
            raise refused(ref, f"It is empty: store {holds} in it.")
        if size > limit:
            raise refused(
                ref,
                f"It is {size} bytes, more than the {limit // 1024} KiB allowed here: store only {holds}.",
            )
        return fetched


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
_HOSTNAME = re.compile(r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?$")
_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)
_PKCS12_HINT = (
    "Octavia stores PKCS12 bundles without a password: export it again without one "
    "(`openssl pkcs12 -export -passout pass: ...`) and store that."
)
_UNREADABLE = (
    "It is neither a PKCS12 bundle nor PEM certificate data: store a PKCS12 bundle (application/octet-stream) "
    "or the PEM certificate, private key and intermediates."
)


def _from_secret(ref: str, payload: bytes) -> tuple[x509.Certificate | None, PrivateKey | None, list]:
    """A single secret: PEM text with certificate, key and intermediates (in that order), or PKCS12."""
    if b"-----BEGIN" in payload:
        has_key, has_certs = _has_private_key(payload), b"CERTIFICATE-----" in payload
        if not (has_key or has_certs):
            raise refused(ref, _UNREADABLE)
        key = _private_key(ref, payload, None) if has_key else None
        certs = _certificates(ref, payload, "certificate") if has_certs else []
        return (certs[0] if certs else None), key, certs[1:]
    for password in (None, b""):
        try:
            bundle = pkcs12.load_pkcs12(payload, password)
        except ValueError:
            continue
        except UnsupportedAlgorithm:
            raise refused(ref, f"The PKCS12 bundle uses an unsupported algorithm. {_PKCS12_HINT}") from None
        key = bundle.key
        if key is not None and not isinstance(key, PrivateKey):
            raise refused(ref, "The PKCS12 bundle's key is not an RSA, EC or EdDSA key: HAProxy cannot serve it.")
        cert = bundle.cert.certificate if bundle.cert else None
        return cert, key, [c.certificate for c in bundle.additional_certs]
    if _looks_like_pkcs12(payload):
        raise refused(
            ref, f"It is a PKCS12 bundle that cannot be opened without a password (or it is damaged). {_PKCS12_HINT}"
        )
    if _looks_like_pkcs12(_unbase64(payload)):
        raise refused(
            ref,
            "It is the base64 text of a PKCS12 bundle: store the bundle itself (`openstack secret store "
            "-t application/octet-stream -e base64 --payload ...` has the key manager decode it).",
        )
    raise refused(ref, _UNREADABLE)


def _from_container(ref: str, fetched: Fetched) -> tuple[x509.Certificate | None, PrivateKey | None, list]:
    """A certificate container: its certificate, private_key, private_key_passphrase and intermediates."""
    secrets = fetched.secrets
    cert, chain = None, []
    if "certificate" in secrets:  # a certificate secret with its chain appended is common
        cert, *chain = _certificates(ref, secrets["certificate"].payload, "certificate")
    key = None
    if "private_key" in secrets:
        passphrase = secrets.get("private_key_passphrase")
        key = _private_key(ref, secrets["private_key"].payload, passphrase.payload if passphrase else None)
    if "intermediates" in secrets and secrets["intermediates"].payload.strip():  # may be stored empty
        chain += _certificates(ref, secrets["intermediates"].payload, "intermediates")
    if cert is None and key is None:
        raise refused(
            ref,
            "The container has neither a 'certificate' nor a 'private_key' secret: use a certificate "
            "container (certificate, private_key, optional intermediates and private_key_passphrase).",
        )
    return cert, key, chain


def _certificates(ref: str, data: bytes, what: str) -> list[x509.Certificate]:
    """All certificates of PEM data (in order), or the one certificate of DER data."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise refused(ref, f"The {what} data does not parse as X.509 certificates: store it as PEM.") from None


def _private_key(ref: str, data: bytes, passphrase: bytes | None) -> PrivateKey:
    try:
        load = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
        key = load(data, passphrase)
    except TypeError:  # encrypted without a passphrase, or a passphrase for an unencrypted key
        if passphrase is None:
            raise refused(
                ref,
                "The private key is encrypted and no passphrase was given: store it unencrypted, or in a "
                "certificate container with its passphrase as the private_key_passphrase secret.",
            ) from None
        key = load(data, None)
    except ValueError:
        hint = "the passphrase is wrong or " if passphrase is not None else ""
        raise refused(
            ref, f"The private key does not parse ({hint}it is not a PEM or DER private key): store a valid key."
        ) from None
    except UnsupportedAlgorithm:
        raise refused(ref, "The private key uses an unsupported algorithm: use an RSA or EC key.") from None
    if not isinstance(key, PrivateKey):
        raise refused(ref, "The private key is not an RSA, EC or EdDSA key: HAProxy cannot serve it.")
    return key


def _check_key(ref: str, cert: x509.Certificate, key: PrivateKey) -> None:
    if not _same_key(cert, key):
        raise refused(
            ref,
            f"The private key does not match the certificate '{_subject(cert)}': store the key the "
            "certificate was issued for.",
        )


def _check_strength(ref: str, certs: list[x509.Certificate]) -> None:
    """OpenSSL's default security level (2 on this engine) makes HAProxy refuse a certificate or chain with a
    key of less than 112 bits of security, or a signature made with SHA-1 or MD5 (a self-signed root's
    aside): `haproxy -c` would fail, so such material is refused here."""
    for cert in certs:
        key = cert.public_key()
        kind, bits, least = "", 0, 0
        if isinstance(key, rsa.RSAPublicKey):
            kind, bits, least = "RSA", key.key_size, MIN_RSA_BITS
        elif isinstance(key, ec.EllipticCurvePublicKey):
            kind, bits, least = "EC", key.curve.key_size, MIN_EC_BITS
        if bits < least:
            raise refused(
                ref,
                f"The {kind} key of '{_subject(cert)}' has {bits} bits; at least {least} are needed: "
                "issue it with a stronger key.",
            )
        if cert.issuer == cert.subject:
            continue
        try:
            digest = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            digest = None
        if digest is not None and digest.name in WEAK_DIGESTS:
            raise refused(
                ref,
                f"'{_subject(cert)}' is signed with {digest.name.upper()}, which OpenSSL refuses: have it "
                "re-issued with SHA-256.",
            )


def _check_leaf_first(ref: str, cert: x509.Certificate, key: PrivateKey, chain: list[x509.Certificate]) -> None:
    """The key's certificate must come first, its issuers after it; never picked out of the chain silently."""
    leaf = next((c for c in chain if _same_key(c, key)), None)
    if leaf is not None and not _same_key(cert, key):
        raise refused(
            ref,
            f"The certificate of the private key, '{_subject(leaf)}', must come first, followed by its "
            f"intermediates (its issuer first); it comes after '{_subject(cert)}'. Store them in that order.",
        )


def _same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _check_chain(ref: str, leaf: x509.Certificate, chain: list[x509.Certificate]) -> None:
    """Each certificate must be issued (and signed) by the next one: leaf, its issuer, that one's issuer.
    A chain in another order is refused with the order it should have, never reordered silently."""
    if all(_issued_by(c, issuer) for c, issuer in zip([leaf, *chain], chain, strict=False)):
        return
    ordered, rest, current = [], list(chain), leaf
    while rest:
        issuer = next((c for c in rest if _issued_by(current, c)), None)
        if issuer is None:
            break
        ordered.append(issuer)
        rest.remove(issuer)
        current = issuer
    if not rest:
        expected = ", then ".join(f"'{_subject(c)}'" for c in ordered)
        raise refused(
            ref,
            f"The intermediates are in the wrong order: each certificate must be followed by its issuer. "
            f"Store them in this order after the certificate: {expected}.",
        )
    stray = ", ".join(f"'{_subject(c)}'" for c in rest)
    raise refused(
        ref,
        f"The intermediates do not form a chain to the certificate '{_subject(leaf)}': {stray} did not issue "
        "it or the intermediate before it. Store only the certificate's own issuers, its issuer first.",
    )


def _check_validity(ref: str, cert: x509.Certificate, what: str) -> None:
    now = dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc < now:
        raise refused(
            ref,
            f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: renew it and store the new "
            "one, behind the same ref (PUT /v1/secrets/{id}) or a new one.",
        )
    if cert.not_valid_before_utc > now:
        raise refused(
            ref,
            f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: store it once "
            "it is valid, or check the issuer's clock.",
        )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _looks_like_pkcs12(data: bytes) -> bool:
    """A DER SEQUENCE whose first member is INTEGER 3: PFX's version, the start of any PKCS12 file."""
    return data[:1] == b"\x30" and b"\x02\x01\x03" in data[2:8]


def _pem_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    """Every CRL of PEM data (cryptography loads one PEM block at a time)."""
    return [x509.load_pem_x509_crl(block) for block in _CRL_BLOCK.findall(data)]


def _unbase64(data: bytes) -> bytes:
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except ValueError:
        return b""


def _has_private_key(data: bytes) -> bool:
    return re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", data) is not None


def _extension(cert: x509.Certificate, kind: type) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names HAProxy selects the certificate by: SAN DNS entries, else the CN. Only host names count
    (at most 253 characters, DNS's limit): no client's server name is anything else."""
    san = _extension(cert, x509.SubjectAlternativeName)
    names: list = san.get_values_for_type(x509.DNSName) if san is not None else []
    if not names:
        names = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    return tuple(n for n in names if isinstance(n, str) and len(n) <= 253 and _HOSTNAME.match(n))


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()
