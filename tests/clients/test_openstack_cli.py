"""The real `openstack` CLI (python-openstackclient + python-octaviaclient) against `quadriga serve`.

Every CLI invocation costs ~1 s of start-up and each `--wait` at least one 3 s sleep in the client, so
one load balancer tree (the module-scoped `stack`) is shared by the read-mostly tests; `set`/`unset`
without --wait are followed by a fast HTTP poll of the load balancer instead."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.clients

# The `openstack` fixture (conftest.OpenStackCLI): call it for parsed JSON, `.fails(...)` for error paths.
OpenStackCLI = Any
DEFAULT_PROJECT = "demo"  # conftest starts the server with --default-project demo

STAT_COUNTERS = {"active_connections", "bytes_in", "bytes_out", "request_errors", "total_connections"}
QUOTA_KEYS = {"load_balancer", "listener", "pool", "health_monitor", "member", "l7policy", "l7rule"}


def ids(value: Any) -> set[str]:
    """The ids in a CLI list column: JSON output gives [{"id": ...}], table output newline-separated ids."""
    if not value:
        return set()
    if isinstance(value, str):
        return {v.strip() for v in value.splitlines() if v.strip()}
    return {v["id"] if isinstance(v, dict) else v for v in value}


def by_id(rows: list[dict[str, Any]], key: str = "id") -> dict[str, dict[str, Any]]:
    assert isinstance(rows, list), rows
    return {r[key]: r for r in rows}


def in_cidr(address: str, cidr: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(cidr)


@pytest.fixture(scope="module")
def private_subnet(openstack: OpenStackCLI) -> dict[str, Any]:
    subnet = openstack("subnet", "show", "private-subnet")
    assert subnet["name"] == "private-subnet"
    ipaddress.ip_network(subnet["cidr"])  # a real CIDR
    return subnet


@pytest.fixture(scope="module")
def stack(openstack: OpenStackCLI, private_subnet: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """lb -> listener (HTTP:80) -> pool (ROUND_ROBIN) -> member + HTTP health monitor, and an l7policy
    (REDIRECT_TO_URL) with a PATH rule, all created with the real CLI and --wait. Parents are referenced
    by *name* so that creating the tree also exercises the client's name resolution."""
    sfx = uuid.uuid4().hex[:6]
    names = {k: f"{k}-{sfx}" for k in ("lb1", "listener1", "pool1", "member1", "hm1", "policy1")}
    member_address = str(ipaddress.ip_network(private_subnet["cidr"])[10])
    s: dict[str, Any] = {"names": names, "subnet": private_subnet, "member_address": member_address}
    try:
        s["lb"] = openstack(
            "loadbalancer", "create", "--name", names["lb1"], "--description", "first lb",
            "--vip-subnet-id", "private-subnet", "--wait",
        )  # fmt: skip
        s["listener"] = openstack(
            "loadbalancer", "listener", "create", "--name", names["listener1"], "--protocol", "HTTP",
            "--protocol-port", "80", "--wait", names["lb1"],
        )  # fmt: skip
        s["pool"] = openstack(
            "loadbalancer", "pool", "create", "--name", names["pool1"], "--lb-algorithm", "ROUND_ROBIN",
            "--protocol", "HTTP", "--listener", names["listener1"], "--wait",
        )  # fmt: skip
        s["member"] = openstack(
            "loadbalancer", "member", "create", "--name", names["member1"], "--address", member_address,
            "--protocol-port", "8080", "--weight", "5", "--subnet-id", "private-subnet", "--wait", names["pool1"],
        )  # fmt: skip
        s["hm"] = openstack(
            "loadbalancer", "healthmonitor", "create", "--name", names["hm1"], "--type", "HTTP",
            "--delay", "5", "--timeout", "3", "--max-retries", "3", "--url-path", "/health",
            "--expected-codes", "200,201", "--wait", names["pool1"],
        )  # fmt: skip
        s["policy"] = openstack(
            "loadbalancer", "l7policy", "create", "--name", names["policy1"], "--action", "REDIRECT_TO_URL",
            "--redirect-url", "http://example.com/", "--wait", names["listener1"],
        )  # fmt: skip
        s["rule"] = openstack(
            "loadbalancer", "l7rule", "create", "--type", "PATH", "--compare-type", "STARTS_WITH",
            "--value", "/api", "--wait", names["policy1"],
        )  # fmt: skip
        yield s
    finally:
        if "lb" in s:
            openstack("loadbalancer", "delete", "--cascade", "--wait", s["lb"]["id"])


