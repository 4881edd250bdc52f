"""Bad input: every request here must be refused with a 4xx and Octavia's fault body, and must not write.

Most cases run against one shared load-balancer tree (built once per module) and check that the whole
database is byte-for-byte the same after the refused request, which covers "no row created", "object
unchanged", "no VIP port allocated" and "load balancer still ACTIVE" at once. Cases that need to build
or change state (51 rules, a pending load balancer, children on delete) get a fresh `api`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from quadriga.db import models as m
from tests.support.api_harness import Api, make_api

LB = "/v2/lbaas/loadbalancers"
LI = "/v2/lbaas/listeners"
POOLS = "/v2/lbaas/pools"
HM = "/v2/lbaas/healthmonitors"
L7P = "/v2/lbaas/l7policies"
MISSING = "4d2b5e3c-9a51-4a7e-8b0e-0c8f5d0b1a11"  # a well-formed UUID that names nothing
TLS_REF = "http://barbican.example/v1/containers/7b1c"


# --- helpers -------------------------------------------------------------------------------------


def assert_fault(response: Any, status: int | tuple[int, ...]) -> dict:
    expected = status if isinstance(status, tuple) else (status,)
    assert response.status_code in expected, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"faultcode", "faultstring", "debuginfo"}, body
    assert body["faultcode"] == "Client"
    assert isinstance(body["faultstring"], str) and body["faultstring"].strip()
    assert body["debuginfo"] is None
    return body


def dump(api: Api) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table, in a stable order."""
    with api.db.read() as s:
        return {
            t.name: sorted(tuple(repr(v) for v in row) for row in s.execute(select(t)))
            for t in m.Base.metadata.sorted_tables
        }


def count(api: Api, model: Any) -> int:
    with api.db.read() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def lb_status(api: Api, lb_id: str) -> str:
    with api.db.read() as s:
        return s.scalars(select(m.LoadBalancer.provisioning_status).where(m.LoadBalancer.id == lb_id)).one()


def fill(value: Any, ids: dict[str, str]) -> Any:
    """Replace `{name}` placeholders in strings (recursively) with the ids of the shared tree."""
    if isinstance(value, str):
        return re.sub(r"{(\w+)}", lambda match: ids[match.group(1)], value)
    if isinstance(value, dict):
        return {fill(k, ids): fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


@dataclass
class Case:
    method: str
    path: str
    body: Any = None
    raw: bytes | None = None
    status: int = 400


def case(method: str, path: str, body: Any = None, status: int = 400, *, raw: bytes | None = None, id: str) -> Any:
    return pytest.param(Case(method, path, body, raw, status), id=id)


# --- the shared tree -----------------------------------------------------------------------------


def build_tree(api: Api) -> dict[str, str]:
    """LB with: HTTP listener :80 -> HTTP pool (1 member, HTTP monitor), a REJECT policy with one rule;
    a TCP listener :81 with no default pool; an HTTP pool and a TCP pool with no listener and no monitor."""
    lb = api.create_lb(name="tree")
    lb_id = lb["id"]
    li = api.create(LI, "listener", lb_id, loadbalancer_id=lb_id, protocol="HTTP", protocol_port=80, name="li")
    li2 = api.create(LI, "listener", lb_id, loadbalancer_id=lb_id, protocol="TCP", protocol_port=81)
    pool = api.create(POOLS, "pool", lb_id, listener_id=li["id"], protocol="HTTP", lb_algorithm="ROUND_ROBIN")
    pool2 = api.create(POOLS, "pool", lb_id, loadbalancer_id=lb_id, protocol="HTTP", lb_algorithm="ROUND_ROBIN")
    pool3 = api.create(POOLS, "pool", lb_id, loadbalancer_id=lb_id, protocol="TCP", lb_algorithm="ROUND_ROBIN")
    member = api.create(f"{POOLS}/{pool['id']}/members", "member", lb_id, address="10.10.0.20", protocol_port=80)
    hm = api.create(HM, "healthmonitor", lb_id, pool_id=pool["id"], type="HTTP", delay=5, timeout=3, max_retries=3)
    pol = api.create(L7P, "l7policy", lb_id, listener_id=li["id"], action="REJECT")
    rule = api.create(f"{L7P}/{pol['id']}/rules", "rule", lb_id, type="PATH", compare_type="STARTS_WITH", value="/a")
    return {
        "lb": lb_id,
        "listener": li["id"],
        "listener2": li2["id"],
        "pool": pool["id"],
        "pool2": pool2["id"],
        "pool3": pool3["id"],
        "member": member["id"],
        "hm": hm["id"],
        "policy": pol["id"],
        "rule": rule["id"],
        "subnet": api.subnet_id(),
        "missing": MISSING,
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[tuple[Api, dict[str, str]]]:
    for api in make_api(tmp_path_factory.mktemp("bad_input"), data_plane=True):
        yield api, build_tree(api)


def run_refused(shared: tuple[Api, dict[str, str]], c: Case) -> dict:
    api, ids = shared
    before = dump(api)
    path = fill(c.path, ids)
    if c.raw is not None:
        headers = dict(api.headers, **{"Content-Type": "application/json"})
        response = api.client.request(c.method, path, content=c.raw, headers=headers)
    else:
        response = api.req(c.method, path, fill(c.body, ids))
    body = assert_fault(response, c.status)
    assert lb_status(api, ids["lb"]) == "ACTIVE"
    assert dump(api) == before, "a refused request wrote to the database"
    return body


# --- 1. malformed JSON and wrong JSON types ------------------------------------------------------

MALFORMED = [
    case("POST", LB, raw=b'{"loadbalancer": {"vip_subnet_id": ', id="lb-post-truncated"),
    case("POST", LB, raw=b"{bad json}", id="lb-post-garbage"),
    case("POST", LB, raw=b"\xff\xfe\x00", id="lb-post-not-utf8"),
    case("POST", LB, raw=b"", id="lb-post-empty"),
    case("POST", LB, raw=b"null", id="lb-post-null"),
    case("PUT", LB + "/{lb}", raw=b'{"loadbalancer": {"name": "x"', id="lb-put-truncated"),
    case("POST", LI, raw=b"{'listener': {}}", id="listener-post-single-quotes"),
    case("PUT", LI + "/{listener}", raw=b'{"listener": {"name": "x",}}', id="listener-put-trailing-comma"),
    case("POST", POOLS, raw=b"[", id="pool-post-bracket"),
    case("POST", POOLS + "/{pool}/members", raw=b'{"member": }', id="member-post"),
    case("PUT", POOLS + "/{pool}/members", raw=b'{"members": [}', id="member-batch"),
    case("POST", HM, raw=b"NaN", id="hm-post-nan"),
    case("POST", L7P, raw=b'{"l7policy"', id="l7policy-post"),
    case("POST", L7P + "/{policy}/rules", raw=b'{"rule": {"value": "\\x"}}', id="rule-post-bad-escape"),
    case("PUT", "/v2/lbaas/quotas/project-a", raw=b"{", id="quota-put"),
    case("POST", "/v2/lbaas/flavorprofiles", raw=b"{", id="flavorprofile-post"),
]

WRONG_TYPES = [
    # string for int (numeric strings such as "80" are integers to Octavia, as WSME converts them)
    case(
        "POST",
        LI,
        {"listener": {"loadbalancer_id": "{lb}", "protocol": "HTTP", "protocol_port": "eighty"}},
        id="s4i-port",
    ),
    case("PUT", LI + "/{listener}", {"listener": {"connection_limit": "10 connections"}}, id="s4i-connection_limit"),
    case("PUT", POOLS + "/{pool}/members/{member}", {"member": {"weight": "heavy"}}, id="s4i-weight"),
    case("PUT", HM + "/{hm}", {"healthmonitor": {"delay": "5s"}}, id="s4i-delay"),
    case("PUT", L7P + "/{policy}", {"l7policy": {"position": "first"}}, id="s4i-position"),
    case("PUT", "/v2/lbaas/quotas/project-a", {"quota": {"loadbalancer": "1e3"}}, id="s4i-quota"),
    case("PUT", LI + "/{listener}", {"listener": {"connection_limit": 1.5}}, id="float4i-connection_limit"),
    case("PUT", LI + "/{listener}", {"listener": {"connection_limit": "1.5"}}, id="strfloat4i-connection_limit"),
    case("PUT", LI + "/{listener}", {"listener": {"connection_limit": True}}, id="bool4i-connection_limit"),
    case("PUT", POOLS + "/{pool}/members/{member}", {"member": {"weight": ""}}, id="empty4i-weight"),
    # int for string
    case("PUT", LB + "/{lb}", {"loadbalancer": {"name": 5}}, id="i4s-lb-name"),
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "{subnet}", "description": 1}}, id="i4s-lb-description"),
    case("PUT", POOLS + "/{pool}", {"pool": {"lb_algorithm": 1}}, id="i4s-lb_algorithm"),
    case("PUT", L7P + "/{policy}/rules/{rule}", {"rule": {"value": 5}}, id="i4s-rule-value"),
    case("POST", POOLS + "/{pool}/members", {"member": {"address": 167772180, "protocol_port": 80}}, id="i4s-address"),
    case("PUT", LB + "/{lb}", {"loadbalancer": {"tags": [1]}}, id="i4s-tag"),
    # "true" for a bool
    case("PUT", LB + "/{lb}", {"loadbalancer": {"admin_state_up": "true"}}, id="strbool-lb-admin_state_up"),
    case("PUT", POOLS + "/{pool}/members/{member}", {"member": {"backup": "true"}}, id="strbool-backup"),
    case("PUT", L7P + "/{policy}/rules/{rule}", {"rule": {"invert": "false"}}, id="strbool-invert"),
    case("PUT", POOLS + "/{pool}", {"pool": {"tls_enabled": "true"}}, id="strbool-tls_enabled"),
    case("PUT", LI + "/{listener}", {"listener": {"admin_state_up": 1}}, id="intbool-listener-admin_state_up"),
    # list for object (and object for list)
    case("POST", LB, [{"vip_subnet_id": "{subnet}"}], id="list4obj-root"),
    case("POST", LB, {"loadbalancer": [{"vip_subnet_id": "{subnet}"}]}, id="list4obj-loadbalancer"),
    case("PUT", LI + "/{listener}", {"listener": []}, id="list4obj-listener"),
    case("PUT", POOLS + "/{pool}", {"pool": {"session_persistence": ["SOURCE_IP"]}}, id="list4obj-persistence"),
    case("PUT", LI + "/{listener}", {"listener": {"insert_headers": ["X-Forwarded-For"]}}, id="list4obj-headers"),
    case("PUT", LB + "/{lb}", {"loadbalancer": {"tags": {"a": "b"}}}, id="obj4list-tags"),
    case("PUT", POOLS + "/{pool}/members", {"members": {"address": "10.10.0.9"}}, id="obj4list-batch"),
    case("PUT", LB + "/{lb}", {"loadbalancer": "web"}, id="str4obj-loadbalancer"),
    # a required field sent as null
    case("POST", LI, {"listener": {"loadbalancer_id": "{lb}", "protocol": None, "protocol_port": 82}}, id="null-req"),
]


