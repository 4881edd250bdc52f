"""Property-based run over every endpoint: no input may make the API answer 5xx.

schemathesis reads the app's own OpenAPI document (`/openapi.json`) and generates requests for every
operation in it, valid and invalid (negative mode); on top of that each example may swap path parameters
for the ids of real objects (so the checks behind the 404 run too), add random query strings (filters,
sorting, paging, nonsense), or replace the body with arbitrary JSON or bytes. Every list is also queried
with every filter and sort key it has and values of every wrong kind. Every response must be below 500,
and every error must be Octavia's fault body. The run is seeded and bounded (see SETTINGS); routes left
out of the document get plain random requests, and the last test checks that every route was hit."""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from quadriga.api.app import create_app
from quadriga.api.common import Services
from quadriga.api.resources import amphorae, healthmonitors, l7, listeners, loadbalancers, members, pools
from quadriga.db import models as m
from tests.support.api_harness import make_api

MAX_EXAMPLES = 25
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)
HEADERS = {"X-Project-Id": "project-a"}
MISSING = "4d2b5e3c-9a51-4a7e-8b0e-0c8f5d0b1a11"

# (method, path template) of every request sent, for the coverage check at the end.
EXERCISED: set[tuple[str, str]] = set()


# --- a tree of real objects, so generated requests can reach past the 404 -------------------------


class Tree:
    def __init__(self, api: Any) -> None:
        self.api = api
        self.ids: dict[str, str] = {}

    def build(self) -> None:
        api = self.api
        lb = api.create_lb(name="fuzz")["id"]
        li = api.create("/v2/lbaas/listeners", "listener", lb, loadbalancer_id=lb, protocol="HTTP", protocol_port=80)
        pool = api.create(
            "/v2/lbaas/pools", "pool", lb, listener_id=li["id"], protocol="HTTP", lb_algorithm="ROUND_ROBIN"
        )
        member = api.create(
            f"/v2/lbaas/pools/{pool['id']}/members", "member", lb, address="10.10.0.50", protocol_port=80
        )
        hm = api.create(
            "/v2/lbaas/healthmonitors",
            "healthmonitor",
            lb,
            pool_id=pool["id"],
            type="HTTP",
            delay=5,
            timeout=3,
            max_retries=3,
        )
        li2 = api.create("/v2/lbaas/listeners", "listener", lb, loadbalancer_id=lb, protocol="TCP", protocol_port=81)
        pool2 = api.create("/v2/lbaas/pools", "pool", lb, loadbalancer_id=lb, protocol="HTTP", lb_algorithm="SOURCE_IP")
        pol = api.create("/v2/lbaas/l7policies", "l7policy", lb, listener_id=li["id"], action="REJECT")
        rule = api.create(
            f"/v2/lbaas/l7policies/{pol['id']}/rules",
            "rule",
            lb,
            type="PATH",
            compare_type="STARTS_WITH",
            value="/api",
        )
        fp = api.ok(
            api.post(
                "/v2/lbaas/flavorprofiles",
                {"flavorprofile": {"name": "fp", "provider_name": "noop", "flavor_data": "{}"}},
            ),
            201,
        )["flavorprofile"]
        flavor = api.ok(
            api.post("/v2/lbaas/flavors", {"flavor": {"name": f"f-{lb[:8]}", "flavor_profile_id": fp["id"]}}), 201
        )["flavor"]
        azp = api.ok(
            api.post(
                "/v2/lbaas/availabilityzoneprofiles",
                {"availability_zone_profile": {"name": "azp", "provider_name": "noop", "availability_zone_data": "{}"}},
            ),
            201,
        )["availability_zone_profile"]
        az = api.ok(
            api.post(
                "/v2/lbaas/availabilityzones",
                {"availability_zone": {"name": f"az-{lb[:8]}", "availability_zone_profile_id": azp["id"]}},
            ),
            201,
        )["availability_zone"]
        with api.db.write() as s:
            amphora = m.Amphora(id=m.new_id(), load_balancer_id=lb, status="ALLOCATED", role="STANDALONE")
            s.add(amphora)
        with api.db.read() as s:
            subnet = s.get(m.Subnet, api.subnet_id())
            network_id = subnet.network_id
        self.ids = {
            "lb": lb,
            "listener": li["id"],
            "listener2": li2["id"],
            "pool": pool["id"],
            "pool2": pool2["id"],
            "member": member["id"],
            "hm": hm["id"],
            "policy": pol["id"],
            "rule": rule["id"],
            "flavorprofile": fp["id"],
            "flavor": flavor["id"],
            "azprofile": azp["id"],
            "az": az["name"],
            "amphora": amphora.id,
            "subnet": subnet.id,
            "network": network_id,
        }

    PATHS = {
        "lb": "/v2/lbaas/loadbalancers/{}",
        "listener": "/v2/lbaas/listeners/{}",
        "pool": "/v2/lbaas/pools/{}",
        "hm": "/v2/lbaas/healthmonitors/{}",
        "policy": "/v2/lbaas/l7policies/{}",
        "flavorprofile": "/v2/lbaas/flavorprofiles/{}",
        "flavor": "/v2/lbaas/flavors/{}",
        "azprofile": "/v2/lbaas/availabilityzoneprofiles/{}",
        "az": "/v2/lbaas/availabilityzones/{}",
        "amphora": "/v2/octavia/amphorae/{}",
    }

    def ensure(self) -> None:
        """Rebuild the tree if a generated DELETE took part of it away; let pending changes settle."""
        api = self.api
        intact = bool(self.ids) and all(
            api.get(path.format(self.ids[key])).status_code == 200 for key, path in self.PATHS.items()
        )
        if intact:
            member = api.get(f"/v2/lbaas/pools/{self.ids['pool']}/members/{self.ids['member']}")
            rule = api.get(f"/v2/lbaas/l7policies/{self.ids['policy']}/rules/{self.ids['rule']}")
            intact = member.status_code == rule.status_code == 200
        if intact:
            lb = api.get(f"/v2/lbaas/loadbalancers/{self.ids['lb']}").json()["loadbalancer"]
            if lb["provisioning_status"] == "ERROR":
                intact = False
            elif lb["provisioning_status"] != "ACTIVE":
                api.wait_lb(self.ids["lb"])
        if not intact:
            self.build()

    def value_for(self, template: str, name: str) -> str | None:
        """A real value for path parameter `name` of the operation at `template`."""
        if name == "ident":
            for key in ("flavorprofile", "azprofile", "flavor", "az"):
                if template.startswith(self.PATHS[key].removesuffix("/{}")):
                    return self.ids[key]
            return None
        key = {
            "lb_id": "lb",
            "listener_id": "listener",
            "pool_id": "pool",
            "member_id": "member",
            "hm_id": "hm",
            "policy_id": "policy",
            "rule_id": "rule",
            "amphora_id": "amphora",
        }.get(name)
        if key:
            return self.ids[key]
        return {"project_id": "project-a", "name": "noop"}.get(name)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Any:
    for api in make_api(tmp_path_factory.mktemp("property")):
        tree = Tree(api)
        tree.build()
        yield api, tree


