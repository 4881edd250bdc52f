"""Tenants' TLS material: what a listener or pool ref resolves to, checked before anything is stored.

`TLSBundle` is a server (or client) certificate with its key and chain, ready for HAProxy; `CertificateError`
carries the sentence the API answers with a 400. Loading (PKCS12 bundles and PEM certificate containers),
the checks (parses, key matches, not expired, chain in order, names for SNI), CA bundles and CRLs live here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
        """A certificate revocation list, PEM (client_crl_container_ref, crl_container_ref)."""
        ...
