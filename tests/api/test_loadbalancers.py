"""Load balancer life cycle: create, statuses, graph create, update, cascade delete, VIP ports, failover."""

from __future__ import annotations

import ipaddress
import uuid

from sqlalchemy import func, select

from quadriga.db import models as m
from tests.support.api_harness import make_api

LB = "/v2/lbaas/loadbalancers"


def vip_ports(api) -> int:
    with api.db.read() as s:
        return s.scalar(select(func.count()).select_from(m.Port).where(m.Port.device_owner == "Octavia"))


def test_create_returns_pending_with_vip_then_becomes_active(api):
    body = {"loadbalancer": {"vip_subnet_id": api.subnet_id(), "name": "web", "description": "d", "tags": ["a", "b"]}}
    lb = api.ok(api.post(LB, body), 201)["loadbalancer"]
    assert lb["provisioning_status"] == "PENDING_CREATE"
    assert lb["operating_status"] == "OFFLINE"
    assert ipaddress.ip_address(lb["vip_address"]) in ipaddress.ip_network("10.10.0.0/24")
    assert lb["vip_port_id"] and lb["vip_network_id"] and lb["vip_subnet_id"] == api.subnet_id()
    assert lb["project_id"] == lb["tenant_id"] == "project-a"
    assert lb["provider"] == "noop" and lb["tags"] == ["a", "b"] and lb["listeners"] == [] and lb["pools"] == []
    active = api.wait_lb(lb["id"])
    assert active["operating_status"] == "OFFLINE"  # noop: no data plane reports anything
    tree = api.ok(api.get(f"{LB}/{lb['id']}/status"), 200)["statuses"]["loadbalancer"]
    # Octavia's five keys (tempest counts them); status_reason only comes with an ERROR
    assert set(tree) == {"id", "name", "provisioning_status", "operating_status", "listeners"}
    assert vip_ports(api) == 1


def test_null_name_and_description_are_empty_strings(api):
    lb = api.create_lb()
    assert lb["name"] == "" and lb["description"] == ""


def test_vip_from_network_and_from_port(api):
    with api.db.read() as s:
        net_id = s.scalars(select(m.Subnet.network_id).where(m.Subnet.id == api.subnet_id())).one()
    by_net = api.create_lb(vip_network_id=net_id, vip_subnet_id=None)
    assert by_net["vip_subnet_id"] == api.subnet_id()
    by_addr = api.create_lb(vip_address="10.10.0.77")
    assert by_addr["vip_address"] == "10.10.0.77"
    clash = api.post(LB, {"loadbalancer": {"vip_subnet_id": api.subnet_id(), "vip_address": "10.10.0.77"}})
    assert clash.status_code == 409


def test_mutations_are_refused_while_pending(api):
    api.reconciler.providers["noop"].delay = 0.5  # keep the change in flight
    lb = api.create_lb(wait=False)
    r = api.put(f"{LB}/{lb['id']}", {"loadbalancer": {"name": "x"}})
    assert r.status_code == 409
    assert r.json()["faultstring"] == f"Load Balancer {lb['id']} is immutable and cannot be updated."
    api.reconciler.providers["noop"].delay = 0
    assert api.wait_lb(lb["id"])["name"] == ""


def test_update_sets_pending_update_and_only_mutable_fields(api):
    lb = api.create_lb(name="a")
    r = api.ok(
        api.put(f"{LB}/{lb['id']}", {"loadbalancer": {"name": "b", "admin_state_up": False, "tags": ["x"]}}), 200
    )
    assert r["loadbalancer"]["provisioning_status"] == "PENDING_UPDATE"
    assert r["loadbalancer"]["name"] == "b" and r["loadbalancer"]["tags"] == ["x"]
    done = api.wait_lb(lb["id"])
    assert done["admin_state_up"] is False and done["name"] == "b"
    bad = api.put(f"{LB}/{lb['id']}", {"loadbalancer": {"vip_address": "10.10.0.9"}})
    assert bad.status_code == 400 and "vip_address" in bad.json()["faultstring"]


