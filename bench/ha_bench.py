#!/usr/bin/env python3
"""ACTIVE_STANDBY benchmark (issue 4): under a steady stream of requests through the VIP, the engine holding it
dies; how long do requests fail? Target: <= 2 s (Octavia's VRRP defaults take about 3-4 s).

One `quadriga serve` (netns driver, root), one ACTIVE_STANDBY load balancer (HTTP listener, two members on the
host). A client thread sends one request at a time through the VIP, each on a new connection with a 250 ms
timeout (a request to a dead engine fails fast or times out; both count as failed). Per run, 1 s after the
load starts, the engine holding the VIP is

  kill    SIGKILLed (keepalived and HAProxy, by pid): a crash. Whichever comes first serves again: the
          standby's VRRP takeover (the controller then replaces the dead engine: heartbeat failover).
  freeze  SIGSTOPped (keepalived and HAProxy): a hung engine, which nothing restarts, so the window is
          the standby's VRRP takeover alone. Then it is SIGKILLed and replaced for the next run.

window = from the start of the first failed request to the end of the first successful one after it (0 when
no request failed). Between runs the pair is let settle until both engines run keepalived, one MASTER and one
BACKUP. Everything goes to the load balancer's VIP on quadriga's own bridge; each loop is bounded.

Usage:
  python bench/ha_bench.py [--runs 10] [--modes kill,freeze] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import machine  # noqa: E402 - bench/machine.py (the script's directory is on sys.path)
from tests.support.dataplane import Cloud, check_target, running_cloud  # noqa: E402
from tests.support.ha import active_standby_flavor, engine_dir, kill_engine, live_pair, vrrp_state  # noqa: E402

REQUEST_TIMEOUT = 0.25
KILL_AFTER = 1.0  # seconds of load before the kill
AFTER_RECOVERY = 1.0  # seconds of load after the first success following the failures
RUN_LIMIT = 15.0  # seconds: a run that has not recovered by then counts as this long
SETTLE_LIMIT = 60.0


class Load(threading.Thread):
    """One request at a time through the VIP; records (start, end, ok) until stopped or out of time."""

    def __init__(self, vip: str, limit: float) -> None:
        super().__init__(daemon=True)
        check_target(vip)
        self.vip, self.limit = vip, limit
        self.results: list[tuple[float, float, bool]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self.stop.is_set() and time.monotonic() < deadline:
            start = time.monotonic()
            ok = False
            conn = http.client.HTTPConnection(self.vip, 80, timeout=REQUEST_TIMEOUT)
            try:
                conn.request("GET", "/")
                ok = conn.getresponse().status == 200
            except OSError:
                ok = False
            finally:
                conn.close()
            self.results.append((start, time.monotonic(), ok))

    def window(self) -> tuple[float, int, int]:
        """(seconds of failure, failed requests, all requests)."""
        failed = [r for r in self.results if not r[2]]
        if not failed:
            return 0.0, 0, len(self.results)
        first = failed[0][0]
        after = [r for r in self.results if r[2] and r[0] > first]
        end = after[0][1] if after else first + RUN_LIMIT
        return end - first, len(failed), len(self.results)

    def recovered(self) -> bool:
        failed = next((r for r in self.results if not r[2]), None)
        if failed is None:
            return False
        return any(r[2] and r[0] > failed[0] and time.monotonic() - r[1] > AFTER_RECOVERY for r in self.results)


def settle(cloud: Cloud, lb_id: str) -> dict[str, str]:
    """Wait until both engines run keepalived, one MASTER and one BACKUP; engine id -> state."""
    deadline = time.monotonic() + SETTLE_LIMIT
    while True:
        engines = [a["id"] for a in live_pair(cloud, lb_id).values()]
        states = {e: vrrp_state(cloud, e) for e in engines}
        if sorted(states.values()) == ["BACKUP", "MASTER"]:
            return states
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pair did not settle: {states}")
        time.sleep(0.2)


def one_run(cloud: Cloud, lb: dict[str, Any], mode: str) -> dict[str, Any]:
    states = settle(cloud, lb["id"])
    time.sleep(1.0)  # a few adverts in the BACKUP's steady state
    holder = next(e for e, s in states.items() if s == "MASTER")
    load = Load(lb["vip_address"], KILL_AFTER + RUN_LIMIT + AFTER_RECOVERY)
    load.start()
    time.sleep(KILL_AFTER)
    killed_at = time.monotonic()
    pids = kill_engine(engine_dir(cloud, holder), signal.SIGSTOP if mode == "freeze" else signal.SIGKILL)
    while not load.recovered() and time.monotonic() - killed_at < RUN_LIMIT:
        time.sleep(0.05)
    # (The dead engine's state file still says MASTER until it is restarted: only the standby's counts.)
    standby_took_over = any(e != holder and vrrp_state(cloud, e) == "MASTER" for e in states)
    if mode == "freeze":
        for pid in pids:  # the hung engine dies; the controller replaces it for the next run
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    time.sleep(AFTER_RECOVERY)
    load.stop.set()
    load.join(timeout=5)
    window, failed, total = load.window()
    return {
        "mode": mode,
        "window_s": round(window, 3),
        "failed": failed,
        "requests": total,
        "taken_over_by": "standby" if standby_took_over else "replacement engine",
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def graph(cloud: Cloud, flavor_id: str) -> dict[str, Any]:
    members = [cloud.member(cloud.backend(f"ha-bench-{i}")) for i in range(2)]
    pool = {"name": "p", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "members": members}
    return {
        "name": "ha-bench",
        "flavor_id": flavor_id,
        "listeners": [{"protocol": "HTTP", "protocol_port": 80, "default_pool": pool}],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--modes", default="kill,freeze")
    ap.add_argument("--quick", action="store_true", help="2 runs per mode")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("ha_bench needs root (the netns network driver)", file=sys.stderr)
        return 2
    runs = 2 if args.quick else args.runs
    modes = [m for m in args.modes.split(",") if m]
    info = machine.basics() | {"keepalived": _keepalived_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC")}
    print(json.dumps(info))
    results: list[dict[str, Any]] = []
    with running_cloud() as cloud, active_standby_flavor(cloud) as flavor_id:
        lb = cloud.create_lb(**graph(cloud, flavor_id))
        try:
            for mode in modes:
                for i in range(runs):
                    result = one_run(cloud, lb, mode)
                    results.append(result)
                    print(f"{mode} run {i + 1}: {json.dumps(result)}", flush=True)
        finally:
            cloud.delete_lb(lb["id"])
    print("\n| mode | runs | p50 s | p95 s | max s | failed requests (median) | taken over by |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for mode in modes:
        rows = [r for r in results if r["mode"] == mode]
        windows = [r["window_s"] for r in rows]
        by = sorted({r["taken_over_by"] for r in rows})
        counts = {b: sum(r["taken_over_by"] == b for r in rows) for b in by}
        print(
            f"| {mode} | {len(rows)} | {percentile(windows, 0.5):.2f} | {percentile(windows, 0.95):.2f} | "
            f"{max(windows):.2f} | {statistics.median(r['failed'] for r in rows):.0f} | "
            + ", ".join(f"{b} {n}" for b, n in counts.items())
            + " |"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    return 0


def _keepalived_version() -> str:
    try:
        out = subprocess.run(["keepalived", "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    return (out.stderr or out.stdout).splitlines()[0] if (out.stderr or out.stdout) else "unknown"


if __name__ == "__main__":
    sys.exit(main())
