"""LocalSecrets: quadriga's own secret store over its database, the `Secrets` the load-balancer API and the
engines read refs through, and the operations the Barbican-compatible API (`keymanager.api`) serves.

Everything is scoped by project: another project's secret or container is SecretNotFound, exactly like a
missing one. An expired secret is gone too (as in Barbican). A secret or container that a listener or pool
uses (directly, or a secret through a container in use) cannot be deleted: SecretInUse names the user.
Replacing a secret's payload is allowed (an extension: Barbican only fills an empty secret), so a tenant
renews a certificate behind the same ref."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.keymanager import Fetched, KeyManagerUnavailable, SecretNotFound, SecretPayload
from quadriga.keymanager.crypto import KeyFileError, PayloadCipher
from quadriga.keymanager.refs import parse_ref

log = logging.getLogger("quadriga.keymanager")

DELETED = "DELETED"
LISTENER_REFS = ("default_tls_container_ref", "client_ca_tls_container_ref", "client_crl_container_ref")
POOL_REFS = ("tls_container_ref", "ca_tls_container_ref", "crl_container_ref")


class SecretInUse(Exception):
    """A secret or container a listener or pool still uses (the API's 409)."""


@dataclass(frozen=True)
class NewSecret:
    """A secret's metadata as the API accepted it."""

    name: str | None = None
    secret_type: str = "opaque"
    payload_content_type: str | None = None
    algorithm: str | None = None
    bit_length: int | None = None
    mode: str | None = None
    expiration: dt.datetime | None = None
    creator_id: str | None = None


def _now() -> dt.datetime:
    return m.utcnow()


class LocalSecrets:
    """The secret store: payloads encrypted with `cipher` in `db`."""

    def __init__(self, db: Database, cipher: PayloadCipher) -> None:
        self.db = db
        self.cipher = cipher

    # -- the Secrets protocol ------------------------------------------------------------------
    def fetch(self, ref: str, project_id: str) -> Fetched:
        kind, ident = parse_ref(ref)
        with self.db.read() as s:
            if kind == "secrets":
                return Fetched(ref=ref, secret=self._payload_of(self._secret(s, project_id, ident)))
            container = self._container(s, project_id, ident)
            payloads = {}
            for link in container.secret_refs:
                secret = self._secret(s, project_id, link.secret_id)
                payloads[link.name or ""] = self._payload_of(secret)
            return Fetched(ref=ref, container_type=container.type, secrets=payloads)

    def check_key(self) -> None:
        """Raise KeyFileError when the configured keys cannot open the stored payloads (checked at start)."""
        with self.db.read() as s:
            token = s.scalar(select(m.Secret.encrypted_payload).where(m.Secret.encrypted_payload.is_not(None)).limit(1))
        if token is not None:
            self.cipher.decrypt(token)

    # -- secrets -------------------------------------------------------------------------------
    def create_secret(self, project_id: str, meta: NewSecret, payload: bytes | None) -> m.Secret:
        row = m.Secret(
            project_id=project_id,
            name=meta.name,
            secret_type=meta.secret_type,
            payload_content_type=meta.payload_content_type if payload is not None else None,
            encrypted_payload=self.cipher.encrypt(payload) if payload is not None else None,
            algorithm=meta.algorithm,
            bit_length=meta.bit_length,
            mode=meta.mode,
            expiration=meta.expiration,
            creator_id=meta.creator_id,
        )
        with self.db.write() as s:
            s.add(row)
        log.info("stored secret %s for project %s (%s)", row.id, project_id, row.secret_type)
        return row

    def list_secrets(
        self, project_id: str, offset: int, limit: int, filters: dict[str, object]
    ) -> tuple[list[m.Secret], int]:
        query = select(m.Secret).where(m.Secret.project_id == project_id, *self._alive())
        for column, value in filters.items():
            query = query.where(getattr(m.Secret, column) == value)
        with self.db.read() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(query.order_by(m.Secret.created_at, m.Secret.id).offset(offset).limit(limit)).all()
        return list(rows), total

    def get_secret(self, project_id: str, secret_id: str) -> m.Secret:
        with self.db.read() as s:
            return self._secret(s, project_id, secret_id)

    def payload(self, project_id: str, secret_id: str) -> SecretPayload:
        with self.db.read() as s:
            return self._payload_of(self._secret(s, project_id, secret_id))

    def replace_payload(self, project_id: str, secret_id: str, payload: bytes, content_type: str) -> None:
        """Store `payload` in the secret, replacing any payload it had (quadriga's extension of PUT)."""
        with self.db.write() as s:
            secret = self._secret(s, project_id, secret_id)
            replaced = secret.encrypted_payload is not None
            secret.encrypted_payload = self.cipher.encrypt(payload)
            secret.payload_content_type = content_type
            secret.updated_at = _now()
        log.info(
            "%s the payload of secret %s (project %s)", "replaced" if replaced else "stored", secret_id, project_id
        )

    def delete_secret(self, project_id: str, secret_id: str) -> None:
        with self.db.write() as s:
            secret = self._secret(s, project_id, secret_id)
            links = s.scalars(select(m.ContainerSecret).where(m.ContainerSecret.secret_id == secret_id)).all()
            holders = {secret_id} | {link.container_id for link in links}
            self._refuse_if_used(s, project_id, holders, f"Secret {secret_id}")
            for link in links:  # as in Barbican: the secret leaves the containers that held it
                s.delete(link)
            s.delete(secret)
        log.info("deleted secret %s (project %s)", secret_id, project_id)

    # -- containers ----------------------------------------------------------------------------
    def create_container(
        self,
        project_id: str,
        name: str | None,
        type_: str,
        refs: Iterable[tuple[str | None, str]],
        creator_id: str | None,
    ) -> m.SecretContainer:
        """`refs`: (name in the container, secret id); SecretNotFound names the first missing one."""
        with self.db.write() as s:
            row = m.SecretContainer(project_id=project_id, name=name, type=type_, creator_id=creator_id)
            for ref_name, secret_id in refs:
                try:
                    self._secret(s, project_id, secret_id)
                except SecretNotFound:
                    raise SecretNotFound(f"Secret provided for '{ref_name}' doesn't exist.") from None
                row.secret_refs.append(m.ContainerSecret(secret_id=secret_id, name=ref_name))
            s.add(row)
        log.info("stored %s container %s for project %s", type_, row.id, project_id)
        return row

    def list_containers(
        self, project_id: str, offset: int, limit: int, filters: dict[str, object]
    ) -> tuple[list[m.SecretContainer], int]:
        query = select(m.SecretContainer).where(m.SecretContainer.project_id == project_id)
        for column, value in filters.items():
            query = query.where(getattr(m.SecretContainer, column) == value)
        with self.db.read() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            page = query.options(selectinload(m.SecretContainer.secret_refs))
            rows = s.scalars(
                page.order_by(m.SecretContainer.created_at, m.SecretContainer.id).offset(offset).limit(limit)
            )
            return list(rows.all()), total

    def get_container(self, project_id: str, container_id: str) -> m.SecretContainer:
        with self.db.read() as s:
            return self._container(s, project_id, container_id)

    def delete_container(self, project_id: str, container_id: str) -> None:
        with self.db.write() as s:
            container = self._container(s, project_id, container_id)
            self._refuse_if_used(s, project_id, {container_id}, f"Container {container_id}")
            s.delete(container)
        log.info("deleted container %s (project %s)", container_id, project_id)

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _alive() -> tuple:
        return ((m.Secret.expiration.is_(None)) | (m.Secret.expiration > _now()),)

    def _secret(self, s: Session, project_id: str, secret_id: str) -> m.Secret:
        secret = s.scalar(
            select(m.Secret).where(m.Secret.id == secret_id, m.Secret.project_id == project_id, *self._alive())
        )
        if secret is None:
            raise SecretNotFound("Secret not found.")
        return secret

    @staticmethod
    def _container(s: Session, project_id: str, container_id: str) -> m.SecretContainer:
        container = s.scalar(
            select(m.SecretContainer)
            .where(m.SecretContainer.id == container_id, m.SecretContainer.project_id == project_id)
            .options(selectinload(m.SecretContainer.secret_refs))
        )
        if container is None:
            raise SecretNotFound("Secrets container not found.")
        return container

    def _payload_of(self, secret: m.Secret) -> SecretPayload:
        if secret.encrypted_payload is None:
            raise SecretNotFound(f"Secret {secret.id} has no payload.")
        try:
            payload = self.cipher.decrypt(secret.encrypted_payload)
        except KeyFileError as exc:
            log.error("secret %s: %s", secret.id, exc)
            raise KeyManagerUnavailable(str(exc)) from None
        return SecretPayload(
            payload=payload,
            content_type=secret.payload_content_type or "application/octet-stream",
            secret_type=secret.secret_type,
            name=secret.name,
        )

    @staticmethod
    def _refuse_if_used(s: Session, project_id: str, ids: set[str], what: str) -> None:
        for kind, obj_id, field in _users(s, project_id):
            if field[1] in ids:
                raise SecretInUse(f"{what} is in use by {kind} {obj_id} ({field[0]}) and cannot be deleted.")


def _users(s: Session, project_id: str) -> Iterator[tuple[str, str, tuple[str, str]]]:
    """(listener|pool, its id, (field, referenced id)) for every ref the project's live listeners and pools
    hold; refs that are not the store's URLs are skipped."""
    listeners = s.scalars(
        select(m.Listener).where(m.Listener.project_id == project_id, m.Listener.provisioning_status != DELETED)
    )
    for listener in listeners:
        refs = [(f, getattr(listener, f)) for f in LISTENER_REFS]
        refs += [("sni_container_refs", r) for r in listener.sni_container_refs or []]
        yield from (("listener", listener.id, pair) for pair in _ids(refs))
    pools = s.scalars(select(m.Pool).where(m.Pool.project_id == project_id, m.Pool.provisioning_status != DELETED))
    for pool in pools:
        yield from (("pool", pool.id, pair) for pair in _ids((f, getattr(pool, f)) for f in POOL_REFS))


def _ids(refs: Iterable[tuple[str, str | None]]) -> Iterator[tuple[str, str]]:
    for field, ref in refs:
        if ref:
            try:
                yield field, parse_ref(ref)[1]
            except SecretNotFound:
                continue