@pytest.fixture(scope="module")
def api_schema(env) -> Any:
    api, _tree = env
    return schemathesis.openapi.from_asgi("/openapi.json", api.client.app)


def _routes(routes: list[Any]) -> dict[tuple[str, str], bool]:
    """(method, path) of every route, looking inside included routers -> whether /openapi.json shows it."""
    out: dict[tuple[str, str], bool] = {}
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            prefix = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            out |= {(meth, prefix + path): shown for (meth, path), shown in _routes(inner.routes).items()}
            continue
        shown = getattr(route, "include_in_schema", False)
        out |= {(meth, route.path): shown for meth in getattr(route, "methods", None) or () if meth != "HEAD"}
    return out


# Every route of the app, from an app built without services (building one touches nothing).
ROUTES = _routes(create_app(Services(db=None, authenticator=None, providers={}, default_provider="")).routes)
OPERATIONS = sorted(ROUTES)


# --- extra randomness on top of the schema -------------------------------------------------------

QUERY_KEYS = [
    "limit",
    "marker",
    "page_reverse",
    "sort",
    "sort_key",
    "sort_dir",
    "fields",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
    "project_id",
    "tenant_id",
    "id",
    "name",
    "description",
    "admin_state_up",
    "provisioning_status",
    "operating_status",
    "created_at",
    "protocol",
    "protocol_port",
    "lb_algorithm",
    "address",
    "weight",
    "backup",
    "type",
    "delay",
    "position",
    "invert",
    "enabled",
    "cascade",
    "additive_only",
    "vip_address",
    "loadbalancer_id",
]
QUERY_VALUES = [
    "",
    "0",
    "1",
    "-1",
    "1000",
    "1001",
    "true",
    "false",
    "True",
    "asc",
    "desc",
    "name:asc",
    "id:desc,name",
    "created_at:asc:desc",
    "name,id",
    MISSING,
    "10.10.0.50",
    "ACTIVE",
    "HTTP",
    "9" * 30,
    "1e400",
    "%00",
    "\x00",
]


def _columns(model: Any) -> list[str]:
    return [col.key for col in model.__table__.columns]


