"""The networking API's ASGI app: discovery documents, Neutron's optional `.json` suffix, the error
handlers, the stand-ins and the routes (and tag routes) of every resource type, over one database and
authenticator."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from quadriga.api.auth import Authenticator
from quadriga.db.session import Database
from quadriga.network.api import routes, stand_ins, tags
from quadriga.network.api.errors import install_handlers
from quadriga.network.api.kinds import KINDS

_COLLECTIONS = [("network", "networks"), ("subnet", "subnets"), ("port", "ports"), ("subnetpool", "subnetpools")]


class _JsonSuffix:
    """Accept Neutron's optional `.json` suffix on every path."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith(".json"):
            scope = dict(scope, path=scope["path"][:-5])
            if scope.get("raw_path", b"").endswith(b".json"):
                scope["raw_path"] = scope["raw_path"][:-5]
        await self.app(scope, receive, send)


def create_app(db: Database, authenticator: Authenticator) -> FastAPI:
    """The Neutron-compatible API over `db`; mount it at the root of its own port (clients expect `/v2.0`)."""
    app = FastAPI(title="quadriga networking", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.authenticator = authenticator
    app.add_middleware(_JsonSuffix)
    install_handlers(app)

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    @app.get("/")
    def versions(request: Request) -> dict[str, Any]:
        link = {"href": f"{base(request)}/v2.0/", "rel": "self"}
        return {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [link]}]}

    @app.get("/v2.0")
    @app.get("/v2.0/")
    def resources(request: Request) -> dict[str, Any]:
        return {
            "resources": [
                {"name": n, "collection": col, "links": [{"href": f"{base(request)}/v2.0/{col}", "rel": "self"}]}
                for n, col in _COLLECTIONS
            ]
        }

    stand_ins.install(app, db)
    for kind in KINDS:
        routes.install(app, db, kind)
        tags.install(app, db, kind)
    return app