@pytest.mark.parametrize("c", MALFORMED + WRONG_TYPES)
def test_malformed_and_mistyped_bodies(shared, c):
    run_refused(shared, c)


def test_malformed_json_message_names_the_problem(shared):
    body = run_refused(shared, Case("POST", LB, raw=b"{bad json}"))
    assert "JSON" in body["faultstring"]


def test_wrong_type_message_is_octavias(shared):
    body = run_refused(shared, Case("PUT", LB + "/{lb}", {"loadbalancer": {"admin_state_up": "true"}}))
    assert body["faultstring"].startswith("Invalid input for field/attribute admin_state_up. Value: 'true'.")


# --- 2. unknown attributes -----------------------------------------------------------------------

UNKNOWN = [
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "{subnet}", "colour": "red"}}, id="lb-post"),
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "{subnet}"}, "extra": 1}, id="lb-post-root"),
    case("POST", LB, {"load_balancer": {"vip_subnet_id": "{subnet}"}}, id="lb-post-wrong-root"),
    case("PUT", LB + "/{lb}", {"loadbalancer": {"colour": "red"}}, id="lb-put"),
    case("PUT", LB + "/{lb}", {"loadbalancer": {"name": "x"}, "listener": {}}, id="lb-put-root"),
    case(
        "POST", LI, {"listener": {"loadbalancer_id": "{lb}", "protocol": "TCP", "protocol_port": 82, "x": 1}}, id="li"
    ),
    case("PUT", LI + "/{listener}", {"listener": {"name": "x"}, "pool": {}}, id="listener-put-root"),
    case("PUT", LI + "/{listener}", {"listener": {"loadbalancers": []}}, id="listener-put-readonly"),
    case("PUT", POOLS + "/{pool}", {"pool": {"members": []}}, id="pool-put-members"),
    case("PUT", POOLS + "/{pool}", {"pool": {"session_persistence": {"type": "SOURCE_IP", "x": 1}}}, id="pool-sp"),
    case("POST", POOLS + "/{pool}/members", {"member": {"address": "10.10.0.9", "protocol_port": 80, "x": 1}}, id="mb"),
    case("PUT", POOLS + "/{pool}/members", {"members": [], "extra": True}, id="member-batch-root"),
    case("PUT", POOLS + "/{pool}/members/{member}", {"member": {"vnic_type": "normal"}}, id="member-put-readonly"),
    case("PUT", HM + "/{hm}", {"healthmonitor": {"colour": "red"}}, id="hm-put"),
    case("POST", L7P, {"l7policy": {"listener_id": "{listener}", "action": "REJECT", "x": 1}}, id="l7policy-post"),
    case("PUT", L7P + "/{policy}/rules/{rule}", {"rule": {"colour": "red"}}, id="rule-put"),
    case("PUT", L7P + "/{policy}/rules/{rule}", {"rule": {"value": "/b"}, "l7policy": {}}, id="rule-put-root"),
    case("PUT", "/v2/lbaas/quotas/project-a", {"quota": {"loadbalancers": 5}}, id="quota-put"),
    case("PUT", "/v2/lbaas/quotas/project-a", {"quota": {"pool": 5}, "x": 1}, id="quota-put-root"),
    case("POST", "/v2/lbaas/flavors", {"flavor": {"name": "f", "flavor_profile_id": "{missing}", "x": 1}}, id="fl"),
]


