"""LocalSecrets: quadriga's own secret store over its database, the `Secrets` the load-balancer API and the
engines read refs through, and the operations the Barbican-compatible API (`keymanager.api`) serves.

Everything is scoped by project: another project's secret or container is SecretNotFound, exactly like a
missing one — except that a user named in its read ACL (Barbican's; set by its project) may read it, which is
how a tenant lets another quadriga's service user read a certificate (Octavia's barbican_acl auth). An
expired secret is gone too (as in Barbican). A secret or container that a listener or pool uses (directly, or
a secret through a container in use) cannot be deleted: SecretInUse names the user.
Replacing a secret's payload is allowed (an extension: Barbican only fills an empty secret), so a tenant
renews a certificate behind the same ref. A secret in use gets a new payload only if every listener and pool
using it could still load it (the checks the Octavia API applies, `quadriga.certs.uses`), and only while none
of their load balancers is applying a change; in the same transaction those load balancers are marked for an
update, so the controller rolls the renewal out to their engines."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from quadriga import constants as c
from quadriga import status
from quadriga.certs.tls import CertificateError, TLSLoader
from quadriga.certs.uses import LISTENER_REFS, POOL_REFS, check_listener_refs, check_pool_refs
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.keymanager import Fetched, KeyManagerUnavailable, SecretNotFound, SecretPayload
from quadriga.keymanager.crypto import KeyFileError, PayloadCipher
from quadriga.keymanager.refs import Kind, parse_ref

log = logging.getLogger("quadriga.keymanager")


class SecretInUse(Exception):
    """A secret or container a listener or pool still uses, so it cannot be deleted, or cannot be replaced
    while their load balancer applies a change (the API's 409)."""


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
        with self.db.read() as s:
            return self._fetch(s, ref, project_id)

    def _fetch(self, s: Session, ref: str, project_id: str, new: dict[str, SecretPayload] | None = None) -> Fetched:
        """`fetch` in session `s`, as if the secrets of `new` (by id) held those payloads."""
        kind, ident = parse_ref(ref)
        new = new or {}

        def payload(secret: m.Secret) -> SecretPayload:
            return new.get(secret.id) or self._payload_of(secret)

        if kind == "secrets":
            return Fetched(ref=ref, secret=payload(self._secret(s, project_id, ident)))
        container = self._container(s, project_id, ident)
        payloads = {
            link.name or "": payload(self._secret(s, project_id, link.secret_id)) for link in container.secret_refs
        }
        return Fetched(ref=ref, container_type=container.type, secrets=payloads)

    def grant_access(self, ref: str, user_token: str | None) -> None:
        """Nothing to grant: quadriga reads its own store for the load balancer's project."""

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

    def get_secret(self, project_id: str, secret_id: str, reader: str | None = None) -> m.Secret:
        """The project's secret, or one whose read ACL names the user `reader`."""
        with self.db.read() as s:
            return self._secret(s, project_id, secret_id, reader)

    def payload(self, project_id: str, secret_id: str, reader: str | None = None) -> SecretPayload:
        with self.db.read() as s:
            return self._payload_of(self._secret(s, project_id, secret_id, reader))

    def replace_payload(self, project_id: str, secret_id: str, payload: bytes, content_type: str) -> list[str]:
        """Store `payload` in the secret, replacing any payload it had (quadriga's extension of PUT). A secret
        in use is checked and rolled out first (`_renew`); returns the ids of the load balancers marked for an
        update, for the caller to wake the controller."""
        with self.db.write() as s:
            secret = self._secret(s, project_id, secret_id)
            replaced = secret.encrypted_payload is not None
            holders = self._holders(s, secret_id)
            uses = [use for use in _users(s, project_id) if use.target in holders]
            new = SecretPayload(payload, content_type, secret.secret_type, secret.name)
            marked = self._renew(s, secret_id, new, uses) if uses else []
            secret.encrypted_payload = self.cipher.encrypt(payload)
            secret.payload_content_type = content_type
            secret.updated_at = _now()
        log.info(
            "%s the payload of secret %s (project %s)", "replaced" if replaced else "stored", secret_id, project_id
        )
        return marked

    def delete_secret(self, project_id: str, secret_id: str) -> None:
        with self.db.write() as s:
            secret = self._secret(s, project_id, secret_id)
            links = s.scalars(select(m.ContainerSecret).where(m.ContainerSecret.secret_id == secret_id)).all()
            self._refuse_if_used(s, project_id, self._holders(s, secret_id), f"Secret {secret_id}")
            for link in links:  # as in Barbican: the secret leaves the containers that held it
                s.delete(link)
            self._drop_acl(s, secret_id)
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

    def get_container(self, project_id: str, container_id: str, reader: str | None = None) -> m.SecretContainer:
        with self.db.read() as s:
            return self._container(s, project_id, container_id, reader)

    def delete_container(self, project_id: str, container_id: str) -> None:
        with self.db.write() as s:
            container = self._container(s, project_id, container_id)
            self._refuse_if_used(s, project_id, {container_id}, f"Container {container_id}")
            self._drop_acl(s, container_id)
            s.delete(container)
        log.info("deleted container %s (project %s)", container_id, project_id)

    # -- read ACLs (Barbican's: only the owning project reads or changes them) ---------------------
    def get_acl(self, project_id: str, kind: Kind, ident: str) -> m.SecretACL | None:
        """The read ACL of the project's secret or container (None: none set, the project reads it)."""
        with self.db.read() as s:
            self._target(s, project_id, kind, ident)
            return s.get(m.SecretACL, ident)

    def set_acl(
        self, project_id: str, kind: Kind, ident: str, users: list[str] | None, project_access: bool | None
    ) -> None:
        """Set what is given of the read ACL (a field left None keeps its value, or its default)."""
        with self.db.write() as s:
            self._target(s, project_id, kind, ident)
            acl = s.get(m.SecretACL, ident) or m.SecretACL(target_id=ident, users=[], project_access=True)
            if users is not None:
                acl.users = list(dict.fromkeys(users))
            if project_access is not None:
                acl.project_access = project_access
            s.add(acl)
        log.info("read ACL of %s %s set (project %s)", kind.removesuffix("s"), ident, project_id)

    def delete_acl(self, project_id: str, kind: Kind, ident: str) -> None:
        with self.db.write() as s:
            self._target(s, project_id, kind, ident)
            self._drop_acl(s, ident)

    # -- helpers -------------------------------------------------------------------------------
    def _target(self, s: Session, project_id: str, kind: Kind, ident: str) -> m.Secret | m.SecretContainer:
        return self._secret(s, project_id, ident) if kind == "secrets" else self._container(s, project_id, ident)

    @staticmethod
    def _drop_acl(s: Session, ident: str) -> None:
        acl = s.get(m.SecretACL, ident)
        if acl is not None:
            s.delete(acl)

    @staticmethod
    def _may_read(s: Session, row: m.Secret | m.SecretContainer, project_id: str, reader: str | None) -> bool:
        if row.project_id == project_id:
            return True
        acl = s.get(m.SecretACL, row.id) if reader else None
        return acl is not None and reader in acl.users

    @staticmethod
    def _alive() -> tuple:
        return ((m.Secret.expiration.is_(None)) | (m.Secret.expiration > _now()),)

    def _secret(self, s: Session, project_id: str, secret_id: str, reader: str | None = None) -> m.Secret:
        """The project's live secret (or, for `reader`, one whose read ACL names that user)."""
        secret = s.scalar(select(m.Secret).where(m.Secret.id == secret_id, *self._alive()))
        if secret is None or not self._may_read(s, secret, project_id, reader):
            raise SecretNotFound("Secret not found.")
        return secret

    def _container(
        self, s: Session, project_id: str, container_id: str, reader: str | None = None
    ) -> m.SecretContainer:
        container = s.scalar(
            select(m.SecretContainer)
            .where(m.SecretContainer.id == container_id)
            .options(selectinload(m.SecretContainer.secret_refs))
        )
        if container is None or not self._may_read(s, container, project_id, reader):
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
    def _holders(s: Session, secret_id: str) -> set[str]:
        """The ids a ref reaches the secret by: its own and those of the containers holding it."""
        links = s.scalars(select(m.ContainerSecret.container_id).where(m.ContainerSecret.secret_id == secret_id))
        return {secret_id, *links}

    @staticmethod
    def _refuse_if_used(s: Session, project_id: str, ids: set[str], what: str) -> None:
        for use in _users(s, project_id):
            if use.target in ids:
                raise SecretInUse(f"{what} is in use by {use.kind} {use.user.id} ({use.field}) and cannot be deleted.")

    def _renew(self, s: Session, secret_id: str, new: SecretPayload, uses: list[Use]) -> list[str]:
        """Before a secret in use gets `new`: refuse while a load balancer of its users applies a change
        (SecretInUse: the apply may or may not read the new payload), refuse a payload a user could not load
        (CertificateError naming the user), then mark the load balancers for an update."""
        lbs = s.scalars(
            select(m.LoadBalancer)
            .where(m.LoadBalancer.id.in_({use.user.load_balancer_id for use in uses}))
            .order_by(m.LoadBalancer.id)  # the lock order of every transaction locking several
            .with_for_update()
        ).all()
        for lb in lbs:
            if lb.provisioning_status in c.PENDING_STATUSES:
                raise SecretInUse(
                    f"Secret {secret_id} is in use by load balancer {lb.id}, which is applying a change "
                    f"({lb.provisioning_status}): retry once it is ACTIVE."
                )
        tls = TLSLoader(_Replacing(self, s, {secret_id: new}))
        users: dict[str, list[Use]] = {}
        for use in uses:
            users.setdefault(use.user.id, []).append(use)
        for user_uses in users.values():
            _check(tls, secret_id, user_uses)
        for lb in lbs:
            subject, *others = [found[0] for found in users.values() if found[0].user.load_balancer_id == lb.id]
            status.mark_change(lb, subject.kind, subject.user, "update", [use.user for use in others])
            log.info(
                "secret %s renewed: load balancer %s marked for an update (revision %d)", secret_id, lb.id, lb.revision
            )
        return [lb.id for lb in lbs]


class _Replacing:
    """The store as it reads once a replacement is written (`new`: payloads by secret id), inside the
    replacing transaction: what the checks of a replacement load their refs through."""

    def __init__(self, store: LocalSecrets, s: Session, new: dict[str, SecretPayload]) -> None:
        self.store, self.session, self.new = store, s, new

    def fetch(self, ref: str, project_id: str) -> Fetched:
        return self.store._fetch(self.session, ref, project_id, self.new)


def _check(tls: TLSLoader, secret_id: str, uses: list[Use]) -> None:
    """The rules of the fields of one listener or pool that reach the secret (only those of its SNI refs
    that do), as the Octavia API applies them; the error names the user."""
    user, kind = uses[0].user, uses[0].kind
    fields = sorted({use.field for use in uses})
    values = {name: getattr(user, name) for name in (LISTENER_REFS if kind == "listener" else POOL_REFS)}
    if "sni_container_refs" in values:
        values["sni_container_refs"] = [use.ref for use in uses if use.field == "sni_container_refs"]
    try:
        (check_listener_refs if kind == "listener" else check_pool_refs)(tls, user.project_id, values, fields)
    except CertificateError as exc:
        raise CertificateError(
            f"The new payload would break {kind} {user.id}, which uses secret {secret_id} ({', '.join(fields)}): {exc}"
        ) from None


@dataclass(frozen=True)
class Use:
    """One ref a live listener or pool holds: the user, its field, the ref and the id the ref names."""

    kind: str  # listener | pool
    user: m.Listener | m.Pool
    field: str
    ref: str
    target: str


def _users(s: Session, project_id: str) -> Iterator[Use]:
    """Every ref the project's live listeners and pools hold; refs that are not the store's URLs are skipped."""
    for kind, model, fields in (("listener", m.Listener, LISTENER_REFS), ("pool", m.Pool, POOL_REFS)):
        rows = s.scalars(select(model).where(model.project_id == project_id, model.provisioning_status != c.DELETED))
        for row in rows:
            for field in fields:
                value = getattr(row, field)
                for ref in value if isinstance(value, list) else [value]:
                    try:
                        target = parse_ref(ref)[1] if ref else None
                    except SecretNotFound:
                        continue
                    if target is not None:
                        yield Use(kind, row, field, ref, target)
