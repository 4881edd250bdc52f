"""Load balancers: `/v2/lbaas/loadbalancers`, with the single-call graph create, cascade delete, the
status tree, statistics and failover."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from quadriga import constants as c
from quadriga import status
from quadriga.api import common, listing, policy, schemas, tls_refs, views
from quadriga.api.auth import RequestContext
from quadriga.api.errors import BadRequest, Validation
from quadriga.api.resources.listeners import build_listener
from quadriga.api.resources.pools import build_pool
from quadriga.db import models as m
from quadriga.network import embedded

router = APIRouter()

SPEC = listing.ListSpec(
    model=m.LoadBalancer,
    plural="loadbalancers",
    render=views.loadbalancer,
    columns=listing.common_columns(
        m.LoadBalancer,
        "name",
        "description",
        "provider",
        "flavor_id",
        "availability_zone",
        "vip_address",
        "vip_port_id",
        "vip_subnet_id",
        "vip_network_id",
        "vip_qos_policy_id",
        "vip_vnic_type",
    ),
    options=(selectinload(m.LoadBalancer.listeners), selectinload(m.LoadBalancer.pools)),
)

VIP_SELECTORS = "vip_port_id, vip_network_id, vip_subnet_id"


def _provider_name(svc: common.Services, session: Session, body: schemas.LoadBalancerCreate) -> str:
    """The provider that will run this load balancer, after Octavia's flavor and zone checks."""
    flavor_provider = None
    if body.flavor_id:
        flavor = session.get(m.Flavor, body.flavor_id)
        if flavor is None:
            raise Validation("Invalid flavor_id.")
        if not flavor.enabled:
            raise BadRequest(f"The selected flavor is not allowed in this deployment: {body.flavor_id}")
        flavor_provider = flavor.flavor_profile.provider_name
    provider = body.provider or flavor_provider or svc.default_provider
    if provider not in svc.providers:
        raise BadRequest(f"Provider '{provider}' is not enabled.")
    if flavor_provider and flavor_provider != provider:
        raise BadRequest(f"Flavor '{body.flavor_id}' is not compatible with provider '{provider}'")
    if body.availability_zone:
        az = session.get(m.AvailabilityZone, body.availability_zone)
        if az is None:
            raise Validation("Invalid availability zone.")
        if not az.enabled:
            raise BadRequest(f"The selected availability_zone is not allowed in this deployment: {az.name}")
        if az.availability_zone_profile.provider_name != provider:
            raise BadRequest(f"Availability zone '{az.name}' is not compatible with provider '{provider}'")
    return provider


