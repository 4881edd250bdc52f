"""RemoteSecrets: `Secrets` read from a real Barbican (or another quadriga's store) by URL.

A ref's id is looked up at the configured key manager, never at the host the ref names, so a tenant cannot
make quadriga fetch from an address of their choosing. Requests carry X-Project-Id (Barbican's noauth
pipeline and quadriga's store take it); Keystone tokens come with the Keystone integration, not yet.
A 403/404 is SecretNotFound (another project's object is not told apart from a missing one); anything
else that fails — refused connection, timeout, 5xx, 401 — is KeyManagerUnavailable."""

from __future__ import annotations

import httpx

from quadriga.keymanager import Fetched, KeyManagerUnavailable, SecretNotFound, SecretPayload
from quadriga.keymanager.refs import parse_ref

TIMEOUT = httpx.Timeout(10.0, connect=3.0)


class RemoteSecrets:
    """A key manager at `url` (http://host:9311, with or without /v1)."""

    def __init__(self, url: str, timeout: httpx.Timeout = TIMEOUT) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        self._client = httpx.Client(base_url=self.url + "/v1", timeout=timeout, trust_env=False)

    def fetch(self, ref: str, project_id: str) -> Fetched:
        kind, ident = parse_ref(ref)
        if kind == "secrets":
            return Fetched(ref=ref, secret=self._secret(ident, project_id))
        container = self._json(f"/containers/{ident}", project_id)
        payloads = {}
        for item in container.get("secret_refs") or []:
            payloads[item.get("name") or ""] = self._secret(parse_ref(item.get("secret_ref", ""))[1], project_id)
        return Fetched(ref=ref, container_type=container.get("type"), secrets=payloads)

    def close(self) -> None:
        self._client.close()

    def _secret(self, ident: str, project_id: str) -> SecretPayload:
        meta = self._json(f"/secrets/{ident}", project_id)
        content_type = (meta.get("content_types") or {}).get("default")
        if not content_type:
            raise SecretNotFound(f"Secret {ident} has no payload.")
        payload = self._get(f"/secrets/{ident}/payload", project_id, accept=content_type).content
        return SecretPayload(
            payload=payload,
            content_type=content_type,
            secret_type=meta.get("secret_type", "opaque"),
            name=meta.get("name"),
        )

    def _json(self, path: str, project_id: str) -> dict:
        try:
            body = self._get(path, project_id).json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise KeyManagerUnavailable(f"key manager {self.url} answered GET /v1{path} with something not Barbican's")
        return body

    def _get(self, path: str, project_id: str, accept: str = "application/json") -> httpx.Response:
        try:
            response = self._client.get(path, headers={"X-Project-Id": project_id, "Accept": accept})
        except httpx.HTTPError as exc:
            raise KeyManagerUnavailable(f"key manager {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code in (403, 404):
            raise SecretNotFound(f"not found at {self.url}: GET /v1{path} answered {response.status_code}")
        if response.status_code != 200:
            raise KeyManagerUnavailable(f"key manager {self.url} answered {response.status_code} to GET /v1{path}")
        return response
