"""The role matrix: every endpoint x every quadriga role x the caller's own and another project.

The app runs the default role mapping under auth_strategy "header" (X-Project-Id and X-Roles are
trusted); each quadriga role is reached through a Keystone role the default maps onto it, and "unmapped"
through a role it does not map (refused). What each role may do is written below as a table, from
Octavia's policy files: octavia/policies/base.py (the API access rules read, read-global, write,
read-quota, read-quota-global, write-quota, and admin) and the endpoint files (which rule each endpoint
asks for, written on each Case). The other Keystone roles of Octavia's default policy are checked
against the default mapping in tests/unit/test_rolemap.py; custom mappings in test_role_mapping.py.

The objects live in one database per module (building them is the slow part); quotas are unlimited
there so that the many successful creates do not run into the default limit.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.api_harness import OTHER, PROJECT, Api, make_api

FORBIDDEN = {
    "faultcode": "Client",
    "faultstring": "Policy does not allow this request to be performed.",
    "debuginfo": None,
}

READ, READ_GLOBAL, WRITE, ADMIN = "read", "read-global", "write", "admin"
READ_QUOTA, READ_QUOTA_GLOBAL, WRITE_QUOTA = "read-quota", "read-quota-global", "write-quota"

# The Keystone role each quadriga role is reached through (the default mapping), "unmapped": none.
VIA = {
    "admin": "admin",
    "global_observer": "load-balancer_global_observer",
    "quota_admin": "load-balancer_quota_admin",
    "member": "member",
    "observer": "reader",
    "unmapped": "foo",
}
ROLES = list(VIA)

# Who passes each rule, for an object of the caller's own project ("own") or of any project ("all").
# fmt: off
TABLE = {
    #                    admin  global_observer quota_admin member  observer  unmapped
    READ:              ("all", "all",          "-",        "own",  "own",    "-"),
    READ_GLOBAL:       ("all", "all",          "-",        "-",    "-",      "-"),
    WRITE:             ("all", "-",            "-",        "own",  "-",      "-"),
    ADMIN:             ("all", "-",            "-",        "-",    "-",      "-"),
    READ_QUOTA:        ("all", "all",          "all",      "own",  "own",    "-"),
    READ_QUOTA_GLOBAL: ("all", "all",          "all",      "-",    "-",      "-"),
    WRITE_QUOTA:       ("all", "-",            "all",      "-",    "-",      "-"),
}
# fmt: on


def expected_allowed(rule: str, role: str, own: bool) -> bool:
    grant = dict(zip(ROLES, TABLE[rule], strict=True))[role]
    return grant == "all" or (own and grant == "own")


def as_role(role: str, project: str = PROJECT) -> dict[str, str]:
    """The headers of a caller with quadriga role `role` (through the default mapping) in `project`."""
    return {"X-Project-Id": project, "X-Roles": VIA.get(role, role)}


def admin_of(project: str) -> dict[str, str]:
    return as_role("admin", project)


def assert_forbidden(r: Any) -> None:
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.json() == FORBIDDEN


def assert_refused(r: Any, roles: str = "foo") -> None:
    """The 403 of a caller the role mapping gives no role: Octavia's fault body, saying why."""
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.json() == {
        "faultcode": "Client",
        "faultstring": "Policy does not allow this request to be performed: no quadriga role for the "
        f"caller's roles ({roles}) in the role mapping, and no default role.",
        "debuginfo": None,
    }


def assert_denied(r: Any, role: str) -> None:
    if role == "unmapped":
        assert_refused(r)
    else:
        assert_forbidden(r)


# --- the objects every case works on ------------------------------------------------------------------