def _graph(body: schemas.LoadBalancerCreate) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Flatten a graph create as Octavia does: pools defined inline under listeners or policies move to
    the top level; inline pools that carry only a name are references to a pool defined elsewhere."""
    listeners = [li.model_dump(exclude_unset=True) for li in body.listeners or []]
    pools = [p.model_dump(exclude_unset=True) for p in body.pools or []]
    required: set[str] = set()

    def collect(pool: dict[str, Any] | None) -> None:
        if not pool:
            return
        if not pool.get("name"):
            raise Validation("Pools must be named when creating a fully populated loadbalancer.")
        if len(pool) > 1:
            pools.append(pool)
        else:
            required.add(pool["name"])

    for li in listeners:
        collect(li.get("default_pool"))
        for pol in li.get("l7policies") or []:
            collect(pol.get("redirect_pool"))
    names = [p.get("name") for p in pools]
    if len(set(names)) != len(names):
        raise Validation("Pool names must be unique when creating a fully populated loadbalancer.")
    for name in required - set(names):
        raise Validation(f"Pool '{name}' was referenced but no full definition was found.")
    for p in pools:
        for attr in ("protocol", "lb_algorithm"):
            if attr not in p:
                raise Validation(f"Pool definition for '{p.get('name')}' missing required attribute: {attr}")
    return listeners, pools


def _count_graph(listeners: list[dict], pools: list[dict]) -> dict[str, int]:
    policies = [pol for li in listeners for pol in li.get("l7policies") or []]
    return {
        "listener": len(listeners),
        "pool": len(pools),
        "healthmonitor": sum(1 for p in pools if p.get("healthmonitor")),
        "member": sum(len(p.get("members") or []) for p in pools),
        "l7policy": len(policies),
        "l7rule": sum(len(pol.get("rules") or []) for pol in policies),
    }


@router.get("/v2/lbaas/loadbalancers")
def list_loadbalancers(request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    return common.list_visible(request, ctx, SPEC, m.LoadBalancer.provisioning_status != c.DELETED)


@router.get("/v2/lbaas/loadbalancers/{lb_id}")
def get_loadbalancer(lb_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    return common.show(request, ctx, m.LoadBalancer, lb_id, "Load Balancer", "loadbalancer", views.loadbalancer)


@router.get("/v2/lbaas/loadbalancers/{lb_id}/status")
@router.get("/v2/lbaas/loadbalancers/{lb_id}/statuses")
def loadbalancer_status(lb_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    svc = common.services(request)
    with svc.db.read() as session:
        lb = common.get_owned(session, m.LoadBalancer, lb_id, "Load Balancer", ctx)
        return views.status_tree(lb)


@router.get("/v2/lbaas/loadbalancers/{lb_id}/stats")
def loadbalancer_stats(lb_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> dict:
    svc = common.services(request)
    with svc.db.read() as session:
        common.get_owned(session, m.LoadBalancer, lb_id, "Load Balancer", ctx)
        return {"stats": views.statistics(session, m.ListenerStatistics.load_balancer_id == lb_id)}


@router.post("/v2/lbaas/loadbalancers", status_code=201)
def create_loadbalancer(
    request: Request,
    loadbalancer: schemas.LoadBalancerCreate = Body(embed=True),
    ctx: RequestContext = Depends(common.context),
) -> dict:
    svc = common.services(request)
    body = loadbalancer
    if not (body.vip_port_id or body.vip_network_id or body.vip_subnet_id):
        raise BadRequest(f"Validation failure: VIP must contain one of: {VIP_SELECTORS}.")
    project = common.project_for_create(ctx, body)
    listeners, pools = _graph(body)
    if listeners or pools:  # certificate refs to check (for a provider that loads them), outside the write
        with svc.db.read() as session:
            data_plane = svc.providers[_provider_name(svc, session, body)].data_plane
        if data_plane:
            tls_refs.check_graph(svc, ctx, project, listeners, pools)
    with common.change(svc) as session:
        provider = _provider_name(svc, session, body)
        common.check_quota(svc, session, project, "loadbalancer")
        for kind, count in _count_graph(listeners, pools).items():
            common.check_quota(svc, session, project, kind, count)
        lb = m.LoadBalancer(
            id=m.new_id(),
            project_id=project,
            name=body.name,
            description=body.description,
            admin_state_up=body.admin_state_up,
            provider=provider,
            flavor_id=body.flavor_id,
            availability_zone=body.availability_zone,
            vip_qos_policy_id=body.vip_qos_policy_id,
            vip_sg_ids=body.vip_sg_ids,
            provisioning_status=c.PENDING_CREATE,
            operating_status=c.OFFLINE,
            revision=0,  # mark_change below makes it 1
        )
        stand_in = not svc.providers[provider].data_plane
        vip = embedded.allocate_vip(
            session,
            project,
            lb.id,
            port_id=body.vip_port_id,
            network_id=body.vip_network_id,
            subnet_id=body.vip_subnet_id,
            address=body.vip_address,
            stand_in=stand_in,
        )
        lb.vip_address, lb.vip_port_id = vip.address, vip.port_id
        lb.vip_subnet_id, lb.vip_network_id = vip.subnet_id, vip.network_id
        lb.additional_vips = _additional_vips(session, project, lb, vip, body.additional_vips or [], stand_in)
        session.add(lb)
        common.add_tags(session, lb.id, body.tags)
        if listeners or pools:
            session.flush()  # the objects beneath it refer to it
            pool_ids = {p["name"]: build_pool(session, lb, project, p).id for p in pools}
            for li in listeners:
                default_pool = li.get("default_pool")
                if default_pool:
                    li["default_pool_id"] = pool_ids[default_pool["name"]]
                build_listener(session, lb, project, li, pool_ids)
        status.mark_change(lb, "loadbalancer", lb, "create")
        lb.revision = 1
        common.provider_of(svc, lb).loadbalancer_create(lb)
        lb.updated_at = None  # the steps above are its create: Octavia answers null until the first change
        session.flush()
        if not (listeners or pools):  # one INSERT of what it holds; nothing beneath it, its tags just written
            set_committed_value(lb, "listeners", [])
            set_committed_value(lb, "pools", [])
            return {"loadbalancer": views.full_loadbalancer(lb, {lb.id: sorted(set(body.tags))})}
        session.refresh(lb)
        ids = [o.id for o in status.tree(lb)]
        return {"loadbalancer": views.full_loadbalancer(lb, views.load_tags(session, ids))}


def _additional_vips(
    session: Session,
    project: str,
    lb: m.LoadBalancer,
    vip: embedded.Vip,
    extra: list[schemas.AdditionalVip],
    stand_in: bool,
) -> list[dict[str, Any]]:
    subnets = [vip.subnet_id]
    out = []
    for item in extra:
        if item.subnet_id in subnets:
            raise Validation("Duplicate VIP subnet(s) specified. Only one IP can be bound per subnet.")
        subnets.append(item.subnet_id)
        if stand_in and session.get(m.Subnet, item.subnet_id) is None:
            extra_vip = embedded.stand_in_vip(None, vip.network_id, item.subnet_id, item.ip_address)
        else:
            extra_vip = embedded.allocate_vip(
                session, project, lb.id, subnet_id=item.subnet_id, address=item.ip_address
            )
        if extra_vip.network_id != vip.network_id:
            raise Validation("All VIP subnets must belong to the same network.")
        out.append({"subnet_id": extra_vip.subnet_id, "ip_address": extra_vip.address, "port_id": extra_vip.port_id})
    return out


@router.put("/v2/lbaas/loadbalancers/{lb_id}")
def update_loadbalancer(
    lb_id: str,
    request: Request,
    loadbalancer: schemas.LoadBalancerUpdate = Body(embed=True),
    ctx: RequestContext = Depends(common.context),
) -> dict:
    svc = common.services(request)
    with common.change(svc) as session:
        common.get_owned(session, m.LoadBalancer, lb_id, "Load Balancer", ctx, policy.WRITE)
        lb = status.lock_loadbalancer(session, lb_id)
        old = common.snapshot(lb)
        changes = common.sent(loadbalancer)
        common.set_tags(session, lb.id, changes.pop("tags", None))
        if "admin_state_up" in changes and changes["admin_state_up"] is None:
            changes["admin_state_up"] = True
        for key, value in changes.items():
            setattr(lb, key, value)
        status.mark_change(lb, "loadbalancer", lb, "update")
        common.provider_of(svc, lb).loadbalancer_update(old, lb)
        return common.rendered(session, "loadbalancer", views.loadbalancer, lb)


@router.delete("/v2/lbaas/loadbalancers/{lb_id}", status_code=204)
def delete_loadbalancer(
    lb_id: str, request: Request, cascade: str = "false", ctx: RequestContext = Depends(common.context)
) -> Response:
    svc = common.services(request)
    cascading = cascade.lower() in ("true", "1", "yes", "on")
    with common.change(svc) as session:
        common.get_owned(session, m.LoadBalancer, lb_id, "Load Balancer", ctx, policy.WRITE)
        lb = status.lock_loadbalancer(session, lb_id, deleting=True)
        if (lb.listeners or lb.pools) and not cascading:
            raise Validation(f"Cannot delete Load Balancer {lb_id} - it has children")
        status.mark_change(lb, "loadbalancer", lb, "delete")
        common.provider_of(svc, lb).loadbalancer_delete(lb, cascading)
    return Response(status_code=204)


@router.put("/v2/lbaas/loadbalancers/{lb_id}/failover", status_code=202)
def failover_loadbalancer(lb_id: str, request: Request, ctx: RequestContext = Depends(common.context)) -> Response:
    svc = common.services(request)
    policy.enforce(ctx, policy.ADMIN)
    with common.change(svc) as session:
        common.get_owned(session, m.LoadBalancer, lb_id, "Load Balancer", ctx, policy.ADMIN)
        lb = status.lock_loadbalancer(session, lb_id, deleting=True)
        status.mark_change(lb, "loadbalancer", lb, "update")
        common.provider_of(svc, lb).loadbalancer_failover(lb)
    return Response(status_code=202)
