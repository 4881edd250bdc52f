"""Listener and pool certificate refs, resolved through the key manager (`Services.tls`) for the load
balancer's project before anything is written: a ref that cannot be loaded is a 400 with Octavia's
"Could not retrieve certificate" text and quadriga's reason, a key manager that cannot be asked a 503. The
rules themselves are `quadriga.certs.uses` (the key manager applies them too, to a secret in use it replaces).

The refs are fetched outside the write transaction, so no writer waits on a (possibly remote) key manager.
Before a ref is read, the key manager lets quadriga read it, asked with the caller's token (`_grant`: a
remote Barbican's ACL, as Octavia's `set_acls`; quadriga's own store needs nothing). Only refs a request sends
are checked; re-sending an unchanged ref re-checks it, which is how a certificate
renewed in a remote Barbican is picked up (quadriga's own store rolls its renewals out by itself)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from quadriga.api import common, policy
from quadriga.api.auth import RequestContext
from quadriga.api.errors import BadRequest, ServiceUnavailable
from quadriga.certs.tls import CertificateError, not_found
from quadriga.certs.uses import LISTENER_REFS, POOL_REFS, check_listener_refs, check_pool_refs
from quadriga.db import models as m
from quadriga.keymanager import KeyManagerUnavailable, SecretNotFound

log = logging.getLogger("quadriga.api")

# The object whose project the refs are read for: (model, id, label for a 404).
Owner = tuple[Any, str, str]


def check_listener(
    svc: common.Services, ctx: RequestContext, owner: Owner, changes: dict[str, Any], *, update: bool = False
) -> None:
    """A listener create (owner: its load balancer) or update (owner: the listener, whose stored refs
    complete the sent ones: a new CRL is checked against the stored CA)."""
    if svc.tls is not None and changes.keys() & LISTENER_REFS:
        project, values = _current(svc, ctx, owner, changes, update)
        if values is None:
            return
        with _answers(project):
            _grant(svc, ctx, changes, LISTENER_REFS)
            check_listener_refs(svc.tls, project, values, changes.keys())


def check_pool(
    svc: common.Services, ctx: RequestContext, owner: Owner, changes: dict[str, Any], *, update: bool = False
) -> None:
    """A pool create (owner: its listener or load balancer) or update (owner: the pool)."""
    if svc.tls is not None and changes.keys() & POOL_REFS:
        project, values = _current(svc, ctx, owner, changes, update)
        if values is None:
            return
        with _answers(project):
            _grant(svc, ctx, changes, POOL_REFS)
            check_pool_refs(svc.tls, project, values, changes.keys())


def check_graph(
    svc: common.Services, ctx: RequestContext, project_id: str, listeners: list[dict], pools: list[dict]
) -> None:
    """Every listener and pool of a load balancer graph create (for a provider with a data plane)."""
    if svc.tls is None:
        return
    with _answers(project_id):
        for li in listeners:
            _grant(svc, ctx, li, LISTENER_REFS)
            check_listener_refs(svc.tls, project_id, li, li.keys())
        for pool in pools:
            _grant(svc, ctx, pool, POOL_REFS)
            check_pool_refs(svc.tls, project_id, pool, pool.keys())


def _grant(svc: common.Services, ctx: RequestContext, sent: dict[str, Any], fields: tuple[str, ...]) -> None:
    """As Octavia's `set_acls` before it reads a ref: the key manager is asked, with the caller's token, to let
    quadriga read each ref sent; a ref the caller may not share (another project's) is refused here."""
    if svc.secrets is None:
        return
    for name in fields:
        value = sent.get(name)
        for ref in value if isinstance(value, list) else [value]:
            if ref:
                try:
                    svc.secrets.grant_access(ref, ctx.auth_token)
                except SecretNotFound:
                    raise not_found(ref) from None


def _current(
    svc: common.Services, ctx: RequestContext, owner: Owner, changes: dict[str, Any], update: bool
) -> tuple[str, dict[str, Any] | None]:
    """The owner's project, and the values the refs are checked with (stored ones completed by the sent;
    None when the load balancer's provider has no data plane, which loads no certificate)."""
    model, ident, label = owner
    with svc.db.read() as session:
        obj = common.get_owned(session, model, ident, label, ctx, policy.WRITE)
        lb = obj if isinstance(obj, m.LoadBalancer) else obj.load_balancer
        if not svc.providers[lb.provider].data_plane:
            return obj.project_id, None
        return obj.project_id, (common.snapshot(obj) | changes) if update else changes


@contextlib.contextmanager
def _answers(project_id: str) -> Iterator[None]:
    """The API's answer to a ref that cannot be used (400) or checked (503)."""
    try:
        yield
    except CertificateError as exc:
        log.info("certificate ref refused for project %s: %s", project_id, exc)
        raise BadRequest(str(exc)) from None
    except KeyManagerUnavailable as exc:
        log.warning("project %s: %s", project_id, exc)
        raise ServiceUnavailable(str(exc)) from None
