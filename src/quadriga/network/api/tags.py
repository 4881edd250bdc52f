"""The `/tags` sub-resource of every resource type: read, replace and clear all tags, and check, add or
remove one. Tags are stored as the load-balancer API stores them; every change bumps the object's
revision_number, and only the owner (or an admin) makes one."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from sqlalchemy.orm import Session

from quadriga.api.auth import RequestContext
from quadriga.api.common import set_tags
from quadriga.api.views import load_tags
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.network import embedded as e
from quadriga.network.api.access import require_owner
from quadriga.network.api.errors import bad_request
from quadriga.network.api.kinds import Kind
from quadriga.network.api.parsing import Ctx, JsonBody, validate
from quadriga.network.api.schemas import TagsBody


def install(app: FastAPI, db: Database, kind: Kind) -> None:
    """Add the tag routes of `kind` to `app`."""
    path = f"/v2.0/{kind.plural}/{{ident}}/tags"

    def owned(session: Session, ctx: RequestContext, ident: str) -> Any:
        obj = kind.fetch(session, ctx, ident)
        require_owner(ctx, obj, f"update_{kind.singular}:tags")
        return obj

    def replace(ctx: RequestContext, ident: str, tags: list[str]) -> None:
        with db.write() as session:
            obj = owned(session, ctx, ident)
            set_tags(session, obj.id, tags)
            e.bump(obj)

    def row(session: Session, ident: str, tag: str) -> m.Tag:
        found = session.get(m.Tag, (ident, tag))
        if found is None:
            raise e.NetError(404, "TagNotFound", f"Tag {tag} could not be found for {kind.singular} {ident}.")
        return found

    @app.get(path)
    def get_tags(ident: str, ctx: Ctx) -> dict[str, Any]:
        with db.read() as session:
            obj = kind.fetch(session, ctx, ident)
            return {"tags": load_tags(session, [obj.id]).get(obj.id, [])}

    @app.put(path)
    def replace_tags(ident: str, ctx: Ctx, data: JsonBody) -> dict[str, Any]:
        body = validate(TagsBody, data)
        replace(ctx, ident, body.tags)
        return {"tags": sorted(set(body.tags))}

    @app.delete(path, status_code=204)
    def clear_tags(ident: str, ctx: Ctx) -> Response:
        replace(ctx, ident, [])
        return Response(status_code=204)

    @app.get(path + "/{tag}", status_code=204)
    def has_tag(ident: str, tag: str, ctx: Ctx) -> Response:
        with db.read() as session:
            row(session, kind.fetch(session, ctx, ident).id, tag)
        return Response(status_code=204)

    @app.put(path + "/{tag}", status_code=201)
    def add_tag(ident: str, tag: str, ctx: Ctx) -> Response:
        if len(tag) > 255:
            raise bad_request(f"Invalid input for tag. Reason: '{tag[:20]}...' exceeds maximum length of 255.")
        with db.write() as session:
            obj = owned(session, ctx, ident)
            if session.get(m.Tag, (obj.id, tag)) is None:
                session.add(m.Tag(resource_id=obj.id, tag=tag))
                e.bump(obj)
        return Response(status_code=201)

    @app.delete(path + "/{tag}", status_code=204)
    def remove_tag(ident: str, tag: str, ctx: Ctx) -> Response:
        with db.write() as session:
            obj = owned(session, ctx, ident)
            session.delete(row(session, obj.id, tag))
            e.bump(obj)
        return Response(status_code=204)
