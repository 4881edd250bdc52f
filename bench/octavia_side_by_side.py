#!/usr/bin/env python3
"""The real Octavia API and quadriga under the same load in the same run (issue 6, part 4b).

Both run on this machine: Octavia 19.0.0 (gunicorn, 2 sync workers, SQLite, noop provider; started by
scripts/octavia_peer.py) and `quadriga serve --provider noop --provider-delay 0` (SQLite). Each gets the
same sequence from bench/api_bench.py's Bench, one server after the other (so they never compete for the
2 cores):

  create     POST loadbalancer, 200 sequential then 800 with 8 clients (1,000 LBs)
  get one    GET /v2/lbaas/loadbalancers/{id}, random ids
  page       GET /v2/lbaas/loadbalancers?limit=50 (the first 50 of 1,000)
  batch      PUT /v2/lbaas/pools/{id}/members with 200 members (100 updated, 100 deleted, 100 created)

sequentially and with 8 concurrent clients, a new connection per request (gunicorn's sync workers close
every connection). It prints requests/s and p50/p95 latency per server and the ratios quadriga / Octavia
(target: ≥ 2× the requests/s, ≤ 0.5× the p50).

Octavia's noop provider never reports a status; the peer's activator does (it reports ACTIVE through the
driver agent's socket). It is paused while creates and GETs are measured, so Octavia's figures carry none
of its cost, and runs during the batch updates, which need the LB ACTIVE again between two batches.

Usage: python bench/octavia_side_by_side.py [--quick] [--create-only] [--out FILE] [--wait-quiet S] [--time-limit S]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import api_bench  # bench/api_bench.py (the script's directory is on sys.path)
from api_bench import Bench, Plan, fmt, run_guarded

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.support.octavia_peer import OctaviaPeer  # noqa: E402
from tests.support.server import QuadrigaServer  # noqa: E402

FULL = Plan(200, 800, get_one=(500, 500), get_page=(300, 300), get_all=(0, 0), batch=(10, 16))
QUICK = Plan(20, 80, get_one=(50, 50), get_page=(30, 30), get_all=(0, 0), batch=(3, 8))
SCENARIOS = ["post", "get_one", "get_page", "batch_http"]  # "→ ACTIVE" after a batch times the activator, not Octavia


class OctaviaBench(Bench):
    """Bench against the peer: any subnet id will do (its noop network driver), and the activator runs only
    when the sequence needs objects ACTIVE."""

    def __init__(self, peer: OctaviaPeer, subnet: str, *args: Any) -> None:
        super().__init__(peer, *args)
        self.peer = peer
        self.subnet = subnet
        peer.pause_activator(True)

    def create_subnet(self) -> str:
        return self.subnet

    def wait_all_active(self, expected: int, limit: float = 300) -> float:
        self.peer.pause_activator(False)
        try:
            return super().wait_all_active(expected, limit)
        finally:
            self.peer.pause_activator(True)

    def batch(self, lb_ids: list[str]) -> None:
        self.peer.pause_activator(False)
        super().batch(lb_ids)


class _PeerTarget(OctaviaPeer):
    pid = None  # no per-process CPU accounting: Octavia is several processes


def run_one(name: str, make_bench: Any, log: Any, create_only: bool) -> dict[str, Any]:
    bench = make_bench()
    bench.create_only = create_only
    failure = run_guarded(bench, name, log)
    summaries = [s for s in (r.summary() for r in bench.results) if s["completed"]]
    return {"server": name, "failure": failure, "notes": bench.notes, "scenarios": summaries}


def table(runs: dict[str, dict[str, Any]]) -> str:
    def by_key(run: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
        return {(s["scenario"], s["clients"]): s for s in run["scenarios"]}

    o, q = by_key(runs["octavia"]), by_key(runs["quadriga"])
    lines = [
        "| scenario | clients | Octavia rps | quadriga rps | rps ratio | Octavia p50 ms | quadriga p50 ms "
        "| p50 ratio | Octavia p95 ms | quadriga p95 ms | errors (O/q) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        for clients in (1, 8):
            a, b = o.get((scenario, clients)), q.get((scenario, clients))
            if not a or not b:
                continue
            rps = b["rps"] / a["rps"] if a["rps"] and b["rps"] else None
            p50 = b["p50_ms"] / a["p50_ms"] if a["p50_ms"] and b["p50_ms"] else None
            lines.append(
                f"| {a['title']} | {clients} | {fmt(a['rps'])} | {fmt(b['rps'])} | {fmt(rps)}× | {fmt(a['p50_ms'])} | "
                f"{fmt(b['p50_ms'])} | {fmt(p50, 2)}× | {fmt(a['p95_ms'])} | {fmt(b['p95_ms'])} | "
                f"{a['errors']}/{b['errors']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 LBs and small counts (smoke run)")
    ap.add_argument("--out", default="bench-results-side-by-side.json", help="JSON file with the raw numbers")
    ap.add_argument("--time-limit", type=float, default=180.0, help="hard limit per scenario, seconds")
    ap.add_argument("--create-only", action="store_true", help="only the POST scenarios (the 1,000 creates)")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S", help="wait up to S s for a quiet machine")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    command = "python bench/octavia_side_by_side.py " + " ".join(sys.argv[1:] if argv is None else argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    info = api_bench.machine_info()
    started = dt.datetime.now(dt.UTC)
    api_bench.print_machine(info)
    print(f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}\n- Command: {command}\n- Plan: {plan}\n", flush=True)
    runs: dict[str, dict[str, Any]] = {}
    log("== starting the Octavia peer and quadriga serve")
    with _PeerTarget() as peer, QuadrigaServer(provider="noop", extra_args=["--provider-delay", "0"]) as server:
        subnet = Bench(server, "new", plan, args.time_limit, log).create_subnet()
        for name in ("octavia", "quadriga"):
            if args.wait_quiet > 0:
                api_bench.wait_until_quiet(args.wait_quiet, 0.3, log)
            log(f"== {name}")
            if name == "octavia":
                make = lambda: OctaviaBench(peer, subnet, "new", plan, args.time_limit, log)  # noqa: E731
            else:
                make = lambda: Bench(server, "new", plan, args.time_limit, log)  # noqa: E731
            runs[name] = run_one(name, make, log, args.create_only)
    print(table(runs) + "\n")
    for run in runs.values():
        for note in run["notes"]:
            print(f"- {run['server']}: {note}")
        if run["failure"]:
            print(f"- {run['server']}: STOPPED EARLY: {run['failure']}")
        for s in run["scenarios"]:
            for e in s["error_samples"]:
                where = f"{run['server']} {s['title']} c={s['clients']}"
                print(f"- {where}: {e['request']} -> {e['status']}: {e['body'][:300]}")
    out = {"machine": info, "date": started.isoformat(timespec="seconds"), "command": command, "plan": plan.__dict__}
    Path(args.out).write_text(json.dumps(out | {"runs": runs}, indent=1))
    log(f"raw numbers written to {args.out}")
    return 1 if any(run["failure"] for run in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