@pytest.mark.parametrize("c", UNKNOWN)
def test_unknown_attributes(shared, c):
    body = run_refused(shared, c)
    assert "Unknown attribute" in body["faultstring"] or "Mandatory field missing" in body["faultstring"]


# --- 3. strings over their limits, numbers out of range -------------------------------------------

LONG = "x" * 256
TOO_LONG = [
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "{subnet}", "name": LONG}}, id="lb-name"),
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "{subnet}", "description": LONG}}, id="lb-description"),
    case("PUT", LB + "/{lb}", {"loadbalancer": {"name": LONG}}, id="lb-put-name"),
    case("PUT", LB + "/{lb}", {"loadbalancer": {"tags": [LONG]}}, id="lb-put-tag"),
    case("PUT", LI + "/{listener}", {"listener": {"name": LONG}}, id="listener-name"),
    case("PUT", LI + "/{listener}", {"listener": {"description": LONG}}, id="listener-description"),
    case("PUT", LI + "/{listener}", {"listener": {"tls_ciphers": "A" * 2049}}, id="listener-tls_ciphers"),
    case(
        "POST",
        LI,
        {
            "listener": {
                "loadbalancer_id": "{lb}",
                "protocol": "TERMINATED_HTTPS",
                "protocol_port": 443,
                "default_tls_container_ref": TLS_REF,
                "tls_ciphers": "A" * 2049,
            }
        },
        id="listener-post-tls_ciphers",
    ),
    case("PUT", POOLS + "/{pool}", {"pool": {"name": LONG}}, id="pool-name"),
    case("PUT", POOLS + "/{pool}", {"pool": {"description": LONG}}, id="pool-description"),
    case("PUT", POOLS + "/{pool}", {"pool": {"tls_ciphers": "A" * 2049}}, id="pool-tls_ciphers"),
    case("PUT", POOLS + "/{pool}/members/{member}", {"member": {"name": LONG}}, id="member-name"),
    case("PUT", HM + "/{hm}", {"healthmonitor": {"name": LONG}}, id="hm-name"),
    case("PUT", L7P + "/{policy}", {"l7policy": {"name": LONG}}, id="l7policy-name"),
    case("PUT", L7P + "/{policy}", {"l7policy": {"description": LONG}}, id="l7policy-description"),
    case("PUT", L7P + "/{policy}/rules/{rule}", {"rule": {"value": "/" + "a" * 255}}, id="rule-value"),
    case(
        "POST",
        L7P + "/{policy}/rules",
        {"rule": {"type": "PATH", "compare_type": "EQUAL_TO", "value": "/" + "a" * 255}},
        id="rule-post-value",
    ),
    case("POST", "/v2/lbaas/flavors", {"flavor": {"name": LONG, "flavor_profile_id": "{missing}"}}, id="flavor-name"),
]
OUT_OF_RANGE = [
    case("POST", LI, {"listener": {"loadbalancer_id": "{lb}", "protocol": "TCP", "protocol_port": 0}}, id="port-0"),
    case(
        "POST", LI, {"listener": {"loadbalancer_id": "{lb}", "protocol": "TCP", "protocol_port": 65536}}, id="port-big"
    ),
    case("PUT", LI + "/{listener}", {"listener": {"connection_limit": -2}}, id="connection_limit"),
    case("PUT", LI + "/{listener}", {"listener": {"timeout_client_data": 2073600001}}, id="timeout"),
    case("PUT", POOLS + "/{pool}/members/{member}", {"member": {"weight": 257}}, id="weight"),
    case("PUT", HM + "/{hm}", {"healthmonitor": {"max_retries": 11}}, id="max_retries"),
    case("PUT", HM + "/{hm}", {"healthmonitor": {"max_retries_down": 0}}, id="max_retries_down"),
    case("PUT", L7P + "/{policy}", {"l7policy": {"position": 0}}, id="position"),
    case("PUT", "/v2/lbaas/quotas/project-a", {"quota": {"member": -2}}, id="quota"),
]


@pytest.mark.parametrize("c", TOO_LONG + OUT_OF_RANGE)
def test_limits(shared, c):
    run_refused(shared, c)


# --- 4. invalid enumerations ---------------------------------------------------------------------


def _listener(**kw: Any) -> dict:
    return {"listener": {"loadbalancer_id": "{lb}", "protocol": "TCP", "protocol_port": 82, **kw}}