def test_graph_create_builds_the_whole_tree(api):
    body = {
        "loadbalancer": {
            "vip_subnet_id": api.subnet_id(),
            "name": "graph",
            "listeners": [
                {
                    "name": "http",
                    "protocol": "HTTP",
                    "protocol_port": 80,
                    "default_pool": {"name": "web"},
                    "l7policies": [
                        {
                            "action": "REDIRECT_TO_POOL",
                            "redirect_pool": {"name": "api", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
                            "rules": [{"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"}],
                        }
                    ],
                }
            ],
            "pools": [
                {
                    "name": "web",
                    "protocol": "HTTP",
                    "lb_algorithm": "LEAST_CONNECTIONS",
                    "members": [{"address": "10.10.0.50", "protocol_port": 8080}],
                    "healthmonitor": {"type": "HTTP", "delay": 2, "timeout": 1, "max_retries": 2},
                }
            ],
        }
    }
    lb = api.ok(api.post(LB, body), 201)["loadbalancer"]
    assert lb["provisioning_status"] == "PENDING_CREATE"
    (listener,) = lb["listeners"]
    pools = {p["name"]: p for p in lb["pools"]}
    assert set(pools) == {"web", "api"}
    assert listener["default_pool_id"] == pools["web"]["id"]
    assert listener["l7policies"][0]["redirect_pool_id"] == pools["api"]["id"]
    assert listener["l7policies"][0]["rules"][0]["value"] == "/api"
    assert pools["web"]["members"][0]["operating_status"] == "OFFLINE"  # monitored pool
    assert pools["web"]["healthmonitor"]["url_path"] == "/"
    api.wait_lb(lb["id"])
    tree = api.ok(api.get(f"{LB}/{lb['id']}/status"), 200)["statuses"]["loadbalancer"]
    assert tree["provisioning_status"] == "ACTIVE"
    pool_statuses = {p["id"]: p for p in tree["listeners"][0]["pools"]}
    assert set(pool_statuses) == {pools["web"]["id"], pools["api"]["id"]}
    assert pool_statuses[pools["web"]["id"]]["health_monitor"]["type"] == "HTTP"
    assert pool_statuses[pools["web"]["id"]]["members"][0]["address"] == "10.10.0.50"
    for path in ("listeners", "pools", "healthmonitors", "l7policies"):
        items = api.ok(api.get(f"/v2/lbaas/{path}"), 200)[path]
        assert items and all(i["provisioning_status"] == "ACTIVE" for i in items)


def test_graph_create_rejects_unknown_pool_reference_and_writes_nothing(api):
    body = {
        "loadbalancer": {
            "vip_subnet_id": api.subnet_id(),
            "listeners": [{"protocol": "HTTP", "protocol_port": 80, "default_pool": {"name": "missing"}}],
        }
    }
    r = api.post(LB, body)
    assert r.status_code == 400
    assert (
        r.json()["faultstring"] == "Validation failure: Pool 'missing' was referenced but no full definition was found."
    )
    assert api.ok(api.get(LB), 200)["loadbalancers"] == []
    assert vip_ports(api) == 0


def test_delete_with_children_needs_cascade_and_releases_the_vip(api):
    lb = api.create_lb()
    api.create("/v2/lbaas/listeners", "listener", lb["id"], loadbalancer_id=lb["id"], protocol="TCP", protocol_port=22)
    r = api.delete(f"{LB}/{lb['id']}")
    assert r.status_code == 400
    assert r.json()["faultstring"] == f"Validation failure: Cannot delete Load Balancer {lb['id']} - it has children"
    assert api.delete(f"{LB}/{lb['id']}?cascade=true").status_code == 204
    api.wait_lb(lb["id"], "DELETED")
    assert api.get(f"{LB}/{lb['id']}").status_code == 404
    assert api.ok(api.get("/v2/lbaas/listeners"), 200)["listeners"] == []
    assert api.ok(api.get(LB), 200)["loadbalancers"] == []
    assert vip_ports(api) == 0


def test_not_found_fault(api):
    r = api.get(f"{LB}/0b6a1cc0-91a4-4d4b-9b3c-5b2f8d7a1c10")
    assert r.status_code == 404
    assert r.json() == {
        "faultcode": "Client",
        "faultstring": "Load Balancer 0b6a1cc0-91a4-4d4b-9b3c-5b2f8d7a1c10 not found.",
        "debuginfo": None,
    }


def test_failover_goes_through_pending_update(api):
    lb = api.create_lb()
    api.reconciler.providers["noop"].delay = 0.5
    assert api.put(f"{LB}/{lb['id']}/failover", None).status_code == 202
    assert api.ok(api.get(f"{LB}/{lb['id']}"), 200)["loadbalancer"]["provisioning_status"] == "PENDING_UPDATE"
    api.reconciler.providers["noop"].delay = 0
    api.wait_lb(lb["id"])


def test_stats_and_version_documents_and_aliases(api):
    lb = api.create_lb()
    stats = api.ok(api.get(f"/v2.0/lbaas/loadbalancers/{lb['id']}/stats.json"), 200)["stats"]
    assert set(stats) == {"bytes_in", "bytes_out", "active_connections", "total_connections", "request_errors"}
    versions = api.ok(api.get("/"), 200)["versions"]
    assert versions[0]["id"] == "v2.0" and versions[-1] == {**versions[-1], "id": "v2.30", "status": "CURRENT"}
    assert api.ok(api.get("/v2"), 200)["version"]["id"] == "v2.30"
    assert api.ok(api.get(f"{LB}/{lb['id']}/statuses"), 200)["statuses"]["loadbalancer"]["id"] == lb["id"]


def test_noop_provider_takes_a_vip_on_a_network_that_does_not_exist(api):
    """As Octavia's noop network driver: tempest's test_with_noop mode sends made-up network and subnet ids."""
    net, subnet, extra = (str(uuid.uuid4()) for _ in range(3))
    body = {"vip_network_id": net, "vip_subnet_id": subnet, "vip_address": "198.18.33.33"}
    body["additional_vips"] = [{"subnet_id": extra, "ip_address": "198.18.34.34"}]
    lb = api.ok(api.post(LB, {"loadbalancer": body}), 201)["loadbalancer"]
    assert (lb["vip_network_id"], lb["vip_subnet_id"], lb["vip_address"]) == (net, subnet, "198.18.33.33")
    assert lb["vip_port_id"] and [(v["subnet_id"], v["ip_address"]) for v in lb["additional_vips"]] == [
        (extra, "198.18.34.34")
    ]
    assert vip_ports(api) == 0  # nothing allocated in the embedded networking
    api.wait_lb(lb["id"])
    only_port = api.ok(api.post(LB, {"loadbalancer": {"vip_port_id": str(uuid.uuid4())}}), 201)["loadbalancer"]
    assert only_port["vip_address"] == "198.51.100.1" and only_port["vip_subnet_id"] and only_port["vip_network_id"]
    api.wait_lb(only_port["id"])
    for lb_id in (lb["id"], only_port["id"]):
        api.ok(api.delete(f"{LB}/{lb_id}"), 204)
        api.wait_lb(lb_id, "DELETED")


def test_a_provider_with_a_data_plane_needs_the_network_to_exist(tmp_path):
    for api in make_api(tmp_path, data_plane=True):
        net = str(uuid.uuid4())
        response = api.post(LB, {"loadbalancer": {"vip_network_id": net}})
        assert response.status_code == 400 and response.json()["faultstring"] == f"Network {net} not found."
        subnet_id = api.subnet_id()
        extra = [{"subnet_id": str(uuid.uuid4())}]
        response = api.post(LB, {"loadbalancer": {"vip_subnet_id": subnet_id, "additional_vips": extra}})
        assert response.status_code == 400 and "not found" in response.json()["faultstring"]
        assert vip_ports(api) == 0  # nothing half-written