def test_create_tree_with_wait(stack: dict[str, Any]) -> None:
    subnet, names = stack["subnet"], stack["names"]
    lb, listener, pool = stack["lb"], stack["listener"], stack["pool"]
    member, hm, policy, rule = stack["member"], stack["hm"], stack["policy"], stack["rule"]

    assert lb["provisioning_status"] == "ACTIVE"
    assert lb["name"] == names["lb1"]
    assert lb["description"] == "first lb"
    assert lb["admin_state_up"] is True
    assert lb["project_id"] == DEFAULT_PROJECT
    assert lb["vip_subnet_id"] == subnet["id"]
    assert lb["vip_network_id"] == subnet["network_id"]
    assert lb["vip_port_id"]
    assert in_cidr(lb["vip_address"], subnet["cidr"]), (lb["vip_address"], subnet["cidr"])

    assert listener["provisioning_status"] == "ACTIVE"
    assert (listener["protocol"], listener["protocol_port"]) == ("HTTP", 80)
    assert ids(listener["loadbalancers"]) == {lb["id"]}

    assert pool["provisioning_status"] == "ACTIVE"
    assert (pool["protocol"], pool["lb_algorithm"]) == ("HTTP", "ROUND_ROBIN")
    assert ids(pool["listeners"]) == {listener["id"]}
    assert ids(pool["loadbalancers"]) == {lb["id"]}

    assert member["provisioning_status"] == "ACTIVE"
    assert member["address"] == stack["member_address"]
    assert (member["protocol_port"], member["weight"]) == (8080, 5)
    assert member["subnet_id"] == subnet["id"]
    assert member["backup"] is False

    assert hm["provisioning_status"] == "ACTIVE"
    assert hm["type"] == "HTTP"
    assert (hm["delay"], hm["timeout"], hm["max_retries"]) == (5, 3, 3)
    assert hm["url_path"] == "/health"
    assert hm["expected_codes"] == "200,201"
    assert hm["http_method"] == "GET"
    assert ids(hm["pools"]) == {pool["id"]}

    assert policy["provisioning_status"] == "ACTIVE"
    assert policy["action"] == "REDIRECT_TO_URL"
    assert policy["redirect_url"] == "http://example.com/"
    assert policy["listener_id"] == listener["id"]
    assert policy["position"] == 1

    assert rule["provisioning_status"] == "ACTIVE"
    assert (rule["type"], rule["compare_type"], rule["value"]) == ("PATH", "STARTS_WITH", "/api")
    assert rule["invert"] is False


