"""Listener and pool certificate refs, resolved through the key manager (`Services.tls`) for the load
balancer's project before anything is written: a ref that cannot be loaded is a 400 with Octavia's
"Could not retrieve certificate" text and quadriga's reason, a key manager that cannot be asked a 503.

The refs are fetched outside the write transaction, so no writer waits on a (possibly remote) key manager.
Only refs a request sends are checked; re-sending an unchanged ref re-checks it, which is how a renewed
certificate behind the same ref is picked up."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Iterator
from typing import Any

from quadriga.api import common, policy
from quadriga.api.auth import RequestContext
from quadriga.api.errors import BadRequest, ServiceUnavailable
from quadriga.certs.tls import (
    CertificateError,
    TLSMaterial,
    check_crls_match_cas,
    check_purpose,
    check_sni,
    not_found,
)
from quadriga.keymanager import KeyManagerUnavailable, SecretNotFound

log = logging.getLogger("quadriga.api")

LISTENER_REFS = frozenset(
    ("default_tls_container_ref", "sni_container_refs", "client_ca_tls_container_ref", "client_crl_container_ref")
)
POOL_REFS = frozenset(("tls_container_ref", "ca_tls_container_ref", "crl_container_ref"))

# The object whose project the refs are read for: (model, id, label for a 404).
Owner = tuple[Any, str, str]


def check_listener(
    svc: common.Services, ctx: RequestContext, owner: Owner, changes: dict[str, Any], *, update: bool = False
) -> None:
    """A listener create (owner: its load balancer) or update (owner: the listener, whose stored refs
    complete the sent ones: a new CRL is checked against the stored CA)."""
    if svc.tls is not None and LISTENER_REFS & changes.keys():
        project, values = _current(svc, ctx, owner, changes, update)
        listener_refs(svc.tls, project, values, changes.keys())


def check_pool(
    svc: common.Services, ctx: RequestContext, owner: Owner, changes: dict[str, Any], *, update: bool = False
) -> None:
    """A pool create (owner: its listener or load balancer) or update (owner: the pool)."""
    if svc.tls is not None and POOL_REFS & changes.keys():
        project, values = _current(svc, ctx, owner, changes, update)
        pool_refs(svc.tls, project, values, changes.keys())


def check_graph(svc: common.Services, project_id: str, listeners: list[dict], pools: list[dict]) -> None:
    """Every listener and pool of a load balancer graph create."""
    if svc.tls is None:
        return
    for li in listeners:
        listener_refs(svc.tls, project_id, li, li.keys())
    for pool in pools:
        pool_refs(svc.tls, project_id, pool, pool.keys())


def listener_refs(tls: TLSMaterial, project_id: str, values: dict[str, Any], sent: Collection[str]) -> None:
    if "default_tls_container_ref" in sent and (ref := values.get("default_tls_container_ref")):
        with _answers(ref, project_id):
            check_purpose(tls.certificate(ref, project_id), ref)
    if "sni_container_refs" in sent:
        for ref in values.get("sni_container_refs") or []:
            with _answers(ref, project_id):
                bundle = tls.certificate(ref, project_id)
                check_purpose(bundle, ref)
                check_sni(bundle, ref)
    if {"client_ca_tls_container_ref", "client_crl_container_ref"} & set(sent):
        _ca_and_crl(tls, project_id, values.get("client_ca_tls_container_ref"), values.get("client_crl_container_ref"))


def pool_refs(tls: TLSMaterial, project_id: str, values: dict[str, Any], sent: Collection[str]) -> None:
    if "tls_container_ref" in sent and (ref := values.get("tls_container_ref")):
        with _answers(ref, project_id):
            check_purpose(tls.certificate(ref, project_id), ref, client=True)
    if {"ca_tls_container_ref", "crl_container_ref"} & set(sent):
        _ca_and_crl(tls, project_id, values.get("ca_tls_container_ref"), values.get("crl_container_ref"))


def _ca_and_crl(tls: TLSMaterial, project_id: str, ca_ref: str | None, crl_ref: str | None) -> None:
    ca_pem = None
    if ca_ref:
        with _answers(ca_ref, project_id):
            ca_pem = tls.ca_certificates(ca_ref, project_id)
    if crl_ref:
        with _answers(crl_ref, project_id):
            crl_pem = tls.crl(crl_ref, project_id)
            if ca_pem is not None:
                check_crls_match_cas(crl_pem, ca_pem, crl_ref)


def _current(
    svc: common.Services, ctx: RequestContext, owner: Owner, changes: dict[str, Any], update: bool
) -> tuple[str, dict[str, Any]]:
    """The owner's project, and the values the refs are checked with (stored ones completed by the sent)."""
    model, ident, label = owner
    with svc.db.read() as session:
        obj = common.get_owned(session, model, ident, label, ctx, policy.WRITE)
        return obj.project_id, (common.snapshot(obj) | changes) if update else changes


@contextlib.contextmanager
def _answers(ref: str, project_id: str) -> Iterator[None]:
    """The API's answer to a ref that cannot be used (400) or checked (503)."""
    try:
        yield
    except (CertificateError, SecretNotFound) as exc:
        error = exc if isinstance(exc, CertificateError) else not_found(ref)
        log.info("certificate ref refused for project %s: %s", project_id, error)
        raise BadRequest(str(error)) from None
    except KeyManagerUnavailable:
        log.warning("key manager unavailable while checking certificate ref %s", ref)
        raise ServiceUnavailable(
            f"Could not retrieve certificate: {[ref]}. The key manager is unavailable; retry later."
        ) from None
