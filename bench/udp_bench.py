#!/usr/bin/env python3
"""UDP data plane: quadriga's UDP proxy (`quadriga.udp`, run by a real agent with the loopback driver) side by
side with a hand-written nginx stream-module UDP proxy and with datagrams sent straight to the members, in the
same run, on 127.0.0.1.

The three paths:
- **quadriga**: `Agent.apply` of an engine spec with one UDP listener (VIP 127.x, port 5353) and a ROUND_ROBIN
  UDP pool of the 2 members, no health monitor. The engine's UDP proxy is one single-threaded asyncio process.
- **nginx**: a hand-written config (below) with the same 2 members, round robin (nginx's default),
  `proxy_responses 1`, `proxy_timeout 50s` (quadriga's default idle timeout) and `worker_processes 1`, to be
  fair to the single-threaded proxy. With `proxy_responses 1` nginx ends its session after the answer, so every
  datagram is a new session with a new upstream socket, and consecutive datagrams of one client alternate
  between the members; quadriga keeps one flow (one connected upstream socket) per client address.
- **direct**: the client sends straight to the members (client i to member i mod 2): the floor.

The members are one nginx (1 worker) answering every datagram with its member's name (`return "m0"`): C, so the
members cost far less than either proxy. The load client (bench/udp_client.py) is a separate Python process:
one epoll loop, N sockets each with its own source port (its own flow), each sends its fixed count one datagram
after the other (closed loop: the next once the previous is answered; 1 s without an answer counts as lost).

Measured, in `--rounds` rounds whose order rotates (direct, quadriga, nginx; then nginx, direct, quadriga, ...):
- latency: 1 client, `--latency-count` sequential datagrams (after 200 not recorded): p50/p90/p99/max round trip;
- throughput: N ∈ `--clients` concurrent clients, each `--per-client` datagrams (after 20 not recorded):
  datagrams/s answered, round-trip p50/p99, and the proxy's CPU (from /proc) per datagram;
- apply → first answer: `--first-runs` times, a new engine on a new VIP: a prober sends a datagram to the VIP
  every 2 ms from before `Agent.apply` until the first answer; reports the apply time and the first answer.
Ratios are quadriga ÷ nginx per round (median and range over the rounds).

Needs nginx with the stream module:  apt-get install -y nginx libnginx-mod-stream   (and haproxy, for the agent)

Usage:
    python bench/udp_bench.py --rounds 3 --out udp.json
    python bench/udp_bench.py --quick                       # smoke run, ~30 s

Safety: every server listens on 127.0.0.1 or a 127/8 VIP; every loop has a count and a time limit; every
process started (nginx by pid, the engine through the agent) is stopped, also on failure or SIGTERM, and
whatever still mentions the work directory afterwards is reported and killed by pid."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "src"))
# The engine's UDP proxy (`python -m quadriga.udp`) is a child process: it runs this checkout's code too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))

from api_bench import wait_until_quiet  # noqa: E402 - bench/api_bench.py
from dataplane_bench import (  # noqa: E402 - bench/dataplane_bench.py
    QUIET_CORES,
    CpuMeter,
    cmdline,
    fmt,
    interrupt,
    log,
    machine_info,
    pct,
    pids_mentioning,
    ppid_of,
    proc_cpu,
    ratio_stats,
    stop_pid,
)
from tests.support.dataplane import check_target, udp_proxy_pids  # noqa: E402

from quadriga.agent.agent import Agent  # noqa: E402
from quadriga.engine import spec as s  # noqa: E402
from quadriga.engine.regex import haproxy_binary  # noqa: E402
from quadriga.engine.render import RenderOptions  # noqa: E402
from quadriga.network.drivers.loopback import LoopbackDriver  # noqa: E402

STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
VIP_PORT = 5353
SIDES = ("direct", "quadriga", "nginx")
LATENCY_WARMUP = 200
LOAD_WARMUP = 20
FIRST_LIMIT = 15.0  # seconds a first answer may take before the run fails
PROBE_EVERY = 0.002
CLIENT_GRACE = 30.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------ nginx
class StreamNginx:
    """One nginx (master + 1 worker) with a `stream {}` config, from its own directory, in the foreground."""

    def __init__(self, directory: Path, stream: str) -> None:
        self.directory, self.stream = directory, stream
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        d = self.directory
        return (
            f"load_module {STREAM_MODULE};\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
            f"events {{ worker_connections 4096; }}\nstream {{\n{self.stream}}}\n"
        )

    def start(self, ports: list[int]) -> StreamNginx:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "nginx.conf"
        conf.write_text(self.config())
        argv = ["nginx", "-p", str(self.directory), "-e", str(self.directory / "error.log"), "-c", str(conf)]
        with open(self.directory / "stderr.log", "wb") as err:
            self.process = subprocess.Popen(
                [*argv, "-g", "daemon off;"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        deadline = time.monotonic() + 10
        while not all(self._bound(p) for p in ports):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"nginx did not start: {(self.directory / 'error.log').read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    @staticmethod
    def _bound(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return True
        return False

    def pids(self) -> list[int]:
        if self.process is None:
            return []
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and ppid_of(int(p)) == self.process.pid]
        return [self.process.pid, *children]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_pid(self.process.pid, signal.SIGQUIT, wait=5)
        self.process = None


def members_stream(ports: list[int]) -> str:
    return "".join(f'    server {{ listen 127.0.0.1:{p} udp; return "m{i}"; }}\n' for i, p in enumerate(ports))


def proxy_stream(port: int, members: list[int]) -> str:
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in members)
    return (
        f"    upstream members {{\n{servers}    }}\n"
        f"    server {{\n        listen 127.0.0.1:{port} udp;\n        proxy_pass members;\n"
        "        proxy_responses 1;\n        proxy_timeout 50s;\n    }\n"
    )


# ---------------------------------------------------------------------------------------------- quadriga
def udp_spec(vip: str, members: list[int]) -> s.EngineSpec:
    pool = s.PoolSpec(
        id="pool",
        protocol="UDP",
        lb_algorithm="ROUND_ROBIN",
        members=tuple(s.MemberSpec(id=f"m{i}", address="127.0.0.1", protocol_port=p) for i, p in enumerate(members)),
    )
    listener = s.ListenerSpec(id="udp", protocol="UDP", protocol_port=VIP_PORT, default_pool_id="pool")
    return s.EngineSpec(revision=1, loadbalancer_id="lb", vips=(vip,), listeners=(listener,), pools=(pool,))


class Vips:
    """New 127/8 VIPs in a /16 of this run's own (chosen from the pid), checked by `check_target`."""

    def __init__(self) -> None:
        self.net, self.n = 200 + (os.getpid() + random.randrange(50)) % 50, 0

    def new(self) -> str:
        self.n += 1
        vip = f"127.{self.net}.{self.n // 250}.{self.n % 250 + 1}"
        check_target(vip)
        return vip