def _pool(**kw: Any) -> dict:
    return {"pool": {"loadbalancer_id": "{lb}", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", **kw}}


def _hm(**kw: Any) -> dict:
    return {"healthmonitor": {"pool_id": "{pool2}", "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3, **kw}}


def _policy(**kw: Any) -> dict:
    return {"l7policy": {"listener_id": "{listener}", "action": "REJECT", **kw}}


def _rule(**kw: Any) -> dict:
    return {"rule": {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/x", **kw}}


RULES = L7P + "/{policy}/rules"
ENUMS = [
    case("POST", LI, _listener(protocol="FTP"), id="listener-protocol"),
    case("POST", LI, _listener(protocol="tcp"), id="listener-protocol-lowercase"),
    case("POST", POOLS, _pool(protocol="FTP"), id="pool-protocol"),
    case("POST", POOLS, _pool(lb_algorithm="RANDOM"), id="lb_algorithm"),
    case("PUT", POOLS + "/{pool}", {"pool": {"lb_algorithm": "round_robin"}}, id="lb_algorithm-put-lowercase"),
    case("POST", POOLS, _pool(session_persistence={"type": "IP"}), id="persistence-type"),
    case("PUT", POOLS + "/{pool}", {"pool": {"session_persistence": {"type": "COOKIE"}}}, id="persistence-type-put"),
    case("POST", HM, _hm(type="ICMP"), id="hm-type"),
    case("POST", HM, _hm(http_method="FETCH"), id="hm-http_method"),
    case("PUT", HM + "/{hm}", {"healthmonitor": {"http_version": 2.0}}, id="hm-http_version"),
    case("POST", L7P, _policy(action="DROP"), id="l7policy-action"),
    case("PUT", L7P + "/{policy}", {"l7policy": {"action": "REDIRECT"}}, id="l7policy-action-put"),
    case("PUT", L7P + "/{policy}", {"l7policy": {"redirect_http_code": 304}}, id="l7policy-redirect_http_code"),
    case("POST", RULES, _rule(type="QUERY"), id="rule-type"),
    case("POST", RULES, _rule(compare_type="LIKE"), id="rule-compare_type"),
    case("PUT", RULES + "/{rule}", {"rule": {"compare_type": "equal_to"}}, id="rule-compare_type-put"),
    case("PUT", LI + "/{listener}", {"listener": {"client_authentication": "SOMETIMES"}}, id="client_authentication"),
    case("PUT", POOLS + "/{pool}", {"pool": {"tls_versions": ["TLSv9"]}}, id="tls_versions"),
    case("PUT", POOLS + "/{pool}", {"pool": {"alpn_protocols": ["spdy"]}}, id="alpn_protocols"),
]


@pytest.mark.parametrize("c", ENUMS)
def test_invalid_enumerations(shared, c):
    run_refused(shared, c)


# --- 5. ids that are not UUIDs -------------------------------------------------------------------

BODY_IDS = [
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "subnet-1"}}, id="lb-vip_subnet_id"),
    case("POST", LB, {"loadbalancer": {"vip_network_id": "net"}}, id="lb-vip_network_id"),
    case("POST", LB, {"loadbalancer": {"vip_port_id": "1234"}}, id="lb-vip_port_id"),
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "{subnet}", "flavor_id": "small"}}, id="lb-flavor_id"),
    case("PUT", LB + "/{lb}", {"loadbalancer": {"vip_qos_policy_id": "qos"}}, id="lb-vip_qos_policy_id"),
    case("POST", LI, _listener(loadbalancer_id="not-a-uuid"), id="listener-loadbalancer_id"),
    case("PUT", LI + "/{listener}", {"listener": {"default_pool_id": "pool"}}, id="listener-default_pool_id"),
    case("POST", POOLS, _pool(loadbalancer_id="lb"), id="pool-loadbalancer_id"),
    case("POST", POOLS, {"pool": {"listener_id": "li", "protocol": "HTTP", "lb_algorithm": "SOURCE_IP"}}, id="pool-li"),
    case(
        "POST",
        POOLS + "/{pool}/members",
        {"member": {"address": "10.10.0.9", "protocol_port": 80, "subnet_id": "s"}},
        id="member-subnet_id",
    ),
    case("POST", HM, _hm(pool_id="{pool2}x"), id="hm-pool_id"),
    case("POST", L7P, _policy(listener_id="{listener}0"), id="l7policy-listener_id"),
    case("POST", L7P, _policy(action="REDIRECT_TO_POOL", redirect_pool_id="pool"), id="l7policy-redirect_pool_id"),
    case("POST", "/v2/lbaas/flavors", {"flavor": {"name": "f", "flavor_profile_id": "prof"}}, id="flavor-profile"),
]


@pytest.mark.parametrize("c", BODY_IDS)
def test_non_uuid_ids_in_bodies_are_400(shared, c):
    body = run_refused(shared, c)
    assert "UUID" in body["faultstring"]


PATH_IDS = [
    "/v2/lbaas/loadbalancers/{bad}",
    "/v2/lbaas/loadbalancers/{bad}/status",
    "/v2/lbaas/loadbalancers/{bad}/statuses",
    "/v2/lbaas/loadbalancers/{bad}/stats",
    "/v2/lbaas/listeners/{bad}",
    "/v2/lbaas/listeners/{bad}/stats",
    "/v2/lbaas/pools/{bad}",
    "/v2/lbaas/pools/{bad}/members",
    "/v2/lbaas/pools/{pool}/members/{bad}",
    "/v2/lbaas/healthmonitors/{bad}",
    "/v2/lbaas/l7policies/{bad}",
    "/v2/lbaas/l7policies/{bad}/rules",
    "/v2/lbaas/l7policies/{policy}/rules/{bad}",
    "/v2/lbaas/flavors/{bad}",
    "/v2/lbaas/flavorprofiles/{bad}",
    "/v2/lbaas/availabilityzoneprofiles/{bad}",
    "/v2/octavia/amphorae/{bad}",
    "/v2/octavia/amphorae/{bad}/stats",
]
WRITABLE_PATHS = {
    "/v2/lbaas/loadbalancers/{bad}": ({"loadbalancer": {"name": "x"}},),
    "/v2/lbaas/listeners/{bad}": ({"listener": {"name": "x"}},),
    "/v2/lbaas/pools/{bad}": ({"pool": {"name": "x"}},),
    "/v2/lbaas/pools/{pool}/members/{bad}": ({"member": {"name": "x"}},),
    "/v2/lbaas/healthmonitors/{bad}": ({"healthmonitor": {"name": "x"}},),
    "/v2/lbaas/l7policies/{bad}": ({"l7policy": {"name": "x"}},),
    "/v2/lbaas/l7policies/{policy}/rules/{bad}": ({"rule": {"value": "/y"}},),
    "/v2/lbaas/flavors/{bad}": ({"flavor": {"name": "x"}},),
    "/v2/lbaas/flavorprofiles/{bad}": ({"flavorprofile": {"name": "x"}},),
}
PATH_CASES = [
    case("GET", p.replace("{bad}", bad), id=f"GET-{p}-{label}")
    for p in PATH_IDS
    for bad, label in (("not-a-uuid", "word"), ("1234", "digits"), (MISSING, "unknown-uuid"))
]
PATH_CASES += [
    case(method, p.replace("{bad}", "not-a-uuid"), body if method == "PUT" else None, status=404, id=f"{method}-{p}")
    for p, (body,) in WRITABLE_PATHS.items()
    for method in ("PUT", "DELETE")
]
PATH_CASES += [
    case(
        "POST",
        "/v2/lbaas/pools/not-a-uuid/members",
        {"member": {"address": "10.10.0.9", "protocol_port": 80}},
        status=404,
        id="POST-member-under-bad-pool",
    ),
    case("POST", "/v2/lbaas/l7policies/not-a-uuid/rules", _rule(), status=404, id="POST-rule-under-bad-policy"),
    case("PUT", "/v2/lbaas/pools/not-a-uuid/members", {"members": []}, status=404, id="PUT-batch-under-bad-pool"),
    case("PUT", "/v2/lbaas/loadbalancers/not-a-uuid/failover", status=404, id="PUT-lb-failover"),
    case("PUT", "/v2/octavia/amphorae/not-a-uuid/failover", status=404, id="PUT-amphora-failover"),
    case("PUT", "/v2/octavia/amphorae/not-a-uuid/config", status=404, id="PUT-amphora-config"),
    case("DELETE", "/v2/octavia/amphorae/not-a-uuid", status=404, id="DELETE-amphora"),
    case(
        "PUT", "/v2/lbaas/pools/{pool2}/members/{member}", {"member": {"name": "x"}}, status=404, id="member-of-other"
    ),
]


