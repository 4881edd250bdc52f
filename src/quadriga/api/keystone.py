"""auth_strategy = keystone: X-Auth-Token validated by Keystone, as keystonemiddleware's auth_token does.

quadriga authenticates to Keystone as its service user (`quadriga.service_token`, shared with the remote
key manager client), and validates each caller's token with GET /v3/auth/tokens. A validated
token is remembered (bounded count) for at most `cache_seconds` and never past its own expiry, so a revoked
token keeps working for at most `cache_seconds` (keystonemiddleware's token cache does the same).

Answers: no, malformed, expired, revoked or unknown token -> 401 with `WWW-Authenticate: Keystone uri=...`;
an unscoped token -> 401 (it names no project); a domain-scoped token -> 403; Keystone unreachable, slow
(past `timeout` seconds) or failing -> 503, and the next request asks it again. Tokens never appear in
logs or messages."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from starlette.requests import Request

from quadriga.api.auth import RequestContext
from quadriga.api.errors import Forbidden, ServiceUnavailable, Unauthorized
from quadriga.config import KeystoneSettings
from quadriga.service_token import KeystoneUnavailable, ServiceToken, seconds_left

log = logging.getLogger("quadriga.api.keystone")

MAX_TOKEN_LENGTH = 16384  # fernet tokens are ~200 characters, JWS tokens ~800


class KeystoneAuth:
    """The `Authenticator` for auth_strategy = keystone (thread-safe: FastAPI calls it from its threadpool)."""

    def __init__(self, settings: KeystoneSettings, service: ServiceToken | None = None) -> None:
        self.settings = settings
        self.auth_url = settings.auth_url.rstrip("/")
        self.service = service or ServiceToken(settings)
        self._lock = threading.Lock()  # the cache
        self._cache: OrderedDict[str, tuple[RequestContext, float]] = OrderedDict()

    # -- the Authenticator protocol ----------------------------------------------------------------
    def authenticate(self, request: Request) -> RequestContext:
        token = request.headers.get("x-auth-token", "").strip()
        if not token:
            raise self._unauthorized("Authentication required: send a Keystone token in X-Auth-Token.")
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii() or not token.isprintable() or " " in token:
            raise self._unauthorized("The X-Auth-Token header is not a token.")
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cached(key)
        if cached is not None:
            return cached
        body = self._validate(token)
        ctx = self._context(body, token)
        lifetime = min(self.settings.cache_seconds, seconds_left(body))
        if lifetime > 0 and self.settings.cache_size > 0:
            with self._lock:
                self._cache[key] = (ctx, time.monotonic() + lifetime)
                self._cache.move_to_end(key)
                while len(self._cache) > self.settings.cache_size:
                    self._cache.popitem(last=False)
        return ctx

    def close(self) -> None:
        self.service.close()

    # -- pieces ------------------------------------------------------------------------------------
    def _cached(self, key: str) -> RequestContext | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if entry[1] <= time.monotonic():
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return entry[0]

    def _unauthorized(self, message: str) -> Unauthorized:
        return Unauthorized(message, headers={"WWW-Authenticate": f'Keystone uri="{self.auth_url}"'})

    def _unavailable(self, reason: str) -> ServiceUnavailable:
        log.warning("Keystone at %s: %s", self.auth_url, reason)
        return ServiceUnavailable(
            f"The identity service (Keystone at {self.auth_url}) is unavailable: {reason}. Try again later."
        )

    def _validate(self, token: str) -> dict[str, Any]:
        """Keystone's body for `token`; one retry with a new service token when Keystone refuses ours."""
        deadline = self.service.deadline()
        try:
            for attempt in (1, 2):
                service = self.service.get(deadline, renew=attempt == 2)
                resp = self.service.call(
                    "GET",
                    deadline,
                    params={"nocatalog": "1"},
                    headers={"X-Auth-Token": service, "X-Subject-Token": token},
                )
                if resp.status_code == 200:
                    return resp.json()
                if resp.status_code == 401 and attempt == 1:
                    continue  # our service token was revoked or has expired: get another one
                if resp.status_code in (401, 404):
                    raise self._unauthorized("The token is invalid, expired or revoked.")
                if resp.status_code == 403:
                    raise KeystoneUnavailable(
                        f"the service user {self.settings.username!r} may not validate tokens "
                        "(give it the service role)"
                    )
                raise KeystoneUnavailable(f"it answered {resp.status_code} to a token validation")
        except KeystoneUnavailable as exc:
            raise self._unavailable(str(exc)) from None
        raise AssertionError("unreachable")

    def _context(self, body: dict[str, Any], auth_token: str) -> RequestContext:
        token = body.get("token") or {}
        user = (token.get("user") or {}).get("id")
        roles = frozenset(r["name"].lower() for r in token.get("roles") or () if r.get("name"))
        if "project" in token:
            return RequestContext(project_id=token["project"]["id"], user_id=user, roles=roles, auth_token=auth_token)
        if "system" in token:  # Octavia's policy treats a system-scoped admin or reader like a global one
            return RequestContext(project_id=None, user_id=user, roles=roles, auth_token=auth_token)
        if "domain" in token:
            raise Forbidden(
                f"The token is scoped to the domain {token['domain'].get('name', token['domain'].get('id'))!r}: "
                "this API takes project-scoped tokens."
            )
        raise self._unauthorized("The token is not scoped to a project: this API takes project-scoped tokens.")
