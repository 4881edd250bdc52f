"""Quotas: `/v2/lbaas/quotas` and their enforcement on every create path (single objects, the load
balancer graph create, the member batch update), under the trusted-headers auth where they apply
(the `rbac_api` default load balancer quota is 2, every other resource unlimited)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from quadriga.db import models as m
from tests.support.api_harness import OTHER, PROJECT, Api

MEMBER = {"X-Project-Id": PROJECT, "X-Roles": "member"}
ADMIN = {"X-Project-Id": PROJECT, "X-Roles": "admin"}
QUOTA_KEYS = {"loadbalancer", "listener", "pool", "healthmonitor", "member", "l7policy", "l7rule"}
LABELS = {
    "loadbalancer": "Load Balancer",
    "listener": "Listener",
    "pool": "Pool",
    "healthmonitor": "Health Monitor",
    "member": "Member",
    "l7policy": "L7 Policy",
    "l7rule": "L7 Rule",
}


def quota_fault(label: str) -> dict[str, Any]:
    return {"faultcode": "Client", "faultstring": f"Quota has been met for resources: {label}", "debuginfo": None}


def assert_quota_met(r: Any, kind: str) -> None:
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.json() == quota_fault(LABELS[kind])


@pytest.fixture
def qapi(rbac_api: Api) -> Api:
    rbac_api.headers = dict(MEMBER)
    return rbac_api


def set_quota(api: Api, project: str = PROJECT, **values: Any) -> dict:
    return api.ok(api.put(f"/v2/lbaas/quotas/{project}", {"quota": values}, headers=ADMIN), 202)["quota"]


def rows(api: Api) -> dict[str, int]:
    """How many rows of each kind the database holds (to prove a refused request wrote nothing)."""
    models = {
        "loadbalancer": m.LoadBalancer,
        "listener": m.Listener,
        "pool": m.Pool,
        "healthmonitor": m.HealthMonitor,
        "member": m.Member,
        "l7policy": m.L7Policy,
        "l7rule": m.L7Rule,
        "port": m.Port,
        "port_ip": m.PortIP,
        "tag": m.Tag,
    }
    with api.db.read() as s:
        return {k: s.scalar(select(func.count()).select_from(model)) for k, model in models.items()}


def lb_body(api: Api, **extra: Any) -> dict:
    return {"loadbalancer": {"vip_subnet_id": api.subnet_id(), **extra}}


def graph(n: int) -> list[dict]:
    """`n` HTTP listeners, each with a default pool (one member, a health monitor) and one L7 policy
    with one rule: n of every child kind."""
    listeners = []
    for i in range(n):
        pool = {
            "name": f"pool{i}",
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            "members": [{"address": f"10.10.0.{100 + i}", "protocol_port": 80}],
            "healthmonitor": {"type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3},
        }
        rule = {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/a"}
        policy = {"action": "REJECT", "rules": [rule]}
        listeners.append({"protocol": "HTTP", "protocol_port": 80 + i, "default_pool": pool, "l7policies": [policy]})
    return listeners


# --- the load balancer quota ------------------------------------------------------------------------


def test_default_lb_quota_refuses_the_third_and_writes_nothing(qapi: Api) -> None:
    first = qapi.create_lb(wait=False)
    qapi.create_lb(wait=False)
    before = rows(qapi)
    r = qapi.post("/v2/lbaas/loadbalancers", lb_body(qapi, tags=["t"]))
    assert_quota_met(r, "loadbalancer")
    assert rows(qapi) == before  # no LB, no VIP port, no IP allocation, no tag
    # the quota is per project: another project still has its own two
    other = {"X-Project-Id": OTHER, "X-Roles": "member"}
    assert qapi.post("/v2/lbaas/loadbalancers", lb_body(qapi), headers=other).status_code == 201
    # a deleted load balancer frees its slot
    qapi.wait_lb(first["id"])
    qapi.ok(qapi.delete(f"/v2/lbaas/loadbalancers/{first['id']}"), 204)
    qapi.wait_lb(first["id"], "DELETED")
    qapi.create_lb(wait=False)


def test_admin_is_also_bound_by_the_project_quota(qapi: Api) -> None:
    qapi.create_lb(wait=False)
    qapi.create_lb(wait=False)
    assert_quota_met(qapi.post("/v2/lbaas/loadbalancers", lb_body(qapi), headers=ADMIN), "loadbalancer")
    r = qapi.post("/v2/lbaas/loadbalancers", lb_body(qapi, project_id=PROJECT), headers={"X-Roles": "admin"})
    assert_quota_met(r, "loadbalancer")


def test_unlimited_and_zero(qapi: Api) -> None:
    set_quota(qapi, loadbalancer=-1)
    for _ in range(3):
        qapi.create_lb(wait=False)
    set_quota(qapi, loadbalancer=0)
    assert_quota_met(qapi.post("/v2/lbaas/loadbalancers", lb_body(qapi)), "loadbalancer")


# --- the quota API ------------------------------------------------------------------------------------


def test_put_get_list_delete(qapi: Api) -> None:
    # a project that only used its defaults has a quota row (the lock) but is not listed
    assert (
        qapi.post("/v2/lbaas/loadbalancers", lb_body(qapi), headers={**MEMBER, "X-Project-Id": OTHER}).status_code
        == 201
    )
    assert qapi.ok(qapi.get("/v2/lbaas/quotas", headers=ADMIN), 200) == {"quotas": [], "quotas_links": []}

    values = {
        "loadbalancer": 5,
        "listener": 10,
        "pool": 3,
        "member": 50,
        "healthmonitor": 4,
        "l7policy": 6,
        "l7rule": 7,
    }
    r = qapi.put(f"/v2/lbaas/quotas/{PROJECT}", {"quota": values}, headers=ADMIN)
    assert r.status_code == 202, r.text
    body = r.json()["quota"]
    assert body == {**values, "project_id": PROJECT, "tenant_id": PROJECT, "load_balancer": 5, "health_monitor": 4}

    shown = qapi.ok(qapi.get(f"/v2/lbaas/quotas/{PROJECT}"), 200)["quota"]  # a member reads its own
    assert shown == body
    default = qapi.ok(qapi.get(f"/v2/lbaas/quotas/{PROJECT}/default"), 200)["quota"]
    assert default["loadbalancer"] == default["load_balancer"] == 2
    assert {k: default[k] for k in QUOTA_KEYS - {"loadbalancer"}} == dict.fromkeys(QUOTA_KEYS - {"loadbalancer"}, -1)

    listed = qapi.ok(qapi.get("/v2/lbaas/quotas", headers=ADMIN), 200)
    assert [q["project_id"] for q in listed["quotas"]] == [PROJECT]
    assert listed["quotas"][0] == body
    assert listed["quotas_links"] == []

    # null puts one value back to its default, the others stay
    after = set_quota(qapi, listener=None)
    assert after["listener"] == -1 and after["pool"] == 3

    r = qapi.delete(f"/v2/lbaas/quotas/{PROJECT}", headers=ADMIN)
    assert r.status_code == 202, r.text
    reset = qapi.ok(qapi.get(f"/v2/lbaas/quotas/{PROJECT}"), 200)["quota"]
    assert reset == {**default, "project_id": PROJECT, "tenant_id": PROJECT}
    assert qapi.ok(qapi.get("/v2/lbaas/quotas", headers=ADMIN), 200)["quotas"] == []
    # resetting a project that never had a quota is fine too
    assert qapi.delete("/v2/lbaas/quotas/never-seen", headers=ADMIN).status_code == 202


def test_deprecated_aliases_are_accepted(qapi: Api) -> None:
    body = set_quota(qapi, load_balancer=7, health_monitor=8)
    assert body["loadbalancer"] == body["load_balancer"] == 7
    assert body["healthmonitor"] == body["health_monitor"] == 8
    shown = qapi.ok(qapi.get(f"/v2/lbaas/quotas/{PROJECT}"), 200)["quota"]
    assert shown["loadbalancer"] == 7 and shown["healthmonitor"] == 8


def test_quota_for_a_project_without_objects(qapi: Api) -> None:
    body = set_quota(qapi, "brand-new", pool=1)
    assert body["project_id"] == "brand-new" and body["pool"] == 1 and body["loadbalancer"] == 2
    listed = qapi.ok(qapi.get("/v2/lbaas/quotas?project_id=brand-new", headers=ADMIN), 200)["quotas"]
    assert [q["project_id"] for q in listed] == ["brand-new"]


@pytest.mark.parametrize("value", [-2, 2000000001, "abc", 1.5, True])
def test_bad_values_are_400(qapi: Api, value: Any) -> None:
    r = qapi.put(f"/v2/lbaas/quotas/{PROJECT}", {"quota": {"loadbalancer": value}}, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["faultcode"] == "Client"
    assert "loadbalancer" in r.json()["faultstring"]
    assert qapi.ok(qapi.get("/v2/lbaas/quotas", headers=ADMIN), 200)["quotas"] == []


def test_bounds_are_accepted(qapi: Api) -> None:
    assert set_quota(qapi, loadbalancer=2000000000, listener=-1)["loadbalancer"] == 2000000000


@pytest.mark.parametrize("body", [{"quota": {"bogus": 1}}, {"quotas": {"pool": 1}}, {}])
def test_malformed_bodies_are_400(qapi: Api, body: dict) -> None:
    r = qapi.put(f"/v2/lbaas/quotas/{PROJECT}", body, headers=ADMIN)
    assert r.status_code == 400, r.text


# --- enforcement on the child objects -------------------------------------------------------------------


@pytest.fixture
def tree(qapi: Api) -> dict[str, Any]:
    """One of every child kind (built while they are all unlimited)."""
    lb = qapi.ok(qapi.post("/v2/lbaas/loadbalancers", lb_body(qapi, listeners=graph(1))), 201)["loadbalancer"]
    qapi.wait_lb(lb["id"])
    li = lb["listeners"][0]
    spare = qapi.create(
        "/v2/lbaas/pools", "pool", lb["id"], loadbalancer_id=lb["id"], protocol="HTTP", lb_algorithm="ROUND_ROBIN"
    )  # a pool without a health monitor, for the health monitor case
    return {
        "lb": lb["id"],
        "listener": li["id"],
        "pool": li["default_pool_id"],
        "spare_pool": spare["id"],
        "l7policy": li["l7policies"][0]["id"],
    }


def _child(kind: str, t: dict[str, Any]) -> tuple[str, dict]:
    """Path and body creating one more object of `kind` in `t`."""
    if kind == "listener":
        return "/v2/lbaas/listeners", {"listener": {"loadbalancer_id": t["lb"], "protocol": "TCP", "protocol_port": 99}}
    if kind == "pool":
        return "/v2/lbaas/pools", {"pool": {"loadbalancer_id": t["lb"], "protocol": "TCP", "lb_algorithm": "SOURCE_IP"}}
    if kind == "member":
        return f"/v2/lbaas/pools/{t['pool']}/members", {"member": {"address": "10.10.0.200", "protocol_port": 8080}}
    if kind == "healthmonitor":
        hm = {"pool_id": t["spare_pool"], "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}
        return "/v2/lbaas/healthmonitors", {"healthmonitor": hm}
    if kind == "l7policy":
        return "/v2/lbaas/l7policies", {"l7policy": {"listener_id": t["listener"], "action": "REJECT"}}
    if kind == "l7rule":
        rule = {"type": "HOST_NAME", "compare_type": "EQUAL_TO", "value": "example.com"}
        return f"/v2/lbaas/l7policies/{t['l7policy']}/rules", {"rule": rule}
    raise AssertionError(kind)


CHILDREN = ["listener", "pool", "member", "healthmonitor", "l7policy", "l7rule"]


@pytest.mark.parametrize("kind", CHILDREN)
def test_child_quota(qapi: Api, tree: dict[str, Any], kind: str) -> None:
    path, body = _child(kind, tree)
    in_use = rows(qapi)[kind]
    set_quota(qapi, **{kind: in_use})
    before = rows(qapi)
    assert_quota_met(qapi.post(path, body), kind)
    assert rows(qapi) == before
    lb = qapi.ok(qapi.get(f"/v2/lbaas/loadbalancers/{tree['lb']}"), 200)["loadbalancer"]
    assert lb["provisioning_status"] == "ACTIVE"  # the refused request did not touch the tree
    set_quota(qapi, **{kind: 0})
    assert_quota_met(qapi.post(path, body), kind)
    set_quota(qapi, **{kind: in_use + 1})
    qapi.ok(qapi.post(path, body), 201)
    qapi.wait_lb(tree["lb"])


@pytest.mark.parametrize("kind", CHILDREN)
def test_graph_create_over_a_child_quota_writes_nothing(qapi: Api, kind: str) -> None:
    set_quota(qapi, **{kind: 1})
    before = rows(qapi)
    r = qapi.post("/v2/lbaas/loadbalancers", lb_body(qapi, listeners=graph(2)))
    assert_quota_met(r, kind)
    assert rows(qapi) == before  # no LB, no VIP port, no child
    set_quota(qapi, **{kind: 2})
    lb = qapi.ok(qapi.post("/v2/lbaas/loadbalancers", lb_body(qapi, listeners=graph(2))), 201)["loadbalancer"]
    assert len(lb["listeners"]) == 2


def test_listener_with_inline_policies_over_the_quota(qapi: Api, tree: dict[str, Any]) -> None:
    set_quota(qapi, l7policy=2)
    policies = [{"action": "REJECT"}, {"action": "REJECT"}]
    body = {
        "listener": {"loadbalancer_id": tree["lb"], "protocol": "HTTP", "protocol_port": 81, "l7policies": policies}
    }
    before = rows(qapi)
    assert_quota_met(qapi.post("/v2/lbaas/listeners", body), "l7policy")
    assert rows(qapi) == before


def test_pool_with_inline_members_over_the_quota(qapi: Api, tree: dict[str, Any]) -> None:
    set_quota(qapi, member=2)
    members = [{"address": "10.10.0.30", "protocol_port": 80}, {"address": "10.10.0.31", "protocol_port": 80}]
    body = {"pool": {"loadbalancer_id": tree["lb"], "protocol": "TCP", "lb_algorithm": "SOURCE_IP", "members": members}}
    before = rows(qapi)
    assert_quota_met(qapi.post("/v2/lbaas/pools", body), "member")
    assert rows(qapi) == before


def test_member_batch_update_over_the_quota(qapi: Api, tree: dict[str, Any]) -> None:
    path = f"/v2/lbaas/pools/{tree['pool']}/members"
    current = qapi.ok(qapi.get(path), 200)["members"]
    assert len(current) == 1
    keep = {"address": current[0]["address"], "protocol_port": current[0]["protocol_port"]}
    set_quota(qapi, member=2)
    new = [{"address": "10.10.0.40", "protocol_port": 80}, {"address": "10.10.0.41", "protocol_port": 80}]
    before = rows(qapi)
    assert_quota_met(qapi.put(path, {"members": [keep, *new]}), "member")
    assert rows(qapi) == before
    assert qapi.put(path, {"members": [keep, new[0]]}).status_code == 202
    qapi.wait_lb(tree["lb"])
    assert len(qapi.ok(qapi.get(path), 200)["members"]) == 2


def test_quotas_are_not_enforced_under_noauth(api: Api) -> None:
    api.ok(api.put(f"/v2/lbaas/quotas/{PROJECT}", {"quota": {"loadbalancer": 1, "listener": 0}}), 202)
    lbs = [api.create_lb(wait=False) for _ in range(3)]
    api.wait_lb(lbs[0]["id"])
    body = {"listener": {"loadbalancer_id": lbs[0]["id"], "protocol": "TCP", "protocol_port": 80}}
    assert api.post("/v2/lbaas/listeners", body).status_code == 201


def test_concurrent_creates_respect_the_quota(qapi: Api) -> None:
    set_quota(qapi, loadbalancer=3)
    threads, results = 8, []
    barrier = threading.Barrier(threads)
    lock = threading.Lock()
    body = lb_body(qapi)

    def create() -> None:
        barrier.wait()
        r = qapi.post("/v2/lbaas/loadbalancers", body)
        with lock:
            results.append((r.status_code, r.json()))

    workers = [threading.Thread(target=create) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    codes = sorted(code for code, _ in results)
    assert codes == [201] * 3 + [403] * 5, results
    assert all(body == quota_fault("Load Balancer") for code, body in results if code == 403)
    counts = rows(qapi)
    assert counts["loadbalancer"] == 3
    with qapi.db.read() as s:
        vip_ports = s.scalar(select(func.count()).select_from(m.Port).where(m.Port.device_owner == "Octavia"))
    assert vip_ports == 3