@pytest.mark.parametrize("c", PATH_CASES)
def test_non_uuid_or_unknown_ids_in_paths_are_404(shared, c):
    if c.status == 400:
        c.status = 404
    run_refused(shared, c)


# --- 6. list parameters --------------------------------------------------------------------------

LISTS = [
    LB,
    LI,
    POOLS,
    POOLS + "/{pool}/members",
    HM,
    L7P,
    L7P + "/{policy}/rules",
    "/v2/lbaas/flavors",
    "/v2/lbaas/flavorprofiles",
    "/v2/lbaas/availabilityzones",
    "/v2/lbaas/availabilityzoneprofiles",
    "/v2/octavia/amphorae",
]
BAD_QUERIES = {
    "unknown-filter": "colour=red",
    "unknown-filter-with-valid": "id={missing}&colour=red",
    "sort-bad-key": "sort=colour:asc",
    "sort-bad-direction": "sort=id:sideways",
    "sort-too-many-colons": "sort=id:asc:desc",
    "sort_key-bad": "sort_key=colour",
    "sort_dir-bad": "sort_key=id&sort_dir=up",
    "marker-unknown-uuid": "marker={missing}",
    "marker-not-uuid": "marker=abc",
    "limit-0": "limit=0",
    "limit-negative": "limit=-1",
    "limit-huge": "limit=1000000000",
    "limit-abc": "limit=abc",
    "limit-empty": "limit=",
    "limit-float": "limit=1.5",
}


@pytest.mark.parametrize("query", list(BAD_QUERIES.values()), ids=list(BAD_QUERIES))
@pytest.mark.parametrize("path", LISTS)
def test_bad_list_parameters(shared, path, query):
    run_refused(shared, Case("GET", f"{path}?{query}"))


def test_bad_filter_values_are_400(shared):
    run_refused(shared, Case("GET", LB + "?admin_state_up=maybe"))
    run_refused(shared, Case("GET", LI + "?protocol_port=eighty"))


BAD_FILTER_VALUES = [
    (LI, "protocol_port=99999999999999999999"),
    (LI, "connection_limit=-99999999999999999999"),
    (LI, "protocol_port=eighty"),
    (LB, "admin_state_up=maybe"),
    (LB, "created_at=yesterday"),
    (LB, "updated_at=2020-13-45"),
    (HM, "http_version=one"),
    (HM, "delay=1.5"),
    ("/v2/octavia/amphorae", "cert_expiration=soon"),
    ("/v2/octavia/amphorae", "vrrp_priority=99999999999999999999"),
    ("/v2/lbaas/flavors", "enabled=perhaps"),
]


@pytest.mark.parametrize("path,query", BAD_FILTER_VALUES, ids=[q for _p, q in BAD_FILTER_VALUES])
def test_filter_values_of_the_wrong_type_are_400(shared, path, query):
    body = run_refused(shared, Case("GET", f"{path}?{query}"))
    assert body["faultstring"].startswith(f"Invalid input for field/attribute {query.split('=')[0]}.")


def test_typed_filters_still_match(shared):
    api, ids = shared
    assert [li["id"] for li in api.ok(api.get(LI + "?protocol_port=80"), 200)["listeners"]] == [ids["listener"]]
    assert len(api.ok(api.get(LB + "?created_at=2000-01-01T00:00:00"), 200)["loadbalancers"]) == 0
    assert api.ok(api.get(HM + "?http_version=1.0"), 200)["healthmonitors"] == []


# --- 7. NUL characters and over-long identifiers (PostgreSQL cannot store them: never a 500) ----------

NUL = [
    case("GET", LB + "/a%00b", id="path-get"),
    case("PUT", LB + "/{lb}%00", {"loadbalancer": {"name": "x"}}, id="path-put"),
    case("GET", "/v2/lbaas/availabilityzones/az%00", id="path-az"),
    case("GET", "/v2/lbaas/quotas/p%00", id="path-quota-get"),
    case("PUT", "/v2/lbaas/quotas/p%00", {"quota": {"pool": 5}}, id="path-quota-put"),
    case("GET", LB + "?name=a%00b", id="query-filter"),
    case("GET", LB + "?marker=%00", id="query-marker"),
    case("GET", LB + "?tags=a%00", id="query-tags"),
    case("GET", LB + "?project_id=a%00", id="query-project_id"),
    case("GET", "/v2/lbaas/quotas?project_id=a%00", id="query-quotas"),
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "{subnet}", "name": "a\x00b"}}, id="body-lb-name"),
    case("PUT", LI + "/{listener}", {"listener": {"tags": ["a\x00"]}}, id="body-tag"),
    case("PUT", LI + "/{listener}", {"listener": {"insert_headers": {"X-Forwarded-For\x00": "true"}}}, id="body-key"),
    case("POST", L7P + "/{policy}/rules", _rule(value="/a\x00"), id="body-rule-value"),
    case(
        "POST",
        "/v2/lbaas/flavorprofiles",
        {"flavorprofile": {"name": "\x00", "provider_name": "noop", "flavor_data": "{}"}},
        id="body-catalog",
    ),
]


@pytest.mark.parametrize("c", NUL)
def test_nul_characters_are_400(shared, c):
    body = run_refused(shared, c)
    assert "NUL" in body["faultstring"]


def test_over_long_project_ids_are_400(shared):
    api, ids = shared
    before = dump(api)
    long = "p" * 256
    lb = {"loadbalancer": {"vip_subnet_id": ids["subnet"]}}
    assert_fault(api.post(LB, lb, headers={"X-Project-Id": long}), 400)
    assert_fault(api.post(LB, {"loadbalancer": {**lb["loadbalancer"], "project_id": long}}), 400)
    assert_fault(api.put(f"/v2/lbaas/quotas/{long}", {"quota": {"pool": 5}}), 400)
    assert dump(api) == before


def test_an_error_in_a_list_item_names_the_attribute(shared):
    body = run_refused(shared, Case("POST", LI, _listener(allowed_cidrs=["10.0.0.0/8", "bogus"])))
    assert body["faultstring"].startswith("Invalid input for field/attribute allowed_cidrs. Value: 'bogus'.")