def first_answer(agent: Agent, engine_id: str, vip: str, members: list[int]) -> dict[str, float]:
    """Seconds from the start of `Agent.apply` to its return and to the first datagram answered through the VIP
    (a prober sends one every PROBE_EVERY s from before the apply)."""
    answered: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(PROBE_EVERY)
            deadline = time.monotonic() + FIRST_LIMIT
            while not stop.is_set() and time.monotonic() < deadline:
                sock.sendto(b"first", (vip, VIP_PORT))
                try:
                    sock.recvfrom(65535)
                except (TimeoutError, ConnectionRefusedError):
                    continue
                answered.append(time.perf_counter())
                return

    prober = threading.Thread(target=probe, daemon=True)
    t0 = time.perf_counter()
    prober.start()
    try:
        agent.apply(engine_id, udp_spec(vip, members))
        applied = time.perf_counter() - t0
        prober.join(FIRST_LIMIT + 1)
    finally:
        stop.set()
    if not answered:
        raise RuntimeError(f"no answer through {vip}:{VIP_PORT} within {FIRST_LIMIT} s of the apply")
    return {"apply_s": applied, "first_answer_s": answered[0] - t0}


# ------------------------------------------------------------------------------------------------- load
def run_client(targets: list[tuple[str, int]], clients: int, count: int, warmup: int, workdir: Path, proxy: Any):
    """bench/udp_client.py against `targets`; adds the proxy's CPU (its pids from `proxy()`) and the CPU other
    processes used meanwhile."""
    job = {"targets": targets, "clients": clients, "count": count, "warmup": warmup, "timeout": 1.0}
    job["limit"] = 120.0
    argv = [sys.executable, str(REPO / "bench" / "udp_client.py"), json.dumps(job)]
    with CpuMeter(workdir) as meter:
        cpu0 = sum(map(proc_cpu, proxy()))
        out = subprocess.run(argv, capture_output=True, text=True, timeout=job["limit"] + CLIENT_GRACE, check=True)
        cpu = sum(map(proc_cpu, proxy())) - cpu0
    result = json.loads(out.stdout)
    rtts = result.pop("rtt_us")
    seconds = result["seconds"]
    result |= {
        "rate": round(result["answered"] / seconds) if seconds else None,
        "p50_us": pct(rtts, 0.5),
        "p90_us": pct(rtts, 0.9),
        "p99_us": pct(rtts, 0.99),
        "max_us": max(rtts, default=None),
        "proxy_cpu_us_per_dgram": round(cpu / result["answered"] * 1e6, 1) if result["answered"] and proxy() else None,
        "other_cores": meter.other_cores,
    }
    return result


