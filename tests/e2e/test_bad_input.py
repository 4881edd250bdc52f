"""Bad input is refused at the API with a 400 and Octavia's fault body, nothing of it is stored, and the
load balancer it was aimed at keeps serving traffic: a member address that is no IP address, ports out of
range, a pool protocol the listener cannot carry, and L7 REGEX values HAProxy cannot compile (including one
Python's `re` accepts), on rule create, on rule update and in a single-call load balancer create."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.dataplane import Cloud
from tests.support.graph import find, listener, pool

BAD_REGEXES = ["(", "a{2,1}", r"\N{DIGIT ONE}"]  # the last one only PCRE2 (HAProxy) refuses


@dataclass
class Site:
    lb: dict
    vip: str
    listener_id: str  # an HTTP listener without a default pool
    pool_id: str
    policy_id: str
    rule_id: str


@pytest.fixture(scope="module")
def site(cloud: Cloud) -> Iterator[Site]:
    with contextlib.ExitStack() as stack:
        backend = cloud.backend("bad-web")
        policy = {
            "name": "bad-policy",
            "action": "REJECT",
            "rules": [{"type": "PATH", "compare_type": "REGEX", "value": "^/blocked"}],
        }
        web = pool("bad-pool", "HTTP", [cloud.member(backend)])
        listeners = [
            listener("bad-listener", "HTTP", 80, web, l7policies=[policy]),
            listener("bad-bare", "HTTP", 81),  # no default pool yet: a pool may be created for it
        ]
        lb = cloud.create_lb(name="bad-input", listeners=listeners)
        stack.callback(cloud.delete_lb, lb["id"])
        policy_id = find(cloud, "l7policies", "bad-policy")["id"]
        rules = cloud.ok(cloud.api.get(f"/v2/lbaas/l7policies/{policy_id}/rules"), 200)["rules"]
        yield Site(
            lb,
            lb["vip_address"],
            find(cloud, "listeners", "bad-bare")["id"],
            find(cloud, "pools", "bad-pool")["id"],
            policy_id,
            rules[0]["id"],
        )


VOLATILE = {"operating_status", "updated_at"}  # the status collector may change these at any time


def snapshot(cloud: Cloud, site: Site) -> dict[str, Any]:
    """Everything a bad request could have added to or changed in the load balancer's tree (but what the
    data plane reports)."""

    def rows(path: str, key: str, **params: str) -> list[dict[str, Any]]:
        found = cloud.ok(cloud.api.get(path, params=params), 200)[key]
        return [{k: v for k, v in row.items() if k not in VOLATILE} for row in found]

    return {
        "members": rows(f"/v2/lbaas/pools/{site.pool_id}/members", "members"),
        "pools": rows("/v2/lbaas/pools", "pools", loadbalancer_id=site.lb["id"]),
        "rules": rows(f"/v2/lbaas/l7policies/{site.policy_id}/rules", "rules"),
        "loadbalancers": [lb["id"] for lb in rows("/v2/lbaas/loadbalancers", "loadbalancers")],
    }


def member(**fields: Any) -> Callable[[Site], tuple[str, str, dict]]:
    body = {"address": "10.10.0.1", "protocol_port": 8080} | fields
    return lambda site: ("POST", f"/v2/lbaas/pools/{site.pool_id}/members", {"member": body})


def pool_on_listener(protocol: str) -> Callable[[Site], tuple[str, str, dict]]:
    body = {"listener_id": None, "protocol": protocol, "lb_algorithm": "ROUND_ROBIN"}
    return lambda site: ("POST", "/v2/lbaas/pools", {"pool": body | {"listener_id": site.listener_id}})


def rule_create(value: str) -> Callable[[Site], tuple[str, str, dict]]:
    body = {"type": "PATH", "compare_type": "REGEX", "value": value}
    return lambda site: ("POST", f"/v2/lbaas/l7policies/{site.policy_id}/rules", {"rule": body})


def rule_update(value: str) -> Callable[[Site], tuple[str, str, dict]]:
    def request(site: Site) -> tuple[str, str, dict]:
        return "PUT", f"/v2/lbaas/l7policies/{site.policy_id}/rules/{site.rule_id}", {"rule": {"value": value}}

    return request


def graph_create(value: str | None = None, pool_protocol: str | None = None) -> Callable[[Site], tuple[str, str, dict]]:
    """A single-call load balancer create with a bad L7 regex or a pool its listener cannot carry."""

    def request(site: Site) -> tuple[str, str, dict]:
        li = listener("bad-graph-listener", "HTTP", 80)
        if value is not None:
            rule = {"type": "HOST_NAME", "compare_type": "REGEX", "value": value}
            li["l7policies"] = [{"action": "REJECT", "rules": [rule]}]
        if pool_protocol is not None:
            li["default_pool"] = pool("bad-graph-pool", pool_protocol, [])
        body = {"name": "bad-graph", "vip_subnet_id": site.lb["vip_subnet_id"], "listeners": [li]}
        return "POST", "/v2/lbaas/loadbalancers", {"loadbalancer": body}

    return request


INCOMPATIBLE = "is invalid while the listener protocol is 'HTTP'"
REGEX_FAULT = "regular expression"
# case -> (the request, a phrase the fault string must hold: the 400 is for the reason the case is about)
CASES: dict[str, tuple[Callable[[Site], tuple[str, str, dict]], str]] = {
    "member-address-word": (member(address="not-an-ip"), "address"),
    "member-address-octet": (member(address="10.10.0.256"), "address"),
    "member-port-0": (member(protocol_port=0), "protocol_port"),
    "member-port-65536": (member(protocol_port=65536), "protocol_port"),
    "pool-tcp-on-http-listener": (pool_on_listener("TCP"), INCOMPATIBLE),
    "pool-https-on-http-listener": (pool_on_listener("HTTPS"), INCOMPATIBLE),
    **{f"rule-create-{n}": (rule_create(value), REGEX_FAULT) for n, value in enumerate(BAD_REGEXES)},
    **{f"rule-update-{n}": (rule_update(value), REGEX_FAULT) for n, value in enumerate(BAD_REGEXES)},
    **{f"graph-create-{n}": (graph_create(value), REGEX_FAULT) for n, value in enumerate(BAD_REGEXES)},
    "graph-create-pool-tcp-on-http": (graph_create(pool_protocol="TCP"), INCOMPATIBLE),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_400_that_changes_nothing(cloud: Cloud, site: Site, case: str) -> None:
    before = snapshot(cloud, site)
    build, phrase = CASES[case]
    method, path, body = build(site)
    response = cloud.api.request(method, path, json=body)
    assert response.status_code == 400, (response.status_code, response.text)
    fault = response.json()
    assert set(fault) == {"faultcode", "faultstring", "debuginfo"}, fault
    assert fault["faultcode"] == "Client" and fault["debuginfo"] is None, fault
    assert phrase in fault["faultstring"], fault
    assert snapshot(cloud, site) == before
    lb = cloud.ok(cloud.api.get(f"/v2/lbaas/loadbalancers/{site.lb['id']}"), 200)["loadbalancer"]
    assert lb["provisioning_status"] == "ACTIVE"
    assert cloud.answers(site.vip, 2) == ["bad-web", "bad-web"]
    assert cloud.get(site.vip, 80, "/blocked").status_code == 403  # the policy with the good rule still works
