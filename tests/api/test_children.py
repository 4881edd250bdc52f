"""Listeners, pools, members, health monitors and L7 objects: status propagation and their rules."""

from __future__ import annotations

import pytest


@pytest.fixture
def tree(api):
    lb = api.create_lb()
    li = api.create(
        "/v2/lbaas/listeners", "listener", lb["id"], loadbalancer_id=lb["id"], protocol="HTTP", protocol_port=80
    )
    pool = api.create(
        "/v2/lbaas/pools", "pool", lb["id"], listener_id=li["id"], protocol="HTTP", lb_algorithm="ROUND_ROBIN"
    )
    return {"lb": lb, "listener": li, "pool": pool}


def statuses(api, lb_id):
    tree = api.ok(api.get(f"/v2/lbaas/loadbalancers/{lb_id}/status"), 200)["statuses"]["loadbalancer"]
    return tree


def test_member_create_marks_parents_pending_then_active(api, tree):
    lb, li, pool = tree["lb"], tree["listener"], tree["pool"]
    api.reconciler.providers["noop"].delay = 0.5  # keep the change in flight while we look
    member = api.ok(
        api.post(f"/v2/lbaas/pools/{pool['id']}/members", {"member": {"address": "10.10.0.20", "protocol_port": 80}}),
        201,
    )["member"]
    assert member["provisioning_status"] == "PENDING_CREATE"
    assert member["operating_status"] == "NO_MONITOR"  # no health monitor on the pool
    assert member["weight"] == 1 and member["backup"] is False
    assert api.get(f"/v2/lbaas/pools/{pool['id']}").json()["pool"]["provisioning_status"] == "PENDING_UPDATE"
    assert api.get(f"/v2/lbaas/listeners/{li['id']}").json()["listener"]["provisioning_status"] == "PENDING_UPDATE"
    assert api.get(f"/v2/lbaas/loadbalancers/{lb['id']}").json()["loadbalancer"]["provisioning_status"] == (
        "PENDING_UPDATE"
    )
    api.reconciler.providers["noop"].delay = 0
    api.wait_lb(lb["id"])
    tree_now = statuses(api, lb["id"])
    assert tree_now["listeners"][0]["provisioning_status"] == "ACTIVE"
    assert tree_now["listeners"][0]["pools"][0]["members"][0]["id"] == member["id"]
    assert api.get(f"/v2/lbaas/listeners/{li['id']}").json()["listener"]["default_pool_id"] == pool["id"]


def test_listener_defaults_and_reset_with_null(api, tree):
    li = tree["listener"]
    assert li["connection_limit"] == -1 and li["timeout_client_data"] == 50000 and li["insert_headers"] == {}
    body = {"listener": {"connection_limit": 100, "insert_headers": {"X-Forwarded-For": "true"}}}
    api.ok(api.put(f"/v2/lbaas/listeners/{li['id']}", body), 200)
    api.wait_lb(tree["lb"]["id"])
    reset = api.ok(api.put(f"/v2/lbaas/listeners/{li['id']}", {"listener": {"connection_limit": None}}), 200)
    assert reset["listener"]["connection_limit"] == -1
    assert reset["listener"]["insert_headers"] == {"X-Forwarded-For": "true"}
    api.wait_lb(tree["lb"]["id"])


