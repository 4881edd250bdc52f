"""An in-memory `Secrets` (the key manager as the API and the loader see it), for tests that need refs to
certificates without running a key-manager store."""

from __future__ import annotations

import itertools

from quadriga.keymanager import Fetched, KeyManagerUnavailable, SecretNotFound, SecretPayload

BASE = "http://127.0.0.1:9311/v1"


class DictSecrets:
    """Secrets and certificate containers by (project, ref); `down` makes every fetch fail as a key
    manager that cannot be reached does."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], Fetched] = {}
        self.down = False
        self._ids = itertools.count(1)

    def fetch(self, ref: str, project_id: str) -> Fetched:
        if self.down:
            raise KeyManagerUnavailable("key manager down (test)")
        try:
            return self.stored[(project_id, ref)]
        except KeyError:
            raise SecretNotFound(ref) from None

    def secret(self, project_id: str, payload: bytes | str, content_type: str = "application/octet-stream") -> str:
        """Store one secret; its ref."""
        ref = f"{BASE}/secrets/{next(self._ids):08d}"
        data = payload.encode() if isinstance(payload, str) else payload
        self.stored[(project_id, ref)] = Fetched(ref, secret=SecretPayload(data, content_type))
        return ref

    def container(self, project_id: str, **secrets: bytes | str) -> str:
        """Store a certificate container of the named secrets (certificate, private_key, ...); its ref."""
        ref = f"{BASE}/containers/{next(self._ids):08d}"
        payloads = {
            name: SecretPayload(v.encode() if isinstance(v, str) else v, "text/plain", name=name)
            for name, v in secrets.items()
        }
        self.stored[(project_id, ref)] = Fetched(ref, container_type="certificate", secrets=payloads)
        return ref