def test_show_and_list_resolve_names(openstack: OpenStackCLI, stack: dict[str, Any]) -> None:
    names = stack["names"]
    lb, listener, pool = stack["lb"], stack["listener"], stack["pool"]
    member, hm, policy, rule = stack["member"], stack["hm"], stack["policy"], stack["rule"]

    [listed] = openstack("loadbalancer", "list", "--name", names["lb1"])
    assert (listed["id"], listed["name"], listed["vip_address"]) == (lb["id"], names["lb1"], lb["vip_address"])
    assert (listed["provisioning_status"], listed["project_id"]) == ("ACTIVE", DEFAULT_PROJECT)

    shown = openstack("loadbalancer", "show", names["lb1"])
    assert shown["id"] == lb["id"]
    assert ids(shown["listeners"]) == {listener["id"]}
    assert ids(shown["pools"]) == {pool["id"]}

    listeners = openstack("loadbalancer", "listener", "list", "--loadbalancer", names["lb1"])
    assert [r["id"] for r in listeners] == [listener["id"]]
    assert listeners[0]["default_pool_id"] == pool["id"]
    shown = openstack("loadbalancer", "listener", "show", names["listener1"])  # by name
    assert shown["id"] == listener["id"]
    assert shown["default_pool_id"] == pool["id"]
    assert ids(shown["l7policies"]) == {policy["id"]}

    pools = openstack("loadbalancer", "pool", "list", "--loadbalancer", lb["id"])
    assert [r["id"] for r in pools] == [pool["id"]]
    shown = openstack("loadbalancer", "pool", "show", names["pool1"])  # by name
    assert shown["id"] == pool["id"]
    assert shown["healthmonitor_id"] == hm["id"]
    assert ids(shown["members"]) == {member["id"]}

    members = openstack("loadbalancer", "member", "list", names["pool1"])
    assert [(m["id"], m["address"], m["protocol_port"]) for m in members] == [
        (member["id"], stack["member_address"], 8080)
    ]
    shown = openstack("loadbalancer", "member", "show", names["pool1"], names["member1"])
    assert shown["id"] == member["id"]

    assert hm["id"] in by_id(openstack("loadbalancer", "healthmonitor", "list"))

    policies = openstack("loadbalancer", "l7policy", "list", "--listener", names["listener1"])
    assert [(p["id"], p["action"], p["position"]) for p in policies] == [(policy["id"], "REDIRECT_TO_URL", 1)]
    rules = openstack("loadbalancer", "l7rule", "list", names["policy1"])  # policy by name
    assert [(r["id"], r["type"], r["compare_type"], r["value"]) for r in rules] == [
        (rule["id"], "PATH", "STARTS_WITH", "/api")
    ]


def test_loadbalancer_set_unset(
    openstack: OpenStackCLI, stack: dict[str, Any], wait_lb_active: Callable[[str], dict[str, Any]]
) -> None:
    lb_id = stack["lb"]["id"]
    try:
        openstack("loadbalancer", "set", "--description", "updated", "--disable", "--wait", lb_id)
        shown = openstack("loadbalancer", "show", lb_id)
        assert (shown["description"], shown["admin_state_up"]) == ("updated", False)
        assert shown["provisioning_status"] == "ACTIVE"
        assert shown["updated_at"]
    finally:
        openstack("loadbalancer", "set", "--enable", lb_id)
        wait_lb_active(lb_id)
    openstack("loadbalancer", "unset", "--description", "--wait", lb_id)
    shown = openstack("loadbalancer", "show", lb_id)
    assert (shown["description"], shown["admin_state_up"]) == ("", True)


def test_listener_set_unset(
    openstack: OpenStackCLI, stack: dict[str, Any], wait_lb_active: Callable[[str], dict[str, Any]]
) -> None:
    lb_id, listener_id, name = stack["lb"]["id"], stack["listener"]["id"], stack["names"]["listener1"]
    openstack(
        "loadbalancer", "listener", "set", "--description", "web", "--connection-limit", "100",
        "--timeout-client-data", "1000", listener_id,
    )  # fmt: skip
    wait_lb_active(lb_id)
    shown = openstack("loadbalancer", "listener", "show", listener_id)
    assert (shown["description"], shown["connection_limit"], shown["timeout_client_data"]) == ("web", 100, 1000)
    try:
        openstack("loadbalancer", "listener", "unset", "--name", "--connection-limit", listener_id)
        wait_lb_active(lb_id)
        shown = openstack("loadbalancer", "listener", "show", listener_id)
        assert shown["name"] == ""
        assert shown["connection_limit"] == -1  # Octavia's default: unlimited
        assert shown["description"] == "web"  # untouched
    finally:
        openstack("loadbalancer", "listener", "set", "--name", name, listener_id)
        wait_lb_active(lb_id)