def ratio(rounds: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [r["quadriga"][key] / r["nginx"][key] for r in rounds if r["quadriga"].get(key) and r["nginx"].get(key)]
    return ratio_stats(values)


def median_of(rounds: list[dict[str, Any]], side: str, key: str) -> tuple[Any, Any, Any]:
    values = [r[side][key] for r in rounds if r[side].get(key) is not None]
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def cell(rounds: list[dict[str, Any]], side: str, key: str, digits: int = 0) -> str:
    med, lo, hi = median_of(rounds, side, key)
    if med is None:
        return "–"
    if len(rounds) == 1:
        return fmt(float(med), digits)
    return f"{fmt(float(med), digits)} ({fmt(float(lo), digits)} – {fmt(float(hi), digits)})"


def ratio_cell(stats: dict[str, Any]) -> str:
    if not stats.get("n"):
        return "–"
    return f"**{stats['median']:.2f}×** ({stats['min']:.2f} – {stats['max']:.2f})"


# ------------------------------------------------------------------------------------------------ report
def side_rows(rounds: list[dict[str, Any]], prefix: str, keys: tuple[str, ...]) -> list[str]:
    """One table row per path: `prefix`, the path, `keys`, the proxy's CPU per datagram, lost, other cores."""
    rows = []
    for side in SIDES:
        lost = sum(r[side]["lost"] + r[side]["unfinished"] for r in rounds)
        cells = [cell(rounds, side, key) for key in keys] + [cell(rounds, side, "proxy_cpu_us_per_dgram", 1)]
        rows.append(f"{prefix}| {side} | {' | '.join(cells)} | {lost} | {cell(rounds, side, 'other_cores', 2)} |")
    return rows


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {m['nproc']} × {m['cpu_model']}, {m['memory_gib']} GiB, kernel {m['kernel']}, "
        f"Python {m['python']}, {m['nginx']}; commit {m['commit'][:12]}{' (dirty)' if m['work_tree_dirty'] else ''}",
        "",
        f"### Latency, 1 client, sequential ({results['plan']['latency_count']} datagrams per side and round, "
        f"{len(results['latency'])} rounds; µs, median over rounds (min – max))",
        "",
        "| path | p50 µs | p90 µs | p99 µs | max µs | proxy CPU µs/datagram | lost | other cores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rounds = results["latency"]
    lines += side_rows(rounds, "", ("p50_us", "p90_us", "p99_us", "max_us"))
    lines += [
        "",
        f"quadriga ÷ nginx: p50 {ratio_cell(ratio(rounds, 'p50_us'))}, p90 {ratio_cell(ratio(rounds, 'p90_us'))}, "
        f"p99 {ratio_cell(ratio(rounds, 'p99_us'))}, proxy CPU per datagram "
        f"{ratio_cell(ratio(rounds, 'proxy_cpu_us_per_dgram'))}",
        "",
        f"### Throughput, N concurrent clients, {results['plan']['per_client']} datagrams each "
        "(closed loop; median over rounds (min – max))",
        "",
        "| clients | path | datagrams/s | p50 µs | p99 µs | proxy CPU µs/datagram | lost | other cores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, rounds in results["throughput"].items():
        lines += side_rows(rounds, f"| {n} ", ("rate", "p50_us", "p99_us"))
    lines += [
        "",
        "| clients | datagrams/s quadriga ÷ nginx | p50 ÷ | p99 ÷ | proxy CPU/datagram ÷ |",
        "|---|---|---|---|---|",
    ]
    for n, rounds in results["throughput"].items():
        lines.append(
            f"| {n} | {ratio_cell(ratio(rounds, 'rate'))} | {ratio_cell(ratio(rounds, 'p50_us'))} | "
            f"{ratio_cell(ratio(rounds, 'p99_us'))} | {ratio_cell(ratio(rounds, 'proxy_cpu_us_per_dgram'))} |"
        )
    first = results.get("first_answer") or []
    if first:
        applied = [f["apply_s"] * 1000 for f in first]
        answered = [f["first_answer_s"] * 1000 for f in first]
        lines += [
            "",
            f"### quadriga: `Agent.apply` of a spec with a UDP listener → first answered datagram "
            f"({len(first)} runs, ms)",
            "",
            "| | p50 | min | max |",
            "|---|---|---|---|",
            f"| apply returned | {statistics.median(applied):.0f} | {min(applied):.0f} | {max(applied):.0f} |",
            f"| first answer | {statistics.median(answered):.0f} | {min(answered):.0f} | {max(answered):.0f} |",
        ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-count", type=int, default=10000)
    parser.add_argument("--clients", default="1,8,64", help="concurrent clients of the throughput runs")
    parser.add_argument("--per-client", type=int, default=2000, help="datagrams each throughput client sends")
    parser.add_argument("--first-runs", type=int, default=5)
    parser.add_argument("--wait-quiet", type=float, default=0.0)
    parser.add_argument("--quick", action="store_true", help="1 round, 1000 latency datagrams, 200 per client")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.latency_count, args.per_client, args.first_runs = 1, 1000, 200, 2
    needs = (("nginx", shutil.which("nginx") is not None), (str(STREAM_MODULE), STREAM_MODULE.exists()))
    missing = [what for what, ok in needs if not ok]
    haproxy = haproxy_binary()
    if haproxy is None:
        missing.append("haproxy")
    if missing:
        log(f"missing: {', '.join(missing)}: apt-get install -y nginx libnginx-mod-stream haproxy")
        return 2
    signal.signal(signal.SIGTERM, interrupt)
    clients = [int(c) for c in args.clients.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="udpb-"))
    results: dict[str, Any] = {
        "machine": machine_info(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "plan": {
            "rounds": args.rounds,
            "latency_count": args.latency_count,
            "clients": clients,
            "per_client": args.per_client,
            "first_runs": args.first_runs,
        },
        "latency": [],
        "throughput": {n: [] for n in clients},
        "first_answer": [],
    }
    member_ports = [free_udp_port(), free_udp_port()]
    proxy_port = free_udp_port()
    members = StreamNginx(workdir / "members", members_stream(member_ports))
    reference = StreamNginx(workdir / "nginx", proxy_stream(proxy_port, member_ports))
    agent: Agent | None = None
    failed = False
    try:
        members.start(member_ports)
        reference.start([proxy_port])
        results["nginx_config"] = reference.config()
        agent = Agent(workdir / "agent", LoopbackDriver(), haproxy=haproxy, options=RenderOptions())
        vips = Vips()
        for i in range(args.first_runs):
            run = first_answer(agent, f"first{i}", vips.new(), member_ports)
            agent.remove(f"first{i}")
            log(f"first answer {i}: {run}")
            results["first_answer"].append(run)
        vip = vips.new()
        agent.apply("bench", udp_spec(vip, member_ports))
        engine_dir = workdir / "agent"
        paths = {
            "direct": ([("127.0.0.1", p) for p in member_ports], list),
            "quadriga": ([(vip, VIP_PORT)], lambda: udp_proxy_pids(engine_dir)),
            "nginx": ([("127.0.0.1", proxy_port)], reference.pids),
        }
        for r in range(args.rounds):
            order = SIDES[r % 3 :] + SIDES[: r % 3]
            if r % 2:
                order = order[::-1]
            if args.wait_quiet:
                wait_until_quiet(args.wait_quiet, QUIET_CORES, log)
            latency: dict[str, Any] = {}
            for side in order:
                targets, pids = paths[side]
                latency[side] = run_client(targets[:1], 1, args.latency_count, LATENCY_WARMUP, workdir, pids)
                log(f"round {r} latency {side}: { ({k: v for k, v in latency[side].items() if k != 'by'}) }")
            results["latency"].append(latency)
            for n in clients:
                load: dict[str, Any] = {}
                for side in order:
                    targets, pids = paths[side]
                    load[side] = run_client(targets, n, args.per_client, LOAD_WARMUP, workdir, pids)
                    log(f"round {r} {n} clients {side}: {load[side]}")
                results["throughput"][n].append(load)
    except (Exception, KeyboardInterrupt) as exc:
        failed = True
        log(f"FAILED: {exc!r}")
        results["error"] = repr(exc)
    finally:
        if agent is not None:
            for engine in ("bench", *(f"first{i}" for i in range(args.first_runs))):
                try:
                    agent.remove(engine)
                except Exception as exc:
                    log(f"removing engine {engine}: {exc!r}")
            agent.shutdown()
        reference.stop()
        members.stop()
        leftovers = pids_mentioning(str(workdir))
        for pid in leftovers:
            log(f"left behind, killed: {pid} {' '.join(cmdline(pid))}")
            stop_pid(pid, signal.SIGKILL, wait=2)
        results["leftovers"] = leftovers
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    if results["latency"]:
        print(report(results))
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed or leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
