"""The operator's catalogue: flavors and flavor profiles, availability zones and their profiles.

All four are plain CRUD with the same shape (admin writes, a profile must exist, profile metadata is
validated by its provider), so one router factory serves them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from quadriga.api import common, listing, policy, schemas, views
from quadriga.api.auth import RequestContext
from quadriga.api.errors import BadRequest, Conflict, NotFound, unknown_attribute
from quadriga.db import models as m

router = APIRouter()


@dataclass
class Catalog:
    path: str
    model: Any
    root: str
    plural: str
    label: str
    key: str
    view: Callable[[Any], dict[str, Any]]
    create: type[BaseModel]
    update: type[BaseModel]
    read_rule: str
    links_key: str
    # profile side: (profile model, profile id attribute, label); provider side: (data attr, validator name)
    profile: tuple[Any, str, str] | None = None
    data: tuple[str, str] | None = None


def _check_provider_data(request: Request, provider_name: str, data_attr: str, raw: str, validator: str) -> None:
    """As Octavia: the metadata must be JSON (400 InvalidOption), the provider enabled (400), and the
    provider must accept every option (501 ProviderUnsupportedOptionError, naming the provider)."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BadRequest(f"{raw} is not a valid option for {data_attr}")
    svc = common.services(request)
    driver = svc.providers.get(provider_name)
    if driver is None:
        raise BadRequest(f"Provider '{provider_name}' is not enabled.")
    getattr(driver, validator)(data)


def _in_use(session: Any, cat: Catalog, obj: Any) -> bool:
    if cat.model is m.Flavor:
        return session.scalars(select(m.LoadBalancer.id).where(m.LoadBalancer.flavor_id == obj.id)).first() is not None
    if cat.model is m.AvailabilityZone:
        stmt = select(m.LoadBalancer.id).where(m.LoadBalancer.availability_zone == obj.name)
        return session.scalars(stmt).first() is not None
    parent = m.Flavor if cat.model is m.FlavorProfile else m.AvailabilityZone
    column = parent.flavor_profile_id if parent is m.Flavor else parent.availability_zone_profile_id
    return session.scalars(select(column).where(column == obj.id)).first() is not None