def test_duplicate_listener_port_is_409(api, tree):
    lb = tree["lb"]
    r = api.post(
        "/v2/lbaas/listeners", {"listener": {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 80}}
    )
    assert r.status_code == 409
    assert "already using protocol TCP and protocol_port 80" in r.json()["faultstring"]
    ok = api.post(
        "/v2/lbaas/listeners", {"listener": {"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 80}}
    )
    assert ok.status_code == 201  # a different transport protocol may share the port
    api.wait_lb(lb["id"])


def test_health_monitor_turns_members_offline_and_delete_removes_it(api, tree):
    lb, pool = tree["lb"], tree["pool"]
    api.create(f"/v2/lbaas/pools/{pool['id']}/members", "member", lb["id"], address="10.10.0.21", protocol_port=80)
    hm = api.create(
        "/v2/lbaas/healthmonitors",
        "healthmonitor",
        lb["id"],
        pool_id=pool["id"],
        type="HTTP",
        delay=3,
        timeout=2,
        max_retries=3,
        expected_codes="200-204",
        http_version=1.1,
        domain_name="app.example.com",
    )
    assert (hm["http_method"], hm["url_path"], hm["max_retries_down"]) == ("GET", "/", 3)
    members = api.ok(api.get(f"/v2/lbaas/pools/{pool['id']}/members"), 200)["members"]
    assert members[0]["operating_status"] == "OFFLINE"
    assert api.get(f"/v2/lbaas/pools/{pool['id']}").json()["pool"]["healthmonitor_id"] == hm["id"]
    assert api.delete(f"/v2/lbaas/healthmonitors/{hm['id']}").status_code == 204
    api.wait_lb(lb["id"])
    assert api.get(f"/v2/lbaas/healthmonitors/{hm['id']}").status_code == 404


def test_pool_delete_clears_the_listener_default(api, tree):
    lb, li, pool = tree["lb"], tree["listener"], tree["pool"]
    assert api.delete(f"/v2/lbaas/pools/{pool['id']}").status_code == 204
    api.wait_lb(lb["id"])
    assert api.get(f"/v2/lbaas/listeners/{li['id']}").json()["listener"]["default_pool_id"] is None


def test_l7_policy_positions_are_compacted(api, tree):
    lb, li = tree["lb"], tree["listener"]
    url = "http://example.com/"
    ids = [
        api.create(
            "/v2/lbaas/l7policies",
            "l7policy",
            lb["id"],
            listener_id=li["id"],
            action="REDIRECT_TO_URL",
            redirect_url=url,
        )["id"]
        for _ in range(3)
    ]
    first = api.create("/v2/lbaas/l7policies", "l7policy", lb["id"], listener_id=li["id"], action="REJECT", position=1)
    policies = api.ok(api.get(f"/v2/lbaas/l7policies?listener_id={li['id']}&sort=position"), 200)["l7policies"]
    assert [p["id"] for p in policies] == [first["id"], *ids]
    assert [p["position"] for p in policies] == [1, 2, 3, 4]
    assert policies[1]["redirect_http_code"] == 302
    api.delete(f"/v2/lbaas/l7policies/{ids[0]}")
    api.wait_lb(lb["id"])
    moved = api.ok(api.put(f"/v2/lbaas/l7policies/{ids[2]}", {"l7policy": {"position": 1}}), 200)["l7policy"]
    assert moved["position"] == 1
    api.wait_lb(lb["id"])
    positions = {p["id"]: p["position"] for p in api.get("/v2/lbaas/l7policies").json()["l7policies"]}
    assert positions == {ids[2]: 1, first["id"]: 2, ids[1]: 3}


def test_l7_rule_crud_and_action_change(api, tree):
    lb, li, pool = tree["lb"], tree["listener"], tree["pool"]
    pol = api.create(
        "/v2/lbaas/l7policies",
        "l7policy",
        lb["id"],
        listener_id=li["id"],
        action="REDIRECT_TO_POOL",
        redirect_pool_id=pool["id"],
    )
    base = f"/v2/lbaas/l7policies/{pol['id']}/rules"
    rule = api.create(
        base, "rule", lb["id"], type="HEADER", key="X-Env", compare_type="EQUAL_TO", value="prod", invert=True
    )
    assert rule["invert"] is True and rule["key"] == "X-Env"
    updated = api.ok(api.put(f"{base}/{rule['id']}", {"rule": {"value": "staging"}}), 200)["rule"]
    assert updated["value"] == "staging" and updated["provisioning_status"] == "PENDING_UPDATE"
    api.wait_lb(lb["id"])
    assert [r["id"] for r in api.ok(api.get(base), 200)["rules"]] == [rule["id"]]
    changed = api.ok(
        api.put(
            f"/v2/lbaas/l7policies/{pol['id']}",
            {"l7policy": {"action": "REDIRECT_PREFIX", "redirect_prefix": "https://a.example"}},
        ),
        200,
    )["l7policy"]
    assert changed["redirect_pool_id"] is None and changed["redirect_http_code"] == 302
    api.wait_lb(lb["id"])
    in_use = api.delete(f"/v2/lbaas/pools/{pool['id']}")
    assert in_use.status_code == 204  # no longer referenced by the policy
    api.wait_lb(lb["id"])


def test_member_batch_update_replaces_the_set(api, tree):
    lb, pool = tree["lb"], tree["pool"]
    base = f"/v2/lbaas/pools/{pool['id']}/members"
    keep = api.create(base, "member", lb["id"], address="10.10.0.30", protocol_port=80, weight=5)
    api.create(base, "member", lb["id"], address="10.10.0.31", protocol_port=80)
    batch = {
        "members": [
            {"address": "10.10.0.30", "protocol_port": 80, "weight": 9},
            {"address": "10.10.0.32", "protocol_port": 80},
        ]
    }
    r = api.put(base, batch)
    assert r.status_code == 202 and not r.content
    api.wait_lb(lb["id"])
    members = {mb["address"]: mb for mb in api.ok(api.get(base), 200)["members"]}
    assert set(members) == {"10.10.0.30", "10.10.0.32"}
    assert members["10.10.0.30"]["id"] == keep["id"] and members["10.10.0.30"]["weight"] == 9
    assert all(mb["provisioning_status"] == "ACTIVE" for mb in members.values())
    additive = {"members": [{"address": "10.10.0.33", "protocol_port": 80}]}
    assert api.put(f"{base}?additive_only=true", additive).status_code == 202
    api.wait_lb(lb["id"])
    assert len(api.ok(api.get(base), 200)["members"]) == 3


def test_tls_listener_gets_tls_defaults(api):
    lb = api.create_lb()
    body = {
        "loadbalancer_id": lb["id"],
        "protocol": "TERMINATED_HTTPS",
        "protocol_port": 443,
        "default_tls_container_ref": "http://127.0.0.1:9311/v1/containers/x",
    }
    li = api.create("/v2/lbaas/listeners", "listener", lb["id"], **body)
    assert li["tls_versions"] == ["TLSv1.2", "TLSv1.3"] and li["alpn_protocols"] == ["h2", "http/1.1", "http/1.0"]
    assert li["client_authentication"] == "NONE"


def test_a_trailing_newline_never_slips_past_a_pattern(api, tree):
    """Python's `$` also matches before a final newline; tenant values end up in HAProxy config lines."""
    lb, li, pool = tree["lb"], tree["listener"], tree["pool"]
    monitor = {"pool_id": pool["id"], "type": "HTTP", "delay": 1, "timeout": 1, "max_retries": 1}
    r = api.post("/v2/lbaas/healthmonitors", {"healthmonitor": {**monitor, "expected_codes": "200\n"}})
    assert r.status_code == 400 and "expected_codes" in r.json()["faultstring"]
    pol = api.create("/v2/lbaas/l7policies", "l7policy", lb["id"], listener_id=li["id"], action="REJECT")
    rule = {"type": "HEADER", "key": "X-Env\n", "compare_type": "EQUAL_TO", "value": "prod"}
    r = api.post(f"/v2/lbaas/l7policies/{pol['id']}/rules", {"rule": rule})
    assert r.status_code == 400 and "Invalid header name" in r.json()["faultstring"]


def test_monitors_and_l7_objects_go_online_when_applied_and_offline_when_disabled(api, tree):
    """Set on activation, not measured (Octavia's amphora flows; tempest expects it of the noop provider too)."""
    lb, li, pool = tree["lb"], tree["listener"], tree["pool"]
    hm = api.create(
        "/v2/lbaas/healthmonitors", "healthmonitor", lb["id"],
        pool_id=pool["id"], type="HTTP", delay=5, timeout=3, max_retries=2,
    )  # fmt: skip
    on = api.create("/v2/lbaas/l7policies", "l7policy", lb["id"], listener_id=li["id"], action="REJECT")
    off = api.create(
        "/v2/lbaas/l7policies", "l7policy", lb["id"], listener_id=li["id"], action="REJECT", admin_state_up=False
    )
    rule = api.create(
        f"/v2/lbaas/l7policies/{on['id']}/rules", "rule", lb["id"], type="PATH", compare_type="STARTS_WITH", value="/a"
    )
    assert hm["operating_status"] == on["operating_status"] == "OFFLINE"  # as created, until applied
    got = {
        "hm": api.get(f"/v2/lbaas/healthmonitors/{hm['id']}").json()["healthmonitor"]["operating_status"],
        "on": api.get(f"/v2/lbaas/l7policies/{on['id']}").json()["l7policy"]["operating_status"],
        "off": api.get(f"/v2/lbaas/l7policies/{off['id']}").json()["l7policy"]["operating_status"],
        "rule": api.get(f"/v2/lbaas/l7policies/{on['id']}/rules/{rule['id']}").json()["rule"]["operating_status"],
    }
    assert got == {"hm": "ONLINE", "on": "ONLINE", "off": "OFFLINE", "rule": "ONLINE"}
    api.ok(api.put(f"/v2/lbaas/healthmonitors/{hm['id']}", {"healthmonitor": {"admin_state_up": False}}), 200)
    api.wait_lb(lb["id"])
    assert api.get(f"/v2/lbaas/healthmonitors/{hm['id']}").json()["healthmonitor"]["operating_status"] == "OFFLINE"