def test_pool_set_unset(
    openstack: OpenStackCLI, stack: dict[str, Any], wait_lb_active: Callable[[str], dict[str, Any]]
) -> None:
    lb_id, pool_id = stack["lb"]["id"], stack["pool"]["id"]
    openstack(
        "loadbalancer", "pool", "set", "--description", "backends", "--lb-algorithm", "LEAST_CONNECTIONS",
        "--session-persistence", "type=APP_COOKIE,cookie_name=sess", pool_id,
    )  # fmt: skip
    wait_lb_active(lb_id)
    shown = openstack("loadbalancer", "pool", "show", pool_id)
    assert (shown["description"], shown["lb_algorithm"]) == ("backends", "LEAST_CONNECTIONS")
    persistence = shown["session_persistence"]
    if isinstance(persistence, str):  # older clients format the dict as text
        persistence = json.loads(persistence.replace("'", '"').replace("None", "null"))
    assert persistence["type"] == "APP_COOKIE"
    assert persistence["cookie_name"] == "sess"
    openstack("loadbalancer", "pool", "unset", "--description", "--session-persistence", pool_id)
    wait_lb_active(lb_id)
    shown = openstack("loadbalancer", "pool", "show", pool_id)
    assert shown["description"] == ""
    assert not shown["session_persistence"]
    assert shown["lb_algorithm"] == "LEAST_CONNECTIONS"


def test_member_set_unset(
    openstack: OpenStackCLI, stack: dict[str, Any], wait_lb_active: Callable[[str], dict[str, Any]]
) -> None:
    lb_id, pool_id, member_id = stack["lb"]["id"], stack["pool"]["id"], stack["member"]["id"]
    openstack(
        "loadbalancer", "member", "set", "--weight", "10", "--monitor-port", "9000", "--disable",
        pool_id, member_id,
    )  # fmt: skip
    wait_lb_active(lb_id)
    shown = openstack("loadbalancer", "member", "show", pool_id, member_id)
    assert (shown["weight"], shown["monitor_port"], shown["admin_state_up"]) == (10, 9000, False)
    openstack("loadbalancer", "member", "unset", "--weight", "--monitor-port", "--wait", pool_id, member_id)
    shown = openstack("loadbalancer", "member", "show", pool_id, member_id)
    assert shown["weight"] == 1  # back to Octavia's default
    assert shown["monitor_port"] is None
    assert shown["provisioning_status"] == "ACTIVE"
    openstack("loadbalancer", "member", "set", "--enable", pool_id, member_id)
    wait_lb_active(lb_id)


def test_healthmonitor_set_unset(
    openstack: OpenStackCLI, stack: dict[str, Any], wait_lb_active: Callable[[str], dict[str, Any]]
) -> None:
    lb_id, hm_id = stack["lb"]["id"], stack["hm"]["id"]
    openstack(
        "loadbalancer", "healthmonitor", "set", "--delay", "10", "--max-retries", "5", "--http-method", "HEAD",
        hm_id,
    )  # fmt: skip
    wait_lb_active(lb_id)
    shown = openstack("loadbalancer", "healthmonitor", "show", hm_id)
    assert (shown["delay"], shown["max_retries"], shown["http_method"]) == (10, 5, "HEAD")
    assert shown["timeout"] == 3  # untouched
    openstack("loadbalancer", "healthmonitor", "unset", "--url-path", "--expected-codes", "--http-method", hm_id)
    wait_lb_active(lb_id)
    shown = openstack("loadbalancer", "healthmonitor", "show", hm_id)
    # Octavia resets unset HTTP monitor fields to their defaults.
    assert (shown["url_path"], shown["expected_codes"], shown["http_method"]) == ("/", "200", "GET")