# --- 8. bodies over 1 MiB ------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [("POST", LB), ("PUT", LB + "/{lb}"), ("POST", LI), ("PUT", HM + "/{hm}")])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_one_mib_is_413(shared, method, path, chunked):
    api, ids = shared
    before = dump(api)
    payload = json.dumps({"loadbalancer": {"vip_subnet_id": ids["subnet"], "description": "x" * (1024 * 1024 + 1)}})
    data = payload.encode()
    headers = dict(api.headers, **{"Content-Type": "application/json"})
    if chunked:

        def stream() -> Iterator[bytes]:
            for i in range(0, len(data), 64 * 1024):
                yield data[i : i + 64 * 1024]

        response = api.client.request(method, fill(path, ids), content=stream(), headers=headers)
    else:
        response = api.client.request(method, fill(path, ids), content=data, headers=headers)
    assert_fault(response, 413)
    assert dump(api) == before


# --- 9. PUT of immutable fields ------------------------------------------------------------------

IMMUTABLE = [
    (LB + "/{lb}", "loadbalancer", {"vip_subnet_id": "{subnet}"}),
    (LB + "/{lb}", "loadbalancer", {"vip_address": "10.10.0.99"}),
    (LB + "/{lb}", "loadbalancer", {"vip_network_id": "{missing}"}),
    (LB + "/{lb}", "loadbalancer", {"vip_port_id": "{missing}"}),
    (LB + "/{lb}", "loadbalancer", {"provider": "noop"}),
    (LB + "/{lb}", "loadbalancer", {"flavor_id": "{missing}"}),
    (LB + "/{lb}", "loadbalancer", {"availability_zone": "az1"}),
    (LB + "/{lb}", "loadbalancer", {"project_id": "project-b"}),
    (LI + "/{listener}", "listener", {"protocol": "TCP"}),
    (LI + "/{listener}", "listener", {"protocol_port": 8080}),
    (LI + "/{listener}", "listener", {"loadbalancer_id": "{missing}"}),
    (POOLS + "/{pool}", "pool", {"protocol": "PROXY"}),
    (POOLS + "/{pool}", "pool", {"listener_id": "{listener2}"}),
    (POOLS + "/{pool}", "pool", {"loadbalancer_id": "{lb}"}),
    (POOLS + "/{pool}/members/{member}", "member", {"address": "10.10.0.21"}),
    (POOLS + "/{pool}/members/{member}", "member", {"protocol_port": 81}),
    (POOLS + "/{pool}/members/{member}", "member", {"subnet_id": "{subnet}"}),
    (HM + "/{hm}", "healthmonitor", {"type": "TCP"}),
    (HM + "/{hm}", "healthmonitor", {"pool_id": "{pool2}"}),
    (L7P + "/{policy}", "l7policy", {"listener_id": "{listener2}"}),
]


@pytest.mark.parametrize(
    "path,root,fields", IMMUTABLE, ids=[f"{root}-{next(iter(fields))}" for _p, root, fields in IMMUTABLE]
)
def test_put_of_an_immutable_field_is_400_and_changes_nothing(shared, path, root, fields):
    api, ids = shared
    url = fill(path, ids)
    before = api.ok(api.get(url), 200)[root]
    # Sent alone and together with a legitimate change: neither may be applied.
    for body in (fields, {**fields, "name": "renamed"}):
        fault = run_refused(shared, Case("PUT", path, {root: body}))
        assert next(iter(fields)) in fault["faultstring"]
    assert api.ok(api.get(url), 200)[root] == before


# --- 10. cross-field and cross-object rules -------------------------------------------------------