# Every list endpoint -> the attributes it filters and sorts on.
LIST_FILTERS: dict[str, list[str]] = {
    "/v2/lbaas/loadbalancers": list(loadbalancers.SPEC.columns),
    "/v2/lbaas/listeners": list(listeners.SPEC.columns),
    "/v2/lbaas/pools": list(pools.SPEC.columns),
    "/v2/lbaas/pools/{pool_id}/members": list(members.SPEC.columns),
    "/v2/lbaas/healthmonitors": list(healthmonitors.SPEC.columns),
    "/v2/lbaas/l7policies": list(l7.POLICY_SPEC.columns),
    "/v2/lbaas/l7policies/{policy_id}/rules": list(l7.RULE_SPEC.columns),
    "/v2/octavia/amphorae": list(amphorae.SPEC.columns),
    "/v2/lbaas/flavors": _columns(m.Flavor),
    "/v2/lbaas/flavorprofiles": _columns(m.FlavorProfile),
    "/v2/lbaas/availabilityzones": _columns(m.AvailabilityZone),
    "/v2/lbaas/availabilityzoneprofiles": _columns(m.AvailabilityZoneProfile),
}


def query_strategy(ids: list[str], path: str) -> st.SearchStrategy[list[tuple[str, str]]]:
    key = st.one_of(st.sampled_from(QUERY_KEYS + LIST_FILTERS.get(path, [])), st.text(max_size=12))
    value = st.one_of(
        st.sampled_from(QUERY_VALUES + ids),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.text(max_size=20),
    )
    return st.one_of(st.just([]), st.lists(st.tuples(key, value), min_size=1, max_size=4))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=12,
)


# Body attributes that refer to other objects -> the tree objects (or values) worth sending instead.
REFERENCES = {
    "loadbalancer_id": ["lb"],
    "listener_id": ["listener", "listener2"],
    "pool_id": ["pool", "pool2"],
    "default_pool_id": ["pool", "pool2"],
    "redirect_pool_id": ["pool", "pool2"],
    "vip_subnet_id": ["subnet"],
    "subnet_id": ["subnet"],
    "vip_network_id": ["network"],
    "flavor_id": ["flavor"],
    "flavor_profile_id": ["flavorprofile"],
    "availability_zone_profile_id": ["azprofile"],
    "availability_zone": ["az"],
}
LITERALS = {
    "provider": ["noop", "amphora"],
    "provider_name": ["noop", "amphora"],
    "flavor_data": ["{}", '{"loadbalancer_topology": "SINGLE"}', '{"x": 1}', "[]", "null", "1", '"s"'],
    "availability_zone_data": ["{}", '{"compute_zone": "z1"}', '{"x": 1}', "[]", "null"],
    "address": ["10.10.0.60", "10.10.0.50", "::1"],
    "vip_address": ["10.10.0.200", "10.10.0.50", "192.0.2.1"],
}


ROOTS = {
    "loadbalancer",
    "listener",
    "pool",
    "member",
    "members",
    "healthmonitor",
    "l7policy",
    "rule",
    "quota",
    "flavor",
    "flavorprofile",
    "availability_zone",
    "availability_zone_profile",
}


def strip_extra_roots(body: Any, data: st.DataObject) -> Any:
    """The document does not forbid extra keys beside the root key (the API does), so generated bodies
    mostly carry some; drop them from most bodies so that more requests get past that check."""
    if isinstance(body, dict) and set(body) & ROOTS and data.draw(st.integers(0, 3), label="strip") > 0:
        return {k: v for k, v in body.items() if k in ROOTS}
    return body


def aim(body: Any, tree: Tree, data: st.DataObject) -> Any:
    """Point some references in a generated body at real objects (recursively, through graphs)."""
    if isinstance(body, list):
        return [aim(item, tree, data) for item in body]
    if not isinstance(body, dict):
        return body
    out = {}
    for key, value in body.items():
        choices = [tree.ids[k] for k in REFERENCES.get(key, ())] + LITERALS.get(key, [])
        if choices and data.draw(st.booleans(), label=f"aim {key}"):
            value = data.draw(st.sampled_from(choices), label=key)
        out[key] = aim(value, tree, data)
    return out


def assert_fault(response: Any) -> None:
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"faultcode", "faultstring", "debuginfo"}, body
    assert body["faultcode"] == "Client" and body["faultstring"] and body["debuginfo"] is None, body


