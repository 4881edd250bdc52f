"""Read-only stand-ins for what the clients probe but the embedded service does not implement: the
extension list, each project's "default" security group (derived, never stored), and empty subnet pools
and QoS policies. They answer in Neutron's shape so `openstack network ...` and octaviaclient proceed."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy import select

from quadriga.api.auth import RequestContext
from quadriga.api.listing import requested_fields, select_fields
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.network.api.access import is_admin
from quadriga.network.api.listing import filter_dicts
from quadriga.network.api.parsing import Ctx
from quadriga.network.embedded import NetError

EXTENSIONS = {
    "security-group": ("security-group", "The security groups extension."),
    "standard-attr-tag": ("Tag support for resources with standard attribute", "Enables to set tag on resources."),
    "router": ("Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 Neutron networks."),
    "quotas": ("Quota management support", "Expose functions for quotas management per project"),
    "port-security": ("Port Security", "Provides port security"),
    "allowed-address-pairs": ("Allowed Address Pairs", "Provides allowed address pairs"),
    "qos": ("Quality of Service", "The Quality of Service extension."),
    "binding": ("Port Binding", "Expose port bindings of a virtual port to external application"),
    "external-net": ("Neutron external network", "Adds external network attribute to network resource."),
    "subnet_allocation": ("Subnet Allocation", "Enables allocation of subnets from a subnet pool"),
}
_SG_NAMESPACE = uuid.UUID("5b8ad0c9-3f3c-4b0e-9d63-0d1b61f1a7f2")


def _extension(alias: str) -> dict[str, Any]:
    name, description = EXTENSIONS[alias]
    return {
        "alias": alias,
        "name": name,
        "description": description,
        "updated": "2013-01-01T10:00:00-00:00",
        "links": [],
    }


def default_security_group(project_id: str) -> dict[str, Any]:
    """Every project's "default" group, derived from the project id (nothing to store)."""
    sg_id = str(uuid.uuid5(_SG_NAMESPACE, f"sg:{project_id}"))

    def rule(direction: str, ethertype: str, remote: str | None) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid5(_SG_NAMESPACE, f"{sg_id}:{direction}:{ethertype}")),
            "security_group_id": sg_id,
            "project_id": project_id,
            "tenant_id": project_id,
            "direction": direction,
            "ethertype": ethertype,
            "protocol": None,
            "port_range_min": None,
            "port_range_max": None,
            "remote_ip_prefix": None,
            "remote_group_id": remote,
            "description": "",
            "revision_number": 0,
        }

    return {
        "id": sg_id,
        "name": "default",
        "description": "Default security group",
        "project_id": project_id,
        "tenant_id": project_id,
        "stateful": True,
        "shared": False,
        "tags": [],
        "revision_number": 1,
        "security_group_rules": [
            rule(d, eth, sg_id if d == "ingress" else None) for d in ("ingress", "egress") for eth in ("IPv4", "IPv6")
        ],
    }


def _security_groups(db: Database, ctx: RequestContext) -> list[dict[str, Any]]:
    """The caller's group; an admin sees the group of every project that has a network too."""
    projects = {ctx.project_id} if ctx.project_id else set()
    if is_admin(ctx):
        with db.read() as session:
            projects |= set(session.scalars(select(m.Network.project_id).distinct()))
    return [default_security_group(p) for p in sorted(projects)]


def install(app: FastAPI, db: Database) -> None:
    """Add the stand-ins' routes to `app`."""

    @app.get("/v2.0/extensions")
    def extensions(ctx: Ctx) -> dict[str, Any]:
        return {"extensions": [_extension(a) for a in EXTENSIONS]}

    @app.get("/v2.0/extensions/{alias}")
    def extension(alias: str, ctx: Ctx) -> dict[str, Any]:
        if alias not in EXTENSIONS:
            raise NetError(404, "HTTPNotFound", f"Extension with alias {alias} does not exist")
        return {"extension": _extension(alias)}

    @app.get("/v2.0/subnetpools")
    def subnetpools(ctx: Ctx) -> dict[str, Any]:
        return {"subnetpools": []}

    @app.get("/v2.0/qos/policies")
    def qos_policies(ctx: Ctx) -> dict[str, Any]:
        return {"policies": []}

    @app.get("/v2.0/security-groups")
    def security_groups(request: Request, ctx: Ctx) -> dict[str, Any]:
        items = filter_dicts(_security_groups(db, ctx), request.query_params)
        fields = requested_fields(request.query_params)
        return {"security_groups": [select_fields(i, fields) for i in items]}

    @app.get("/v2.0/security-groups/{sg_id}")
    def security_group(sg_id: str, request: Request, ctx: Ctx) -> dict[str, Any]:
        for sg in _security_groups(db, ctx):
            if sg["id"] == sg_id:
                return {"security_group": select_fields(sg, requested_fields(request.query_params))}
        raise NetError(404, "SecurityGroupNotFound", f"Security group {sg_id} does not exist")