TERMINATED = {"protocol": "TERMINATED_HTTPS", "protocol_port": 443, "default_tls_container_ref": TLS_REF}
RULE_CASES = [
    # listener <-> pool protocols
    case(
        "POST",
        POOLS,
        {"pool": {"listener_id": "{listener2}", "protocol": "UDP", "lb_algorithm": "ROUND_ROBIN"}},
        id="pool-protocol-vs-listener",
    ),
    case("PUT", LI + "/{listener}", {"listener": {"default_pool_id": "{pool3}"}}, id="listener-default-pool-tcp"),
    case("POST", L7P, _policy(action="REDIRECT_TO_POOL", redirect_pool_id="{pool3}"), id="l7-redirect-pool-protocol"),
    case("POST", LI, _listener(protocol="UDP", default_pool_id="{pool2}"), id="listener-post-default-pool-protocol"),
    case("POST", LI, _listener(default_pool_id="{missing}"), id="listener-default-pool-missing"),
    case(
        "POST",
        POOLS,
        {"pool": {"listener_id": "{listener}", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}},
        status=409,
        id="listener-already-has-default-pool",
    ),
    # ports, monitors, members
    case("POST", LI, _listener(protocol_port=80), status=409, id="duplicate-listener-port"),
    case("POST", LI, _listener(protocol="HTTPS", protocol_port=81), status=409, id="duplicate-listener-port-https"),
    case("POST", HM, _hm(pool_id="{pool}"), status=409, id="second-health-monitor"),
    case(
        "POST",
        POOLS + "/{pool}/members",
        {"member": {"address": "10.10.0.20", "protocol_port": 80}},
        status=409,
        id="duplicate-member",
    ),
    case(
        "PUT",
        POOLS + "/{pool}/members",
        {"members": [{"address": "10.10.0.30", "protocol_port": 80}] * 2},
        status=409,
        id="duplicate-member-in-batch",
    ),
    # session persistence
    case("POST", POOLS, _pool(session_persistence={"type": "APP_COOKIE"}), id="app-cookie-without-name"),
    case("PUT", POOLS + "/{pool}", {"pool": {"session_persistence": {"type": "APP_COOKIE"}}}, id="app-cookie-put"),
    case("POST", POOLS, _pool(session_persistence={"type": "HTTP_COOKIE", "cookie_name": "c"}), id="http-cookie-name"),
    case("POST", POOLS, _pool(session_persistence={"type": "SOURCE_IP", "persistence_timeout": 5}), id="sp-timeout"),
    case("POST", POOLS, _pool(session_persistence={"type": "APP_COOKIE", "cookie_name": "a b"}), id="cookie-name-sp"),
    # health monitor fields
    case("POST", HM, _hm(type="TCP", url_path="/"), id="tcp-monitor-url_path"),
    case("POST", HM, _hm(type="TCP", http_method="GET"), id="tcp-monitor-http_method"),
    case("POST", HM, _hm(type="PING", expected_codes="200"), id="ping-monitor-expected_codes"),
    case("POST", HM, _hm(expected_codes="2000"), id="expected_codes-2000"),
    case("POST", HM, _hm(expected_codes="200-"), id="expected_codes-200-"),
    case("POST", HM, _hm(expected_codes="abc"), id="expected_codes-abc"),
    case("PUT", HM + "/{hm}", {"healthmonitor": {"expected_codes": "20x"}}, id="expected_codes-put"),
    case("POST", HM, _hm(url_path="health"), id="url_path-relative"),
    case("POST", HM, _hm(url_path="http://example.com/health"), id="url_path-absolute-url"),
    case("PUT", HM + "/{hm}", {"healthmonitor": {"url_path": "health"}}, id="url_path-put"),
    case("POST", HM, _hm(domain_name="example.com"), id="domain_name-without-http_version"),
    case("POST", HM, _hm(domain_name="example.com", http_version=1.0), id="domain_name-http-1.0"),
    case("PUT", HM + "/{hm}", {"healthmonitor": {"domain_name": "example.com"}}, id="domain_name-put"),
    case("POST", HM, _hm(type="UDP-CONNECT"), id="udp-connect-on-http-pool"),
    # L7 rules and policies
    case("POST", RULES, _rule(type="HEADER", compare_type="EQUAL_TO", value="x"), id="header-rule-without-key"),
    case("POST", RULES, _rule(type="COOKIE", compare_type="EQUAL_TO", value="x"), id="cookie-rule-without-key"),
    case("POST", RULES, _rule(type="SSL_VERIFY_RESULT", compare_type="EQUAL_TO", value="\u0663"), id="verify-arabic"),
    case("POST", RULES, _rule(type="SSL_VERIFY_RESULT", compare_type="EQUAL_TO", value="\u00b2"), id="verify-sup"),
    case("POST", RULES, _rule(type="SSL_VERIFY_RESULT", compare_type="STARTS_WITH", value="1"), id="verify-compare"),
    case("POST", RULES, _rule(type="SSL_CONN_HAS_CERT", compare_type="EQUAL_TO", value="yes"), id="has-cert-value"),
    case("POST", RULES, _rule(type="SSL_DN_FIELD", compare_type="EQUAL_TO", value="x", key="NOPE"), id="dn-field-key"),
    case("POST", RULES, _rule(type="FILE_TYPE", compare_type="STARTS_WITH", value="jpg"), id="file_type-starts_with"),
    case("PUT", RULES + "/{rule}", {"rule": {"type": "FILE_TYPE"}}, id="file_type-put-starts_with"),
    case("PUT", RULES + "/{rule}", {"rule": {"type": "HEADER"}}, id="header-put-without-key"),
    case("POST", RULES, _rule(value="/a\nb"), id="rule-value-newline"),
    case("POST", RULES, _rule(compare_type="REGEX", value="(unclosed"), id="rule-bad-regex"),
    case("POST", L7P, _policy(action="REDIRECT_TO_POOL"), id="redirect-to-pool-without-pool"),
    case("PUT", L7P + "/{policy}", {"l7policy": {"action": "REDIRECT_TO_POOL"}}, id="redirect-to-pool-put"),
    case("POST", L7P, _policy(action="REDIRECT_TO_URL"), id="redirect-to-url-without-url"),
    case("POST", L7P, _policy(action="REDIRECT_TO_URL", redirect_url="not a url"), id="redirect-bad-url"),
    case("POST", L7P, _policy(action="REDIRECT_TO_POOL", redirect_pool_id="{missing}"), id="redirect-pool-missing"),
    case("POST", L7P, _policy(listener_id="{listener2}"), id="l7policy-on-tcp-listener"),
    # listener options
    case("PUT", LI + "/{listener}", {"listener": {"insert_headers": {"X-Colour": "true"}}}, id="insert_headers-key"),
    case(
        "PUT", LI + "/{listener}", {"listener": {"insert_headers": {"X-Forwarded-For": "yes"}}}, id="insert_headers-v"
    ),
    case(
        "PUT",
        LI + "/{listener}",
        {"listener": {"insert_headers": {"X-SSL-Client-DN": "true"}}},
        id="insert_headers-tls",
    ),
    case(
        "PUT",
        LI + "/{listener2}",
        {"listener": {"insert_headers": {"X-Forwarded-For": "true"}}},
        id="insert_headers-tcp",
    ),
    case("POST", LI, _listener(insert_headers={"X-Forwarded-For": "true"}), id="insert_headers-tcp-post"),
    case("PUT", LI + "/{listener}", {"listener": {"default_tls_container_ref": TLS_REF}}, id="tls-ref-on-http"),
    case("PUT", LI + "/{listener}", {"listener": {"sni_container_refs": [TLS_REF]}}, id="sni-refs-on-http"),
    case("POST", LI, _listener(protocol="HTTP", default_tls_container_ref=TLS_REF), id="tls-ref-on-http-post"),
    case("PUT", LI + "/{listener}", {"listener": {"client_ca_tls_container_ref": TLS_REF}}, id="client-ca-on-http"),
    case("PUT", LI + "/{listener}", {"listener": {"tls_versions": ["TLSv1.3"]}}, id="tls_versions-on-http"),
    case("PUT", LI + "/{listener}", {"listener": {"hsts_max_age": 10}}, id="hsts-on-http"),
    case("POST", LI, _listener(**TERMINATED, client_authentication="MANDATORY"), id="mandatory-without-ca"),
    case("POST", LI, _listener(**TERMINATED, client_authentication="OPTIONAL"), id="optional-without-ca"),
    case("POST", LI, _listener(**TERMINATED, client_crl_container_ref=TLS_REF), id="crl-without-ca"),
    case("POST", LI, _listener(**{**TERMINATED, "default_tls_container_ref": None}), id="terminated-without-cert"),
    case("POST", LI, _listener(allowed_cidrs=["2001:db8::/64"]), id="allowed_cidrs-ip-version"),
    case("POST", LI, _listener(allowed_cidrs=["10.0.0.0/33"]), id="allowed_cidrs-bad"),
    case("POST", LI, _listener(protocol="PROMETHEUS", default_pool_id="{pool3}"), id="prometheus-default-pool"),
    # load balancer
    case("POST", LB, {"loadbalancer": {"name": "no-vip"}}, id="lb-without-vip"),
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "{missing}"}}, status=(400, 404), id="lb-unknown-subnet"),
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "{subnet}", "vip_address": "192.0.2.1"}}, id="vip-off-subnet"),
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "{subnet}", "provider": "octavia"}}, id="lb-unknown-provider"),
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "{subnet}", "flavor_id": "{missing}"}}, id="lb-unknown-flavor"),
    case("POST", LB, {"loadbalancer": {"vip_subnet_id": "{subnet}", "availability_zone": "nowhere"}}, id="lb-no-az"),
    case(
        "POST",
        LB,
        {
            "loadbalancer": {
                "vip_subnet_id": "{subnet}",
                "listeners": [{"protocol": "HTTP", "protocol_port": 80, "default_pool": {"name": "ghost"}}],
            }
        },
        id="graph-unknown-pool-reference",
    ),
    case(
        "POST",
        LB,
        {
            "loadbalancer": {
                "vip_subnet_id": "{subnet}",
                "listeners": [{"protocol": "HTTP", "protocol_port": 80}, {"protocol": "TCP", "protocol_port": 80}],
            }
        },
        status=409,
        id="graph-duplicate-port",
    ),
    case(
        "POST",
        LB,
        {
            "loadbalancer": {
                "vip_subnet_id": "{subnet}",
                "pools": [
                    {
                        "name": "p",
                        "protocol": "HTTP",
                        "lb_algorithm": "ROUND_ROBIN",
                        "session_persistence": {"type": "APP_COOKIE"},
                    }
                ],
            }
        },
        id="graph-bad-pool",
    ),
    case("DELETE", LB + "/{lb}", id="delete-lb-with-children"),
    case("DELETE", LB + "/{lb}?cascade=false", id="delete-lb-with-children-cascade-false"),
    case(
        "POST",
        POOLS + "/{pool}/members",
        {"member": {"address": "10.10.0.21", "protocol_port": 80, "monitor_port": 0}},
        id="member-monitor_port-0",
    ),
]


