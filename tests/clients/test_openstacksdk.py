"""openstacksdk (`openstack.connect(cloud="quadriga")`) against `quadriga serve`: the load-balancer and
network proxies, version discovery on both endpoints, waiters, filters, pagination and quotas."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openstack
import openstack.connection
import pytest
from openstack import exceptions as sdk_exc

from tests.support.server import QuadrigaServer

pytestmark = [
    pytest.mark.clients,
    # Raised inside openstacksdk itself, not by how these tests call it.
    pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK50Warning"),
    pytest.mark.filterwarnings("ignore:Support for InfluxDB:openstack.warnings.RemovedInSDK60Warning"),
]

WAIT = {"interval": 0.1, "wait": 30}  # the noop provider is fast; the SDK's default interval is 2 s
STAT_COUNTERS = ("active_connections", "bytes_in", "bytes_out", "request_errors", "total_connections")


@pytest.fixture(scope="module")
def conn(clouds_yaml: Path) -> Iterator[openstack.connection.Connection]:
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("OS_"):
                mp.delenv(key)
        mp.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml))
        no_proxy = ",".join(filter(None, [os.environ.get("no_proxy"), "127.0.0.1", "localhost"]))
        mp.setenv("no_proxy", no_proxy)
        mp.setenv("NO_PROXY", no_proxy)
        connection = openstack.connect(cloud="quadriga")
        try:
            yield connection
        finally:
            connection.close()


@pytest.fixture(scope="module")
def subnet(conn: openstack.connection.Connection) -> Any:
    found = conn.network.find_subnet("private-subnet", ignore_missing=False)
    assert found.name == "private-subnet"
    assert found.network_id == conn.network.find_network("private", ignore_missing=False).id
    assert conn.network.find_network("public", ignore_missing=False).name == "public"
    return found


def wait_lb(conn: openstack.connection.Connection, lb_id: str) -> Any:
    lb = conn.load_balancer.wait_for_load_balancer(lb_id, **WAIT)
    assert lb.provisioning_status == "ACTIVE"
    return lb


def find_or_none(find: Callable[..., Any], name_or_id: str) -> Any:
    """find_*() without the deprecated ignore_missing=True."""
    try:
        return find(name_or_id, ignore_missing=False)
    except sdk_exc.NotFoundException:
        return None


def delete_lb(conn: openstack.connection.Connection, lb_id: str) -> None:
    """Cleanup: wait out a PENDING_CREATE/UPDATE (deleting then is a 409), cascade-delete, wait until gone."""
    lbp = conn.load_balancer
    lb = find_or_none(lbp.find_load_balancer, lb_id)
    if lb is None:
        return
    if lb.provisioning_status in ("PENDING_CREATE", "PENDING_UPDATE"):
        with contextlib.suppress(sdk_exc.ResourceFailure):
            lbp.wait_for_load_balancer(lb_id, **WAIT)
    if lb.provisioning_status != "PENDING_DELETE":
        lbp.delete_load_balancer(lb_id, ignore_missing=True, cascade=True)
    lbp.wait_for_delete(lb, **WAIT)


@pytest.fixture(scope="module")
def tree(conn: openstack.connection.Connection, subnet: Any) -> Iterator[dict[str, Any]]:
    """One LB with a listener, pool, member, health monitor, l7 policy and rule, created through the SDK."""
    lbp = conn.load_balancer
    sfx = uuid.uuid4().hex[:6]
    t: dict[str, Any] = {"sfx": sfx, "member_address": str(ipaddress.ip_network(subnet.cidr)[20])}
    created = lbp.create_load_balancer(name=f"sdk-lb-{sfx}", description="sdk", vip_subnet_id=subnet.id)
    t["created"] = created
    try:
        t["lb"] = wait_lb(conn, created.id)
        t["listener"] = lbp.create_listener(
            name=f"sdk-listener-{sfx}", protocol="HTTP", protocol_port=80, load_balancer_id=created.id
        )
        wait_lb(conn, created.id)
        t["pool"] = lbp.create_pool(
            name=f"sdk-pool-{sfx}", protocol="HTTP", lb_algorithm="ROUND_ROBIN", listener_id=t["listener"].id
        )
        wait_lb(conn, created.id)
        t["member"] = lbp.create_member(
            t["pool"],
            name=f"sdk-member-{sfx}",
            address=t["member_address"],
            protocol_port=8080,
            weight=3,
            subnet_id=subnet.id,
        )
        wait_lb(conn, created.id)
        t["hm"] = lbp.create_health_monitor(
            name=f"sdk-hm-{sfx}",
            pool_id=t["pool"].id,
            type="HTTP",
            delay=5,
            timeout=3,
            max_retries=3,
            url_path="/health",
            expected_codes="200,201",
        )
        wait_lb(conn, created.id)
        t["policy"] = lbp.create_l7_policy(
            name=f"sdk-policy-{sfx}",
            listener_id=t["listener"].id,
            action="REDIRECT_TO_URL",
            redirect_url="http://example.com/",
        )
        wait_lb(conn, created.id)
        t["rule"] = lbp.create_l7_rule(t["policy"], type="PATH", compare_type="STARTS_WITH", value="/api")
        wait_lb(conn, created.id)
        yield t
    finally:
        delete_lb(conn, created.id)


def test_create_and_wait(conn: openstack.connection.Connection, subnet: Any, tree: dict[str, Any]) -> None:
    created, lb = tree["created"], tree["lb"]
    assert created.provisioning_status == "PENDING_CREATE"
    assert lb.id == created.id
    assert lb.name == f"sdk-lb-{tree['sfx']}"
    assert lb.vip_subnet_id == subnet.id
    assert lb.vip_network_id == subnet.network_id
    assert ipaddress.ip_address(lb.vip_address) in ipaddress.ip_network(subnet.cidr)
    port = conn.network.get_port(lb.vip_port_id)
    assert port.device_owner == "Octavia"
    assert lb.vip_address in [ip["ip_address"] for ip in port.fixed_ips]

    lbp = conn.load_balancer
    listener = lbp.get_listener(tree["listener"].id)
    assert listener.provisioning_status == "ACTIVE"
    assert (listener.protocol, listener.protocol_port) == ("HTTP", 80)
    assert listener.default_pool_id == tree["pool"].id
    member = lbp.get_member(tree["member"].id, tree["pool"].id)
    assert (member.address, member.protocol_port, member.weight) == (tree["member_address"], 8080, 3)
    assert member.provisioning_status == "ACTIVE"
    hm = lbp.get_health_monitor(tree["hm"].id)
    assert (hm.type, hm.delay, hm.timeout, hm.max_retries) == ("HTTP", 5, 3, 3)
    assert (hm.url_path, hm.expected_codes) == ("/health", "200,201")
    assert [p["id"] for p in hm.pools] == [tree["pool"].id]
    policy = lbp.get_l7_policy(tree["policy"].id)
    assert (policy.action, policy.redirect_url, policy.position) == ("REDIRECT_TO_URL", "http://example.com/", 1)
    assert [r["id"] for r in policy.rules] == [tree["rule"].id]
    rule = lbp.get_l7_rule(tree["rule"].id, tree["policy"].id)
    assert (rule.type, rule.compare_type, rule.rule_value, rule.invert) == ("PATH", "STARTS_WITH", "/api", False)


def test_updates(conn: openstack.connection.Connection, tree: dict[str, Any]) -> None:
    lbp, lb_id = conn.load_balancer, tree["lb"].id
    pool, policy = tree["pool"], tree["policy"]

    updated = lbp.update_load_balancer(lb_id, description="updated by sdk")
    assert updated.provisioning_status == "PENDING_UPDATE"
    assert wait_lb(conn, lb_id).description == "updated by sdk"

    lbp.update_listener(tree["listener"], connection_limit=50, description="web")
    wait_lb(conn, lb_id)
    listener = lbp.get_listener(tree["listener"].id)
    assert (listener.connection_limit, listener.description) == (50, "web")

    lbp.update_pool(pool, lb_algorithm="LEAST_CONNECTIONS")
    wait_lb(conn, lb_id)
    assert lbp.get_pool(pool.id).lb_algorithm == "LEAST_CONNECTIONS"

    lbp.update_member(tree["member"], pool, weight=7, is_admin_state_up=False)
    wait_lb(conn, lb_id)
    member = lbp.get_member(tree["member"].id, pool)
    assert (member.weight, member.is_admin_state_up) == (7, False)

    lbp.update_health_monitor(tree["hm"], delay=9, max_retries_down=2)
    wait_lb(conn, lb_id)
    hm = lbp.get_health_monitor(tree["hm"].id)
    assert (hm.delay, hm.max_retries_down, hm.timeout) == (9, 2, 3)

    lbp.update_l7_policy(policy, redirect_url="http://example.org/", description="moved")
    wait_lb(conn, lb_id)
    got = lbp.get_l7_policy(policy.id)
    assert (got.redirect_url, got.description) == ("http://example.org/", "moved")

    lbp.update_l7_rule(tree["rule"], policy, rule_value="/v2")
    wait_lb(conn, lb_id)
    assert lbp.get_l7_rule(tree["rule"].id, policy).rule_value == "/v2"


def test_lists_filters_and_find(conn: openstack.connection.Connection, tree: dict[str, Any]) -> None:
    lbp, sfx = conn.load_balancer, tree["sfx"]
    lb, listener, pool, policy = tree["lb"], tree["listener"], tree["pool"], tree["policy"]
    member, hm, rule = tree["member"], tree["hm"], tree["rule"]

    # (what, listing, expected ids): every listing is checked and all mismatches are reported together.
    cases: list[tuple[str, Callable[[], Any], list[str]]] = [
        ("load_balancers(name=)", lambda: lbp.load_balancers(name=f"sdk-lb-{sfx}"), [lb.id]),
        ("load_balancers(name=<none>)", lambda: lbp.load_balancers(name=f"sdk-lb-{sfx}-nope"), []),
        ("load_balancers(vip_subnet_id=, name=)",
         lambda: lbp.load_balancers(vip_subnet_id=lb.vip_subnet_id, name=lb.name), [lb.id]),
        ("listeners(name=)", lambda: lbp.listeners(name=f"sdk-listener-{sfx}"), [listener.id]),
        ("listeners(load_balancer_id=)", lambda: lbp.listeners(load_balancer_id=lb.id), [listener.id]),
        ("pools(name=)", lambda: lbp.pools(name=f"sdk-pool-{sfx}"), [pool.id]),
        ("pools(loadbalancer_id=)", lambda: lbp.pools(loadbalancer_id=lb.id), [pool.id]),
        ("members(pool, name=)", lambda: lbp.members(pool, name=f"sdk-member-{sfx}"), [member.id]),
        ("members(pool, address=)", lambda: lbp.members(pool, address=tree["member_address"]), [member.id]),
        ("health_monitors(name=)", lambda: lbp.health_monitors(name=f"sdk-hm-{sfx}"), [hm.id]),
        ("health_monitors(pool_id=)", lambda: lbp.health_monitors(pool_id=pool.id), [hm.id]),
        ("l7_policies(listener_id=)", lambda: lbp.l7_policies(listener_id=listener.id), [policy.id]),
        ("l7_rules(policy)", lambda: lbp.l7_rules(policy), [rule.id]),
        ("l7_rules(policy, type=)", lambda: lbp.l7_rules(policy, type="PATH"), [rule.id]),
    ]  # fmt: skip
    problems = []
    for what, listing, expected in cases:
        try:
            got = [x.id for x in listing()]
        except sdk_exc.SDKException as exc:
            problems.append(f"{what}: {exc}")
            continue
        if got != expected:
            problems.append(f"{what}: got {got}, expected {expected}")
    assert not problems, "\n".join(problems)

    assert lbp.find_load_balancer(f"sdk-lb-{sfx}", ignore_missing=False).id == lb.id
    assert lbp.find_listener(f"sdk-listener-{sfx}", ignore_missing=False).id == listener.id
    assert lbp.find_pool(f"sdk-pool-{sfx}", ignore_missing=False).id == pool.id
    assert lbp.find_member(f"sdk-member-{sfx}", pool, ignore_missing=False).id == member.id
    assert find_or_none(lbp.find_load_balancer, f"missing-{sfx}") is None
    with pytest.raises(sdk_exc.NotFoundException):
        lbp.get_load_balancer(str(uuid.uuid4()))


def test_statistics_and_status_tree(conn: openstack.connection.Connection, tree: dict[str, Any]) -> None:
    lbp, lb = conn.load_balancer, tree["lb"]
    stats = lbp.get_load_balancer_statistics(lb.id)
    for counter in STAT_COUNTERS:
        value = getattr(stats, counter)
        assert isinstance(value, int) and value >= 0, (counter, value)
    listener_stats = lbp.get_listener_statistics(tree["listener"].id)
    assert all(isinstance(getattr(listener_stats, c), int) for c in STAT_COUNTERS)

    resp = lbp.get(f"/lbaas/loadbalancers/{lb.id}/status")
    assert resp.status_code == 200, resp.text
    status = resp.json()["statuses"]["loadbalancer"]
    assert status["id"] == lb.id
    assert status["provisioning_status"] == "ACTIVE"
    [listener] = status["listeners"]
    assert listener["id"] == tree["listener"].id
    [pool] = listener["pools"]
    assert pool["id"] == tree["pool"].id
    assert pool["health_monitor"]["id"] == tree["hm"].id
    assert [m["id"] for m in pool["members"]] == [tree["member"].id]


def test_cascade_delete_and_wait_for_delete(conn: openstack.connection.Connection, subnet: Any) -> None:
    lbp = conn.load_balancer
    lb = lbp.create_load_balancer(name=f"sdk-cascade-{uuid.uuid4().hex[:6]}", vip_subnet_id=subnet.id)
    try:
        wait_lb(conn, lb.id)
        listener = lbp.create_listener(protocol="TCP", protocol_port=22, load_balancer_id=lb.id)
        wait_lb(conn, lb.id)
        pool = lbp.create_pool(protocol="TCP", lb_algorithm="ROUND_ROBIN", listener_id=listener.id)
        wait_lb(conn, lb.id)
        lbp.create_member(pool, address="192.0.2.20", protocol_port=22)
        lb = wait_lb(conn, lb.id)

        # Without cascade Octavia refuses: 400 "Cannot delete Load Balancer ... - it has children".
        with pytest.raises(sdk_exc.BadRequestException, match="it has children"):
            lbp.delete_load_balancer(lb.id, ignore_missing=False)
        lbp.delete_load_balancer(lb.id, ignore_missing=False, cascade=True)
        lbp.wait_for_delete(lb, **WAIT)

        with pytest.raises(sdk_exc.NotFoundException):
            lbp.get_load_balancer(lb.id)
        with pytest.raises(sdk_exc.NotFoundException):
            lbp.get_listener(listener.id)
        assert lb.id not in {x.id for x in lbp.load_balancers()}
        assert find_or_none(conn.network.find_port, lb.vip_port_id) is None
        assert lb.vip_port_id not in {p.id for p in conn.network.ports(network_id=lb.vip_network_id)}
    finally:
        delete_lb(conn, lb.id)


def test_quotas(conn: openstack.connection.Connection) -> None:
    lbp = conn.load_balancer
    defaults = lbp.get_quota_default()
    project = uuid.uuid4().hex
    try:
        updated = lbp.update_quota(project, load_balancers=3, members=40)
        assert (updated.load_balancers, updated.members) == (3, 40)
        got = lbp.get_quota(project)
        assert (got.load_balancers, got.members, got.pools) == (3, 40, defaults.pools)
        listed = {q.project_id: q for q in lbp.quotas()}
        assert project in listed
        assert listed[project].load_balancers == 3
    finally:
        lbp.delete_quota(project)
    got = lbp.get_quota(project)
    assert (got.load_balancers, got.members) == (defaults.load_balancers, defaults.members)


def test_pagination_follows_next_links_in_created_order(
    conn: openstack.connection.Connection, subnet: Any, quadriga_server: QuadrigaServer
) -> None:
    lbp = conn.load_balancer
    marker = f"page-{uuid.uuid4().hex[:8]}"
    created: list[str] = []
    try:
        for i in range(5):
            created.append(
                lbp.create_load_balancer(name=f"{marker}-{i}", description=marker, vip_subnet_id=subnet.id).id
            )

        # The first page by hand: two items and a `next` link pointing back at this server.
        first = lbp.get(f"/lbaas/loadbalancers?limit=2&description={marker}")
        assert first.status_code == 200, first.text
        body = first.json()
        assert [x["id"] for x in body["loadbalancers"]] == created[:2]
        next_links = [link["href"] for link in body.get("loadbalancers_links", []) if link["rel"] == "next"]
        assert len(next_links) == 1, body.get("loadbalancers_links")
        assert next_links[0].startswith(quadriga_server.lb_url + "/"), next_links

        # The SDK follows the links; the filter keeps only ours, over three pages.
        assert [x.id for x in lbp.load_balancers(limit=2, description=marker)] == created
        # Unfiltered, ours appear in the order they were created.
        everything = [x.id for x in lbp.load_balancers(limit=2)]
        assert [x for x in everything if x in created] == created
        assert len(everything) == len(set(everything)), "a page boundary repeated an item"
    finally:
        for lb_id in created:
            delete_lb(conn, lb_id)
