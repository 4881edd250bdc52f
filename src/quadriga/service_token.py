"""quadriga's service user at Keystone ([keystone] in the config file): its token, kept until shortly before it
expires, shared by everything that talks to OpenStack services as quadriga — the API's token validation
(`quadriga.api.keystone`) and the remote key manager client (`quadriga.keymanager.remote`), as Octavia's
`common/keystone.py` session is shared by its API and its Barbican cert manager.

A caller that is refused with our token (401: revoked, or expired early) asks once more with `renew=True`.
Keystone unreachable, slow (past `timeout` seconds) or refusing the login raises KeystoneUnavailable with the
reason; tokens and the password never appear in messages."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import httpx

from quadriga.config import KeystoneSettings

RENEW_MARGIN = 60.0  # a token this close to expiry is renewed first


class KeystoneUnavailable(RuntimeError):
    """Keystone could not be asked, or would not log quadriga's service user in: the reason, for a 503."""


class ServiceToken:
    """The service user's project-scoped token (thread-safe; one login at a time)."""

    def __init__(self, settings: KeystoneSettings) -> None:
        self.settings = settings
        self.auth_url = settings.auth_url.rstrip("/")
        self._client = httpx.Client(timeout=settings.timeout)
        self._lock = threading.Lock()
        self._token: tuple[str, str, float] | None = None  # token, user id, monotonic time to renew it at

    def deadline(self) -> float:
        """The monotonic time a request that starts now must be answered by."""
        return time.monotonic() + self.settings.timeout

    def call(self, method: str, deadline: float, **kwargs: Any) -> httpx.Response:
        """One request to Keystone's /v3/auth/tokens within what is left of the time budget."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise KeystoneUnavailable(f"no answer within {self.settings.timeout:g}s")
        try:
            return self._client.request(method, f"{self.auth_url}/auth/tokens", timeout=left, **kwargs)
        except httpx.TimeoutException:
            raise KeystoneUnavailable(f"no answer within {self.settings.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise KeystoneUnavailable(f"cannot connect ({type(exc).__name__})") from None

    def get(self, deadline: float | None = None, renew: bool = False) -> str:
        """The token; a new one when `renew` (ours was refused) or when it is near its expiry."""
        return self._current(deadline, renew)[0]

    def user_id(self, deadline: float | None = None) -> str:
        """The service user's id (what a Barbican ACL names to let quadriga read a tenant's secret)."""
        return self._current(deadline, False)[1]

    def close(self) -> None:
        self._client.close()

    def _current(self, deadline: float | None, renew: bool) -> tuple[str, str, float]:
        with self._lock:
            if self._token is not None and not renew and time.monotonic() < self._token[2]:
                return self._token
            self._token = None
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
            resp = self.call("POST", deadline or self.deadline(), params={"nocatalog": "1"}, json=body)
            if resp.status_code != 201 or "x-subject-token" not in resp.headers:
                raise KeystoneUnavailable(
                    f"quadriga's service user {s.username!r} cannot log in (Keystone answered {resp.status_code}); "
                    "check [keystone] in quadriga's config"
                )
            token = resp.json().get("token") or {}
            left = seconds_left(resp.json())
            renew_in = left - RENEW_MARGIN if left > 2 * RENEW_MARGIN else left / 2
            user = (token.get("user") or {}).get("id") or ""
            self._token = (resp.headers["x-subject-token"], user, time.monotonic() + renew_in)
            return self._token


def seconds_left(body: dict[str, Any]) -> float:
    """Seconds until the token in Keystone's `body` expires (0 when it says nothing usable)."""
    try:
        expires = dt.datetime.fromisoformat(body["token"]["expires_at"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.UTC)
    return (expires - dt.datetime.now(dt.UTC)).total_seconds()
