"""The rules a listener's or a pool's certificate refs must meet, where they are used: a listener's default
and SNI certificates, client CA and CRL; a pool's client certificate, CA and CRL. The Octavia API applies
them before a listener or pool is written, the key manager before a secret in use gets a new payload, so the
engines are never handed material they would fail on or serve wrongly.

Each check raises CertificateError (naming the ref and what to do) or KeyManagerUnavailable (naming the
ref: retry later)."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from typing import Any

from quadriga.certs.tls import (
    TLSMaterial,
    check_crls_match_cas,
    check_purpose,
    check_sni,
    not_found,
)
from quadriga.keymanager import KeyManagerUnavailable, SecretNotFound

# The fields holding refs; sni_container_refs holds a list of them.
LISTENER_REFS = (
    "default_tls_container_ref",
    "sni_container_refs",
    "client_ca_tls_container_ref",
    "client_crl_container_ref",
)
POOL_REFS = ("tls_container_ref", "ca_tls_container_ref", "crl_container_ref")


def check_listener_refs(tls: TLSMaterial, project_id: str, values: dict[str, Any], sent: Collection[str]) -> None:
    """The refs of `values` (a listener's fields) named in `sent`; a CA and its CRL are checked together."""
    if "default_tls_container_ref" in sent and (ref := values.get("default_tls_container_ref")):
        with _about(ref):
            check_purpose(tls.certificate(ref, project_id), ref)
    if "sni_container_refs" in sent:
        for ref in values.get("sni_container_refs") or []:
            with _about(ref):
                bundle = tls.certificate(ref, project_id)
                check_purpose(bundle, ref)
                check_sni(bundle, ref)
    if {"client_ca_tls_container_ref", "client_crl_container_ref"} & set(sent):
        _ca_and_crl(tls, project_id, values.get("client_ca_tls_container_ref"), values.get("client_crl_container_ref"))


def check_pool_refs(tls: TLSMaterial, project_id: str, values: dict[str, Any], sent: Collection[str]) -> None:
    """The refs of `values` (a pool's fields) named in `sent`; a CA and its CRL are checked together."""
    if "tls_container_ref" in sent and (ref := values.get("tls_container_ref")):
        with _about(ref):
            check_purpose(tls.certificate(ref, project_id), ref, client=True)
    if {"ca_tls_container_ref", "crl_container_ref"} & set(sent):
        _ca_and_crl(tls, project_id, values.get("ca_tls_container_ref"), values.get("crl_container_ref"))


def _ca_and_crl(tls: TLSMaterial, project_id: str, ca_ref: str | None, crl_ref: str | None) -> None:
    ca_pem = None
    if ca_ref:
        with _about(ca_ref):
            ca_pem = tls.ca_certificates(ca_ref, project_id)
    if crl_ref:
        with _about(crl_ref):
            crl_pem = tls.crl(crl_ref, project_id)
            if ca_pem is not None:
                check_crls_match_cas(crl_pem, ca_pem, crl_ref)


@contextlib.contextmanager
def _about(ref: str) -> Iterator[None]:
    """Errors that name `ref`: nothing behind it is refused, a key manager that cannot be asked says so."""
    try:
        yield
    except SecretNotFound:
        raise not_found(ref) from None
    except KeyManagerUnavailable:
        raise KeyManagerUnavailable(
            f"Could not retrieve certificate: {[ref]}. The key manager is unavailable; retry later."
        ) from None
