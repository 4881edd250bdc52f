"""Custom role mappings over HTTP: an operator maps its own Keystone roles onto quadriga roles.

The app of this module maps "lb-operator" to member and any other role ("*") to observer, with no default
role: a caller holding no role at all is refused. Another app adds a default role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from quadriga.api.rolemap import RoleMapping
from tests.api.test_rbac import assert_forbidden, assert_refused
from tests.support.api_harness import OTHER, PROJECT, Api, make_api

OPERATOR = RoleMapping((("lb-operator", "member"), ("*", "observer")))


def caller(roles: str | None, project: str = PROJECT) -> dict[str, str]:
    return {"X-Project-Id": project} | ({"X-Roles": roles} if roles is not None else {})


@pytest.fixture(scope="module")
def operator_api(tmp_path_factory) -> Iterator[Api]:
    yield from make_api(tmp_path_factory.mktemp("operator"), auth="header", role_mapping=OPERATOR)


def create_lb(api: Api, project: str, headers: dict[str, str]) -> Any:
    body = {"loadbalancer": {"vip_subnet_id": api.subnet_id(), "project_id": project}}
    return api.client.post("/v2/lbaas/loadbalancers", json=body, headers=headers)


def test_operator_role_is_a_member_of_its_project(operator_api: Api) -> None:
    api = operator_api
    api.headers = caller("lb-operator")  # what wait_lb sends (the requests below send their own)
    lb = api.ok(create_lb(api, PROJECT, caller("lb-operator")), 201)["loadbalancer"]
    api.wait_lb(lb["id"])
    r = api.client.put(
        f"/v2/lbaas/loadbalancers/{lb['id']}", json={"loadbalancer": {"name": "mine"}}, headers=caller("LB-Operator")
    )
    assert r.status_code == 200, r.text
    api.wait_lb(lb["id"])
    assert_forbidden(create_lb(api, OTHER, caller("lb-operator")))  # member of its own project only
    assert_forbidden(api.client.get("/v2/octavia/amphorae", headers=caller("lb-operator")))


def test_any_other_role_observes_its_project(operator_api: Api) -> None:
    api = operator_api
    api.headers = caller("lb-operator")
    lb = api.ok(create_lb(api, PROJECT, caller("lb-operator")), 201)["loadbalancer"]
    api.wait_lb(lb["id"])
    for role in ("auditor", "reader", "admin"):  # Keystone's admin too: this mapping does not name it
        r = api.client.get(f"/v2/lbaas/loadbalancers/{lb['id']}", headers=caller(role))
        assert r.status_code == 200, (role, r.text)
        r = api.client.put(
            f"/v2/lbaas/loadbalancers/{lb['id']}", json={"loadbalancer": {"name": "x"}}, headers=caller(role)
        )
        assert_forbidden(r)
        assert_forbidden(api.client.get(f"/v2/lbaas/loadbalancers/{lb['id']}", headers=caller(role, OTHER)))
        assert_forbidden(api.client.get("/v2/lbaas/flavorprofiles", headers=caller(role)))
    names = [
        x["id"]
        for x in api.ok(api.client.get("/v2/lbaas/loadbalancers", headers=caller("auditor")), 200)["loadbalancers"]
    ]
    assert lb["id"] in names


def test_a_caller_nothing_maps_is_refused(operator_api: Api) -> None:
    api = operator_api
    for path in ("/v2/lbaas/loadbalancers", "/v2/lbaas/quotas", "/v2/lbaas/providers", "/v2/octavia/amphorae"):
        assert_refused(api.client.get(path, headers=caller(None)), roles="none")
    assert_refused(create_lb(api, PROJECT, caller(None)), roles="none")
    assert api.client.get("/", headers=caller(None)).status_code == 200  # version discovery needs no role


@pytest.fixture(scope="module")
def lenient_api(tmp_path_factory) -> Iterator[Api]:
    mapping = RoleMapping((("lb-operator", "member"),), default_role="observer")
    yield from make_api(tmp_path_factory.mktemp("lenient"), auth="header", role_mapping=mapping)


def test_default_role_for_callers_nothing_matches(lenient_api: Api) -> None:
    api = lenient_api
    api.headers = caller("lb-operator")
    lb = api.ok(create_lb(api, PROJECT, caller("lb-operator")), 201)["loadbalancer"]
    api.wait_lb(lb["id"])
    for roles in ("auditor", None):
        assert api.client.get(f"/v2/lbaas/loadbalancers/{lb['id']}", headers=caller(roles)).status_code == 200
        assert_forbidden(api.client.delete(f"/v2/lbaas/loadbalancers/{lb['id']}", headers=caller(roles)))
    assert api.client.delete(f"/v2/lbaas/loadbalancers/{lb['id']}", headers=caller("lb-operator")).status_code == 204
