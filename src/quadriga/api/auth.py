"""Who is calling: turn a request's credentials into a RequestContext.

Strategies:
- `noauth` (Octavia's): every caller is admin; the project comes from X-Project-Id, else X-Tenant-Id or
  X-Tenant, else the configured default project (real Octavia answers 400 there instead).
- `header`: X-Project-Id, X-User-Id and X-Roles are trusted as if a token middleware had set them, so the
  RBAC rules are enforced. Deploy it only behind a proxy that sets those headers.
- `keystone`: X-Auth-Token validated by Keystone (quadriga.api.keystone)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from starlette.requests import Request

from quadriga.api.errors import Unauthorized
from quadriga.config import KeystoneSettings

if TYPE_CHECKING:
    from quadriga.service_token import ServiceToken


@dataclass(frozen=True)
class RequestContext:
    project_id: str | None
    user_id: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)  # Keystone's, lower case
    is_admin: bool = False
    quadriga_roles: frozenset[str] = frozenset()  # from `roles` by the role mapping (api.rolemap)
    # the caller's Keystone token (auth_strategy = keystone): what the API grants a key manager ACL with
    auth_token: str | None = field(default=None, repr=False, compare=False)


class Authenticator(Protocol):
    def authenticate(self, request: Request) -> RequestContext: ...


def _header_project(request: Request) -> str | None:
    h = request.headers
    return h.get("x-project-id") or h.get("x-tenant-id") or h.get("x-tenant") or None


def _roles(request: Request) -> frozenset[str]:
    raw = request.headers.get("x-roles", "")
    return frozenset(r.strip().lower() for r in raw.split(",") if r.strip())


class NoAuth:
    def __init__(self, default_project: str | None) -> None:
        self.default_project = default_project

    def authenticate(self, request: Request) -> RequestContext:
        return RequestContext(
            project_id=_header_project(request) or self.default_project,
            user_id=request.headers.get("x-user-id"),
            roles=_roles(request) | {"admin"},
            is_admin=True,
        )


class TrustedHeaders:
    def authenticate(self, request: Request) -> RequestContext:
        project = _header_project(request)
        roles = _roles(request)
        if not project and not roles:
            raise Unauthorized(
                "Authentication required: send X-Project-Id and X-Roles (auth_strategy=header).",
                headers={"WWW-Authenticate": "X-Project-Id"},
            )
        return RequestContext(project_id=project, user_id=request.headers.get("x-user-id"), roles=roles)


def make_authenticator(
    strategy: str,
    default_project: str | None,
    keystone: KeystoneSettings | None = None,
    service: ServiceToken | None = None,
) -> Authenticator:
    """The one authenticator every API of a server shares (so they share its Keystone token cache);
    `service`: the service user's token, shared with the key manager client."""
    if strategy == "noauth":
        return NoAuth(default_project)
    if strategy == "header":
        return TrustedHeaders()
    if strategy == "keystone" and keystone is not None:
        from quadriga.api.keystone import KeystoneAuth  # it imports this module's RequestContext

        return KeystoneAuth(keystone, service)
    raise ValueError(f"unknown auth_strategy {strategy!r}: use noauth, header or keystone (with its settings)")
