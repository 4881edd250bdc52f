"""What must hold once the faults stop: no object PENDING_*, the database holds exactly what the API
acknowledged, every ACTIVE load balancer has one engine, and its VIP serves exactly the members the database
says (weighted round robin: over two cycles each member answers about twice its weight), a disabled listener's port
is closed, and the VIPs of deleted load balancers answer no more."""

from __future__ import annotations

import collections
from typing import Any

import httpx

from tests.chaos import faults
from tests.chaos.model import LoadBalancerModel
from tests.chaos.scenario import Scenario
from tests.support.dataplane import check_target

VIP_TIMEOUT = 1.0
KINDS = ("loadbalancers", "listeners", "pools")


def problems(scn: Scenario) -> list[str]:
    """Everything that does not (yet) hold; empty when the system converged."""
    found = pending(scn)
    errors = [lb for lb in scn.read("/v2/lbaas/loadbalancers")["loadbalancers"] if lb["provisioning_status"] == "ERROR"]
    found += [f"load balancer {lb['name']} is ERROR: {lb.get('status_reason')}" for lb in errors]
    found += database(scn)
    if found:
        return found  # traffic is checked against a settled database only
    found += engines(scn)
    for lb in scn.model.live():
        found += traffic(lb)
    held = {lb.vip for lb in scn.model.live()}
    for lb in scn.model.deleted():
        if lb.vip not in held and (answer := vip_answer(lb.vip)) != "refused":
            found.append(f"deleted {lb.name}'s VIP {lb.vip} still answers: {answer}")
    return found


def pending(scn: Scenario) -> list[str]:
    rows: list[dict[str, Any]] = []
    for kind in KINDS:
        rows += [{**row, "kind": kind} for row in scn.read(f"/v2/lbaas/{kind}")[kind]]
    for pool in scn.read("/v2/lbaas/pools")["pools"]:
        rows += [{**m, "kind": "member"} for m in scn.read(f"/v2/lbaas/pools/{pool['id']}/members")["members"]]
    return [
        f"{row['kind']} {row['name']} ({row['id']}) is {row['provisioning_status']}"
        for row in rows
        if row["provisioning_status"].startswith("PENDING")
    ]


def database(scn: Scenario) -> list[str]:
    """Every acknowledged change is in the database, and nothing else is."""
    found = []
    listed = scn.read("/v2/lbaas/loadbalancers")["loadbalancers"]
    in_db = {lb["id"] for lb in listed if lb["provisioning_status"] != "DELETED"}
    live = {lb.id: lb for lb in scn.model.live()}
    for lb_id in sorted(in_db - set(live)):
        found.append(f"load balancer {lb_id} is in the database but was never acknowledged (or was deleted)")
    for lb_id, want in live.items():
        if lb_id not in in_db:
            found.append(f"acknowledged load balancer {want.describe()} is not in the database")
            continue
        got = scn.load(lb_id)
        if got != want:
            found.append(f"load balancer differs:\n  model    {want.describe()}\n  database {got.describe()}")
    return found


def engines(scn: Scenario) -> list[str]:
    """One ALLOCATED engine per live load balancer; on disk, exactly those engines."""
    found = []
    allocated: set[str] = set()
    for lb in scn.model.live():
        amps = scn.read("/v2/octavia/amphorae", params={"loadbalancer_id": lb.id})["amphorae"]
        mine = [a["id"] for a in amps if a["status"] == "ALLOCATED"]
        if len(mine) != 1:
            found.append(f"{lb.name} has engines {[(a['id'], a['status']) for a in amps]}, not one ALLOCATED")
        allocated.update(mine)
    on_disk = faults.engine_dirs(scn.state_dir)
    if on_disk != allocated:
        found.append(f"engine directories {sorted(on_disk)} are not the allocated engines {sorted(allocated)}")
    return found


def vip_answer(vip: str, port: int = 80) -> str:
    """The body of one answer through `vip` (a new connection), "HTTP <code>" for a non-200, or "refused"."""
    check_target(vip)
    try:
        with httpx.Client(timeout=VIP_TIMEOUT, trust_env=False) as client:
            response = client.get(f"http://{vip}:{port}/")
    except (httpx.ConnectError, httpx.ConnectTimeout):
        return "refused"
    except httpx.TransportError as exc:
        return f"broken ({type(exc).__name__})"
    return response.text.strip() if response.status_code == 200 else f"HTTP {response.status_code}"


def traffic(lb: LoadBalancerModel) -> list[str]:
    if not lb.listener_admin_state_up:
        answer = vip_answer(lb.vip)
        return [] if answer == "refused" else [f"{lb.name}: disabled listener answers {answer}"]
    weights = lb.serving()
    if not weights:
        answer = vip_answer(lb.vip)
        return [] if answer == "HTTP 503" else [f"{lb.name}: no member serves, yet the VIP answers {answer}"]
    want = {name: 2 * weight for name, weight in weights.items()}
    got = collections.Counter(vip_answer(lb.vip) for _ in range(sum(want.values())))
    # A window that does not start at a cycle's start may shift one answer between members.
    close = set(got) == set(want) and all(abs(got[name] - count) <= 1 for name, count in want.items())
    return [] if close else [f"{lb.name}: VIP {lb.vip} served {dict(got)}, the database says about {want}"]
