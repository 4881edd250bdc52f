"""Providers and their capabilities: `/v2/lbaas/providers`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from quadriga.api import common, listing, policy
from quadriga.api.auth import RequestContext
from quadriga.api.errors import BadRequest
from quadriga.providers.base import ProviderDriver

router = APIRouter()


def _driver(request: Request, name: str) -> ProviderDriver:
    driver = common.services(request).providers.get(name)
    if driver is None:
        raise BadRequest(f"Provider '{name}' is not enabled.")
    return driver


def _filtered(request: Request, items: dict[str, str]) -> dict[str, str]:
    """Octavia's capability lists take exact-match `name` and `description` filters."""
    name, description = request.query_params.get("name"), request.query_params.get("description")
    return {k: v for k, v in items.items() if (not name or k == name) and (not description or v == description)}


def _capabilities(request: Request, items: dict[str, str]) -> list[dict[str, str]]:
    fields = listing.requested_fields(request.query_params)
    return [listing.select_fields({"name": k, "description": v}, fields) for k, v in sorted(items.items())]


@router.get("/v2/lbaas/providers")
def list_providers(request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    policy.enforce(ctx, policy.READ, ctx.project_id)
    drivers = common.services(request).providers
    return {"providers": _capabilities(request, {name: d.description for name, d in drivers.items()})}


@router.get("/v2/lbaas/providers/{name}/flavor_capabilities")
def flavor_capabilities(name: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    policy.enforce(ctx, policy.ADMIN)
    metadata = _filtered(request, _driver(request, name).get_supported_flavor_metadata())
    return {"flavor_capabilities": _capabilities(request, metadata)}


@router.get("/v2/lbaas/providers/{name}/availability_zone_capabilities")
def availability_zone_capabilities(name: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    policy.enforce(ctx, policy.ADMIN)
    metadata = _filtered(request, _driver(request, name).get_supported_availability_zone_metadata())
    return {"availability_zone_capabilities": _capabilities(request, metadata)}