class World:
    """Per project: a full LB tree (LB, HTTP listener, pool with a member and a health monitor, an L7
    policy with a rule) and a custom quota; plus a flavor (profile) and an AZ (profile)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.serial = itertools.count(1)
        self.subnet = api.subnet_id()
        self.trees = {project: self._tree(project) for project in (PROJECT, OTHER)}
        for project in (PROJECT, OTHER):
            self.set_quota(project)
        self.catalog = {
            "flavorprofile": self.fresh("flavorprofile", PROJECT),
            "azprofile": self.fresh("azprofile", PROJECT),
        }
        self.catalog["flavor"] = self.fresh("flavor", PROJECT)
        self.catalog["az"] = self.fresh("az", PROJECT)

    def n(self) -> int:
        return next(self.serial)

    def post(self, project: str, path: str, root: str, body: dict, lb_id: str | None = None) -> dict:
        obj = self.api.ok(self.api.post(path, {root: body}, headers=admin_of(project)), 201)[root]
        if lb_id:
            self.api.wait_lb(lb_id)
        return obj

    def get(self, path: str) -> dict:
        return self.api.ok(self.api.get(path, headers=admin_of(PROJECT)), 200)

    def set_quota(self, project: str) -> None:
        # -1 is unlimited but still a custom value, so the project shows in GET /quotas.
        self.api.ok(
            self.api.put(f"/v2/lbaas/quotas/{project}", {"quota": {"pool": -1}}, headers=admin_of(project)), 202
        )

    def _tree(self, project: str) -> dict[str, str]:
        pool = {
            "name": "pool",
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            "members": [{"address": "10.10.0.50", "protocol_port": 80}],
            "healthmonitor": {"type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3},
        }
        policy = {"action": "REJECT", "rules": [{"type": "PATH", "compare_type": "STARTS_WITH", "value": "/x"}]}
        listener = {"protocol": "HTTP", "protocol_port": 80, "default_pool": pool, "l7policies": [policy]}
        body = {"vip_subnet_id": self.subnet, "project_id": project, "name": f"tree-{project}", "listeners": [listener]}
        lb = self.post(project, "/v2/lbaas/loadbalancers", "loadbalancer", body)
        self.api.wait_lb(lb["id"])
        li = lb["listeners"][0]
        pool_obj = self.get(f"/v2/lbaas/pools/{li['default_pool_id']}")["pool"]
        pol = li["l7policies"][0]
        return {
            "lb": lb["id"],
            "listener": li["id"],
            "pool": pool_obj["id"],
            "member": pool_obj["members"][0]["id"],
            "hm": pool_obj["healthmonitor_id"],
            "l7policy": pol["id"],
            "l7rule": pol["rules"][0]["id"],
            "project": project,
        }

    def fresh(self, kind: str, project: str) -> str:
        """A throwaway object of `kind` (as admin), for a request that consumes it (a delete, or the pool
        a health monitor is created on)."""
        t = self.trees.get(project, {})
        n = self.n()
        if kind == "lb":
            lb = self.post(project, "/v2/lbaas/loadbalancers", "loadbalancer", {"vip_subnet_id": self.subnet})
            self.api.wait_lb(lb["id"])
            return lb["id"]
        if kind == "listener":
            body = {"loadbalancer_id": t["lb"], "protocol": "TCP", "protocol_port": 10000 + n}
            return self.post(project, "/v2/lbaas/listeners", "listener", body, t["lb"])["id"]
        if kind == "pool":
            body = {"loadbalancer_id": t["lb"], "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}
            return self.post(project, "/v2/lbaas/pools", "pool", body, t["lb"])["id"]
        if kind == "member":
            body = {"address": "10.10.0.51", "protocol_port": 10000 + n}
            return self.post(project, f"/v2/lbaas/pools/{t['pool']}/members", "member", body, t["lb"])["id"]
        if kind == "hm":
            body = {"pool_id": self.fresh("pool", project), "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}
            return self.post(project, "/v2/lbaas/healthmonitors", "healthmonitor", body, t["lb"])["id"]
        if kind == "l7policy":
            body = {"listener_id": t["listener"], "action": "REJECT"}
            return self.post(project, "/v2/lbaas/l7policies", "l7policy", body, t["lb"])["id"]
        if kind == "l7rule":
            body = {"type": "PATH", "compare_type": "STARTS_WITH", "value": f"/r{n}"}
            return self.post(project, f"/v2/lbaas/l7policies/{t['l7policy']}/rules", "rule", body, t["lb"])["id"]
        if kind == "flavorprofile":
            body = {"name": f"fp{n}", "provider_name": "noop", "flavor_data": "{}"}
            return self.post(project, "/v2/lbaas/flavorprofiles", "flavorprofile", body)["id"]
        if kind == "flavor":
            body = {"name": f"flavor{n}", "flavor_profile_id": self.catalog["flavorprofile"]}
            return self.post(project, "/v2/lbaas/flavors", "flavor", body)["id"]
        if kind == "azprofile":
            body = {"name": f"azp{n}", "provider_name": "noop", "availability_zone_data": "{}"}
            return self.post(project, "/v2/lbaas/availabilityzoneprofiles", "availability_zone_profile", body)["id"]
        if kind == "az":
            body = {"name": f"az{n}", "availability_zone_profile_id": self.catalog["azprofile"]}
            return self.post(project, "/v2/lbaas/availabilityzones", "availability_zone", body)["name"]
        raise AssertionError(kind)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    for api in make_api(tmp_path_factory.mktemp("rbac"), auth="header"):
        api.headers = admin_of(PROJECT)  # what Api.wait_lb and friends send
        yield World(api)


# --- the matrix ---------------------------------------------------------------------------------------

Body = Callable[[World, dict[str, str]], Any]


@dataclass(frozen=True)
class Case:
    name: str
    rule: str
    method: str
    path: str  # placeholders: the ids of the target tree ({lb}, {pool}, ...) and of the catalog objects
    body: Body | None = None
    ok: int = 200
    fresh: str | None = None  # the placeholder an allowed request gets a throwaway object for
    settle: bool = False  # an allowed request changes the tree: wait for its LB to be ACTIVE again
    after: Callable[[World, dict[str, str]], None] | None = field(default=None, compare=False)


def _restore_quota(w: World, ids: dict[str, str]) -> None:
    w.set_quota(ids["project"])


TREE_CASES = [
    # load balancers
    Case("lb-show", READ, "GET", "/v2/lbaas/loadbalancers/{lb}"),
    Case("lb-status", READ, "GET", "/v2/lbaas/loadbalancers/{lb}/status"),
    Case("lb-statuses", READ, "GET", "/v2/lbaas/loadbalancers/{lb}/statuses"),
    Case("lb-stats", READ, "GET", "/v2/lbaas/loadbalancers/{lb}/stats"),
    Case(
        "lb-create",
        WRITE,
        "POST",
        "/v2/lbaas/loadbalancers",
        lambda w, ids: {"loadbalancer": {"vip_subnet_id": w.subnet, "project_id": ids["project"]}},
        ok=201,
    ),
    Case(
        "lb-update",
        WRITE,
        "PUT",
        "/v2/lbaas/loadbalancers/{lb}",
        lambda w, ids: {"loadbalancer": {"description": "x"}},
        settle=True,
    ),
    Case("lb-delete", WRITE, "DELETE", "/v2/lbaas/loadbalancers/{lb}", ok=204, fresh="lb"),
    Case("lb-failover", ADMIN, "PUT", "/v2/lbaas/loadbalancers/{lb}/failover", ok=202, settle=True),
    # listeners
    Case("listener-show", READ, "GET", "/v2/lbaas/listeners/{listener}"),
    Case("listener-stats", READ, "GET", "/v2/lbaas/listeners/{listener}/stats"),
    Case(
        "listener-create",
        WRITE,
        "POST",
        "/v2/lbaas/listeners",
        lambda w, ids: {"listener": {"loadbalancer_id": ids["lb"], "protocol": "TCP", "protocol_port": 20000 + w.n()}},
        ok=201,
        settle=True,
    ),
    Case(
        "listener-update",
        WRITE,
        "PUT",
        "/v2/lbaas/listeners/{listener}",
        lambda w, ids: {"listener": {"description": "x"}},
        settle=True,
    ),
    Case("listener-delete", WRITE, "DELETE", "/v2/lbaas/listeners/{listener}", ok=204, fresh="listener", settle=True),
    # pools
    Case("pool-show", READ, "GET", "/v2/lbaas/pools/{pool}"),
    Case(
        "pool-create",
        WRITE,
        "POST",
        "/v2/lbaas/pools",
        lambda w, ids: {"pool": {"loadbalancer_id": ids["lb"], "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}},
        ok=201,
        settle=True,
    ),
    Case("pool-update", WRITE, "PUT", "/v2/lbaas/pools/{pool}", lambda w, ids: {"pool": {"name": "x"}}, settle=True),
    Case("pool-delete", WRITE, "DELETE", "/v2/lbaas/pools/{pool}", ok=204, fresh="pool", settle=True),
    # members
    Case("member-list", READ, "GET", "/v2/lbaas/pools/{pool}/members"),
    Case("member-show", READ, "GET", "/v2/lbaas/pools/{pool}/members/{member}"),
    Case(
        "member-create",
        WRITE,
        "POST",
        "/v2/lbaas/pools/{pool}/members",
        lambda w, ids: {"member": {"address": "10.10.0.52", "protocol_port": 20000 + w.n()}},
        ok=201,
        settle=True,
    ),
    Case(
        "member-update",
        WRITE,
        "PUT",
        "/v2/lbaas/pools/{pool}/members/{member}",
        lambda w, ids: {"member": {"weight": 2}},
        settle=True,
    ),
    Case(
        "member-batch",
        WRITE,
        "PUT",
        "/v2/lbaas/pools/{pool}/members?additive_only=true",
        lambda w, ids: {"members": []},
        ok=202,
        settle=True,
    ),
    Case(
        "member-delete", WRITE, "DELETE", "/v2/lbaas/pools/{pool}/members/{member}", ok=204, fresh="member", settle=True
    ),
    # health monitors
    Case("hm-show", READ, "GET", "/v2/lbaas/healthmonitors/{hm}"),
    Case(
        "hm-create",
        WRITE,
        "POST",
        "/v2/lbaas/healthmonitors",
        lambda w, ids: {
            "healthmonitor": {"pool_id": ids["pool"], "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}
        },
        ok=201,
        fresh="pool",
        settle=True,
    ),
    Case(
        "hm-update",
        WRITE,
        "PUT",
        "/v2/lbaas/healthmonitors/{hm}",
        lambda w, ids: {"healthmonitor": {"delay": 6}},
        settle=True,
    ),
    Case("hm-delete", WRITE, "DELETE", "/v2/lbaas/healthmonitors/{hm}", ok=204, fresh="hm", settle=True),
    # L7 policies
    Case("l7policy-show", READ, "GET", "/v2/lbaas/l7policies/{l7policy}"),
    Case(
        "l7policy-create",
        WRITE,
        "POST",
        "/v2/lbaas/l7policies",
        lambda w, ids: {"l7policy": {"listener_id": ids["listener"], "action": "REJECT"}},
        ok=201,
        settle=True,
    ),
    Case(
        "l7policy-update",
        WRITE,
        "PUT",
        "/v2/lbaas/l7policies/{l7policy}",
        lambda w, ids: {"l7policy": {"name": "x"}},
        settle=True,
    ),
    Case("l7policy-delete", WRITE, "DELETE", "/v2/lbaas/l7policies/{l7policy}", ok=204, fresh="l7policy", settle=True),
    # L7 rules
    Case("l7rule-list", READ, "GET", "/v2/lbaas/l7policies/{l7policy}/rules"),
    Case("l7rule-show", READ, "GET", "/v2/lbaas/l7policies/{l7policy}/rules/{l7rule}"),
    Case(
        "l7rule-create",
        WRITE,
        "POST",
        "/v2/lbaas/l7policies/{l7policy}/rules",
        lambda w, ids: {"rule": {"type": "PATH", "compare_type": "STARTS_WITH", "value": f"/c{w.n()}"}},
        ok=201,
        settle=True,
    ),
    Case(
        "l7rule-update",
        WRITE,
        "PUT",
        "/v2/lbaas/l7policies/{l7policy}/rules/{l7rule}",
        lambda w, ids: {"rule": {"value": "/y"}},
        settle=True,
    ),
    Case(
        "l7rule-delete",
        WRITE,
        "DELETE",
        "/v2/lbaas/l7policies/{l7policy}/rules/{l7rule}",
        ok=204,
        fresh="l7rule",
        settle=True,
    ),
    # quotas of the target project
    Case("quota-show", READ_QUOTA, "GET", "/v2/lbaas/quotas/{project}"),
    Case("quota-defaults", READ_QUOTA, "GET", "/v2/lbaas/quotas/{project}/default"),
    Case("quota-update", WRITE_QUOTA, "PUT", "/v2/lbaas/quotas/{project}", lambda w, ids: {"quota": {"pool": -1}}, 202),
    Case("quota-reset", WRITE_QUOTA, "DELETE", "/v2/lbaas/quotas/{project}", ok=202, after=_restore_quota),
]

CATALOG_CASES = [
    Case("flavor-list", READ, "GET", "/v2/lbaas/flavors"),
    Case("flavor-show", READ, "GET", "/v2/lbaas/flavors/{flavor}"),
    Case(
        "flavor-create",
        ADMIN,
        "POST",
        "/v2/lbaas/flavors",
        lambda w, ids: {"flavor": {"name": f"new-flavor{w.n()}", "flavor_profile_id": ids["flavorprofile"]}},
        ok=201,
    ),
    Case("flavor-update", ADMIN, "PUT", "/v2/lbaas/flavors/{flavor}", lambda w, ids: {"flavor": {"description": "x"}}),
    Case("flavor-delete", ADMIN, "DELETE", "/v2/lbaas/flavors/{flavor}", ok=204, fresh="flavor"),
    Case("flavorprofile-list", ADMIN, "GET", "/v2/lbaas/flavorprofiles"),
    Case("flavorprofile-show", ADMIN, "GET", "/v2/lbaas/flavorprofiles/{flavorprofile}"),
    Case(
        "flavorprofile-create",
        ADMIN,
        "POST",
        "/v2/lbaas/flavorprofiles",
        lambda w, ids: {"flavorprofile": {"name": "fp", "provider_name": "noop", "flavor_data": "{}"}},
        ok=201,
    ),
    Case(
        "flavorprofile-update",
        ADMIN,
        "PUT",
        "/v2/lbaas/flavorprofiles/{flavorprofile}",
        lambda w, ids: {"flavorprofile": {"name": "renamed"}},
    ),
    Case(
        "flavorprofile-delete",
        ADMIN,
        "DELETE",
        "/v2/lbaas/flavorprofiles/{flavorprofile}",
        ok=204,
        fresh="flavorprofile",
    ),
    Case("az-list", READ, "GET", "/v2/lbaas/availabilityzones"),
    Case("az-show", READ, "GET", "/v2/lbaas/availabilityzones/{az}"),
    Case(
        "az-create",
        ADMIN,
        "POST",
        "/v2/lbaas/availabilityzones",
        lambda w, ids: {
            "availability_zone": {"name": f"new-az{w.n()}", "availability_zone_profile_id": ids["azprofile"]}
        },
        ok=201,
    ),
    Case(
        "az-update",
        ADMIN,
        "PUT",
        "/v2/lbaas/availabilityzones/{az}",
        lambda w, ids: {"availability_zone": {"description": "x"}},
    ),
    Case("az-delete", ADMIN, "DELETE", "/v2/lbaas/availabilityzones/{az}", ok=204, fresh="az"),
    Case("azprofile-list", ADMIN, "GET", "/v2/lbaas/availabilityzoneprofiles"),
    Case("azprofile-show", ADMIN, "GET", "/v2/lbaas/availabilityzoneprofiles/{azprofile}"),
    Case(
        "azprofile-create",
        ADMIN,
        "POST",
        "/v2/lbaas/availabilityzoneprofiles",
        lambda w, ids: {
            "availability_zone_profile": {"name": "azp", "provider_name": "noop", "availability_zone_data": "{}"}
        },
        ok=201,
    ),
    Case(
        "azprofile-update",
        ADMIN,
        "PUT",
        "/v2/lbaas/availabilityzoneprofiles/{azprofile}",
        lambda w, ids: {"availability_zone_profile": {"name": "renamed"}},
    ),
    Case(
        "azprofile-delete",
        ADMIN,
        "DELETE",
        "/v2/lbaas/availabilityzoneprofiles/{azprofile}",
        ok=204,
        fresh="azprofile",
    ),
    Case("provider-list", READ, "GET", "/v2/lbaas/providers"),
    Case("provider-flavor-capabilities", ADMIN, "GET", "/v2/lbaas/providers/noop/flavor_capabilities"),
    Case("provider-az-capabilities", ADMIN, "GET", "/v2/lbaas/providers/noop/availability_zone_capabilities"),
    # amphorae: the policy check comes first, so an admin gets the 404 of an unknown id and anyone else 403
    Case("amphora-list", ADMIN, "GET", "/v2/octavia/amphorae"),
    Case("amphora-show", ADMIN, "GET", "/v2/octavia/amphorae/{unknown}", ok=404),
    Case("amphora-stats", ADMIN, "GET", "/v2/octavia/amphorae/{unknown}/stats", ok=404),
    Case("amphora-config", ADMIN, "PUT", "/v2/octavia/amphorae/{unknown}/config", ok=404),
    Case("amphora-failover", ADMIN, "PUT", "/v2/octavia/amphorae/{unknown}/failover", ok=404),
    Case("amphora-delete", ADMIN, "DELETE", "/v2/octavia/amphorae/{unknown}", ok=404),
]


def run_case(world: World, case: Case, role: str, ids: dict[str, str], own: bool, via: str | None = None) -> None:
    """`case` by a caller holding quadriga role `role` (through Keystone role `via`, default VIA's)."""
    api = world.api
    allowed = expected_allowed(case.rule, role, own)
    ids = dict(ids)
    if allowed and case.fresh:
        ids[case.fresh] = world.fresh(case.fresh, ids["project"])
    body = case.body(world, ids) if case.body else None
    r = api.req(case.method, case.path.format(**ids), body, headers=as_role(via or role))
    if not allowed:
        assert_denied(r, role)
        return
    assert r.status_code == case.ok, (r.status_code, r.text)
    if case.settle:
        api.wait_lb(ids["lb"])
    if case.after:
        case.after(world, ids)


@pytest.mark.parametrize("case", TREE_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("target", ["own", "other"])
@pytest.mark.parametrize("role", ROLES)
def test_tree_and_quota_endpoints(world: World, role: str, target: str, case: Case) -> None:
    own = target == "own"
    run_case(world, case, role, world.trees[PROJECT if own else OTHER], own)


@pytest.mark.parametrize("case", CATALOG_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("role", ROLES)
def test_catalog_provider_and_amphora_endpoints(world: World, role: str, case: Case) -> None:
    ids = {**world.catalog, "project": PROJECT, "unknown": str(uuid.uuid4())}
    run_case(world, case, role, ids, own=True)


# Octavia's deprecated roles (advanced_rbac.py) that the default mapping maps like their successors; one
# endpoint per rule is enough here, as the mapping itself is checked in tests/unit/test_rolemap.py.
DEPRECATED = {"load-balancer_admin": "admin", "load-balancer_member": "member", "load-balancer_observer": "observer"}
ONE_PER_RULE = ["lb-show", "lb-update", "lb-failover", "quota-show", "quota-update"]


@pytest.mark.parametrize("case", [c for c in TREE_CASES if c.name in ONE_PER_RULE], ids=lambda c: c.name)
@pytest.mark.parametrize("target", ["own", "other"])
@pytest.mark.parametrize("keystone_role", DEPRECATED)
def test_deprecated_roles(world: World, keystone_role: str, target: str, case: Case) -> None:
    own = target == "own"
    ids = world.trees[PROJECT if own else OTHER]
    run_case(world, case, DEPRECATED[keystone_role], ids, own, via=keystone_role)


def test_roles_add_up(world: World) -> None:
    """Octavia's rules are OR-ed over the caller's roles: a global observer that is also a member of its
    project reads everything and writes its own project only."""
    h = {"X-Project-Id": PROJECT, "X-Roles": "load-balancer_global_observer,member"}
    mine, theirs = world.trees[PROJECT]["lb"], world.trees[OTHER]["lb"]
    assert world.api.get(f"/v2/lbaas/loadbalancers/{theirs}", headers=h).status_code == 200
    update = {"loadbalancer": {"description": "sum"}}
    assert_forbidden(world.api.put(f"/v2/lbaas/loadbalancers/{theirs}", update, headers=h))
    assert world.api.put(f"/v2/lbaas/loadbalancers/{mine}", update, headers=h).status_code == 200
    world.api.wait_lb(mine)
    h = {"X-Project-Id": PROJECT, "X-Roles": "load-balancer_quota_admin,reader"}
    assert world.api.get(f"/v2/lbaas/loadbalancers/{mine}", headers=h).status_code == 200
    assert_forbidden(world.api.get(f"/v2/lbaas/loadbalancers/{theirs}", headers=h))
    r = world.api.put(f"/v2/lbaas/quotas/{OTHER}", {"quota": {"pool": -1}}, headers=h)
    assert r.status_code == 202, r.text


# --- lists ----------------------------------------------------------------------------------------------

LISTS = ["loadbalancers", "listeners", "pools", "healthmonitors", "l7policies"]


def _projects(r: Any, plural: str) -> list[str]:
    assert r.status_code == 200, (r.status_code, r.text)
    return [item["project_id"] for item in r.json()[plural]]


@pytest.mark.parametrize("plural", LISTS)
@pytest.mark.parametrize("role", ROLES)
def test_lists_show_only_what_the_role_may_read(world: World, role: str, plural: str) -> None:
    api, h = world.api, as_role(role)
    path = f"/v2/lbaas/{plural}"
    mine = api.get(path, headers=h)
    theirs = api.get(f"{path}?project_id={OTHER}", headers=h)
    theirs_by_tenant = api.get(f"{path}?tenant_id={OTHER}", headers=h)
    own_filter = api.get(f"{path}?project_id={PROJECT}", headers=h)
    if expected_allowed(READ_GLOBAL, role, own=False):
        assert {PROJECT, OTHER} <= set(_projects(mine, plural))
        assert set(_projects(theirs, plural)) == {OTHER}
        assert set(_projects(theirs_by_tenant, plural)) == {OTHER}
        assert set(_projects(own_filter, plural)) == {PROJECT}
    elif expected_allowed(READ, role, own=True):
        assert set(_projects(mine, plural)) == {PROJECT}
        assert_forbidden(theirs)  # a project-scoped reader cannot ask for another project
        assert_forbidden(theirs_by_tenant)
        assert set(_projects(own_filter, plural)) == {PROJECT}
    else:
        for r in (mine, theirs, theirs_by_tenant, own_filter):
            assert_denied(r, role)


@pytest.mark.parametrize("role", ROLES)
def test_quota_list_scope(world: World, role: str) -> None:
    api, h = world.api, as_role(role)
    mine = api.get("/v2/lbaas/quotas", headers=h)
    theirs = api.get(f"/v2/lbaas/quotas?project_id={OTHER}", headers=h)
    if expected_allowed(READ_QUOTA_GLOBAL, role, own=False):
        assert {PROJECT, OTHER} <= set(_projects(mine, "quotas"))
        assert _projects(theirs, "quotas") == [OTHER]
    elif expected_allowed(READ_QUOTA, role, own=True):
        assert _projects(mine, "quotas") == [PROJECT]
        assert_forbidden(theirs)  # as in Octavia's _auth_get_all: another project needs get_all-global
    else:
        assert_denied(mine, role)
        assert_denied(theirs, role)


def test_sub_collections_list_only_the_parent_children(world: World) -> None:
    ids = world.trees[PROJECT]
    members = world.api.ok(world.api.get(f"/v2/lbaas/pools/{ids['pool']}/members", headers=as_role("observer")), 200)
    assert ids["member"] in [mb["id"] for mb in members["members"]]
    assert {mb["project_id"] for mb in members["members"]} == {PROJECT}
    rules = world.api.ok(
        world.api.get(f"/v2/lbaas/l7policies/{ids['l7policy']}/rules", headers=as_role("observer")), 200
    )
    assert ids["l7rule"] in [rule["id"] for rule in rules["rules"]]


# --- authentication and odd credentials -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v2/lbaas/loadbalancers", "/v2/lbaas/quotas", "/v2/lbaas/flavors", "/v2/octavia/amphorae"]
)
def test_no_credentials_is_401(world: World, path: str) -> None:
    r = world.api.client.get(path)
    assert r.status_code == 401, r.text
    assert r.json()["faultcode"] == "Client"
    assert set(r.json()) == {"faultcode", "faultstring", "debuginfo"}
    r = world.api.client.post("/v2/lbaas/loadbalancers", json={"loadbalancer": {"vip_subnet_id": world.subnet}})
    assert r.status_code == 401


def test_version_discovery_needs_no_credentials(world: World) -> None:
    assert world.api.client.get("/").status_code == 200


def test_project_without_roles_is_refused_403_not_401(world: World) -> None:
    r = world.api.client.get("/v2/lbaas/loadbalancers", headers={"X-Project-Id": PROJECT})
    assert_refused(r, roles="none")


def test_roles_without_project(world: World) -> None:
    r = world.api.client.get("/v2/lbaas/loadbalancers", headers={"X-Roles": "member"})
    assert_forbidden(r)  # no project to own anything
    r = world.api.client.get("/v2/lbaas/loadbalancers", headers={"X-Roles": "admin"})
    assert {PROJECT, OTHER} <= set(_projects(r, "loadbalancers"))


def test_several_roles_and_case(world: World) -> None:
    ids = world.trees[PROJECT]
    h = {"X-Project-Id": PROJECT, "X-Roles": "reader, Load-Balancer_Member"}
    r = world.api.put(f"/v2/lbaas/loadbalancers/{ids['lb']}", {"loadbalancer": {"description": "both"}}, headers=h)
    assert r.status_code == 200, r.text
    world.api.wait_lb(ids["lb"])
    r = world.api.get("/v2/octavia/amphorae", headers={"X-Project-Id": PROJECT, "X-Roles": "ADMIN"})
    assert r.status_code == 200, r.text


def test_missing_object_is_404_before_the_policy(world: World) -> None:
    """Octavia loads the object first: an unknown id is 404 for anyone who may read, a foreign one 403."""
    unknown = str(uuid.uuid4())
    r = world.api.get(f"/v2/lbaas/loadbalancers/{unknown}", headers=as_role("observer"))
    assert r.status_code == 404
    assert r.json()["faultstring"] == f"Load Balancer {unknown} not found."
    r = world.api.get(f"/v2/lbaas/loadbalancers/{world.trees[OTHER]['lb']}", headers=as_role("observer"))
    assert_forbidden(r)


def test_admin_creates_in_another_project_tree_for_that_project(world: World) -> None:
    ids = world.trees[OTHER]
    body = {"listener": {"loadbalancer_id": ids["lb"], "protocol": "TCP", "protocol_port": 30000}}
    li = world.api.ok(world.api.post("/v2/lbaas/listeners", body, headers=admin_of(PROJECT)), 201)["listener"]
    assert li["project_id"] == OTHER
    world.api.wait_lb(ids["lb"])
    lb = world.api.ok(
        world.api.post(
            "/v2/lbaas/loadbalancers",
            {"loadbalancer": {"vip_subnet_id": world.subnet, "project_id": OTHER}},
            headers=as_role("load-balancer_admin"),
        ),
        201,
    )["loadbalancer"]
    assert lb["project_id"] == OTHER


def test_member_cannot_create_a_load_balancer_for_another_project(world: World) -> None:
    body = {"loadbalancer": {"vip_subnet_id": world.subnet, "project_id": OTHER}}
    assert_forbidden(world.api.post("/v2/lbaas/loadbalancers", body, headers=as_role("member")))
    body = {"loadbalancer": {"vip_subnet_id": world.subnet, "tenant_id": OTHER}}
    assert_forbidden(world.api.post("/v2/lbaas/loadbalancers", body, headers=as_role("member")))