def test_l7policy_and_rule_set_unset(
    openstack: OpenStackCLI, stack: dict[str, Any], wait_lb_active: Callable[[str], dict[str, Any]]
) -> None:
    lb_id, policy_id, rule_id = stack["lb"]["id"], stack["policy"]["id"], stack["rule"]["id"]
    openstack(
        "loadbalancer", "l7policy", "set", "--redirect-url", "http://example.org/", "--redirect-http-code",
        "301", "--description", "redirect", policy_id,
    )  # fmt: skip
    wait_lb_active(lb_id)
    shown = openstack("loadbalancer", "l7policy", "show", policy_id)
    assert (shown["redirect_url"], shown["redirect_http_code"], shown["description"]) == (
        "http://example.org/",
        301,
        "redirect",
    )
    openstack("loadbalancer", "l7policy", "unset", "--redirect-http-code", "--description", policy_id)
    wait_lb_active(lb_id)
    shown = openstack("loadbalancer", "l7policy", "show", policy_id)
    assert (shown["redirect_http_code"], shown["description"]) == (302, "")

    openstack("loadbalancer", "l7rule", "set", "--value", "/v2", "--invert", "--wait", policy_id, rule_id)
    shown = openstack("loadbalancer", "l7rule", "show", policy_id, rule_id)
    assert (shown["value"], shown["invert"]) == ("/v2", True)
    openstack("loadbalancer", "l7rule", "unset", "--invert", policy_id, rule_id)
    wait_lb_active(lb_id)
    shown = openstack("loadbalancer", "l7rule", "show", policy_id, rule_id)
    assert (shown["value"], shown["invert"]) == ("/v2", False)


def test_status_tree_and_stats(openstack: OpenStackCLI, stack: dict[str, Any]) -> None:
    lb, listener, pool, member, hm = (stack[k] for k in ("lb", "listener", "pool", "member", "hm"))
    tree = openstack("loadbalancer", "status", "show", stack["names"]["lb1"])
    lb_status = tree["loadbalancer"]
    assert lb_status["id"] == lb["id"]
    assert lb_status["provisioning_status"] == "ACTIVE"
    assert "operating_status" in lb_status
    [listener_status] = lb_status["listeners"]
    assert listener_status["id"] == listener["id"]
    [pool_status] = listener_status["pools"]
    assert pool_status["id"] == pool["id"]
    assert pool_status["health_monitor"]["id"] == hm["id"]
    assert [m["id"] for m in pool_status["members"]] == [member["id"]]
    assert all("provisioning_status" in m and "operating_status" in m for m in pool_status["members"])

    stats = openstack("loadbalancer", "stats", "show", lb["id"])
    assert set(stats) == STAT_COUNTERS
    assert all(isinstance(v, int) and v >= 0 for v in stats.values()), stats
    listener_stats = openstack("loadbalancer", "listener", "stats", "show", listener["id"])
    assert set(listener_stats) == STAT_COUNTERS


def test_errors_are_surfaced(openstack: OpenStackCLI, stack: dict[str, Any]) -> None:
    out = openstack.fails("loadbalancer", "show", "does-not-exist")
    assert "does-not-exist" in out

    out = openstack.fails(
        "loadbalancer", "listener", "create", "--protocol", "HTTP", "--protocol-port", "80", stack["lb"]["id"]
    )
    assert "already using protocol" in out, out
    assert "409" in out, out
    # The rejected create must not have left anything behind or the LB stuck in PENDING_UPDATE.
    shown = openstack("loadbalancer", "show", stack["lb"]["id"])
    assert shown["provisioning_status"] == "ACTIVE"
    assert ids(shown["listeners"]) == {stack["listener"]["id"]}


