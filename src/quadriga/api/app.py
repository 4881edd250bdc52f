"""The Octavia v2 load-balancer API application."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import Depends, FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quadriga import constants as c
from quadriga.api import errors
from quadriga.api.auth import RequestContext
from quadriga.api.common import Services, context
from quadriga.api.resources import (
    amphorae,
    catalog,
    healthmonitors,
    l7,
    listeners,
    loadbalancers,
    members,
    pools,
    providers,
    quotas,
)

FIRST_MINOR, CURRENT_MINOR = 0, 30
OPENAPI_URL = "/openapi.json"
VERSION_UPDATED = "2024-10-01T00:00:00Z"


class PathAliases:
    """`/v2.0/...` is `/v2/...`, and a `.json` suffix is ignored, as in Octavia."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == "/v2.0" or path.startswith("/v2.0/"):
                path = "/v2" + path[len("/v2.0") :]
            if path.endswith(".json") and path != OPENAPI_URL:
                path = path[: -len(".json")]
            if path != scope["path"]:
                scope = dict(scope, path=path, raw_path=path.encode())
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over 1 MiB with 413 before anything parses them."""

    def __init__(self, app: ASGIApp, limit: int = c.MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await errors.fault(413, f"Request body larger than {self.limit} bytes.")(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # An HTTPException, so the framework's body reader passes it on (it turns others into 400s).
                raise StarletteHTTPException(413, f"Request body larger than {self.limit} bytes.")
            return message

        await self.app(scope, limited, send)


async def reject_unknown_roots(request: Request, _ctx: RequestContext = Depends(context)) -> None:
    """Octavia refuses unknown attributes at the top of a body too: `{"loadbalancer": {...}, "x": 1}` is
    a 400, not a silently ignored key (it runs after authentication, as Octavia's validation does)."""
    params = getattr(getattr(request.scope.get("route"), "dependant", None), "body_params", None) or []
    if not any(getattr(p.field_info, "embed", False) for p in params):
        return  # no body, or one the endpoint checks itself
    try:
        body = await request.json()
    except ValueError:
        return  # not JSON: the framework reports that
    if isinstance(body, dict) and (unknown := sorted(set(body) - {p.alias for p in params})):
        raise errors.BadRequest(errors.unknown_attribute(params[0].alias, ", ".join(unknown)))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


async def reject_nul_characters(request: Request, _ctx: RequestContext = Depends(context)) -> None:
    """No text the API stores or looks up may contain NUL: PostgreSQL refuses it (a 500 otherwise), and
    SQLite would store what no other backend can. A NUL in the path, the query or a JSON body is a 400."""
    where = None
    if "\x00" in request.scope["path"]:
        where = "path"
    elif any(_has_nul(k) or _has_nul(v) for k, v in request.query_params.multi_items()):
        where = "query"
    elif b"\\u0000" in await request.body():
        with contextlib.suppress(ValueError):  # not JSON: the framework reports that
            where = "body" if _has_nul(await request.json()) else None
    if where:
        raise errors.BadRequest(f"Invalid input: NUL characters are not allowed in the request {where}.")


def _versions(base: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"v2.{minor}",
            "status": "CURRENT" if minor == CURRENT_MINOR else "SUPPORTED",
            "updated": VERSION_UPDATED,
            "links": [{"href": f"{base}/v2", "rel": "self"}],
        }
        for minor in range(FIRST_MINOR, CURRENT_MINOR + 1)
    ]


def create_app(svc: Services) -> FastAPI:
    app = FastAPI(
        title="quadriga load-balancer API (Octavia v2)",
        version=f"2.{CURRENT_MINOR}",
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_URL,
    )
    app.state.services = svc
    errors.install_handlers(app)

    @app.get("/")
    def root(request: Request) -> dict:
        return {"versions": _versions(str(request.base_url).rstrip("/"))}

    @app.get("/v2")
    def v2(request: Request) -> dict:
        return {"version": _versions(str(request.base_url).rstrip("/"))[-1]}

    @app.get("/healthcheck")
    def healthcheck() -> dict:
        with svc.db.read() as session:
            session.connection().exec_driver_sql("SELECT 1")
        return {"status": "OK"}

    @app.get("/projects", include_in_schema=False)
    @app.get("/projects/{project}", include_in_schema=False)
    def no_identity_service() -> None:
        """The clouds.yaml's auth endpoint is this API, so the CLI asks it to resolve project names (for
        `loadbalancer quota set NAME`). There is no identity service here: a 403 tells the client to use
        the name as the project id, as it does when Keystone forbids the lookup."""
        raise errors.Forbidden("No identity service here: project names are used as project ids.")

    for module in (loadbalancers, listeners, pools, members, healthmonitors, l7, quotas, providers, catalog, amphorae):
        app.include_router(module.router, dependencies=[Depends(reject_unknown_roots), Depends(reject_nul_characters)])
    app.add_middleware(BodyLimit)
    app.add_middleware(PathAliases)
    return app
