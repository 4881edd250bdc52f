"""The endpoints of one resource type, built from its `Kind`: list, create (one or in bulk), show, update
and delete. Lists go through the shared list engine with Neutron's dialect."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from sqlalchemy.orm import Session

from quadriga.api import listing
from quadriga.api.auth import RequestContext
from quadriga.api.common import add_tags
from quadriga.api.views import load_tags
from quadriga.db.session import Database
from quadriga.network.api.access import is_admin, require_owner
from quadriga.network.api.errors import bad_request
from quadriga.network.api.kinds import Kind
from quadriga.network.api.parsing import Ctx, JsonBody, unwrap, validate


def install(app: FastAPI, db: Database, kind: Kind) -> None:
    """Add the CRUD routes of `kind` to `app`."""
    path = f"/v2.0/{kind.plural}"
    create_body, update_body = kind.bodies

    def show(session: Session, obj: Any) -> dict[str, Any]:
        session.flush()
        session.refresh(obj)
        return kind.spec.render(obj, load_tags(session, [obj.id]))

    def create_one(session: Session, ctx: RequestContext, data: Any) -> dict[str, Any]:
        body = validate(create_body, data)
        obj = kind.create(session, ctx, body)
        add_tags(session, obj.id, body.tags)
        return show(session, obj)

    @app.get(path, name=f"list_{kind.plural}")
    def list_(request: Request, ctx: Ctx) -> dict[str, Any]:
        scope = () if is_admin(ctx) else (kind.visible(ctx),)
        url = f"{str(request.base_url).rstrip('/')}{path}"
        with db.read() as session:
            return listing.run(session, kind.spec, request.query_params, url, scope)

    @app.post(path, status_code=201, name=f"create_{kind.singular}")
    def create(ctx: Ctx, data: JsonBody) -> dict[str, Any]:
        with db.write() as session:
            if isinstance(data, dict) and kind.plural in data and len(data) == 1:
                if not isinstance(data[kind.plural], list):
                    raise bad_request("Body contains invalid data")
                return {kind.plural: [create_one(session, ctx, item) for item in data[kind.plural]]}
            return {kind.singular: create_one(session, ctx, unwrap(kind.singular, data))}

    @app.get(path + "/{ident}", name=f"show_{kind.singular}")
    def get(ident: str, request: Request, ctx: Ctx) -> dict[str, Any]:
        with db.read() as session:
            obj = kind.fetch(session, ctx, ident)
            item = kind.spec.render(obj, load_tags(session, [obj.id]))
        return {kind.singular: listing.select_fields(item, listing.requested_fields(request.query_params))}

    @app.put(path + "/{ident}", name=f"update_{kind.singular}")
    def update(ident: str, ctx: Ctx, data: JsonBody) -> dict[str, Any]:
        body = validate(update_body, unwrap(kind.singular, data), kind.readonly)
        with db.write() as session:
            obj = kind.fetch(session, ctx, ident)
            require_owner(ctx, obj, f"update_{kind.singular}")
            kind.update(session, ctx, obj, body.model_dump(exclude_unset=True))
            return {kind.singular: show(session, obj)}

    @app.delete(path + "/{ident}", status_code=204, name=f"delete_{kind.singular}")
    def remove(ident: str, ctx: Ctx) -> Response:
        with db.write() as session:
            obj = kind.fetch(session, ctx, ident)
            require_owner(ctx, obj, f"delete_{kind.singular}")
            kind.remove(session, obj)
        return Response(status_code=204)