def test_cascade_delete_removes_tree_and_vip_port(
    openstack: OpenStackCLI,
    private_subnet: dict[str, Any],
    unique: Callable[[str], str],
    wait_lb_active: Callable[[str], dict[str, Any]],
) -> None:
    lb_name = unique("lb-cascade")
    lb = openstack("loadbalancer", "create", "--name", lb_name, "--vip-subnet-id", private_subnet["id"], "--wait")
    deleted = False
    try:
        # Children without --wait (each costs the client a 3 s sleep): poll the LB instead.
        listener = openstack(
            "loadbalancer", "listener", "create", "--protocol", "TCP", "--protocol-port", "443", lb["id"]
        )
        wait_lb_active(lb["id"])
        pool = openstack(
            "loadbalancer", "pool", "create", "--lb-algorithm", "SOURCE_IP", "--protocol", "TCP",
            "--listener", listener["id"],
        )  # fmt: skip
        wait_lb_active(lb["id"])
        openstack("loadbalancer", "member", "create", "--address", "192.0.2.10", "--protocol-port", "443", pool["id"])
        wait_lb_active(lb["id"])

        ports = by_id(openstack("port", "list", "--network", "private", "--long"), key="ID")
        vip_port = ports.get(lb["vip_port_id"])
        assert vip_port is not None, f"VIP port {lb['vip_port_id']} not in `port list --network private`"
        assert vip_port["Device Owner"] == "Octavia"
        assert lb["vip_address"] in json.dumps(vip_port["Fixed IP Addresses"])

        openstack("loadbalancer", "delete", "--cascade", "--wait", lb_name)
        deleted = True

        assert lb["id"] not in by_id(openstack("loadbalancer", "list"))
        ports = by_id(openstack("port", "list", "--network", "private", "--long"), key="ID")
        assert lb["vip_port_id"] not in ports
        leftovers = [p for p in ports.values() if p["Device Owner"] == "Octavia" and lb["id"] in p["Name"]]
        assert not leftovers, leftovers
        out = openstack.fails("loadbalancer", "listener", "show", listener["id"])
        assert listener["id"] in out
    finally:
        if not deleted:  # best effort, without hiding the original failure
            with contextlib.suppress(AssertionError):
                wait_lb_active(lb["id"])
            openstack.run("loadbalancer", "delete", "--cascade", "--wait", lb["id"])


def test_quota_show_set_unset_reset(openstack: OpenStackCLI) -> None:
    shown = openstack("loadbalancer", "quota", "show", DEFAULT_PROJECT)  # by name: the LB's project
    assert set(shown) == QUOTA_KEYS
    assert all(isinstance(v, int) for v in shown.values()), shown
    defaults = openstack("loadbalancer", "quota", "defaults", "show")
    assert set(defaults) == QUOTA_KEYS

    project = uuid.uuid4().hex  # a project of its own, so other tests' quotas are untouched
    try:
        updated = openstack("loadbalancer", "quota", "set", "--loadbalancer", "7", "--member", "50", project)
        assert (updated["load_balancer"], updated["member"]) == (7, 50)
        shown = openstack("loadbalancer", "quota", "show", project)
        assert (shown["load_balancer"], shown["member"]) == (7, 50)
        assert shown["listener"] == defaults["listener"]

        listed = by_id(openstack("loadbalancer", "quota", "list"), key="project_id")
        assert (listed[project]["load_balancer"], listed[project]["member"]) == (7, 50)

        openstack("loadbalancer", "quota", "unset", "--loadbalancer", project)
        shown = openstack("loadbalancer", "quota", "show", project)
        assert shown["load_balancer"] == defaults["load_balancer"]
        assert shown["member"] == 50
    finally:
        openstack("loadbalancer", "quota", "reset", project)
    shown = openstack("loadbalancer", "quota", "show", project)
    assert shown == defaults