@pytest.mark.parametrize("c", RULE_CASES)
def test_cross_field_and_cross_object_rules(shared, c):
    run_refused(shared, c)


def test_delete_lb_with_children_message(shared):
    api, ids = shared
    body = run_refused(shared, Case("DELETE", LB + "/{lb}"))
    # Octavia raises a ValidationException, hence the "Validation failure: " prefix.
    assert body["faultstring"] == f"Validation failure: Cannot delete Load Balancer {ids['lb']} - it has children"


def test_deleting_a_pool_used_by_a_policy_is_409(api):
    lb = api.create_lb()
    li = api.create(LI, "listener", lb["id"], loadbalancer_id=lb["id"], protocol="HTTP", protocol_port=80)
    pool = api.create(POOLS, "pool", lb["id"], loadbalancer_id=lb["id"], protocol="HTTP", lb_algorithm="SOURCE_IP")
    api.create(L7P, "l7policy", lb["id"], listener_id=li["id"], action="REDIRECT_TO_POOL", redirect_pool_id=pool["id"])
    before = dump(api)
    assert_fault(api.delete(f"{POOLS}/{pool['id']}"), 409)
    assert dump(api) == before


def test_fifty_first_rule_is_409(api):
    lb = api.create_lb()
    li = api.create(LI, "listener", lb["id"], loadbalancer_id=lb["id"], protocol="HTTP", protocol_port=80)
    rules = [{"type": "PATH", "compare_type": "STARTS_WITH", "value": f"/p{i}"} for i in range(50)]
    pol = api.create(L7P, "l7policy", lb["id"], listener_id=li["id"], action="REJECT", rules=rules)
    assert len(pol["rules"]) == 50
    before = dump(api)
    body = assert_fault(api.post(f"{L7P}/{pol['id']}/rules", _rule(value="/p50")), 409)
    assert "Too many rules" in body["faultstring"]
    # ... and a policy created with 51 rules at once is refused whole.
    too_many = [*rules, {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/p50"}]
    assert_fault(api.post(L7P, {"l7policy": {"listener_id": li["id"], "action": "REJECT", "rules": too_many}}), 409)
    assert lb_status(api, lb["id"]) == "ACTIVE"
    assert dump(api) == before


# --- 11. changes while the load balancer is busy -------------------------------------------------


@pytest.fixture
def slow_api(api):
    """The `api` fixture with a provider that takes a second to apply each change."""
    lb = api.create_lb()
    li = api.create(LI, "listener", lb["id"], loadbalancer_id=lb["id"], protocol="HTTP", protocol_port=80)
    pool = api.create(POOLS, "pool", lb["id"], listener_id=li["id"], protocol="HTTP", lb_algorithm="ROUND_ROBIN")
    provider = api.reconciler.providers["noop"]
    provider.delay = 1.0
    try:
        yield api, {"lb": lb["id"], "listener": li["id"], "pool": pool["id"]}
    finally:
        provider.delay = 0.0


BUSY = [
    case("PUT", LB + "/{lb}", {"loadbalancer": {"name": "again"}}, status=409, id="lb-put"),
    case("DELETE", LB + "/{lb}?cascade=true", status=409, id="lb-delete"),
    case("POST", LI, _listener(), status=409, id="listener-post"),
    case("PUT", LI + "/{listener}", {"listener": {"name": "x"}}, status=409, id="listener-put"),
    case("DELETE", LI + "/{listener}", status=409, id="listener-delete"),
    case("POST", POOLS, _pool(), status=409, id="pool-post"),
    case("PUT", POOLS + "/{pool}", {"pool": {"name": "x"}}, status=409, id="pool-put"),
    case(
        "POST",
        POOLS + "/{pool}/members",
        {"member": {"address": "10.10.0.9", "protocol_port": 80}},
        status=409,
        id="member-post",
    ),
    case("PUT", POOLS + "/{pool}/members", {"members": []}, status=409, id="member-batch"),
    case("POST", HM, _hm(pool_id="{pool}"), status=409, id="hm-post"),
    case("POST", L7P, _policy(), status=409, id="l7policy-post"),
]


@pytest.mark.parametrize("c", BUSY)
def test_changes_while_pending_update_are_409(slow_api, c):
    api, ids = slow_api
    tables = [m.Listener, m.Pool, m.Member, m.HealthMonitor, m.L7Policy, m.L7Rule, m.Port]
    counts = {t: count(api, t) for t in tables}
    pending = api.ok(api.put(f"{LB}/{ids['lb']}", {"loadbalancer": {"name": "busy"}}), 200)["loadbalancer"]
    assert pending["provisioning_status"] == "PENDING_UPDATE"
    response = api.req(c.method, fill(c.path, ids), fill(c.body, ids))
    body = assert_fault(response, 409)
    assert "immutable" in body["faultstring"] or "Invalid state" in body["faultstring"]
    settled = api.wait_lb(ids["lb"])
    assert settled["name"] == "busy"
    assert {t: count(api, t) for t in tables} == counts
    for path, root in ((LI + "/{listener}", "listener"), (POOLS + "/{pool}", "pool")):
        obj = api.ok(api.get(fill(path, ids)), 200)[root]
        assert obj["name"] == "" and obj["provisioning_status"] == "ACTIVE"


def test_lb_create_writes_nothing_when_a_later_step_fails(api):
    """A graph create whose listener is invalid must not leave the LB, its VIP port or its pool behind."""
    before = dump(api)
    body = {
        "loadbalancer": {
            "vip_subnet_id": api.subnet_id(),
            "pools": [{"name": "p", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}],
            "listeners": [{"protocol": "UDP", "protocol_port": 53, "default_pool": {"name": "p"}}],
        }
    }
    assert_fault(api.post(LB, body), 400)
    assert dump(api) == before  # no LB row, no pool, no VIP port
