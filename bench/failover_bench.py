#!/usr/bin/env python3
"""SINGLE failover benchmark: under wrk load through a VIP, kill the engine's HAProxy (master and workers,
SIGKILL) and delete its namespace; measure the seconds until requests through the VIP succeed again
(a new engine placed by the automatic failover). Repeated `--runs` times on one load balancer.

Set-up (reused from dataplane_bench): `quadriga serve` with the netns driver and default heartbeat settings
(interval 1 s, timeout 3 s), nginx backends on quadriga's bridge, a load balancer with an HTTP listener and
a round-robin pool with a health monitor. Per run: wrk (2 threads, 50 connections) runs through the VIP
while a probe sends one GET on a new connection every 50 ms (0.1 s connect timeout, 0.5 s read timeout);
recovery = the first successful probe sent after the kill, measured from the kill. Between runs the
benchmark waits for the old engine to be DELETED and the load balancer ACTIVE, then for the new engine to
leave its grace period. Every target passes `check_target`; everything started is stopped by pid.

Needs root (netns), HAProxy, nginx, wrk and iproute2:  apt-get install -y haproxy nginx wrk iproute2

Usage:
    python bench/failover_bench.py --runs 10 --out failover.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from dataplane_bench import (  # noqa: E402 - bench/dataplane_bench.py
    FULL,
    Stack,
    Wrk,
    check_tools,
    cmdline,
    dist,
    http_get,
    interrupt,
    log,
    machine_info,
    pct,
    pids_mentioning,
    stop_pid,
)
from tests.support.dataplane import kill_engine  # noqa: E402

TARGET_P50_S = 5.0
OCTAVIA = "68–72 s"
PROBE_EVERY = 0.05
RECOVERY_LIMIT = 60.0  # a run that has not recovered by then fails
WRK_SECONDS = 15


def live_engine(stack: Stack, lb_id: str) -> str:
    amps = stack.ok(stack.api.get("/v2/octavia/amphorae", params={"loadbalancer_id": lb_id}), 200)["amphorae"]
    live = [a["id"] for a in amps if a["status"] == "ALLOCATED"]
    if len(live) != 1:
        raise RuntimeError(f"expected one ALLOCATED engine, found {amps}")
    return live[0]


def wait_replaced(stack: Stack, lb_id: str, old: str, timeout: float = 30.0) -> str:
    """The new engine, once the old one is DELETED and the load balancer ACTIVE."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        amps = stack.ok(stack.api.get("/v2/octavia/amphorae", params={"loadbalancer_id": lb_id}), 200)["amphorae"]
        status = {a["id"]: a["status"] for a in amps}
        new = [a for a, s in status.items() if s == "ALLOCATED" and a != old]
        if status.get(old) == "DELETED" and new and stack.status(lb_id) == "ACTIVE":
            return new[0]
        time.sleep(0.2)
    raise RuntimeError(f"engine {old} not replaced within {timeout} s")


def one_run(stack: Stack, lb_id: str, vip: str, n: int) -> dict[str, Any]:
    old = live_engine(stack, lb_id)
    status, body = http_get(vip, 80)
    if status != 200:
        raise RuntimeError(f"run {n}: the VIP does not answer before the kill ({status} {body})")
    with Wrk(f"http://{vip}/", WRK_SECONDS, FULL, stack.workdir) as wrk:
        time.sleep(2)  # load established
        assert stack.server is not None and stack.server.state_dir is not None
        pids = kill_engine(stack.server.state_dir, old)
        killed = time.perf_counter()
        failures = 0
        while True:
            sent = time.perf_counter()
            status, _ = http_get(vip, 80, timeout=0.5, connect_timeout=0.1)
            if status == 200:
                recovered = time.perf_counter() - killed
                break
            failures += 1
            if sent - killed > RECOVERY_LIMIT:
                raise RuntimeError(f"run {n}: no answer through {vip} {RECOVERY_LIMIT} s after the kill")
            time.sleep(max(0.0, PROBE_EVERY - (time.perf_counter() - sent)))
    new = wait_replaced(stack, lb_id, old)
    result = wrk.result
    log(
        f"run {n}: killed {len(pids)} HAProxy processes of engine {old[:8]}: traffic back after {recovered:.2f} s "
        f"({failures} failed probes), new engine {new[:8]}; wrk {result.requests} requests, "
        f"{result.socket_errors} socket errors"
    )
    return {
        "run": n,
        "recovered_s": round(recovered, 3),
        "failed_probes": failures,
        "killed_pids": len(pids),
        "old_engine": old,
        "new_engine": new,
        "wrk_requests": result.requests,
        "wrk_socket_errors": result.socket_errors,
        "wrk_rps": result.rps,
    }


def report(info: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    times = [r["recovered_s"] for r in runs]
    p50 = pct(times, 0.5)
    lines = [
        "### SINGLE failover: HAProxy killed and namespace deleted under wrk load",
        "",
        f"Machine: {info.get('nproc')} CPUs ({info.get('cpu_model')}), {info.get('memory_gib')} GiB, "
        f"kernel {info.get('kernel')}, Python {info.get('python')}, {info.get('haproxy')}, {info.get('wrk')}; "
        f"commit {str(info.get('commit'))[:10]}.",
        "",
        "| runs | p50 | p95 | max | min | target (p50) | Octavia |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {len(times)} | {p50:.2f} s | {pct(times, 0.95):.2f} s | {max(times):.2f} s | {min(times):.2f} s "
        f"| ≤ {TARGET_P50_S:.0f} s {'✅' if p50 is not None and p50 <= TARGET_P50_S else '❌'} | {OCTAVIA} |",
        "",
        "Per run (s): " + ", ".join(f"{t:.2f}" for t in times),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default="failover-results.json", help="JSON file with every measurement")
    args = ap.parse_args(argv)
    if missing := check_tools(need_netns=True):
        print("failover_bench: missing on this machine:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)
    info = machine_info()
    started = dt.datetime.now(dt.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="qfob-"))  # short: HAProxy's unix socket paths must fit
    stack = Stack("netns", workdir, FULL)
    runs: list[dict[str, Any]] = []
    failures: list[str] = []
    try:
        stack.open()
        lb = stack.create(stack.graph("fo", stack.backends[:2]))
        stack.wait_active(lb["id"])
        vip = lb["vip_address"]
        time.sleep(4)  # past the new engine's grace period, heartbeats flowing
        for n in range(1, args.runs + 1):
            try:
                runs.append(one_run(stack, lb["id"], vip, n))
            except Exception as exc:
                failures.append(f"run {n}: {type(exc).__name__}: {exc}")
                log(f"!! run {n} failed: {exc}")
            time.sleep(4)  # the new engine leaves its grace period (one timeout) before the next kill
    except KeyboardInterrupt:
        failures.append("interrupted")
    finally:
        stack.close()
        for pid in pids_mentioning(str(workdir)):
            failures.append(f"left behind: process {pid}: {' '.join(cmdline(pid))[:160]}")
            stop_pid(pid)
        shutil.rmtree(workdir, ignore_errors=True)
    if runs:
        print(report(info, runs))
        print("Recovery:", dist([r["recovered_s"] for r in runs], digits=2))
    for failure in failures + stack.leftovers:
        print(f"- {failure}")
    record = {
        "machine": info,
        "date": started.isoformat(timespec="seconds"),
        "command": "python bench/failover_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "runs": runs,
        "failures": failures,
        "leftovers": stack.leftovers,
    }
    Path(args.out).write_text(json.dumps(record, indent=1))
    return 1 if failures or stack.leftovers or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