# --- the run ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors(env, api_schema, method, path):
    api, tree = env
    operation = api_schema.find_operation_by_label(f"{method} {path}")
    if ROUTES[method, path]:
        assert operation is not None, f"{method} {path} is missing from /openapi.json"
    tree.ensure()  # a complete, settled tree to aim at
    if operation is not None:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )
    ids = list(tree.ids.values())

    @SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        if operation is not None:
            case = data.draw(cases, label="case")
            # Aim some path parameters at real objects.
            for name in list(case.path_parameters or {}):
                real = tree.value_for(path, name)
                if real is not None and data.draw(st.booleans(), label=f"real {name}"):
                    case.path_parameters[name] = real
            kwargs = case.as_transport_kwargs()
        else:  # a route the document leaves out: plain random requests
            values = {
                name: data.draw(st.sampled_from(ids) | st.text(min_size=1, max_size=20), label=name)
                for name in re.findall(r"{(\w+)}", path)
            }
            kwargs = {"url": path.format(**{k: urllib.parse.quote(v, safe="") for k, v in values.items()})}
            kwargs |= {"headers": {}, "json": data.draw(JSON, label="body")} if method in ("POST", "PUT") else {}
        headers = {k: v for k, v in kwargs.get("headers", {}).items() if not k.lower().startswith("x-schemathesis")}
        headers.update(HEADERS)
        params = list((kwargs.get("params") or {}).items())
        params += data.draw(query_strategy(ids, path), label="extra query")
        body: dict[str, Any] = (
            {"json": aim(strip_extra_roots(kwargs["json"], data), tree, data)} if "json" in kwargs else {}
        )
        if "data" in kwargs:
            body = {"content": kwargs["data"]}
        if method in ("POST", "PUT"):
            replace = data.draw(st.sampled_from(["schema", "schema", "schema", "json", "bytes"]), label="body")
            if replace == "json":
                body = {"content": json.dumps(data.draw(JSON, label="json body")).encode()}
            elif replace == "bytes":
                body = {"content": data.draw(st.binary(max_size=40), label="raw body")}
            if replace != "schema":
                headers["Content-Type"] = "application/json"
        response = api.client.request(method, kwargs["url"], params=params, headers=headers, **body)
        EXERCISED.add((method, path))
        assert response.status_code < 500, (method, kwargs["url"], params, body, response.status_code, response.text)
        if response.status_code >= 300:
            assert_fault(response)
        elif response.content:
            assert isinstance(response.json(), dict)

    run()


HOSTILE = ["9" * 30, "-" + "9" * 30, "abc", "", "2020-13-45T25:61:00", "1e999", "x" * 300, "a\x00b", "\u2603"]


@pytest.mark.parametrize("path", sorted(LIST_FILTERS))
def test_every_filter_and_sort_key_with_hostile_values(env, path):
    """Every filterable attribute of every list, with values of every wrong kind: 200 or a 4xx fault."""
    api, tree = env
    tree.ensure()
    url = path.format(pool_id=tree.ids["pool"], policy_id=tree.ids["policy"])
    for key in LIST_FILTERS[path]:
        queries = [[(key, value)] for value in HOSTILE]
        queries += [[("sort", f"{key}:desc")], [("sort_key", key), ("sort_dir", "sideways")], [(key, "")] * 2]
        queries += [[("sort", f"{key}:asc"), ("marker", tree.ids["lb"]), ("limit", "1")]]
        for params in queries:
            response = api.client.get(url, params=params, headers=HEADERS)
            assert response.status_code < 500, (path, params, response.status_code, response.text)
            if response.status_code >= 300:
                assert_fault(response)
            EXERCISED.add(("GET", path))


def test_paging_sorted_by_a_boolean_visits_every_row_once(api):
    """The marker of a page sorted by a boolean used to be a 500 (found by the run above)."""
    lbs = {api.create_lb(admin_state_up=up)["id"] for up in (True, False, True)}
    for direction in ("asc", "desc"):
        seen, marker = [], None
        while True:
            params = {"sort": f"admin_state_up:{direction}", "limit": "1"} | ({"marker": marker} if marker else {})
            page = api.ok(api.get("/v2/lbaas/loadbalancers", params=params), 200)["loadbalancers"]
            if not page:
                break
            seen.append(page[0]["id"])
            marker = page[0]["id"]
        assert sorted(seen) == sorted(lbs)


def test_every_route_is_exercised(env, api_schema):
    api, _tree = env
    assert len(ROUTES) > 70, ROUTES
    assert _routes(api.client.app.routes) == ROUTES
    # The document is served (the run above reads it) and shows every route not explicitly left out.
    assert api.get("/openapi.json").status_code == 200
    documented = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert documented == {route for route, shown in ROUTES.items() if shown}
    if not EXERCISED:
        pytest.skip("the property run did not run in this session")
    assert set(OPERATIONS) - EXERCISED == set()