def test_flavorprofile_and_flavor(openstack: OpenStackCLI, unique: Callable[[str], str]) -> None:
    fp_name, flavor_name = unique("fp1"), unique("f1")
    flavor_data = {"loadbalancer_topology": "SINGLE"}
    fp = openstack(
        "loadbalancer", "flavorprofile", "create", "--name", fp_name, "--provider", "noop",
        "--flavor-data", json.dumps(flavor_data),
    )  # fmt: skip
    flavor = None
    try:
        assert fp["name"] == fp_name
        assert fp["provider_name"] == "noop"
        assert json.loads(fp["flavor_data"]) == flavor_data
        assert fp["id"] in by_id(openstack("loadbalancer", "flavorprofile", "list"))
        assert openstack("loadbalancer", "flavorprofile", "show", fp_name)["id"] == fp["id"]

        flavor = openstack(
            "loadbalancer", "flavor", "create", "--name", flavor_name, "--flavorprofile", fp_name,
            "--description", "small", "--enable",
        )  # fmt: skip
        assert (flavor["name"], flavor["flavor_profile_id"]) == (flavor_name, fp["id"])
        assert (flavor["enabled"], flavor["description"]) == (True, "small")
        listed = by_id(openstack("loadbalancer", "flavor", "list"))
        assert listed[flavor["id"]]["flavor_profile_id"] == fp["id"]

        openstack("loadbalancer", "flavor", "set", "--disable", flavor_name)
        openstack("loadbalancer", "flavor", "unset", "--description", flavor_name)
        shown = openstack("loadbalancer", "flavor", "show", flavor_name)
        assert (shown["id"], shown["enabled"], shown["description"]) == (flavor["id"], False, "")

        out = openstack.fails("loadbalancer", "flavorprofile", "delete", fp["id"])  # still used by the flavor
        assert "409" in out, out
    finally:
        if flavor is not None:
            openstack("loadbalancer", "flavor", "delete", flavor["id"])
        openstack("loadbalancer", "flavorprofile", "delete", fp["id"])
    assert fp["id"] not in by_id(openstack("loadbalancer", "flavorprofile", "list"))


def test_availability_zones(openstack: OpenStackCLI, unique: Callable[[str], str]) -> None:
    azp_name, az_name = unique("azp1"), unique("az1")
    az_data = {"compute_zone": "nova"}
    azp = openstack(
        "loadbalancer", "availabilityzoneprofile", "create", "--name", azp_name, "--provider", "noop",
        "--availability-zone-data", json.dumps(az_data),
    )  # fmt: skip
    az = None
    try:
        assert (azp["name"], azp["provider_name"]) == (azp_name, "noop")
        assert json.loads(azp["availability_zone_data"]) == az_data
        assert azp["id"] in by_id(openstack("loadbalancer", "availabilityzoneprofile", "list"))

        az = openstack(
            "loadbalancer", "availabilityzone", "create", "--name", az_name, "--availabilityzoneprofile",
            azp_name, "--description", "zone one",
        )  # fmt: skip
        assert (az["name"], az["availability_zone_profile_id"]) == (az_name, azp["id"])
        assert (az["enabled"], az["description"]) == (True, "zone one")
        listed = by_id(openstack("loadbalancer", "availabilityzone", "list"), key="name")
        assert listed[az_name]["availability_zone_profile_id"] == azp["id"]
        assert openstack("loadbalancer", "availabilityzone", "show", az_name)["name"] == az_name
    finally:
        if az is not None:
            openstack("loadbalancer", "availabilityzone", "delete", az_name)
        openstack("loadbalancer", "availabilityzoneprofile", "delete", azp["id"])
    assert az_name not in by_id(openstack("loadbalancer", "availabilityzone", "list"), key="name")


def test_seeded_networks(openstack: OpenStackCLI, private_subnet: dict[str, Any]) -> None:
    networks = by_id(openstack("network", "list"), key="Name")
    assert {"private", "public"} <= set(networks)
    assert private_subnet["id"] in networks["private"]["Subnets"]
    assert networks["private"]["ID"] == private_subnet["network_id"]


def test_provider_and_amphora_lists(openstack: OpenStackCLI) -> None:
    providers = by_id(openstack("loadbalancer", "provider", "list"), key="name")
    assert "noop" in providers
    assert isinstance(providers["noop"]["description"], str)

    amphorae = openstack("loadbalancer", "amphora", "list")
    assert isinstance(amphorae, list)
