"""auth_strategy = keystone: X-Auth-Token validated by Keystone, as keystonemiddleware's auth_token does.

quadriga authenticates to Keystone as its service user ([keystone] in the config file), keeps that token
until shortly before it expires, and validates each caller's token with GET /v3/auth/tokens. A validated
token is remembered (bounded count) for at most `cache_seconds` and never past its own expiry, so a revoked
token keeps working for at most `cache_seconds` (keystonemiddleware's token cache does the same).

Answers: no, malformed, expired, revoked or unknown token -> 401 with `WWW-Authenticate: Keystone uri=...`;
an unscoped token -> 401 (it names no project); a domain-scoped token -> 403; Keystone unreachable, slow
(past `timeout` seconds) or failing -> 503, and the next request asks it again. Tokens never appear in
logs or messages."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import httpx
from starlette.requests import Request

from quadriga.api.auth import RequestContext
from quadriga.api.errors import Forbidden, ServiceUnavailable, Unauthorized
from quadriga.config import KeystoneSettings

log = logging.getLogger("quadriga.api.keystone")

MAX_TOKEN_LENGTH = 16384  # fernet tokens are ~200 characters, JWS tokens ~800
SERVICE_TOKEN_MARGIN = 60.0  # a service token this close to expiry is renewed first


class KeystoneAuth:
    """The `Authenticator` for auth_strategy = keystone (thread-safe: FastAPI calls it from its threadpool)."""

    def __init__(self, settings: KeystoneSettings) -> None:
        self.settings = settings
        self.auth_url = settings.auth_url.rstrip("/")
        self._client = httpx.Client(timeout=settings.timeout)
        self._lock = threading.Lock()  # the cache
        self._service_lock = threading.Lock()  # one service login at a time
        self._service: tuple[str, float] | None = None  # token, monotonic time to renew it at
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
        ctx = self._context(body)
        lifetime = min(self.settings.cache_seconds, _seconds_left(body))
        if lifetime > 0 and self.settings.cache_size > 0:
            with self._lock:
                self._cache[key] = (ctx, time.monotonic() + lifetime)
                self._cache.move_to_end(key)
                while len(self._cache) > self.settings.cache_size:
                    self._cache.popitem(last=False)
        return ctx

    def close(self) -> None:
        self._client.close()

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

    def _call(self, method: str, deadline: float, **kwargs: Any) -> httpx.Response:
        """One request to Keystone, within what is left of the request's time budget."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._unavailable(f"no answer within {self.settings.timeout:g}s")
        try:
            return self._client.request(method, f"{self.auth_url}/auth/tokens", timeout=left, **kwargs)
        except httpx.TimeoutException:
            raise self._unavailable(f"no answer within {self.settings.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise self._unavailable(f"cannot connect ({type(exc).__name__})") from None

    def _validate(self, token: str) -> dict[str, Any]:
        """Keystone's body for `token`; one retry with a new service token when Keystone refuses ours."""
        deadline = time.monotonic() + self.settings.timeout
        for attempt in (1, 2):
            service = self._service_token(deadline, renew=attempt == 2)
            resp = self._call(
                "GET", deadline, params={"nocatalog": "1"}, headers={"X-Auth-Token": service, "X-Subject-Token": token}
            )
            if resp.status_code == 200:
                return resp.json()
            if resp.status_code == 401 and attempt == 1:
                continue  # our service token was revoked or has expired: get another one
            if resp.status_code in (401, 404):
                raise self._unauthorized("The token is invalid, expired or revoked.")
            if resp.status_code == 403:
                raise self._unavailable(
                    f"the service user {self.settings.username!r} may not validate tokens (give it the service role)"
                )
            raise self._unavailable(f"it answered {resp.status_code} to a token validation")
        raise AssertionError("unreachable")

    def _service_token(self, deadline: float, renew: bool) -> str:
        with self._service_lock:
            if self._service is not None and not renew and time.monotonic() < self._service[1]:
                return self._service[0]
            self._service = None
            s = self.settings
            body = {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {"name": s.username, "domain": {"name": s.user_domain_name}, "password": s.password}
                        },
                    },
                    "scope": {"project": {"name": s.project_name, "domain": {"name": s.project_domain_name}}},
                }
            }
            resp = self._call("POST", deadline, params={"nocatalog": "1"}, json=body)
            if resp.status_code != 201 or "x-subject-token" not in resp.headers:
                raise self._unavailable(
                    f"quadriga's service user {s.username!r} cannot log in (Keystone answered {resp.status_code}); "
                    "check [keystone] in quadriga's config"
                )
            left = _seconds_left(resp.json())
            renew_in = left - SERVICE_TOKEN_MARGIN if left > 2 * SERVICE_TOKEN_MARGIN else left / 2
            self._service = (resp.headers["x-subject-token"], time.monotonic() + renew_in)
            return self._service[0]

    def _context(self, body: dict[str, Any]) -> RequestContext:
        token = body.get("token") or {}
        user = (token.get("user") or {}).get("id")
        roles = frozenset(r["name"].lower() for r in token.get("roles") or () if r.get("name"))
        if "project" in token:
            return RequestContext(project_id=token["project"]["id"], user_id=user, roles=roles)
        if "system" in token:  # Octavia's policy treats a system-scoped admin or reader like a global one
            return RequestContext(project_id=None, user_id=user, roles=roles)
        if "domain" in token:
            raise Forbidden(
                f"The token is scoped to the domain {token['domain'].get('name', token['domain'].get('id'))!r}: "
                "this API takes project-scoped tokens."
            )
        raise self._unauthorized("The token is not scoped to a project: this API takes project-scoped tokens.")


def _seconds_left(body: dict[str, Any]) -> float:
    """Seconds until the token in Keystone's `body` expires (0 when it says nothing usable)."""
    try:
        expires = dt.datetime.fromisoformat(body["token"]["expires_at"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.UTC)
    return (expires - dt.datetime.now(dt.UTC)).total_seconds()
