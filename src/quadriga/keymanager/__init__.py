"""The tenants' secret store: a Barbican-compatible subset of the key-manager v1 API (secrets and certificate
containers), payloads encrypted at rest, project-scoped; and the client side that reads a ref either from
this store or from a real Barbican by URL.

`Secrets` is what the rest of quadriga needs from a key manager: given a ref (a secret's or a container's URL,
as the tenant sent it) and the project that uses it, the stored payload(s). `quadriga.certs.tls` turns those
into certificates, keys, CA bundles and CRLs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from quadriga.config import Settings
    from quadriga.db.session import Database
    from quadriga.service_token import ServiceToken


class SecretNotFound(LookupError):
    """No secret or container behind a ref for this project (missing, deleted, or another project's)."""


class KeyManagerUnavailable(RuntimeError):
    """The key manager could not be asked (a remote Barbican down or refusing): retry later."""


@dataclass(frozen=True)
class SecretPayload:
    """One secret's decrypted payload and how it was stored."""

    payload: bytes
    content_type: str = "application/octet-stream"  # payload_content_type
    secret_type: str = "opaque"  # Barbican's secret_type: certificate, private, passphrase, opaque, ...
    name: str | None = None


@dataclass(frozen=True)
class Fetched:
    """What a ref points at: one secret (`secret`), or a container's secrets by their name in the container
    (`certificate`, `private_key`, `private_key_passphrase`, `intermediates`, ...)."""

    ref: str
    secret: SecretPayload | None = None
    container_type: str | None = None  # certificate, generic, rsa
    secrets: dict[str, SecretPayload] = field(default_factory=dict)


class Secrets(Protocol):
    def fetch(self, ref: str, project_id: str) -> Fetched:
        """The secret or container behind `ref` as `project_id` may see it; raises SecretNotFound (also for
        another project's ref: that is not told apart from a missing one) or KeyManagerUnavailable."""
        ...

    def grant_access(self, ref: str, user_token: str | None) -> None:
        """Before a ref is used: let quadriga read it later, as the caller (`user_token`: their Keystone token)
        — Octavia's `set_acls`; SecretNotFound when the caller may not (another project's ref)."""
        ...


def secrets_for(settings: Settings, db: Database, service: ServiceToken | None = None) -> Secrets:
    """The key manager `serve` reads refs from: a real Barbican when `keymanager_url` is set (asked with
    `service`, quadriga's Keystone token, when given), else the local store (its payload key loaded, and
    checked against the stored payloads)."""
    if settings.keymanager_url:
        from quadriga.keymanager.remote import RemoteSecrets

        return RemoteSecrets(settings.keymanager_url, service=service)
    from quadriga.keymanager.crypto import cipher_for
    from quadriga.keymanager.store import LocalSecrets

    store = LocalSecrets(db, cipher_for(settings.state_dir, settings.keymanager_key_files))
    store.check_key()
    return store
