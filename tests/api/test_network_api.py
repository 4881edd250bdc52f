"""The embedded networking service: its Neutron-compatible API, the IPAM and the VIP allocation the
load-balancer API uses."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, select, text

from quadriga.api.auth import NoAuth, TrustedHeaders
from quadriga.api.errors import ApiError, BadRequest, Conflict, Validation
from quadriga.db import models as m
from quadriga.db.migrate import upgrade
from quadriga.db.session import Database
from quadriga.network import embedded, ipam
from quadriga.network.api import create_app

PG_URL = os.environ.get("QUADRIGA_TEST_DATABASE_URL")


@contextlib.contextmanager
def _pg_database(url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    admin_url = make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"qnet_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"] if PG_URL else ["sqlite"])
def db(request, tmp_path) -> Iterator[Database]:
    """SQLite always; PostgreSQL too when $QUADRIGA_TEST_DATABASE_URL names a server."""
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path}/net.db" if request.param == "sqlite" else stack.enter_context(_pg_database(PG_URL))
        database = Database(url)
        upgrade(database.engine)
        yield database
        database.dispose()


@pytest.fixture
def client(db: Database) -> TestClient:
    with db.write() as session:
        embedded.seed_defaults(session, "demo")
    return TestClient(create_app(db, NoAuth(default_project="demo")))


@pytest.fixture
def tclient(db: Database) -> TestClient:
    """Trusted-headers auth, so project visibility and RBAC apply."""
    with db.write() as session:
        embedded.seed_defaults(session, "admin-project")
    return TestClient(create_app(db, TrustedHeaders()))


def hdr(project: str | None, roles: str = "member") -> dict[str, str]:
    h = {"X-Roles": roles}
    if project:
        h["X-Project-Id"] = project
    return h


def neutron_error(resp: Any, status: int, type_: str | None = None, message: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["NeutronError"]
    assert set(err) == {"type", "message", "detail"}
    if type_:
        assert err["type"] == type_
    if message:
        assert err["message"] == message
    return err


def one(client: TestClient, collection: str, **filters: str) -> dict:
    items = client.get(f"/v2.0/{collection}", params=filters).json()[collection]
    assert len(items) == 1, items
    return items[0]


def make_net(client: TestClient, name: str = "net", **kw: Any) -> dict:
    r = client.post("/v2.0/networks", json={"network": {"name": name, **kw}})
    assert r.status_code == 201, r.text
    return r.json()["network"]


def make_subnet(client: TestClient, network_id: str, cidr: str, ip_version: int = 4, **kw: Any) -> dict:
    body = {"subnet": {"network_id": network_id, "cidr": cidr, "ip_version": ip_version, **kw}}
    r = client.post("/v2.0/subnets", json=body)
    assert r.status_code == 201, r.text
    return r.json()["subnet"]


def make_port(client: TestClient, network_id: str, **kw: Any) -> Any:
    return client.post("/v2.0/ports", json={"port": {"network_id": network_id, **kw}})


# --- discovery and the stand-ins -------------------------------------------------------------------------


def test_versions_and_resources(client: TestClient) -> None:
    body = client.get("/").json()
    assert body["versions"][0]["id"] == "v2.0"
    assert body["versions"][0]["status"] == "CURRENT"
    assert body["versions"][0]["links"] == [{"href": "http://testserver/v2.0/", "rel": "self"}]
    for path in ("/v2.0", "/v2.0/"):
        names = {r["collection"] for r in client.get(path).json()["resources"]}
        assert {"networks", "subnets", "ports"} <= names


def test_probed_collections(client: TestClient) -> None:
    assert client.get("/v2.0/subnetpools").json() == {"subnetpools": []}
    assert client.get("/v2.0/qos/policies").json() == {"policies": []}
    exts = client.get("/v2.0/extensions").json()["extensions"]
    aliases = {x["alias"] for x in exts}
    assert {"security-group", "standard-attr-tag", "external-net", "binding", "port-security"} <= aliases
    assert all(set(x) == {"alias", "name", "description", "updated", "links"} for x in exts)
    assert client.get("/v2.0/extensions/external-net").json()["extension"]["alias"] == "external-net"
    neutron_error(client.get("/v2.0/extensions/nope"), 404)


def test_security_groups(client: TestClient) -> None:
    groups = client.get("/v2.0/security-groups", headers={"X-Project-Id": "demo"}).json()["security_groups"]
    mine = [g for g in groups if g["project_id"] == "demo"]
    assert len(mine) == 1 and mine[0]["name"] == "default"
    got = client.get(f"/v2.0/security-groups/{mine[0]['id']}").json()["security_group"]
    assert got == mine[0]
    assert client.get("/v2.0/security-groups", params={"name": "other"}).json() == {"security_groups": []}
    neutron_error(client.get("/v2.0/security-groups/nope"), 404, "SecurityGroupNotFound")


# --- seeding ---------------------------------------------------------------------------------------------


def test_seed_defaults_is_idempotent(db: Database, client: TestClient) -> None:
    with db.write() as session:
        embedded.seed_defaults(session, "demo")
    nets = client.get("/v2.0/networks").json()["networks"]
    assert sorted(n["name"] for n in nets) == ["private", "public"]
    private = one(client, "networks", name="private")
    public = one(client, "networks", name="public")
    assert (private["shared"], private["router:external"]) == (False, False)
    assert (public["shared"], public["router:external"]) == (True, True)
    sub = one(client, "subnets", name="private-subnet")
    assert sub["cidr"] == "10.10.0.0/24" and sub["gateway_ip"] == "10.10.0.1"
    assert sub["allocation_pools"] == [{"start": "10.10.0.2", "end": "10.10.0.254"}]
    assert private["subnets"] == [sub["id"]]
    assert one(client, "subnets", name="public-subnet")["cidr"] == "172.24.4.0/24"


# --- networks --------------------------------------------------------------------------------------------


def test_network_crud(client: TestClient) -> None:
    net = make_net(client, "n1", description="d", mtu=1400)
    expected = {
        "name": "n1",
        "description": "d",
        "mtu": 1400,
        "status": "ACTIVE",
        "shared": False,
        "router:external": False,
        "project_id": "demo",
        "tenant_id": "demo",
        "subnets": [],
        "availability_zones": [],
        "tags": [],
        "port_security_enabled": True,
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "is_default": False,
        "provider:network_type": "local",
        "revision_number": 1,
        "admin_state_up": True,
    }
    assert {k: net[k] for k in expected} == expected
    assert net["created_at"].endswith("Z") and net["updated_at"]
    assert client.get(f"/v2.0/networks/{net['id']}").json()["network"] == net

    r = client.put(f"/v2.0/networks/{net['id']}", json={"network": {"name": "n2", "admin_state_up": False}})
    assert r.status_code == 200
    updated = r.json()["network"]
    assert (updated["name"], updated["admin_state_up"], updated["revision_number"]) == ("n2", False, 2)

    assert client.delete(f"/v2.0/networks/{net['id']}").status_code == 204
    neutron_error(
        client.get(f"/v2.0/networks/{net['id']}"), 404, "NetworkNotFound", f"Network {net['id']} could not be found."
    )
    neutron_error(client.delete(f"/v2.0/networks/{net['id']}"), 404, "NetworkNotFound")


def test_json_suffix_and_bulk_create(client: TestClient) -> None:
    r = client.post("/v2.0/networks.json", json={"networks": [{"name": "a"}, {"name": "b"}]})
    assert r.status_code == 201
    assert [n["name"] for n in r.json()["networks"]] == ["a", "b"]
    net = r.json()["networks"][0]
    assert client.get(f"/v2.0/networks/{net['id']}.json").json()["network"]["name"] == "a"
    assert len(client.get("/v2.0/networks.json").json()["networks"]) == 4


def test_network_delete_blocked_by_ports_but_not_dhcp(client: TestClient) -> None:
    net = make_net(client)
    sub = make_subnet(client, net["id"], "192.168.5.0/24")
    dhcp = make_port(client, net["id"], device_owner="network:dhcp").json()["port"]
    port = make_port(client, net["id"]).json()["port"]
    neutron_error(
        client.delete(f"/v2.0/networks/{net['id']}"),
        409,
        "NetworkInUse",
        f"Unable to complete operation on network {net['id']}. "
        "There are one or more ports still in use on the network.",
    )
    assert client.delete(f"/v2.0/ports/{port['id']}").status_code == 204
    assert client.delete(f"/v2.0/networks/{net['id']}").status_code == 204
    for path in (f"/v2.0/subnets/{sub['id']}", f"/v2.0/ports/{dhcp['id']}"):
        assert client.get(path).status_code == 404


# --- subnets ---------------------------------------------------------------------------------------------


def test_subnet_ipv4_defaults_and_crud(client: TestClient) -> None:
    net = make_net(client)
    sub = make_subnet(client, net["id"], "192.168.10.0/24", name="s1", dns_nameservers=["8.8.8.8"])
    assert sub["gateway_ip"] == "192.168.10.1"
    assert sub["allocation_pools"] == [{"start": "192.168.10.2", "end": "192.168.10.254"}]
    assert sub["dns_nameservers"] == ["8.8.8.8"] and sub["host_routes"] == []
    assert (sub["enable_dhcp"], sub["subnetpool_id"], sub["service_types"]) == (True, None, [])
    assert (sub["ipv6_ra_mode"], sub["ipv6_address_mode"]) == (None, None)
    assert client.get(f"/v2.0/networks/{net['id']}").json()["network"]["subnets"] == [sub["id"]]

    r = client.put(
        f"/v2.0/subnets/{sub['id']}",
        json={"subnet": {"name": "s2", "allocation_pools": [{"start": "192.168.10.100", "end": "192.168.10.110"}]}},
    )
    assert r.status_code == 200, r.text
    got = r.json()["subnet"]
    assert got["name"] == "s2" and got["revision_number"] == 2
    assert got["allocation_pools"] == [{"start": "192.168.10.100", "end": "192.168.10.110"}]
    port = make_port(client, net["id"]).json()["port"]
    assert port["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "192.168.10.100"}]
    assert client.delete(f"/v2.0/ports/{port['id']}").status_code == 204
    assert client.delete(f"/v2.0/subnets/{sub['id']}").status_code == 204
    neutron_error(client.get(f"/v2.0/subnets/{sub['id']}"), 404, "SubnetNotFound")
    assert client.get(f"/v2.0/networks/{net['id']}").json()["network"]["subnets"] == []


def test_subnet_without_gateway_and_custom_gateway(client: TestClient) -> None:
    net = make_net(client)
    sub = make_subnet(client, net["id"], "192.168.20.0/29", gateway_ip=None)
    assert sub["gateway_ip"] is None
    assert sub["allocation_pools"] == [{"start": "192.168.20.1", "end": "192.168.20.6"}]
    net2 = make_net(client)
    sub2 = make_subnet(client, net2["id"], "192.168.21.0/29", gateway_ip="192.168.21.6")
    assert sub2["allocation_pools"] == [{"start": "192.168.21.1", "end": "192.168.21.5"}]
    # moving the gateway into the pool conflicts with it
    r = client.put(f"/v2.0/subnets/{sub2['id']}", json={"subnet": {"gateway_ip": "192.168.21.3"}})
    neutron_error(r, 409, "GatewayConflictWithAllocationPools")
    r = client.put(f"/v2.0/subnets/{sub['id']}", json={"subnet": {"gateway_ip": "10.0.0.1"}})
    neutron_error(r, 400, "InvalidInput")


def test_subnet_ipv6(client: TestClient) -> None:
    net = make_net(client)
    sub = make_subnet(client, net["id"], "fd00:1::/64", ip_version=6)
    assert sub["gateway_ip"] == "fd00:1::1"
    assert sub["allocation_pools"] == [{"start": "fd00:1::2", "end": "fd00:1::ffff:ffff:ffff:ffff"}]
    ips = [make_port(client, net["id"]).json()["port"]["fixed_ips"][0]["ip_address"] for _ in range(2)]
    assert ips == ["fd00:1::2", "fd00:1::3"]
    # explicit addresses are stored canonically, so a differently written duplicate is caught
    r = make_port(client, net["id"], fixed_ips=[{"ip_address": "FD00:1:0:0::10"}])
    assert r.json()["port"]["fixed_ips"][0]["ip_address"] == "fd00:1::10"
    neutron_error(make_port(client, net["id"], fixed_ips=[{"ip_address": "fd00:1::0010"}]), 409)


def test_subnet_ipv6_slaac_uses_eui64(client: TestClient) -> None:
    net = make_net(client)
    make_subnet(client, net["id"], "fd00:2::/64", ip_version=6, ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    port = make_port(client, net["id"], mac_address="fa:16:3e:11:22:33").json()["port"]
    assert port["fixed_ips"][0]["ip_address"] == "fd00:2::f816:3eff:fe11:2233"
    neutron_error(
        client.post(
            "/v2.0/subnets",
            json={
                "subnet": {
                    "network_id": net["id"],
                    "cidr": "fd00:3::/80",
                    "ip_version": 6,
                    "ipv6_address_mode": "slaac",
                }
            },
        ),
        400,
    )


@pytest.mark.parametrize(
    ("body", "status", "type_"),
    [
        ({"cidr": "not-a-cidr", "ip_version": 4}, 400, "InvalidInput"),
        ({"cidr": "10.1.0.0/33", "ip_version": 4}, 400, "InvalidInput"),
        ({"cidr": "10.1.0.5/24", "ip_version": 4}, 400, "InvalidInput"),
        ({"cidr": "10.1.0.0/24", "ip_version": 6}, 400, "InvalidInput"),
        ({"cidr": "fd00::/64", "ip_version": 4}, 400, "InvalidInput"),
        ({"cidr": "10.1.0.0/24", "ip_version": 5}, 400, "HTTPBadRequest"),
        ({"cidr": "10.1.0.0/24"}, 400, "HTTPBadRequest"),
        ({"ip_version": 4}, 400, "HTTPBadRequest"),
        ({"cidr": "10.1.0.0/24", "ip_version": 4, "gateway_ip": "10.2.0.1"}, 400, "InvalidInput"),
        ({"cidr": "10.1.0.0/24", "ip_version": 4, "gateway_ip": "bogus"}, 400, "InvalidInput"),
        (
            {"cidr": "10.1.0.0/24", "ip_version": 4, "allocation_pools": [{"start": "10.1.0.0", "end": "10.1.0.9"}]},
            400,
            "OutOfBoundsAllocationPool",
        ),
        (
            {"cidr": "10.1.0.0/24", "ip_version": 4, "allocation_pools": [{"start": "10.1.0.9", "end": "10.1.0.3"}]},
            400,
            "InvalidAllocationPool",
        ),
        (
            {"cidr": "10.1.0.0/24", "ip_version": 4, "allocation_pools": [{"start": "10.1.0.1", "end": "10.1.0.9"}]},
            409,
            "GatewayConflictWithAllocationPools",
        ),
        (
            {
                "cidr": "10.1.0.0/24",
                "ip_version": 4,
                "allocation_pools": [
                    {"start": "10.1.0.2", "end": "10.1.0.9"},
                    {"start": "10.1.0.5", "end": "10.1.0.20"},
                ],
            },
            409,
            "OverlappingAllocationPools",
        ),
        ({"cidr": "10.1.0.0/24", "ip_version": 4, "ipv6_ra_mode": "slaac"}, 400, "InvalidInput"),
        ({"cidr": "10.1.0.0/24", "ip_version": 4, "dns_nameservers": ["x"]}, 400, "HTTPBadRequest"),
        ({"cidr": "10.1.0.0/24", "ip_version": 4, "subnetpool_id": "abc"}, 400, "HTTPBadRequest"),
        ({"cidr": "10.1.0.0/24", "ip_version": 4, "bogus": 1}, 400, "HTTPBadRequest"),
    ],
)
def test_subnet_bad_input(client: TestClient, body: dict, status: int, type_: str | None) -> None:
    net = make_net(client)
    r = client.post("/v2.0/subnets", json={"subnet": {"network_id": net["id"], **body}})
    neutron_error(r, status, type_)


def test_subnet_overlap_on_network(client: TestClient) -> None:
    net = make_net(client)
    make_subnet(client, net["id"], "10.5.0.0/16")
    r = client.post("/v2.0/subnets", json={"subnet": {"network_id": net["id"], "cidr": "10.5.3.0/24", "ip_version": 4}})
    err = neutron_error(r, 400, "InvalidInput")
    assert "overlaps with another subnet" in err["message"]
    r = client.post("/v2.0/subnets", json={"subnet": {"network_id": "nope", "cidr": "10.6.0.0/24", "ip_version": 4}})
    neutron_error(r, 404, "NetworkNotFound")


def test_subnet_delete_in_use(client: TestClient) -> None:
    net = make_net(client)
    sub = make_subnet(client, net["id"], "192.168.30.0/24")
    port = make_port(client, net["id"]).json()["port"]
    neutron_error(
        client.delete(f"/v2.0/subnets/{sub['id']}"),
        409,
        "SubnetInUse",
        f"Unable to complete operation on subnet {sub['id']}: "
        "One or more ports have an IP allocation from this subnet.",
    )
    assert client.delete(f"/v2.0/ports/{port['id']}").status_code == 204
    assert client.delete(f"/v2.0/subnets/{sub['id']}").status_code == 204


# --- ports -----------------------------------------------------------------------------------------------


def test_port_crud(client: TestClient) -> None:
    net = one(client, "networks", name="private")
    sub = one(client, "subnets", name="private-subnet")
    r = make_port(client, net["id"], name="p1")
    assert r.status_code == 201
    port = r.json()["port"]
    assert port["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.10.0.2"}]
    assert port["mac_address"].startswith("fa:16:3e:") and len(port["mac_address"]) == 17
    expected = {
        "name": "p1",
        "status": "DOWN",
        "device_id": "",
        "device_owner": "",
        "security_groups": [],
        "allowed_address_pairs": [],
        "binding:vnic_type": "normal",
        "port_security_enabled": True,
        "qos_policy_id": None,
        "dns_name": "",
        "tags": [],
        "revision_number": 1,
        "project_id": "demo",
        "tenant_id": "demo",
        "admin_state_up": True,
        "network_id": net["id"],
    }
    assert {k: port[k] for k in expected} == expected
    r = client.put(
        f"/v2.0/ports/{port['id']}", json={"port": {"name": "p2", "device_id": "vm-1", "device_owner": "compute:nova"}}
    )
    assert r.status_code == 200
    got = r.json()["port"]
    assert (got["name"], got["device_id"], got["device_owner"], got["status"]) == (
        "p2",
        "vm-1",
        "compute:nova",
        "ACTIVE",
    )
    assert got["revision_number"] == 2
    assert client.delete(f"/v2.0/ports/{port['id']}").status_code == 204
    neutron_error(
        client.get(f"/v2.0/ports/{port['id']}"), 404, "PortNotFound", f"Port {port['id']} could not be found."
    )


def test_port_allocation_and_exhaustion(client: TestClient) -> None:
    net = make_net(client)
    sub = make_subnet(client, net["id"], "192.168.40.0/30")  # .1 gateway, .2 the only host
    assert sub["allocation_pools"] == [{"start": "192.168.40.2", "end": "192.168.40.2"}]
    assert make_port(client, net["id"]).json()["port"]["fixed_ips"][0]["ip_address"] == "192.168.40.2"
    neutron_error(
        make_port(client, net["id"]),
        409,
        "IpAddressGenerationFailure",
        f"No more IP addresses available on network {net['id']}.",
    )
    neutron_error(
        make_port(client, net["id"], fixed_ips=[{"subnet_id": sub["id"]}]),
        409,
        "IpAddressGenerationFailure",
        f"No more IP addresses available on subnet {sub['id']}.",
    )


def test_port_reuses_lowest_freed_address(client: TestClient) -> None:
    net = make_net(client)
    make_subnet(client, net["id"], "192.168.41.0/24")
    ports = [make_port(client, net["id"]).json()["port"] for _ in range(3)]
    assert [p["fixed_ips"][0]["ip_address"] for p in ports] == ["192.168.41.2", "192.168.41.3", "192.168.41.4"]
    client.delete(f"/v2.0/ports/{ports[1]['id']}")
    assert make_port(client, net["id"]).json()["port"]["fixed_ips"][0]["ip_address"] == "192.168.41.3"


def test_port_default_skips_full_subnet(client: TestClient) -> None:
    net = make_net(client)
    make_subnet(client, net["id"], "192.168.42.0/30")
    second = make_subnet(client, net["id"], "192.168.43.0/24")
    make_port(client, net["id"])
    port = make_port(client, net["id"]).json()["port"]
    assert port["fixed_ips"] == [{"subnet_id": second["id"], "ip_address": "192.168.43.2"}]


def test_port_explicit_fixed_ips(client: TestClient) -> None:
    net = make_net(client)
    sub = make_subnet(client, net["id"], "192.168.50.0/24")
    sub6 = make_subnet(client, net["id"], "fd00:50::/64", ip_version=6)
    r = make_port(
        client,
        net["id"],
        fixed_ips=[{"subnet_id": sub["id"], "ip_address": "192.168.50.77"}, {"subnet_id": sub6["id"]}],
    )
    assert r.status_code == 201, r.text
    assert r.json()["port"]["fixed_ips"] == [
        {"subnet_id": sub["id"], "ip_address": "192.168.50.77"},
        {"subnet_id": sub6["id"], "ip_address": "fd00:50::2"},
    ]
    # the same address again: 409; only an address: its subnet is found
    neutron_error(
        make_port(client, net["id"], fixed_ips=[{"ip_address": "192.168.50.77"}]),
        409,
        "IpAddressAlreadyAllocated",
        f"IP address 192.168.50.77 already allocated in subnet {sub['id']}",
    )
    r = make_port(client, net["id"], fixed_ips=[{"ip_address": "192.168.50.78"}])
    assert r.json()["port"]["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "192.168.50.78"}]
    # addresses outside the subnet, the gateway, the broadcast, foreign subnets, garbage
    neutron_error(make_port(client, net["id"], fixed_ips=[{"ip_address": "10.99.0.1"}]), 400, "InvalidIpForNetwork")
    for bad in ("192.168.50.1", "192.168.50.255", "192.168.50.0", "fd00:50::1"):
        subnet_id = sub6["id"] if ":" in bad else sub["id"]
        neutron_error(
            make_port(client, net["id"], fixed_ips=[{"subnet_id": subnet_id, "ip_address": bad}]),
            400,
            "InvalidIpForSubnet",
        )
    neutron_error(
        make_port(client, net["id"], fixed_ips=[{"subnet_id": sub6["id"], "ip_address": "192.168.50.9"}]), 400
    )
    private_sub = one(client, "subnets", name="private-subnet")
    neutron_error(make_port(client, net["id"], fixed_ips=[{"subnet_id": private_sub["id"]}]), 400, "InvalidInput")
    neutron_error(make_port(client, net["id"], fixed_ips=[{"ip_address": "not-an-ip"}]), 400)
    dup = [{"ip_address": "192.168.50.90"}, {"ip_address": "192.168.50.90"}]
    neutron_error(make_port(client, net["id"], fixed_ips=dup), 400)
    # no addresses at all when asked for none
    assert make_port(client, net["id"], fixed_ips=[]).json()["port"]["fixed_ips"] == []


def test_port_update_fixed_ips(client: TestClient) -> None:
    net = make_net(client)
    sub = make_subnet(client, net["id"], "192.168.60.0/24")
    port = make_port(client, net["id"]).json()["port"]
    body = {"port": {"fixed_ips": [*port["fixed_ips"], {"ip_address": "192.168.60.50"}]}}
    got = client.put(f"/v2.0/ports/{port['id']}", json=body).json()["port"]
    assert [ip["ip_address"] for ip in got["fixed_ips"]] == ["192.168.60.2", "192.168.60.50"]
    got = client.put(f"/v2.0/ports/{port['id']}", json={"port": {"fixed_ips": [{"subnet_id": sub["id"]}]}}).json()[
        "port"
    ]
    assert [ip["ip_address"] for ip in got["fixed_ips"]] == ["192.168.60.2"]
    # the released address is free again
    other = make_port(client, net["id"], fixed_ips=[{"ip_address": "192.168.60.50"}])
    assert other.status_code == 201


def test_port_mac_address(client: TestClient) -> None:
    net = make_net(client)
    assert (
        make_port(client, net["id"], mac_address="FA:16:3E:00:00:01").json()["port"]["mac_address"]
        == "fa:16:3e:00:00:01"
    )
    neutron_error(make_port(client, net["id"], mac_address="fa:16:3e:00:00:01"), 409, "MacAddressInUse")
    neutron_error(make_port(client, net["id"], mac_address="nope"), 400)
    neutron_error(make_port(client, "nope"), 404, "NetworkNotFound")


# --- lists: filters, fields, pagination, tags --------------------------------------------------------


def test_name_filter_fields_and_unknown_filters(client: TestClient) -> None:
    sub = client.get("/v2.0/subnets", params={"name": "private-subnet"}).json()["subnets"]
    assert [s["name"] for s in sub] == ["private-subnet"]
    assert client.get("/v2.0/subnets", params={"name": "nope"}).json() == {"subnets": []}
    got = client.get("/v2.0/subnets", params=[("id", sub[0]["id"]), ("fields", "id"), ("fields", "name")]).json()
    assert got == {"subnets": [{"id": sub[0]["id"], "name": "private-subnet"}]}
    shown = client.get(f"/v2.0/subnets/{sub[0]['id']}", params={"fields": "cidr"}).json()
    assert shown == {"subnet": {"cidr": "10.10.0.0/24"}}
    assert len(client.get("/v2.0/networks", params={"whatever": "x"}).json()["networks"]) == 2
    ext = client.get("/v2.0/networks", params={"router:external": "True"}).json()["networks"]
    assert [n["name"] for n in ext] == ["public"]
    neutron_error(client.get("/v2.0/networks", params={"shared": "maybe"}), 400)
    assert client.get("/v2.0/subnets", params={"subnetpool_id": "abc"}).json() == {"subnets": []}
    assert len(client.get("/v2.0/subnets", params={"ip_version": "4"}).json()["subnets"]) == 2
    neutron_error(client.get("/v2.0/subnets", params={"ip_version": "four"}), 400)
    names = client.get("/v2.0/networks", params=[("name", "private"), ("name", "public")]).json()["networks"]
    assert len(names) == 2


def test_port_filters(client: TestClient) -> None:
    net = one(client, "networks", name="private")
    port = make_port(client, net["id"], device_owner="Octavia").json()["port"]
    make_port(client, net["id"])
    assert [p["id"] for p in client.get("/v2.0/ports", params={"device_owner": "Octavia"}).json()["ports"]] == [
        port["id"]
    ]
    ip = port["fixed_ips"][0]["ip_address"]
    found = client.get("/v2.0/ports", params={"fixed_ips": f"ip_address={ip}"}).json()["ports"]
    assert [p["id"] for p in found] == [port["id"]]
    assert len(client.get("/v2.0/ports", params={"network_id": net["id"]}).json()["ports"]) == 2


def test_pagination(client: TestClient) -> None:
    for i in range(3):
        make_net(client, f"page-{i}")
    page = client.get("/v2.0/networks", params={"limit": 2}).json()
    assert len(page["networks"]) == 2
    nxt = [link for link in page["networks_links"] if link["rel"] == "next"]
    assert nxt
    page2 = client.get("/v2.0/networks", params={"limit": 2, "marker": page["networks"][-1]["id"]}).json()
    page3 = client.get("/v2.0/networks", params={"limit": 2, "marker": page2["networks"][-1]["id"]}).json()
    names = [n["name"] for p in (page, page2, page3) for n in p["networks"]]
    assert sorted(names) == sorted(["private", "public", "page-0", "page-1", "page-2"])
    by_name = client.get("/v2.0/networks", params={"sort_key": "name", "sort_dir": "desc"}).json()["networks"]
    assert [n["name"] for n in by_name] == sorted(names, reverse=True)
    neutron_error(client.get("/v2.0/networks", params={"sort_key": "bogus"}), 400)
    neutron_error(client.get("/v2.0/networks", params={"limit": "x"}), 400)
    neutron_error(client.get("/v2.0/networks", params={"marker": "nope"}), 400)


def test_tags(client: TestClient) -> None:
    net = make_net(client, tags=["a"])
    assert net["tags"] == ["a"]
    url = f"/v2.0/networks/{net['id']}/tags"
    assert client.put(url, json={"tags": ["x", "y"]}).json() == {"tags": ["x", "y"]}
    assert client.put(f"{url}/z").status_code == 201
    assert client.get(url).json() == {"tags": ["x", "y", "z"]}
    assert client.get(f"{url}/z").status_code == 204
    assert client.delete(f"{url}/x").status_code == 204
    neutron_error(client.delete(f"{url}/x"), 404, "TagNotFound")
    assert client.get(f"/v2.0/networks/{net['id']}").json()["network"]["tags"] == ["y", "z"]
    assert [n["id"] for n in client.get("/v2.0/networks", params={"tags": "y,z"}).json()["networks"]] == [net["id"]]
    assert len(client.get("/v2.0/networks", params={"not-tags-any": "y"}).json()["networks"]) == 2
    assert client.delete(url).status_code == 204
    assert client.get(url).json() == {"tags": []}
    neutron_error(client.put(url, json={"tags": "x"}), 400)


# --- bad input -------------------------------------------------------------------------------------------


def test_bad_bodies(client: TestClient) -> None:
    net = one(client, "networks", name="private")
    raw = {"headers": {"Content-Type": "application/json"}}
    neutron_error(
        client.post("/v2.0/networks", content=b"{not json", **raw), 400, "HTTPBadRequest", "Malformed request body"
    )
    neutron_error(client.post("/v2.0/networks", content=b"", **raw), 400, "HTTPBadRequest")
    neutron_error(client.post("/v2.0/networks", content=b"[" * 100000, **raw), 400, "HTTPBadRequest")
    neutron_error(client.post("/v2.0/networks", content=b"\xff\xfe", **raw), 400, "HTTPBadRequest")
    neutron_error(client.post("/v2.0/networks", json=[1, 2]), 400, "HTTPBadRequest")
    neutron_error(client.post("/v2.0/networks", json={"net": {}}), 400, "HTTPBadRequest")
    neutron_error(client.post("/v2.0/networks", json={"network": "x"}), 400, "HTTPBadRequest")
    neutron_error(client.post("/v2.0/networks", json={"network": {"name": 5}}), 400, "HTTPBadRequest")
    neutron_error(client.post("/v2.0/networks", json={"network": {"admin_state_up": "maybe"}}), 400)
    neutron_error(client.post("/v2.0/networks", json={"network": {"mtu": "big"}}), 400)
    neutron_error(client.post("/v2.0/networks", json={"network": {"name": "x" * 256}}), 400)
    neutron_error(
        client.post("/v2.0/networks", json={"network": {"flavor": "x"}}),
        400,
        "HTTPBadRequest",
        "Unrecognized attribute(s) 'flavor'",
    )
    neutron_error(
        client.put(f"/v2.0/networks/{net['id']}", json={"network": {"id": "x"}}),
        400,
        "HTTPBadRequest",
        "Cannot update read-only attribute id",
    )
    neutron_error(client.put(f"/v2.0/subnets/{net['subnets'][0]}", json={"subnet": {"cidr": "10.0.0.0/8"}}), 400)
    neutron_error(client.put(f"/v2.0/ports/{net['id']}", json={"port": {"name": "x"}}), 404, "PortNotFound")
    neutron_error(client.post("/v2.0/ports", json={"port": {}}), 400, "HTTPBadRequest")
    neutron_error(client.get("/v2.0/networks/not-a-uuid"), 404, "NetworkNotFound")
    neutron_error(client.get("/v2.0/subnets/not-a-uuid"), 404, "SubnetNotFound")
    neutron_error(client.get("/v2.0/nothing-here"), 404)
    neutron_error(client.patch("/v2.0/networks"), 405)


def test_large_body(client: TestClient) -> None:
    big = {"network": {"name": "x", "description": "y" * (1024 * 1024)}}
    neutron_error(client.post("/v2.0/networks", json=big), 413)


# --- visibility ------------------------------------------------------------------------------------------


def test_project_visibility(tclient: TestClient) -> None:
    c = tclient
    neutron_error(c.get("/v2.0/networks"), 401)
    net_a = c.post("/v2.0/networks", json={"network": {"name": "a-net"}}, headers=hdr("a")).json()["network"]
    assert net_a["project_id"] == "a"
    sub_a = c.post(
        "/v2.0/subnets",
        json={"subnet": {"network_id": net_a["id"], "cidr": "10.20.0.0/24", "ip_version": 4}},
        headers=hdr("a"),
    ).json()["subnet"]
    port_a = c.post("/v2.0/ports", json={"port": {"network_id": net_a["id"]}}, headers=hdr("a")).json()["port"]

    # b sees only shared/external networks and their subnets
    names_b = {n["name"] for n in c.get("/v2.0/networks", headers=hdr("b")).json()["networks"]}
    assert names_b == {"public"}
    assert {s["name"] for s in c.get("/v2.0/subnets", headers=hdr("b")).json()["subnets"]} == {"public-subnet"}
    assert c.get("/v2.0/ports", headers=hdr("b")).json() == {"ports": []}
    for path, type_ in (
        (f"/v2.0/networks/{net_a['id']}", "NetworkNotFound"),
        (f"/v2.0/subnets/{sub_a['id']}", "SubnetNotFound"),
        (f"/v2.0/ports/{port_a['id']}", "PortNotFound"),
    ):
        neutron_error(c.get(path, headers=hdr("b")), 404, type_)
        neutron_error(c.delete(path, headers=hdr("b")), 404, type_)
    neutron_error(c.post("/v2.0/ports", json={"port": {"network_id": net_a["id"]}}, headers=hdr("b")), 404)

    # a shared network is usable, not changeable; b cannot pick addresses on it
    pub = c.get("/v2.0/networks", params={"name": "public"}, headers=hdr("b")).json()["networks"][0]
    neutron_error(c.delete(f"/v2.0/networks/{pub['id']}", headers=hdr("b")), 403, "PolicyNotAuthorized")
    neutron_error(c.put(f"/v2.0/networks/{pub['id']}", json={"network": {"name": "x"}}, headers=hdr("b")), 403)
    port_b = c.post("/v2.0/ports", json={"port": {"network_id": pub["id"]}}, headers=hdr("b"))
    assert port_b.status_code == 201 and port_b.json()["port"]["project_id"] == "b"
    neutron_error(
        c.post(
            "/v2.0/ports",
            json={"port": {"network_id": pub["id"], "fixed_ips": [{"ip_address": "172.24.4.99"}]}},
            headers=hdr("b"),
        ),
        403,
    )
    neutron_error(
        c.post(
            "/v2.0/subnets",
            json={"subnet": {"network_id": pub["id"], "cidr": "10.30.0.0/24", "ip_version": 4}},
            headers=hdr("b"),
        ),
        403,
    )

    # only admins share, and only admins act for another project
    neutron_error(c.post("/v2.0/networks", json={"network": {"shared": True}}, headers=hdr("b")), 403)
    neutron_error(c.post("/v2.0/networks", json={"network": {"router:external": True}}, headers=hdr("b")), 403)
    neutron_error(c.post("/v2.0/networks", json={"network": {"project_id": "a"}}, headers=hdr("b")), 400)
    neutron_error(c.post("/v2.0/networks", json={"network": {}}, headers=hdr(None, "admin")), 400)
    r = c.post("/v2.0/networks", json={"network": {"project_id": "c", "shared": True}}, headers=hdr("adm", "admin"))
    assert r.status_code == 201 and r.json()["network"]["project_id"] == "c"

    # admins see everything
    all_nets = c.get("/v2.0/networks", headers=hdr("adm", "admin")).json()["networks"]
    assert {"a-net", "private", "public"} <= {n["name"] for n in all_nets}
    assert len(c.get("/v2.0/ports", headers=hdr("adm", "admin")).json()["ports"]) == 2
    # the owner of a network sees the ports others put on it
    assert len(c.get("/v2.0/ports", headers=hdr("admin-project")).json()["ports"]) == 1


# --- VIP allocation --------------------------------------------------------------------------------------


def _ids(db: Database) -> dict[str, str]:
    with db.read() as s:
        nets = {n.name: n.id for n in s.scalars(select(m.Network))}
        subs = {sn.name: sn.id for sn in s.scalars(select(m.Subnet))}
    return {**nets, **subs}


def _raises(exc_type: type[ApiError], message: str, fn: Any, *args: Any, **kw: Any) -> ApiError:
    with pytest.raises(exc_type) as info:
        fn(*args, **kw)
    assert info.value.message == message
    return info.value


def test_vip_on_subnet(db: Database, client: TestClient) -> None:
    ids = _ids(db)
    with db.write() as s:
        vip = embedded.allocate_vip(s, "demo", "lb1", subnet_id=ids["private-subnet"])
    assert vip == embedded.Vip("10.10.0.2", vip.port_id, ids["private-subnet"], ids["private"])
    port = client.get(f"/v2.0/ports/{vip.port_id}").json()["port"]
    assert (port["name"], port["device_owner"], port["device_id"]) == ("octavia-lb-lb1", "Octavia", "lb-lb1")
    assert port["project_id"] == "demo"
    with db.write() as s:
        vip2 = embedded.allocate_vip(s, "other", "lb2", subnet_id=ids["private-subnet"], address="10.10.0.99")
    assert vip2.address == "10.10.0.99"
    with db.write() as s:
        err = _raises(
            Conflict,
            f"IP address 10.10.0.99 already allocated in subnet {ids['private-subnet']}",
            embedded.allocate_vip,
            s,
            "demo",
            "lb3",
            subnet_id=ids["private-subnet"],
            address="10.10.0.99",
        )
        assert err.status == 409
        _raises(BadRequest, "Subnet nope not found.", embedded.allocate_vip, s, "demo", "lb3", subnet_id="nope")
        _raises(
            Validation,
            "Validation failure: IP address 10.99.0.1 is not a valid IP for the specified subnet.",
            embedded.allocate_vip,
            s,
            "demo",
            "lb3",
            subnet_id=ids["private-subnet"],
            address="10.99.0.1",
        )
    with db.write() as s:
        embedded.release_vip(s, vip.port_id)
        embedded.release_vip(s, vip.port_id)  # idempotent
        embedded.release_vip(s, None)
    neutron_error(client.get(f"/v2.0/ports/{vip.port_id}"), 404)


def test_vip_port_cannot_be_deleted_through_the_api(db: Database, client: TestClient) -> None:
    ids = _ids(db)
    with db.write() as s:
        vip = embedded.allocate_vip(s, "demo", "lb1", subnet_id=ids["private-subnet"])
    neutron_error(client.delete(f"/v2.0/ports/{vip.port_id}"), 409, "ServicePortInUse")
    neutron_error(client.put(f"/v2.0/ports/{vip.port_id}", json={"port": {"fixed_ips": []}}), 409, "ServicePortInUse")
    assert client.put(f"/v2.0/ports/{vip.port_id}", json={"port": {"name": "renamed"}}).status_code == 200
    neutron_error(client.delete(f"/v2.0/subnets/{ids['private-subnet']}"), 409, "SubnetInUse")
    neutron_error(client.delete(f"/v2.0/networks/{ids['private']}"), 409, "NetworkInUse")


def test_vip_subnet_full(db: Database, client: TestClient) -> None:
    net = make_net(client)
    sub = make_subnet(client, net["id"], "192.168.70.0/30")
    with db.write() as s:
        embedded.allocate_vip(s, "demo", "lb1", subnet_id=sub["id"])
    with db.write() as s:
        _raises(
            Conflict,
            f"No more IP addresses available on subnet {sub['id']}.",
            embedded.allocate_vip,
            s,
            "demo",
            "lb2",
            subnet_id=sub["id"],
        )
        _raises(
            Validation,
            "Validation failure: Subnet(s) in the supplied network do not contain enough available IPs.",
            embedded.allocate_vip,
            s,
            "demo",
            "lb2",
            network_id=net["id"],
        )


def test_vip_on_network(db: Database, client: TestClient) -> None:
    net = make_net(client)
    sub6 = make_subnet(client, net["id"], "fd00:70::/64", ip_version=6)
    sub4 = make_subnet(client, net["id"], "192.168.71.0/24")
    with db.write() as s:
        vip = embedded.allocate_vip(s, "demo", "lb1", network_id=net["id"])
        assert (vip.subnet_id, vip.address, vip.network_id) == (sub4["id"], "192.168.71.2", net["id"])
        vip = embedded.allocate_vip(s, "demo", "lb2", network_id=net["id"], address="fd00:70::99")
        assert (vip.subnet_id, vip.address) == (sub6["id"], "fd00:70::99")
        vip = embedded.allocate_vip(s, "demo", "lb3", network_id=net["id"], subnet_id=sub6["id"])
        assert (vip.subnet_id, vip.address) == (sub6["id"], "fd00:70::2")
    ids = _ids(db)
    empty = make_net(client, "empty")
    with db.write() as s:
        _raises(BadRequest, "Network nope not found.", embedded.allocate_vip, s, "demo", "x", network_id="nope")
        _raises(
            Validation,
            f"Validation failure: Subnet {ids['private-subnet']} not found on network {net['id']}.",
            embedded.allocate_vip,
            s,
            "demo",
            "x",
            network_id=net["id"],
            subnet_id=ids["private-subnet"],
        )
        _raises(
            Validation,
            "Validation failure: Supplied network does not contain a subnet for VIP address specified.",
            embedded.allocate_vip,
            s,
            "demo",
            "x",
            network_id=net["id"],
            address="10.1.1.1",
        )
        _raises(
            Validation,
            "Validation failure: Supplied network does not contain a subnet.",
            embedded.allocate_vip,
            s,
            "demo",
            "x",
            network_id=empty["id"],
        )
        _raises(
            Validation,
            "Validation failure: VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id.",
            embedded.allocate_vip,
            s,
            "demo",
            "x",
        )


def test_vip_on_user_port(db: Database, client: TestClient) -> None:
    net = make_net(client)
    sub = make_subnet(client, net["id"], "192.168.80.0/24")
    sub6 = make_subnet(client, net["id"], "fd00:80::/64", ip_version=6)
    single = make_port(client, net["id"]).json()["port"]
    double = make_port(client, net["id"], fixed_ips=[{"subnet_id": sub["id"]}, {"subnet_id": sub6["id"]}]).json()[
        "port"
    ]
    with db.write() as s:
        _raises(BadRequest, "Port nope not found.", embedded.allocate_vip, s, "demo", "x", port_id="nope")
        _raises(
            Validation,
            "Validation failure: VIP port's subnet could not be determined. "
            "Please specify either a VIP subnet or address.",
            embedded.allocate_vip,
            s,
            "demo",
            "x",
            port_id=double["id"],
        )
        _raises(
            Validation,
            "Validation failure: Specified VIP address not found on the specified VIP port.",
            embedded.allocate_vip,
            s,
            "demo",
            "x",
            port_id=double["id"],
            address="192.168.80.200",
        )
        _raises(
            Validation,
            "Validation failure: No VIP address found on the specified VIP port within the specified subnet.",
            embedded.allocate_vip,
            s,
            "demo",
            "x",
            port_id=single["id"],
            subnet_id=sub6["id"],
        )
    with db.write() as s:
        vip = embedded.allocate_vip(s, "demo", "lb1", port_id=single["id"])
        assert vip == embedded.Vip(single["fixed_ips"][0]["ip_address"], single["id"], sub["id"], net["id"])
        vip6 = embedded.allocate_vip(s, "demo", "lb2", port_id=double["id"], subnet_id=sub6["id"])
        assert (vip6.address, vip6.subnet_id) == (double["fixed_ips"][1]["ip_address"], sub6["id"])
    with db.write() as s:
        _raises(
            Validation,
            f"Validation failure: Port {single['id']} is already used by device lb-lb1.",
            embedded.allocate_vip,
            s,
            "demo",
            "lb9",
            port_id=single["id"],
        )
    got = client.get(f"/v2.0/ports/{single['id']}").json()["port"]
    assert (got["device_owner"], got["device_id"]) == ("Octavia", "lb-lb1")
    with db.write() as s:
        embedded.release_vip(s, single["id"])
    got = client.get(f"/v2.0/ports/{single['id']}").json()["port"]  # detached, not deleted
    assert (got["device_owner"], got["device_id"]) == ("", "")
    # a VIP address given by address picks it among the port's addresses
    with db.write() as s:
        vip = embedded.allocate_vip(
            s, "demo", "lb3", port_id=single["id"], address=single["fixed_ips"][0]["ip_address"]
        )
        assert vip.port_id == single["id"]


def test_concurrent_vip_allocations_get_distinct_addresses(db: Database, client: TestClient) -> None:
    ids = _ids(db)

    def allocate(n: int) -> str:
        with db.write() as s:
            return embedded.allocate_vip(s, "demo", f"lb{n}", subnet_id=ids["private-subnet"]).address

    with ThreadPoolExecutor(max_workers=8) as pool:
        addresses = list(pool.map(allocate, range(24)))
    assert sorted(addresses, key=ipaddress.ip_address) == [f"10.10.0.{i}" for i in range(2, 26)]


def test_vip_rolls_back_with_the_callers_transaction(db: Database, client: TestClient) -> None:
    ids = _ids(db)
    with pytest.raises(RuntimeError), db.write() as s:
        embedded.allocate_vip(s, "demo", "lb1", subnet_id=ids["private-subnet"])
        raise RuntimeError("the load balancer insert failed")
    assert client.get("/v2.0/ports").json() == {"ports": []}


# --- IPAM ------------------------------------------------------------------------------------------------


def test_ipam_pools_and_lowest_free() -> None:
    net = ipam.parse_cidr("10.0.0.0/24", 4)
    assert ipam.default_pools(net, "10.0.0.100") == [
        {"start": "10.0.0.1", "end": "10.0.0.99"},
        {"start": "10.0.0.101", "end": "10.0.0.254"},
    ]
    assert ipam.lowest_free([(10, 20)], [10, 11, 12, 14]) == 13
    assert ipam.lowest_free([(10, 12), (30, 31)], [10, 11, 12]) == 30
    assert ipam.lowest_free([(10, 11)], [10, 11]) is None
    with pytest.raises(ipam.InvalidPool):
        ipam.validate_pools(net, None, [{"start": "10.0.0.5", "end": "10.0.1.5"}])


def test_ipam_scales_to_a_busy_slash16(db: Database) -> None:
    """Thousands of used addresses in a /16: one query and a bisect walk, not a scan of the range."""
    with db.write() as s:
        network = m.Network(id=m.new_id(), project_id="p", name="big")
        s.add(network)
        sub = embedded.create_subnet(s, network, "p", embedded.SubnetSpec(cidr="10.200.0.0/16", ip_version=4))
        port = m.Port(id=m.new_id(), project_id="p", network_id=network.id, mac_address="fa:16:3e:00:00:01")
        s.add(port)
        s.flush()
        base = int(ipaddress.ip_address("10.200.0.2"))
        s.add_all(
            m.PortIP(subnet_id=sub.id, port_id=port.id, ip_address=str(ipaddress.ip_address(base + i)))
            for i in range(6000)
        )
    with db.write() as s:
        subnet = s.get(m.Subnet, sub.id)
        start = time.perf_counter()
        address = ipam.allocate(s, subnet)
        elapsed = time.perf_counter() - start
    assert address == str(ipaddress.ip_address(base + 6000))
    assert elapsed < 1.0