def install(cat: Catalog) -> None:
    spec = listing.ListSpec(
        model=cat.model,
        plural=cat.plural,
        render=lambda obj, _tags: cat.view(obj),
        columns={col.key: getattr(cat.model, col.key) for col in cat.model.__table__.columns},
        tagged=False,
        id_column=cat.key,
    )

    def validate(request: Request, session: Any, values: dict[str, Any]) -> None:
        if cat.profile:
            model, attr, label = cat.profile
            if session.get(model, values[attr]) is None:
                raise NotFound(label, values[attr])
        if cat.data:
            data_attr, validator = cat.data
            _check_provider_data(request, values["provider_name"], data_attr, values[data_attr], validator)

    def list_items(request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
        policy.enforce(ctx, cat.read_rule, ctx.project_id)
        with common.services(request).db.read() as session:
            out = listing.run(session, spec, request.query_params, common.base_url(request))
        out[cat.links_key] = out.pop(f"{cat.plural}_links")
        return out

    def get_item(ident: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
        policy.enforce(ctx, cat.read_rule, ctx.project_id)
        with common.services(request).db.read() as session:
            obj = session.get(cat.model, ident)
            if obj is None:
                raise NotFound(cat.label, ident)
            return {cat.root: listing.select_fields(cat.view(obj), listing.requested_fields(request.query_params))}

    def create_item(request: Request, body: dict = Body(...), ctx: RequestContext = Depends(common.context)) -> dict:
        policy.enforce(ctx, policy.ADMIN)
        item = cat.create.model_validate(_root(body, cat.root))
        values = item.model_dump()
        try:
            with common.services(request).db.write() as session:
                validate(request, session, values)
                obj = cat.model(**values)
                session.add(obj)
                session.flush()
                return {cat.root: cat.view(obj)}
        except IntegrityError:
            raise Conflict(f"A {cat.label.lower()} of {values.get('name')} already exists.") from None

    def update_item(
        ident: str, request: Request, body: dict = Body(...), ctx: RequestContext = Depends(common.context)
    ) -> dict:
        policy.enforce(ctx, policy.ADMIN)
        item = cat.update.model_validate(_root(body, cat.root))
        changes = {k: v for k, v in common.sent(item).items() if v is not None or k == "description"}
        try:
            with common.services(request).db.write() as session:
                obj = session.get(cat.model, ident)
                if obj is None:
                    raise NotFound(cat.label, ident)
                values = views_values(obj) | changes
                if cat.data and {"provider_name", cat.data[0]} & set(changes) and _in_use(session, cat, obj):
                    raise Conflict(f"{cat.label} {ident} is in use and cannot be modified.")
                validate(request, session, values)
                for key, value in changes.items():
                    setattr(obj, key, value)
                session.flush()
                return {cat.root: cat.view(obj)}
        except IntegrityError:
            raise Conflict(f"A {cat.label.lower()} of {changes.get('name')} already exists.") from None

    def delete_item(ident: str, request: Request, ctx: RequestContext = Depends(common.context)) -> Response:
        policy.enforce(ctx, policy.ADMIN)
        with common.services(request).db.write() as session:
            obj = session.get(cat.model, ident)
            if obj is None:
                raise NotFound(cat.label, ident)
            if _in_use(session, cat, obj):
                raise Conflict(f"{cat.label} {ident} is in use and cannot be modified.")
            session.delete(obj)
        return Response(status_code=204)

    router.add_api_route(cat.path, list_items, methods=["GET"])
    router.add_api_route(cat.path, create_item, methods=["POST"], status_code=201, openapi_extra=_body_doc(cat))
    router.add_api_route(cat.path + "/{ident}", get_item, methods=["GET"])
    router.add_api_route(cat.path + "/{ident}", update_item, methods=["PUT"], openapi_extra=_body_doc(cat, update=True))
    router.add_api_route(cat.path + "/{ident}", delete_item, methods=["DELETE"], status_code=204)


def views_values(obj: Any) -> dict[str, Any]:
    return {col.key: getattr(obj, col.key) for col in obj.__table__.columns}


def _root(body: Any, root: str) -> Any:
    if not isinstance(body, dict) or root not in body:
        raise BadRequest(f"Invalid input for field/attribute {root}. Value: 'None'. Mandatory field missing.")
    unknown = set(body) - {root}
    if unknown:
        raise BadRequest(unknown_attribute(root, ", ".join(sorted(unknown))))
    return body[root]


def _body_doc(cat: Catalog, update: bool = False) -> dict[str, Any]:
    model = cat.update if update else cat.create
    schema = {"type": "object", "required": [cat.root], "properties": {cat.root: model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


install(
    Catalog(
        path="/v2/lbaas/flavorprofiles",
        model=m.FlavorProfile,
        root="flavorprofile",
        plural="flavorprofiles",
        label="Flavor profile",
        key="id",
        view=views.flavorprofile,
        create=schemas.FlavorProfileCreate,
        update=schemas.FlavorProfileUpdate,
        read_rule=policy.ADMIN,
        links_key="flavorprofile_links",
        data=("flavor_data", "validate_flavor"),
    )
)
install(
    Catalog(
        path="/v2/lbaas/flavors",
        model=m.Flavor,
        root="flavor",
        plural="flavors",
        label="Flavor",
        key="id",
        view=views.flavor,
        create=schemas.FlavorCreate,
        update=schemas.FlavorUpdate,
        read_rule=policy.READ,
        links_key="flavors_links",
        profile=(m.FlavorProfile, "flavor_profile_id", "Flavor profile"),
    )
)
install(
    Catalog(
        path="/v2/lbaas/availabilityzoneprofiles",
        model=m.AvailabilityZoneProfile,
        root="availability_zone_profile",
        plural="availability_zone_profiles",
        label="Availability Zone Profile",
        key="id",
        view=views.availability_zone_profile,
        create=schemas.AvailabilityZoneProfileCreate,
        update=schemas.AvailabilityZoneProfileUpdate,
        read_rule=policy.ADMIN,
        links_key="availability_zone_profile_links",
        data=("availability_zone_data", "validate_availability_zone"),
    )
)
install(
    Catalog(
        path="/v2/lbaas/availabilityzones",
        model=m.AvailabilityZone,
        root="availability_zone",
        plural="availability_zones",
        label="Availability Zone",
        key="name",
        view=views.availability_zone,
        create=schemas.AvailabilityZoneCreate,
        update=schemas.AvailabilityZoneUpdate,
        read_rule=policy.READ,
        links_key="availability_zones_links",
        profile=(m.AvailabilityZoneProfile, "availability_zone_profile_id", "Availability Zone Profile"),
    )
)
