"""Differential test: the same requests to the real Octavia API (19.0.0, noop provider, noauth; started by
scripts/octavia_peer.py) and to `quadriga serve --provider noop`, compared answer by answer: status codes,
root keys, field names and values, fault strings.

What necessarily differs is normalized away: ids (replaced by the name of the step that created them),
timestamps' values, VIP addresses, ports and networks (each side's network layer picks them) and provider
names. Every other difference must be named in ALLOWED, with its reason, and listed in docs/conformance.md;
the test fails on any new difference and on an ALLOWED entry that no longer occurs. The peer is started by
the test itself (the first run installs it, about a minute); if it cannot be installed or started the test
fails with the reason.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.octavia_peer import OctaviaPeer
from tests.support.server import QuadrigaServer

PROJECT = "e6c2fd3f4c6b4b9b8f3b4f9d2d5a1c01"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Chosen by each side's network layer (Octavia's noop network driver answers 198.0.2.5 and a random port).
NETWORK_FIELDS = {"vip_address", "vip_port_id", "vip_network_id"}
TIMESTAMPS = {"created_at", "updated_at"}
# WSME lists an enum's values from a set: their order changes with each process's hash seed.
ONE_OF_RE = re.compile(r"(Value should be one of: )([A-Z0-9_, -]+)$")
UNKNOWN_ID = "00000000-0000-4000-8000-0000000000aa"

# (step, field path) patterns (`*` matches anything) -> why it differs; docs/conformance.md ("The differential
# test against Octavia") lists the same rows.
ALLOWED: dict[tuple[str, str], str] = {
    ("provider*", "*"): "each server lists its own providers (noop_driver / amphora and noop) and their capabilities",
    ("flavor-unknown-profile", "*"): "Octavia answers 500 with the database's IntegrityError; quadriga a 404 fault",
    ("lb-bad-admin", "faultstring"): "Octavia quotes the whole body under its argument name; quadriga names the "
    "field and its value",
    ("lb-status-tree", "statuses.loadbalancer.listeners[0].pools[0].members[*].operating_status"): "a new health "
    "monitor sets its pool's members OFFLINE until the first health report; Octavia's noop driver leaves NO_MONITOR",
}


@dataclass(frozen=True)
class Step:
    name: str
    method: str
    path: str
    body: Any = None
    save: str | None = None  # remember the created object's id under this name
    wait: bool = False  # wait until the LB is ACTIVE again (or gone) before the next step


def steps() -> list[Step]:
    lb_body = {"loadbalancer": {"name": "lb1", "description": "d", "vip_subnet_id": "{subnet}", "tags": ["a"]}}
    return [
        # -- providers, flavors, quotas ---------------------------------------------------------------
        Step("providers", "GET", "/v2/lbaas/providers"),
        Step("provider-flavor-caps", "GET", "/v2/lbaas/providers/{provider}/flavor_capabilities"),
        Step("provider-unknown", "GET", "/v2/lbaas/providers/nope/flavor_capabilities"),
        Step(
            "flavorprofile-create",
            "POST",
            "/v2/lbaas/flavorprofiles",
            {"flavorprofile": {"name": "fp1", "provider_name": "{provider}", "flavor_data": "{}"}},
            save="fp",
        ),
        Step("flavorprofile-get", "GET", "/v2/lbaas/flavorprofiles/{fp}"),
        Step(
            "flavorprofile-bad-json",
            "POST",
            "/v2/lbaas/flavorprofiles",
            {"flavorprofile": {"name": "fp2", "provider_name": "{provider}", "flavor_data": "{nope"}},
        ),
        Step(
            "flavor-create",
            "POST",
            "/v2/lbaas/flavors",
            {"flavor": {"name": "f1", "description": "fd", "flavor_profile_id": "{fp}"}},
            save="flavor",
        ),
        Step("flavor-get", "GET", "/v2/lbaas/flavors/{flavor}"),
        Step("flavor-list", "GET", "/v2/lbaas/flavors"),
        Step("flavor-update", "PUT", "/v2/lbaas/flavors/{flavor}", {"flavor": {"description": "fd2"}}),
        Step(
            "flavor-duplicate",
            "POST",
            "/v2/lbaas/flavors",
            {"flavor": {"name": "f1", "flavor_profile_id": "{fp}"}},
        ),
        Step(
            "flavor-unknown-profile",
            "POST",
            "/v2/lbaas/flavors",
            {"flavor": {"name": "f2", "flavor_profile_id": UNKNOWN_ID}},
        ),
        Step("flavorprofile-delete-in-use", "DELETE", "/v2/lbaas/flavorprofiles/{fp}"),
        Step("flavor-delete", "DELETE", "/v2/lbaas/flavors/{flavor}"),
        Step("flavor-get-deleted", "GET", "/v2/lbaas/flavors/{flavor}"),
        Step("flavorprofile-delete", "DELETE", "/v2/lbaas/flavorprofiles/{fp}"),
        Step("quota-defaults", "GET", "/v2/lbaas/quotas/defaults"),
        Step("quota-get", "GET", "/v2/lbaas/quotas/{project}"),
        Step("quota-set", "PUT", "/v2/lbaas/quotas/{project}", {"quota": {"loadbalancer": 10, "member": 50}}),
        Step("quota-get-set", "GET", "/v2/lbaas/quotas/{project}"),
        Step("quota-bad", "PUT", "/v2/lbaas/quotas/{project}", {"quota": {"loadbalancer": -5}}),
        Step("quota-reset", "DELETE", "/v2/lbaas/quotas/{project}"),
        # -- load balancer ----------------------------------------------------------------------------
        Step("lb-create", "POST", "/v2/lbaas/loadbalancers", lb_body, save="lb", wait=True),
        Step("lb-get", "GET", "/v2/lbaas/loadbalancers/{lb}"),
        Step("lb-list", "GET", "/v2/lbaas/loadbalancers"),
        Step("lb-list-filter", "GET", "/v2/lbaas/loadbalancers?name=lb1"),
        Step("lb-list-fields", "GET", "/v2/lbaas/loadbalancers?fields=id&fields=name"),
        Step("lb-update", "PUT", "/v2/lbaas/loadbalancers/{lb}", {"loadbalancer": {"name": "lb1b"}}, wait=True),
        Step("lb-get-unknown", "GET", f"/v2/lbaas/loadbalancers/{UNKNOWN_ID}"),
        Step("lb-bad-subnet", "POST", "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": "nope"}}),
        Step("lb-no-vip", "POST", "/v2/lbaas/loadbalancers", {"loadbalancer": {"name": "x"}}),
        Step("lb-no-root", "POST", "/v2/lbaas/loadbalancers", {"name": "x"}),
        Step("lb-bad-admin", "PUT", "/v2/lbaas/loadbalancers/{lb}", {"loadbalancer": {"admin_state_up": "maybe"}}),
        # -- listener, pool, members, health monitor, L7 ------------------------------------------------
        Step(
            "listener-create",
            "POST",
            "/v2/lbaas/listeners",
            {"listener": {"name": "l1", "loadbalancer_id": "{lb}", "protocol": "HTTP", "protocol_port": 80}},
            save="listener",
            wait=True,
        ),
        Step("listener-get", "GET", "/v2/lbaas/listeners/{listener}"),
        Step(
            "listener-unknown-attribute",
            "POST",
            "/v2/lbaas/listeners",
            {"listener": {"loadbalancer_id": "{lb}", "protocol": "HTTP", "protocol_port": 82, "bogus": 1}},
        ),
        Step(
            "listener-duplicate-port",
            "POST",
            "/v2/lbaas/listeners",
            {"listener": {"loadbalancer_id": "{lb}", "protocol": "HTTP", "protocol_port": 80}},
        ),
        Step(
            "listener-bad-port",
            "POST",
            "/v2/lbaas/listeners",
            {"listener": {"loadbalancer_id": "{lb}", "protocol": "HTTP", "protocol_port": 70000}},
        ),
        Step(
            "listener-unknown-lb",
            "POST",
            "/v2/lbaas/listeners",
            {"listener": {"loadbalancer_id": UNKNOWN_ID, "protocol": "HTTP", "protocol_port": 81}},
        ),
        Step(
            "listener-update",
            "PUT",
            "/v2/lbaas/listeners/{listener}",
            {"listener": {"connection_limit": 100, "timeout_client_data": 20000}},
            wait=True,
        ),
        Step(
            "pool-create",
            "POST",
            "/v2/lbaas/pools",
            {"pool": {"name": "p1", "listener_id": "{listener}", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}},
            save="pool",
            wait=True,
        ),
        Step("pool-get", "GET", "/v2/lbaas/pools/{pool}"),
        Step(
            "pool-bad-algorithm",
            "POST",
            "/v2/lbaas/pools",
            {"pool": {"loadbalancer_id": "{lb}", "protocol": "HTTP", "lb_algorithm": "RANDOM"}},
        ),
        Step(
            "pool-update",
            "PUT",
            "/v2/lbaas/pools/{pool}",
            {"pool": {"session_persistence": {"type": "HTTP_COOKIE"}}},
            wait=True,
        ),
        Step(
            "member-create",
            "POST",
            "/v2/lbaas/pools/{pool}/members",
            {"member": {"name": "m1", "address": "10.0.0.10", "protocol_port": 8080, "weight": 3}},
            save="member",
            wait=True,
        ),
        Step("member-get", "GET", "/v2/lbaas/pools/{pool}/members/{member}"),
        Step("member-list", "GET", "/v2/lbaas/pools/{pool}/members"),
        Step(
            "member-duplicate",
            "POST",
            "/v2/lbaas/pools/{pool}/members",
            {"member": {"address": "10.0.0.10", "protocol_port": 8080}},
        ),
        Step(
            "member-bad-address",
            "POST",
            "/v2/lbaas/pools/{pool}/members",
            {"member": {"address": "10.0.0.300", "protocol_port": 8080}},
        ),
        Step("member-update", "PUT", "/v2/lbaas/pools/{pool}/members/{member}", {"member": {"weight": 7}}, wait=True),
        Step(
            "member-batch",
            "PUT",
            "/v2/lbaas/pools/{pool}/members",
            {
                "members": [
                    {"address": "10.0.0.10", "protocol_port": 8080, "weight": 5},
                    {"address": "10.0.0.11", "protocol_port": 8080, "name": "m2"},
                ]
            },
            wait=True,
        ),
        Step("member-list-after-batch", "GET", "/v2/lbaas/pools/{pool}/members"),
        Step(
            "hm-create",
            "POST",
            "/v2/lbaas/healthmonitors",
            {
                "healthmonitor": {
                    "pool_id": "{pool}",
                    "type": "HTTP",
                    "delay": 5,
                    "timeout": 3,
                    "max_retries": 2,
                    "url_path": "/health",
                }
            },
            save="hm",
            wait=True,
        ),
        Step("hm-get", "GET", "/v2/lbaas/healthmonitors/{hm}"),
        Step(
            "hm-second",
            "POST",
            "/v2/lbaas/healthmonitors",
            {"healthmonitor": {"pool_id": "{pool}", "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 2}},
        ),
        Step("hm-update", "PUT", "/v2/lbaas/healthmonitors/{hm}", {"healthmonitor": {"delay": 10}}, wait=True),
        Step(
            "l7policy-create",
            "POST",
            "/v2/lbaas/l7policies",
            {
                "l7policy": {
                    "listener_id": "{listener}",
                    "action": "REDIRECT_TO_URL",
                    "redirect_url": "http://x.example/",
                }
            },
            save="l7policy",
            wait=True,
        ),
        Step("l7policy-get", "GET", "/v2/lbaas/l7policies/{l7policy}"),
        Step(
            "l7policy-bad-action",
            "POST",
            "/v2/lbaas/l7policies",
            {"l7policy": {"listener_id": "{listener}", "action": "REDIRECT_TO_POOL"}},
        ),
        Step(
            "l7rule-create",
            "POST",
            "/v2/lbaas/l7policies/{l7policy}/rules",
            {"rule": {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"}},
            save="l7rule",
            wait=True,
        ),
        Step("l7rule-get", "GET", "/v2/lbaas/l7policies/{l7policy}/rules/{l7rule}"),
        Step(
            "l7rule-bad-type",
            "POST",
            "/v2/lbaas/l7policies/{l7policy}/rules",
            {"rule": {"type": "NOPE", "compare_type": "STARTS_WITH", "value": "/api"}},
        ),
        Step(
            "l7rule-update",
            "PUT",
            "/v2/lbaas/l7policies/{l7policy}/rules/{l7rule}",
            {"rule": {"value": "/v2"}},
            wait=True,
        ),
        Step("lb-status-tree", "GET", "/v2/lbaas/loadbalancers/{lb}/status"),
        Step("lb-get-full", "GET", "/v2/lbaas/loadbalancers/{lb}"),
        Step("lb-delete-not-empty", "DELETE", "/v2/lbaas/loadbalancers/{lb}"),
        # -- deletes ------------------------------------------------------------------------------------
        Step("l7rule-delete", "DELETE", "/v2/lbaas/l7policies/{l7policy}/rules/{l7rule}", wait=True),
        Step("l7rule-get-deleted", "GET", "/v2/lbaas/l7policies/{l7policy}/rules/{l7rule}"),
        Step("l7policy-delete", "DELETE", "/v2/lbaas/l7policies/{l7policy}", wait=True),
        Step("hm-delete", "DELETE", "/v2/lbaas/healthmonitors/{hm}", wait=True),
        Step("hm-get-deleted", "GET", "/v2/lbaas/healthmonitors/{hm}"),
        Step("member-delete", "DELETE", "/v2/lbaas/pools/{pool}/members/{member}", wait=True),
        Step("member-get-deleted", "GET", "/v2/lbaas/pools/{pool}/members/{member}"),
        Step("pool-delete", "DELETE", "/v2/lbaas/pools/{pool}", wait=True),
        Step("listener-delete", "DELETE", "/v2/lbaas/listeners/{listener}", wait=True),
        Step("listener-get-deleted", "GET", "/v2/lbaas/listeners/{listener}"),
        Step(
            "listener-again",
            "POST",
            "/v2/lbaas/listeners",
            {"listener": {"loadbalancer_id": "{lb}", "protocol": "TCP", "protocol_port": 443}},
            save="listener2",
            wait=True,
        ),
        Step("lb-delete-cascade", "DELETE", "/v2/lbaas/loadbalancers/{lb}?cascade=true", wait=True),
        Step("lb-get-deleted", "GET", "/v2/lbaas/loadbalancers/{lb}"),
        Step("lb-list-after-delete", "GET", "/v2/lbaas/loadbalancers"),
    ]


class Side:
    """One server under test: its client, the ids its answers created and its provider's name."""

    def __init__(self, name: str, url: str, provider: str, subnet: str) -> None:
        self.name = name
        self.client = httpx.Client(base_url=url, headers={"X-Project-Id": PROJECT}, timeout=30, trust_env=False)
        self.values = {"provider": provider, "subnet": subnet, "project": PROJECT}
        self.symbols: dict[str, str] = {}  # id -> step-given name

    def fill(self, template: Any) -> Any:
        if isinstance(template, str):
            return re.sub(r"\{(\w+)\}", lambda m: self.values.get(m.group(1), m.group(0)), template)
        if isinstance(template, list):
            return [self.fill(x) for x in template]
        if isinstance(template, dict):
            return {k: self.fill(v) for k, v in template.items()}
        return template

    def run(self, step: Step) -> tuple[int, Any]:
        resp = self.client.request(step.method, self.fill(step.path), json=self.fill(step.body))
        body: Any = None
        if resp.content:
            try:
                body = resp.json()
            except ValueError:
                body = {"<non-json>": resp.text[:200]}
        if step.save and resp.status_code in (200, 201) and isinstance(body, dict) and len(body) == 1:
            created = next(iter(body.values()))
            if isinstance(created, dict) and "id" in created:
                self.values[step.save] = created["id"]
                self.symbols[created["id"]] = "{" + step.save + "}"
        if step.wait and 200 <= resp.status_code < 300:
            self.wait_lb()
        return resp.status_code, body

    def wait_lb(self, limit: float = 30.0) -> None:
        """Until the LB is ACTIVE (or gone, after its delete): both servers settle asynchronously."""
        deadline = time.monotonic() + limit
        status = "?"
        while time.monotonic() < deadline:
            resp = self.client.get(f"/v2/lbaas/loadbalancers/{self.values['lb']}")
            if resp.status_code == 404:
                return
            status = resp.json()["loadbalancer"]["provisioning_status"]
            if status in ("ACTIVE", "ERROR"):
                return
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: LB still {status} after {limit} s")

    def normalize(self, value: Any, key: str = "") -> Any:
        if key in TIMESTAMPS and value is not None:
            return "<timestamp>"
        if key in NETWORK_FIELDS:
            return "<network>"
        if key in ("provider", "provider_name") and value == self.values["provider"]:
            return "<provider>"
        if isinstance(value, dict):
            return {k: self.normalize(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.normalize(v) for v in value]
        if isinstance(value, str):
            if key == "faultstring":
                value = ONE_OF_RE.sub(lambda m: m.group(1) + ", ".join(sorted(m.group(2).split(", "))), value)
                value = value.replace(self.values["provider"], "<provider>")
            return UUID_RE.sub(lambda m: self.symbols.get(m.group(0), "<uuid>"), value)
        return value


def differences(step: str, a: Any, b: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """(step, field path, description) for every place where Octavia's answer `a` and quadriga's `b` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            sub = f"{path}.{k}" if path else k
            if k not in b:
                yield step, sub, f"only Octavia has it: {a[k]!r}"[:300]
            elif k not in a:
                yield step, sub, f"only quadriga has it: {b[k]!r}"[:300]
            else:
                yield from differences(step, a[k], b[k], sub)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from differences(step, x, y, f"{path}[{i}]")
    elif a != b:
        yield step, path or "<body>", f"Octavia {a!r} / quadriga {b!r}"[:400]


@pytest.fixture(scope="module")
def sides() -> Iterator[tuple[Side, Side]]:
    peer = OctaviaPeer()
    server = QuadrigaServer(provider="noop")
    failures: list[BaseException] = []

    def start_peer() -> None:
        try:
            peer.start()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=start_peer)  # the peer takes ~30 s to import; start both at once
    thread.start()
    try:
        server.start()
        thread.join(600)
        if failures:
            raise failures[0]
        net = httpx.Client(base_url=server.net_url, trust_env=False, timeout=30)
        network = net.post("/v2.0/networks", json={"network": {"name": "diff"}}).json()["network"]["id"]
        subnet = net.post(
            "/v2.0/subnets",
            json={"subnet": {"network_id": network, "cidr": "10.77.0.0/24", "ip_version": 4, "name": "diff"}},
        ).json()["subnet"]["id"]
        net.close()
        # Octavia's noop network driver accepts any subnet id: both sides get quadriga's.
        yield Side("octavia", peer.lb_url, "noop_driver", subnet), Side("quadriga", server.lb_url, "noop", subnet)
    finally:
        thread.join(600)
        peer.stop()
        server.stop()


def test_same_answers_as_octavia(sides: tuple[Side, Side]) -> None:
    octavia, quadriga = sides
    found: dict[tuple[str, str], str] = {}
    for step in steps():
        code_a, body_a = octavia.run(step)
        code_b, body_b = quadriga.run(step)
        if code_a != code_b:
            found[(step.name, "<status>")] = f"Octavia {code_a} / quadriga {code_b}"
        a, b = octavia.normalize(body_a), quadriga.normalize(body_b)
        for name, path, what in differences(step.name, a, b):
            found[(name, path)] = what
    allowed_hits = {key for key in found if any(_matches(key, pattern) for pattern in ALLOWED)}
    new = {key: what for key, what in found.items() if key not in allowed_hits}
    stale = [p for p in ALLOWED if not any(_matches(key, p) for key in found)]
    report = "\n".join(f"  {s} {p}: {w}" for (s, p), w in sorted(new.items()))
    assert not new, f"{len(new)} new difference(s) from Octavia (fix them or add them to ALLOWED):\n{report}"
    assert not stale, f"ALLOWED entries that no longer occur (remove them and their docs row): {stale}"


def _matches(key: tuple[str, str], pattern: tuple[str, str]) -> bool:
    return all(re.fullmatch(re.escape(p).replace(r"\*", ".*"), k) for k, p in zip(key, pattern, strict=True))


def test_unknown_ids_are_not_found_on_both(sides: tuple[Side, Side]) -> None:
    """A sanity check of the harness itself: a random id is a 404 with the same fault on both sides."""
    oid = str(uuid.uuid4())
    answers = [side.client.get(f"/v2/lbaas/pools/{oid}") for side in sides]
    assert [a.status_code for a in answers] == [404, 404]
    assert answers[0].json()["faultstring"] == answers[1].json()["faultstring"] == f"Pool {oid} not found."
