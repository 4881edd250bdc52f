"""RemoteSecrets: `Secrets` read from a real Barbican (or another quadriga's store) by URL.

A ref's id is looked up at the configured key manager, never at the host the ref names, so a tenant cannot
make quadriga fetch from an address of their choosing.

Without Keystone (`service` None) requests carry X-Project-Id (Barbican's noauth pipeline and quadriga's store
take it), which scopes every read to the load balancer's project. With Keystone they carry quadriga's service
token (X-Auth-Token), as Octavia's barbican_acl auth does: the service user reads a tenant's secret because the
tenant's secret grants it read in its ACL. The API grants that ACL (`grant_access`) with the tenant's own token
before it reads a ref, as Octavia's `set_acls` does — that request is also the ownership check: a token of
another project may not read or change the secret's ACL, so another project's ref is SecretNotFound (a 400).

A 403/404 is SecretNotFound (another project's object is not told apart from a missing one); anything else
that fails — refused connection, timeout, 5xx, our token refused twice, Keystone down — is
KeyManagerUnavailable (a 503 at the API)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from quadriga.keymanager import Fetched, KeyManagerUnavailable, SecretNotFound, SecretPayload
from quadriga.keymanager.refs import parse_ref
from quadriga.service_token import KeystoneUnavailable, ServiceToken

TIMEOUT = httpx.Timeout(10.0, connect=3.0)


class RemoteSecrets:
    """A key manager at `url` (http://host:9311, with or without /v1); `service`: quadriga's Keystone token."""

    def __init__(self, url: str, timeout: httpx.Timeout = TIMEOUT, service: ServiceToken | None = None) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        self.service = service
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

    def grant_access(self, ref: str, user_token: str | None) -> None:
        """With Keystone: as the tenant (`user_token`), add quadriga's service user to the read ACL of the
        secret or container behind `ref` and, for a container, of each of its secrets (ACLs do not pass
        from a container to its secrets). SecretNotFound when the tenant may not (another project's ref)."""
        if self.service is None:
            return  # noauth: X-Project-Id scopes each read already
        if not user_token:
            raise KeyManagerUnavailable("a Keystone token of the caller is needed to grant quadriga read access")
        kind, ident = parse_ref(ref)
        user = {"X-Auth-Token": user_token}
        targets = [f"/{kind}/{ident}"]
        if kind == "containers":
            container = self._json(targets[0], "", headers=user)
            for item in container.get("secret_refs") or []:
                targets.append(f"/secrets/{parse_ref(item.get('secret_ref', ''))[1]}")
        service_user = self._from_keystone(lambda service: service.user_id())
        for target in targets:
            acl = self._json(f"{target}/acl", "", headers=user).get("read") or {}
            users = list(acl.get("users") or [])
            if service_user in users:
                continue
            read = {"users": [*users, service_user], "project-access": acl.get("project-access", True)}
            self._send("PUT", f"{target}/acl", user, json={"read": read})

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

    def _json(self, path: str, project_id: str, headers: dict[str, str] | None = None) -> dict:
        response = self._send("GET", path, headers) if headers else self._get(path, project_id)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise KeyManagerUnavailable(f"key manager {self.url} answered GET /v1{path} with something not Barbican's")
        return body

    def _get(self, path: str, project_id: str, accept: str = "application/json") -> httpx.Response:
        """GET as quadriga: its service token (renewed once if refused), else the project's X-Project-Id."""
        if self.service is None:
            return self._send("GET", path, {"X-Project-Id": project_id, "Accept": accept})
        for renew in (False, True):
            token = self._from_keystone(lambda service, renew=renew: service.get(renew=renew))
            try:
                return self._send("GET", path, {"X-Auth-Token": token, "Accept": accept})
            except _Refused:
                if renew:
                    raise KeyManagerUnavailable(
                        f"key manager {self.url} refuses quadriga's service token (401 to GET /v1{path}, also with a "
                        "new token): does it validate tokens at the same Keystone as quadriga's [keystone] auth_url?"
                    ) from None
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise KeyManagerUnavailable(f"key manager {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code in (403, 404):
            raise SecretNotFound(f"not found at {self.url}: {method} /v1{path} answered {response.status_code}")
        if response.status_code == 401 and "X-Auth-Token" in headers:
            raise _Refused(f"key manager {self.url} refuses the token sent with {method} /v1{path} (401)")
        if response.status_code not in (200, 201, 204):
            raise KeyManagerUnavailable(
                f"key manager {self.url} answered {response.status_code} to {method} /v1{path}{_said(response)}"
            )
        return response

    def _from_keystone(self, ask: Callable[[ServiceToken], str]) -> str:
        assert self.service is not None
        try:
            return ask(self.service)
        except KeystoneUnavailable as exc:
            raise KeyManagerUnavailable(
                f"no Keystone token for the key manager: the identity service is unavailable: {exc}"
            ) from None


def _said(response: httpx.Response) -> str:
    """': <description>' of a Barbican error body (a few hundred characters at most), else ''."""
    try:
        description = response.json().get("description")
    except (ValueError, AttributeError):
        return ""
    return f": {description[:300]}" if isinstance(description, str) and description else ""


class _Refused(KeyManagerUnavailable):
    """The key manager answered 401 to a token."""
