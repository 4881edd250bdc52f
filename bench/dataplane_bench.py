#!/usr/bin/env python3
"""Data-plane benchmark: quadriga's HAProxy engines with real traffic (nginx backends, wrk load).

Five benchmarks, each reported with p50/p95 (or the median and spread of ratios) next to its target:

  provisioning  one POST with the whole graph (listener, pool, 2 members, health monitor) until the first
                200 through the VIP, and until the LB is ACTIVE; over 20 load balancers, one after another;
                with --spare-engines N also on a second quadriga whose agent keeps N spare engines
  propagation   member added until the first request it serves; member set to weight 0, and set admin
                down, until it gets no new requests (≥ 10 of each, measured with a request every ~2 ms)
  reload        wrk (keep-alive, full speed) through a VIP while 50 listener/pool changes that force HAProxy
                reloads go through the API: wrk's socket errors and non-2xx/3xx responses
  overhead      wrk requests/s through a quadriga VIP ÷ through a hand-written minimal haproxy.cfg over the
                same nginx backends (same nbthread, mode http, no checks), alternated A/B/A/B; with the netns
                driver (the hand-written HAProxy runs in the engine's own namespace) and the loopback driver
  footprint     RSS and PSS (/proc/<pid>/smaps_rollup) per engine (master + worker) and of `quadriga serve`
                plus its engines, with 10 load balancers

Safety: every server listens on 127.0.0.1, in 127/8 (loopback driver VIPs) or on quadriga's own bridge and
namespaces (netns driver: nginx listens on the bridge's gateway address once the first load balancer has
plugged it). Every address traffic goes to passes `tests.support.dataplane.check_target` first. wrk runs for
a fixed number of seconds under a hard timeout; every loop is bounded in time and count. Everything started
here (quadriga serve, nginx, hand-written HAProxy, wrk) is stopped by its pid, also on failure and Ctrl-C,
and the run checks that nothing of its own (processes, namespaces, bridges) is left behind.

Needs root for the netns driver, and HAProxy, nginx, wrk and iproute2:
    apt-get install -y haproxy nginx wrk iproute2

Usage:
    python bench/dataplane_bench.py --quick                 # smoke run, < 2 minutes
    python bench/dataplane_bench.py --out dp.json           # full run, 10-15 minutes
    python bench/dataplane_bench.py --only overhead,footprint
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import ipaddress
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import httpx  # noqa: E402
import machine  # noqa: E402 - bench/machine.py (the script's directory is on sys.path)
from api_bench import system_busy_seconds, wait_until_quiet  # noqa: E402
from tests.support.dataplane import check_target  # noqa: E402
from tests.support.server import QuadrigaServer  # noqa: E402

BENCHMARKS = ("provisioning", "propagation", "reload", "overhead", "footprint")
TOOLS = {
    "haproxy": "apt-get install -y haproxy",
    "nginx": "apt-get install -y nginx   (only the binary is used; its system service is not needed)",
    "wrk": "apt-get install -y wrk",
    "ip": "apt-get install -y iproute2",
}
TARGETS = {
    "provision_first200_p50_s": 1.0,
    "provision_first200_p95_s": 2.0,
    "propagation_p50_ms": 200.0,
    "reload_errors": 0,
    "overhead_ratio": 0.95,
    "engine_mb": 20.0,  # MB = 10^6 bytes; the tables show MiB, so the targets there are 19.1 and 238.4 MiB
    "total_mb": 250.0,
}
MIB_PER_MB = 1e6 / 2**20
OCTAVIA_PROVISIONING = "43–97 s"  # the Octavia figure quoted in the issue (an amphora VM boots per LB)
ACTIVE_TIMEOUT = 30.0
PROBE_INTERVAL = 0.005  # provisioning: one VIP probe every 5 ms until the first 200
PROPAGATION_INTERVAL = 0.002  # propagation: one request every ~2 ms (plus its own ~0.3 ms) through the VIP
MAX_PROBE_RECORDS = 400_000
WRK_GRACE = 20.0  # wrk is killed this long after its -d duration if it has not ended by itself
HAND_PORT = 8081  # the hand-written HAProxy's port on the VIP (netns) - quadriga's listener has port 80


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    provision_lbs: int = 20
    footprint_lbs: int = 10
    propagation_cycles: int = 15
    propagation_quiet_s: float = 1.0  # watch this long after ACTIVE that a stopped member gets nothing
    reload_changes: int = 50
    reload_wrk_s: int = 60
    overhead_rounds: int = 10
    overhead_wrk_s: int = 5
    warmup_wrk_s: int = 2
    wrk_threads: int = 2
    wrk_connections: int = 50


FULL = Plan()
QUICK = Plan(
    provision_lbs=10,
    propagation_cycles=3,
    propagation_quiet_s=0.5,
    reload_changes=10,
    reload_wrk_s=10,
    overhead_rounds=3,
    overhead_wrk_s=2,
    warmup_wrk_s=1,
)


# ------------------------------------------------------------------------------------------- statistics
def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (as api_bench.py), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def dist(values: list[float], scale: float = 1.0, digits: int = 1) -> dict[str, Any]:
    """n, p50, p95, min, max of `values` × `scale`."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(pct(values, 0.5) * scale, digits),
        "p95": round(pct(values, 0.95) * scale, digits),
        "min": round(min(values) * scale, digits),
        "max": round(max(values) * scale, digits),
    }


def fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


# --------------------------------------------------------------------------------------------- machine
def _run(cmd: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPUs, memory, kernel, and the versions of the parts."""

    def first_line(cmd: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            r = _run(cmd)
            return next(iter(((r.stdout or "") + (r.stderr or "")).strip().splitlines()), "")
        return ""

    dirty = first_line(["git", "status", "--porcelain", "--untracked-files=no"])
    return machine.basics() | {
        "haproxy": first_line(["haproxy", "-v"]),
        "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "commit": first_line(["git", "rev-parse", "HEAD"]),
        "work_tree_dirty": bool(dirty),
    }


def check_tools(need_netns: bool) -> list[str]:
    """What is missing on this machine, each with how to install it."""
    missing = [f"{tool}: {how}" for tool, how in TOOLS.items() if shutil.which(tool) is None]
    if need_netns and os.geteuid() != 0:
        missing.append("root: the netns network driver needs root (or run with --drivers loopback)")
    return missing


# ------------------------------------------------------------------------------------------- processes
def read_kib(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) of a process in KiB from /proc/<pid>/smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0])
    return values.get("Rss", 0), values.get("Pss", 0)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def ppid_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions `text` (our work directory): ours, whoever started them."""
    me = os.getpid()
    return [
        int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me and any(text in a for a in cmdline(int(p)))
    ]


def proc_cpu(pid: int) -> float:
    """utime + stime + the reaped children's (cutime + cstime) of a live process, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def stop_pid(pid: int, sig: signal.Signals = signal.SIGTERM, wait: float = 5.0) -> None:
    """Signal one process by pid, then SIGKILL it if it is still there after `wait` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def our_pids(workdir: str) -> set[int]:
    """This script, every process whose command line mentions the work directory (quadriga serve, the
    daemonized engines), and all their descendants (nginx workers, wrk, the hand-written HAProxy)."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (parent := ppid_of(int(name))) is not None:
            parents[int(name)] = parent
    ours = {os.getpid(), *pids_mentioning(workdir)}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in ours} - ours
        grew = bool(more)
        ours |= more
    return ours


class CpuMeter:
    """CPU used during a window by this run's processes (see `our_pids`; reaped children count through
    their parent's cutime) and by everybody else on the machine."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = str(workdir)

    def _ours(self) -> float:
        return sum(proc_cpu(pid) for pid in our_pids(self.workdir))

    def __enter__(self) -> CpuMeter:
        self.t0, self.busy0, self.ours0 = time.monotonic(), system_busy_seconds(), self._ours()
        return self

    def __exit__(self, *_: object) -> None:
        wall = time.monotonic() - self.t0
        busy1, ours1 = system_busy_seconds(), self._ours()
        self.ours_cores = round((ours1 - self.ours0) / wall, 2) if wall > 0 else None
        self.other_cores = None
        if wall > 0 and self.busy0 is not None and busy1 is not None:
            self.other_cores = round(max(0.0, (busy1 - self.busy0) - (ours1 - self.ours0)) / wall, 2)


# --------------------------------------------------------------------------------------------- backends
@dataclass(frozen=True)
class Backend:
    name: str
    address: str
    port: int


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def wait_port(address: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {address}:{port} after {timeout} s")
        time.sleep(0.05)


class Nginx:
    """One nginx (master + 1 worker) serving each backend's name on its own address:port, from `directory`."""

    def __init__(self, directory: Path, backends: list[Backend]) -> None:
        self.directory = directory
        self.backends = backends
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        d = self.directory
        servers = "\n".join(
            f"    server {{ listen {b.address}:{b.port}; location / {{ return 200 '{b.name}\\n'; }} }}"
            for b in self.backends
        )
        temp = " ".join(f"{kind}_temp_path {d}/{kind};" for kind in ("proxy", "fastcgi", "uwsgi", "scgi"))
        return (
            f"worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n    access_log off;\n    default_type text/plain;\n"
            "    keepalive_requests 10000000;\n    keepalive_timeout 120s;\n"
            f"    client_body_temp_path {d}/body;\n    {temp}\n{servers}\n}}\n"
        )

    def start(self) -> Nginx:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "nginx.conf"
        conf.write_text(self.config())
        argv = ["nginx", "-p", str(self.directory), "-e", str(self.directory / "error.log"), "-c", str(conf)]
        self.process = subprocess.Popen(
            [*argv, "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.directory / "stderr.log", "wb"),  # noqa: SIM115 - the child holds it
            start_new_session=True,
        )
        try:
            for b in self.backends:
                safe_target(b.address)
                wait_port(b.address, b.port)
        except Exception:
            self.stop()
            raise RuntimeError(f"nginx did not start: {(self.directory / 'error.log').read_text()[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_pid(self.process.pid, signal.SIGQUIT, wait=5)  # graceful; SIGKILL after 5 s
        self.process = None


HAND_CONFIG = """\
# Hand-written minimal HAProxy config: the comparison for quadriga's engines.
global
    nbthread {nbthread}
    maxconn {maxconn}
defaults
    mode http
    timeout connect 5s
    timeout client 50s
    timeout server 50s
frontend fe
    bind {bind}
    default_backend be
backend be
    balance roundrobin
{servers}
"""


class HandHaproxy:
    """HAProxy with a hand-written minimal config, in the foreground (`-W -db`), optionally inside a
    network namespace (then `ip netns exec` execs HAProxy, so the pid is HAProxy's master)."""

    def __init__(
        self,
        directory: Path,
        bind: tuple[str, int],
        backends: list[Backend],
        nbthread: int,
        maxconn: int,
        netns: str,
        bind_options: str = "",
    ) -> None:
        self.directory = directory
        self.bind = bind
        self.netns = netns
        servers = "\n".join(f"    server {b.name} {b.address}:{b.port}" for b in backends)
        address = " ".join(filter(None, [f"{bind[0]}:{bind[1]}", bind_options]))  # e.g. "ssl crt <pem>"
        self.text = HAND_CONFIG.format(nbthread=nbthread, maxconn=maxconn, bind=address, servers=servers)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> HandHaproxy:
        self.directory.mkdir(parents=True, exist_ok=True)
        cfg = self.directory / "haproxy.cfg"
        cfg.write_text(self.text)
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        check = _run([*prefix, "haproxy", "-c", "-f", str(cfg)])
        if check.returncode != 0:
            raise RuntimeError(f"hand-written haproxy.cfg rejected: {check.stdout}{check.stderr}")
        self.process = subprocess.Popen(
            [*prefix, "haproxy", "-W", "-db", "-f", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=open(self.directory / "haproxy.log", "wb"),  # noqa: SIM115 - the child holds it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            safe_target(self.bind[0])
            wait_port(*self.bind)
        except Exception:
            self.stop()
            raise
        return self

    def pids(self) -> list[int]:
        """The master and its workers."""
        if self.process is None:
            return []
        master = self.process.pid
        return [master] + [p for p in pids_mentioning(str(self.directory)) if ppid_of(p) == master]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_pid(self.process.pid, signal.SIGTERM, wait=5)
        self.process = None


# ------------------------------------------------------------------------------------------------- wrk
@dataclass
class WrkResult:
    url: str
    seconds: int
    requests: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeout_errors: int = 0
    non_2xx_3xx: int = 0
    returncode: int | None = None
    cpu_ours_cores: float | None = None
    cpu_other_cores: float | None = None
    proxy_us_per_req: float | None = None  # CPU of the HAProxy in the path (master + workers) per request
    raw: str = ""

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeout_errors


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(result: WrkResult, text: str) -> WrkResult:
    """Fill `result` from wrk's `--latency` output."""
    result.raw = text
    if m := re.search(r"^\s*(\d+) requests in ", text, re.M):
        result.requests = int(m.group(1))
    if m := re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M):
        result.rps = float(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        result.connect_errors, result.read_errors, result.write_errors, result.timeout_errors = map(int, m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        result.non_2xx_3xx = int(m.group(1))
    for q, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M):
        ms = round(float(value) * _UNITS[unit], 3)
        if q == "50":
            result.p50_ms = ms
        else:
            result.p99_ms = ms
    return result


class Wrk:
    """wrk -tT -cC -dDs --latency URL, started in the background with a hard deadline."""

    def __init__(
        self, url: str, seconds: int, plan: Plan, workdir: Path, proxy: Callable[[], list[int]] | None = None
    ) -> None:
        host = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        safe_target(host)
        self.result = WrkResult(url, seconds)
        self.meter = CpuMeter(workdir)
        self.proxy = proxy
        self.argv = ["wrk", f"-t{plan.wrk_threads}", f"-c{plan.wrk_connections}", f"-d{seconds}s", "--latency", url]
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Wrk:
        self.meter.__enter__()
        self.proxy_cpu = sum(map(proc_cpu, self.proxy())) if self.proxy else 0.0
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.started = time.monotonic()
        return self

    def remaining(self) -> float:
        return self.result.seconds - (time.monotonic() - self.started)

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        try:
            out, _ = self.process.communicate(timeout=max(0.0, self.remaining()) + WRK_GRACE)
        except BaseException:
            stop_pid(self.process.pid, signal.SIGKILL, wait=1)
            self.process.communicate()
            raise
        finally:
            self.meter.__exit__()
        self.result.returncode = self.process.returncode
        self.result.cpu_ours_cores, self.result.cpu_other_cores = self.meter.ours_cores, self.meter.other_cores
        parse_wrk(self.result, out)
        if self.proxy and self.result.requests:
            used = sum(map(proc_cpu, self.proxy())) - self.proxy_cpu
            self.result.proxy_us_per_req = round(used / self.result.requests * 1e6, 2)


def run_wrk(
    url: str, seconds: int, plan: Plan, workdir: Path, proxy: Callable[[], list[int]] | None = None
) -> WrkResult:
    with Wrk(url, seconds, plan, workdir, proxy) as w:
        pass
    return w.result


# -------------------------------------------------------------------------------------------- probing
def http_get(address: str, port: int, timeout: float = 1.0, connect_timeout: float = 0.02) -> tuple[int, str]:
    """One GET / on a new connection: (status, body); status 0 and the error's name when it failed. The
    short connect timeout keeps the probing resolution fine while a VIP does not answer ARP yet."""
    try:
        with socket.create_connection((address, port), timeout=connect_timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        return 0, type(exc).__name__
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body.decode(errors="replace").strip()
    except (IndexError, ValueError):
        return 0, "BadResponse"


@dataclass
class Hit:
    sent: float
    received: float
    name: str  # the backend's name, or "!<error>"


class Prober(threading.Thread):
    """Requests through a VIP on one keep-alive connection, one every `interval` seconds, recording which
    backend answered each; stops at `stop()`, after `max_seconds`, or after MAX_PROBE_RECORDS requests."""

    def __init__(self, address: str, port: int, interval: float, max_seconds: float) -> None:
        super().__init__(name="prober", daemon=True)
        safe_target(address)
        self.address, self.port = address, port
        self.interval, self.max_seconds = interval, max_seconds
        self.hits: list[Hit] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.perf_counter() + self.max_seconds
        conn: http.client.HTTPConnection | None = None
        while not self._stop_event.is_set() and time.perf_counter() < deadline and len(self.hits) < MAX_PROBE_RECORDS:
            sent = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.address, self.port, timeout=2)
                conn.request("GET", "/", headers={"Host": "bench"})
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace").strip()
                name = body if resp.status == 200 else f"!{resp.status}"
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                name = f"!{type(exc).__name__}"
                if conn is not None:
                    conn.close()
                conn = None
            self.hits.append(Hit(sent, time.perf_counter(), name))
            self._stop_event.wait(self.interval)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def after(self, t0: float) -> list[Hit]:
        return [h for h in list(self.hits) if h.sent >= t0]

    def wait_for(self, predicate: Callable[[Hit], bool], t0: float, timeout: float) -> Hit | None:
        """The first hit sent at or after `t0` that matches, waiting up to `timeout` seconds for it."""
        deadline = time.perf_counter() + timeout
        seen = 0
        while True:
            hits = self.hits
            for h in hits[seen:]:
                if h.sent >= t0 and predicate(h):
                    return h
            seen = len(hits)
            if time.perf_counter() > deadline or not self.is_alive():
                return None
            time.sleep(0.005)


# -------------------------------------------------------------------------------------------- the stack
def _routes() -> list[ipaddress.IPv4Network]:
    out = _run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout
    nets = []
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return nets


def pick_cidr(driver: str) -> str:
    """A /24 nobody on this host uses: in 10.200-254.x for netns (not routed anywhere here), in
    127.200-250.x for the loopback driver (nothing listens in it)."""
    if driver == "loopback":
        listening = [line.split()[3] for line in _run(["ss", "-Hltn4"]).stdout.splitlines() if len(line.split()) > 3]
        for _ in range(200):
            prefix = f"127.{random.randint(200, 250)}.{random.randint(0, 255)}."
            if not any(address.startswith(prefix) for address in listening):
                return prefix + "0/24"
        raise RuntimeError("no free 127.x.y.0/24 found")
    routes = _routes()
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{random.randint(200, 254)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(r) for r in routes):
            return str(net)
    raise RuntimeError("no free 10.x.y.0/24 found")


def safe_target(address: str) -> None:
    """`check_target`, which also accepts an address of this host that sits on one of quadriga's bridges
    (the private network's gateway, where the nginx backends listen with the netns driver)."""
    try:
        check_target(address)
        return
    except AssertionError:
        holders = json.loads(_run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
        for link in holders:
            if link.get("ifname", "").startswith("qb") and any(
                a.get("local") == address for a in link.get("addr_info", [])
            ):
                return
        raise


class Stack:
    """`quadriga serve` (amphora provider, one network driver) with a subnet of its own, a warm-up load
    balancer that plugs the network, and nginx backends; `close()` removes everything and checks it."""

    def __init__(self, driver: str, workdir: Path, plan: Plan, spares: int = 0) -> None:
        self.driver = driver
        self.plan = plan
        self.spares = spares
        self.workdir = workdir / (f"{driver}-spares" if spares else driver)
        self.workdir.mkdir(parents=True)
        self.state_dir = self.workdir / "state"
        self.root = workdir
        self.server: QuadrigaServer | None = None
        self.nginx: Nginx | None = None
        self.hand: list[HandHaproxy] = []
        self.lb_ids: list[str] = []
        self.leftovers: list[str] = []

    # --- set-up and tear-down ------------------------------------------------------------------------
    def open(self) -> Stack:
        self.server = QuadrigaServer(
            provider="amphora",
            network_driver=self.driver,
            state_dir=self.state_dir,
            stop_timeout=90,
            extra_args=["--log-level", "WARNING", "--spare-engines", str(self.spares)],
        )
        self.server.start()
        self.api = httpx.Client(base_url=self.server.lb_url, timeout=30, trust_env=False)
        self.net = httpx.Client(base_url=self.server.net_url, timeout=30, trust_env=False)
        cidr = pick_cidr(self.driver)
        network = self.ok(self.net.post("/v2.0/networks", json={"network": {"name": "bench"}}), 201)["network"]
        body = {"network_id": network["id"], "cidr": cidr, "ip_version": 4, "name": "bench-subnet"}
        subnet = self.ok(self.net.post("/v2.0/subnets", json={"subnet": body}), 201)["subnet"]
        self.subnet_id, self.gateway = subnet["id"], subnet["gateway_ip"]
        log(f"[{self.driver}] quadriga serve pid {self.server.pid}, subnet {cidr}")
        # The first load balancer plugs the network: the gateway address then exists on quadriga's bridge.
        warm = self.create({"name": "warm-up", "vip_subnet_id": self.subnet_id})
        self.wait_active(warm["id"])
        address = self.gateway if self.driver == "netns" else "127.0.0.1"
        safe_target(address)
        backends = [Backend(f"m{i}", address, free_port(address)) for i in range(3)]
        self.nginx = Nginx(self.workdir / "nginx", backends).start()
        self.delete_lb(warm["id"])
        if self.spares:
            self.wait_spares()
        return self

    def wait_spares(self, timeout: float = 30.0) -> None:
        """Until the agent's spare pool is full (the warm-up load balancer took one)."""
        spares, engines = self.state_dir / "agent" / "spares", self.state_dir / "agent" / "engines"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            used = {p.resolve() for p in engines.iterdir()} if engines.is_dir() else set()
            idle = [p for p in spares.iterdir() if p.resolve() not in used] if spares.is_dir() else []
            if len(idle) >= self.spares:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the agent's spare pool did not fill to {self.spares} within {timeout} s")

    @property
    def backends(self) -> list[Backend]:
        assert self.nginx is not None
        return self.nginx.backends

    def close(self) -> None:
        for hand in self.hand:
            hand.stop()
        if self.server is not None:
            with contextlib.suppress(Exception):
                for lb_id in list(self.lb_ids):
                    self.delete_lb(lb_id, timeout=20)
            with contextlib.suppress(Exception):
                self.api.close()
                self.net.close()
            self.server.stop()
        if self.nginx is not None:
            self.nginx.stop()
        self.leftovers = remove_leftovers(self.workdir, self.state_dir / "agent")

    # --- the API ---------------------------------------------------------------------------------------
    @staticmethod
    def ok(response: httpx.Response, status: int) -> dict[str, Any]:
        if response.status_code != status:
            raise RuntimeError(
                f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else {}

    def graph(self, name: str, backends: list[Backend], monitor: bool = True) -> dict[str, Any]:
        """A load balancer with its whole graph: HTTP listener on port 80, round-robin pool, members,
        and (if `monitor`) an HTTP health monitor."""
        pool: dict[str, Any] = {
            "name": f"{name}-pool",
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            "members": [{"name": b.name, "address": b.address, "protocol_port": b.port} for b in backends],
        }
        if monitor:
            pool["healthmonitor"] = {"type": "HTTP", "delay": 2, "timeout": 1, "max_retries": 2, "url_path": "/"}
        listener = {"name": f"{name}-http", "protocol": "HTTP", "protocol_port": 80, "default_pool": pool}
        return {"name": name, "vip_subnet_id": self.subnet_id, "listeners": [listener]}

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        lb = self.ok(self.api.post("/v2/lbaas/loadbalancers", json={"loadbalancer": body}), 201)["loadbalancer"]
        self.lb_ids.append(lb["id"])
        return lb

    def status(self, lb_id: str) -> str:
        return self.ok(self.api.get(f"/v2/lbaas/loadbalancers/{lb_id}"), 200)["loadbalancer"]["provisioning_status"]

    def wait_active(self, lb_id: str, timeout: float = ACTIVE_TIMEOUT, interval: float = 0.01) -> float:
        """Poll until ACTIVE; returns the perf_counter() time it was seen."""
        deadline = time.perf_counter() + timeout
        while True:
            status = self.status(lb_id)
            if status == "ACTIVE":
                return time.perf_counter()
            if status == "ERROR" or time.perf_counter() > deadline:
                raise RuntimeError(
                    f"load balancer {lb_id} is {status}\n{self.server.log_tail(30) if self.server else ''}"
                )
            time.sleep(interval)

    def change(self, method: str, path: str, lb_id: str, body: Any, status: int) -> tuple[dict[str, Any], float, float]:
        """One API change and the wait for ACTIVE: (answer, HTTP seconds, seconds until ACTIVE)."""
        t0 = time.perf_counter()
        answer = self.ok(self.api.request(method, path, json=body), status)
        t_http = time.perf_counter() - t0
        return answer, t_http, self.wait_active(lb_id) - t0

    def pool_id(self, lb_id: str) -> str:
        pools = self.ok(self.api.get("/v2/lbaas/pools", params={"loadbalancer_id": lb_id}), 200)["pools"]
        return pools[0]["id"]

    def listener_id(self, lb_id: str) -> str:
        found = self.ok(self.api.get("/v2/lbaas/listeners", params={"loadbalancer_id": lb_id}), 200)["listeners"]
        return found[0]["id"]

    def delete_lb(self, lb_id: str, timeout: float = ACTIVE_TIMEOUT) -> None:
        r = self.api.delete(f"/v2/lbaas/loadbalancers/{lb_id}", params={"cascade": "true"})
        if r.status_code not in (204, 404):
            raise RuntimeError(f"delete {lb_id}: {r.status_code} {r.text[:300]}")
        deadline = time.perf_counter() + timeout
        while self.api.get(f"/v2/lbaas/loadbalancers/{lb_id}").status_code != 404:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"load balancer {lb_id} not deleted after {timeout} s")
            time.sleep(0.05)
        with contextlib.suppress(ValueError):
            self.lb_ids.remove(lb_id)

    def delete_all(self) -> None:
        for lb_id in list(self.lb_ids):
            self.delete_lb(lb_id)

    # --- engines ---------------------------------------------------------------------------------------
    def engines(self) -> dict[str, Path]:
        """Engine directories by load balancer id (from each engine's spec.json)."""
        found = {}
        root = self.state_dir / "agent" / "engines"
        for spec in root.glob("*/spec.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                found[json.loads(spec.read_text())["loadbalancer_id"]] = spec.parent
        return found

    def engine_dir(self, lb_id: str) -> Path:
        return self.engines()[lb_id]

    def namespace(self, lb_id: str) -> str:
        """The netns of a load balancer's engine (the engine id is its directory's name)."""
        from quadriga.network.drivers.netns import instance_for

        return f"qg-{instance_for(self.state_dir / 'agent')}-{self.engine_dir(lb_id).name}"


def engine_pids(directory: Path) -> tuple[int | None, list[int]]:
    """(master, workers) of the HAProxy serving an engine directory."""
    try:
        master = int((directory / "haproxy.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None, []
    workers = [p for p in pids_mentioning(str(directory / "haproxy.cfg")) if ppid_of(p) == master]
    return master, workers


def engine_processes(directory: Path) -> list[int]:
    """The master and workers of an engine's HAProxy, for CPU accounting."""
    master, workers = engine_pids(directory)
    return ([master] if master else []) + workers


def engine_limits(engine_cfg: str) -> tuple[int, int]:
    """(nbthread, global maxconn) of an engine's rendered haproxy.cfg: what a hand-written twin copies."""
    nbthread = int(m.group(1)) if (m := re.search(r"^\s*nbthread (\d+)", engine_cfg, re.M)) else 1
    maxconn = int(m.group(1)) if (m := re.search(r"^\s*maxconn (\d+)", engine_cfg, re.M)) else 50000
    return nbthread, maxconn


def hand_twin(
    stack: Stack, lb_id: str, vip: str, backends: list[Backend], nbthread: int, maxconn: int, bind_options: str = ""
) -> HandHaproxy:
    """The fair comparison for a quadriga engine, started and registered with the stack: a hand-written
    HAProxy in the engine's own namespace on the VIP, port HAND_PORT (netns driver: same veth path, only
    the config differs), or on 127.0.0.1 (loopback driver, where the VIP is in 127/8 too)."""
    directory = stack.workdir / "hand" / stack.driver
    if stack.driver == "netns":
        bind, netns = (vip, HAND_PORT), stack.namespace(lb_id)
    else:
        bind, netns = ("127.0.0.1", free_port("127.0.0.1")), ""
    twin = HandHaproxy(directory, bind, backends, nbthread, maxconn, netns, bind_options).start()
    stack.hand.append(twin)
    return twin


def remove_leftovers(workdir: Path, agent_state: Path) -> list[str]:
    """Kill (by pid) any process still running from our work directory and remove our namespaces and
    bridges; returns what had been left (each one is a finding: quadriga should have removed it)."""
    found = []
    for pid in pids_mentioning(str(workdir)):
        found.append(f"process {pid}: {' '.join(cmdline(pid))[:160]}")
        stop_pid(pid, signal.SIGTERM, wait=3)
    if shutil.which("ip") and os.geteuid() == 0:
        from quadriga.network.drivers.netns import NetnsDriver, instance_for

        inst = instance_for(agent_state)
        names = [line.split()[0] for line in _run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()]
        links = [link.get("ifname", "") for link in json.loads(_run(["ip", "-j", "link"]).stdout or "[]")]
        mine = [n for n in names if n.startswith(f"qg-{inst}-")]
        mine += [n for n in links if n.startswith((f"qb{inst}", f"qv{inst}"))]
        if mine:
            found += [f"network object {n}" for n in mine]
            with contextlib.suppress(Exception):
                NetnsDriver(inst).cleanup()
    return found


# -------------------------------------------------------------------------------------------- benchmarks
def bench_provisioning(stack: Stack, plan: Plan, footprint: Callable[[], dict[str, Any]] | None) -> dict[str, Any]:
    """POST with the full graph → first 200 through the VIP, and → ACTIVE, for one LB after the other."""
    rows = []
    footprint_result = None
    for i in range(plan.provision_lbs):
        if stack.spares:
            stack.wait_spares()  # each create finds a full pool: what spares are for (absorbing bursts up to N)
        t0 = time.perf_counter()
        lb = stack.create(stack.graph(f"prov-{i}", stack.backends[:2]))
        t_post = time.perf_counter() - t0
        vip = lb["vip_address"]
        safe_target(vip)
        first: dict[str, Any] = {}

        def probe(vip: str = vip, t0: float = t0, first: dict[str, Any] = first) -> None:
            errors: Counter[str] = Counter()
            while time.perf_counter() - t0 < ACTIVE_TIMEOUT:
                status, what = http_get(vip, 80)
                if status == 200:
                    first["t"] = time.perf_counter() - t0
                    break
                errors[what if status == 0 else str(status)] += 1
                time.sleep(PROBE_INTERVAL)
            first["errors"] = dict(errors)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        t_active = stack.wait_active(lb["id"]) - t0
        prober.join(ACTIVE_TIMEOUT + 1)
        rows.append({"lb": lb["id"], "post_s": t_post, "active_s": t_active, **first})
        log(f"  LB {i + 1}: POST {t_post * 1000:.0f} ms, ACTIVE {t_active:.3f} s, first 200 {first.get('t', -1):.3f} s")
        if footprint is not None and len(stack.lb_ids) == plan.footprint_lbs:
            footprint_result = footprint()
    first200 = [r["t"] for r in rows if "t" in r]
    out = {
        "lbs": len(rows),
        "no_200": sum(1 for r in rows if "t" not in r),
        "post_ms": dist([r["post_s"] for r in rows], 1000),
        "active_s": dist([r["active_s"] for r in rows], 1, 3),
        "first200_s": dist(first200, 1, 3),
        "rows": rows,
    }
    if footprint_result is not None:
        out["footprint"] = footprint_result
    return out


def bench_footprint(stack: Stack) -> dict[str, Any]:
    """RSS/PSS of every engine (master + workers) and of quadriga serve, after some traffic on each LB."""
    engines = stack.engines()
    for lb_id in stack.lb_ids:  # let every worker touch its buffers
        lb = stack.ok(stack.api.get(f"/v2/lbaas/loadbalancers/{lb_id}"), 200)["loadbalancer"]
        safe_target(lb["vip_address"])
        for _ in range(20):
            http_get(lb["vip_address"], 80, timeout=1)
    per_engine = []
    for lb_id, directory in engines.items():
        master, workers = engine_pids(directory)
        if master is None:
            continue
        m = read_kib(master) or (0, 0)
        w = [read_kib(p) or (0, 0) for p in workers]
        per_engine.append(
            {
                "lb": lb_id,
                "master_rss_kib": m[0],
                "master_pss_kib": m[1],
                "workers": len(w),
                "worker_rss_kib": sum(x[0] for x in w),
                "worker_pss_kib": sum(x[1] for x in w),
                "rss_kib": m[0] + sum(x[0] for x in w),
                "pss_kib": m[1] + sum(x[1] for x in w),
            }
        )
    assert stack.server is not None and stack.server.pid is not None
    serve = read_kib(stack.server.pid) or (0, 0)
    return {
        "lbs": len(stack.lb_ids),
        "engines": len(per_engine),
        "engine_rss_mib": dist([e["rss_kib"] for e in per_engine], 1 / 1024),
        "engine_pss_mib": dist([e["pss_kib"] for e in per_engine], 1 / 1024),
        "master_rss_mib": dist([e["master_rss_kib"] for e in per_engine], 1 / 1024),
        "worker_rss_mib": dist([e["worker_rss_kib"] for e in per_engine], 1 / 1024),
        "master_pss_mib": dist([e["master_pss_kib"] for e in per_engine], 1 / 1024),
        "worker_pss_mib": dist([e["worker_pss_kib"] for e in per_engine], 1 / 1024),
        "serve_rss_mib": round(serve[0] / 1024, 1),
        "serve_pss_mib": round(serve[1] / 1024, 1),
        "total_rss_mib": round((serve[0] + sum(e["rss_kib"] for e in per_engine)) / 1024, 1),
        "total_pss_mib": round((serve[1] + sum(e["pss_kib"] for e in per_engine)) / 1024, 1),
        "per_engine": per_engine,
    }


def bench_propagation(stack: Stack, plan: Plan, monitor: bool) -> dict[str, Any]:
    """Member added → first request it serves; weight 0 and admin down → no new requests to it."""
    base, spare = stack.backends[:2], stack.backends[2]
    lb = stack.create(stack.graph("prop", base, monitor=monitor))
    stack.wait_active(lb["id"])
    pool = stack.pool_id(lb["id"])
    members = f"/v2/lbaas/pools/{pool}/members"
    prober = Prober(lb["vip_address"], 80, PROPAGATION_INTERVAL, max_seconds=60 + plan.propagation_cycles * 30)
    prober.start()
    results: dict[str, list[dict[str, float]]] = {"add": [], "weight0": [], "admin_down": []}
    is_spare: Callable[[Hit], bool] = lambda h: h.name == spare.name  # noqa: E731
    try:
        if prober.wait_for(lambda h: h.name in (base[0].name, base[1].name), 0, 10) is None:
            raise RuntimeError("no answer through the VIP before the propagation cycles")
        for cycle in range(plan.propagation_cycles):
            # added → first request it serves
            t0 = time.perf_counter()
            body = {"member": {"name": spare.name, "address": spare.address, "protocol_port": spare.port}}
            member, t_http, t_active = stack.change("POST", members, lb["id"], body, 201)
            hit = prober.wait_for(is_spare, t0, 10)
            member_id = member["member"]["id"]
            first = hit.received - t0 if hit else None
            results["add"].append({"http_s": t_http, "active_s": t_active, "served_s": first})
            # weight 0, then admin down → no new requests
            for kind, change, undo in (
                ("weight0", {"weight": 0}, {"weight": 1}),
                ("admin_down", {"admin_state_up": False}, None),
            ):
                t0 = time.perf_counter()
                _, t_http, t_active = stack.change("PUT", f"{members}/{member_id}", lb["id"], {"member": change}, 200)
                time.sleep(plan.propagation_quiet_s)
                hits = [h for h in prober.after(t0 - 0.05) if h.name == spare.name]
                last = max((h.received for h in hits), default=t0) - t0
                late = [h for h in hits if h.sent > t0 + t_active + 0.05]
                results[kind].append(
                    {"http_s": t_http, "active_s": t_active, "stopped_s": max(0.0, last), "late_hits": len(late)}
                )
                if undo is not None:
                    t1 = time.perf_counter()
                    stack.change("PUT", f"{members}/{member_id}", lb["id"], {"member": undo}, 200)
                    if prober.wait_for(is_spare, t1, 10) is None:
                        raise RuntimeError("the member got no traffic again after its weight was restored")
            stack.change("DELETE", f"{members}/{member_id}", lb["id"], None, 204)
            a, w, d = results["add"][-1], results["weight0"][-1], results["admin_down"][-1]
            log(
                f"  cycle {cycle + 1}: added→served {fmt(a['served_s'] and a['served_s'] * 1000, 0)} ms, "
                f"weight 0→stopped {w['stopped_s'] * 1000:.0f} ms, admin down→stopped {d['stopped_s'] * 1000:.0f} ms"
            )
    finally:
        prober.stop()
    errors = Counter(h.name for h in prober.hits if h.name.startswith("!"))
    out: dict[str, Any] = {"health_monitor": monitor, "requests": len(prober.hits), "probe_errors": dict(errors)}
    served = [r["served_s"] for r in results["add"] if r["served_s"] is not None]
    out["add"] = {
        "served_ms": dist(served, 1000),
        "not_served": sum(1 for r in results["add"] if r["served_s"] is None),
        "http_ms": dist([r["http_s"] for r in results["add"]], 1000),
        "active_ms": dist([r["active_s"] for r in results["add"]], 1000),
    }
    for kind in ("weight0", "admin_down"):
        rows = results[kind]
        out[kind] = {
            "stopped_ms": dist([r["stopped_s"] for r in rows], 1000),
            "late_hits": sum(int(r["late_hits"]) for r in rows),
            "http_ms": dist([r["http_s"] for r in rows], 1000),
            "active_ms": dist([r["active_s"] for r in rows], 1000),
        }
    out["rows"] = results
    stack.delete_lb(lb["id"])
    return out


def bench_reload(stack: Stack, plan: Plan) -> dict[str, Any]:
    """wrk through a VIP while listener and pool changes force HAProxy reloads."""
    from quadriga.agent.runtime import RuntimeApi

    lb = stack.create(stack.graph("reload", stack.backends[:2]))
    stack.wait_active(lb["id"])
    listener, pool = stack.listener_id(lb["id"]), stack.pool_id(lb["id"])
    master_cli = RuntimeApi(stack.engine_dir(lb["id"]) / "master.sock")
    vip = lb["vip_address"]
    run_wrk(f"http://{vip}:80/", plan.warmup_wrk_s, plan, stack.root)
    reloads_before = master_cli.show_proc().reloads
    applied: list[dict[str, Any]] = []
    with Wrk(f"http://{vip}:80/", plan.reload_wrk_s, plan, stack.root) as wrk:
        time.sleep(min(2.0, plan.reload_wrk_s / 5))
        for i in range(plan.reload_changes):
            if wrk.remaining() < 2.0:
                break
            if i % 2 == 0:
                path, body = f"/v2/lbaas/listeners/{listener}", {"listener": {"timeout_client_data": 40000 + i}}
            else:
                algorithm = "LEAST_CONNECTIONS" if i % 4 == 1 else "ROUND_ROBIN"
                path, body = f"/v2/lbaas/pools/{pool}", {"pool": {"lb_algorithm": algorithm}}
            _, t_http, t_active = stack.change("PUT", path, lb["id"], body, 200)
            applied.append({"what": path.split("/")[3], "http_s": t_http, "active_s": t_active})
        changes_done = time.monotonic() - wrk.started
    reloads = master_cli.show_proc().reloads - reloads_before
    r = wrk.result
    log(
        f"  {len(applied)} changes, {reloads} reloads, {r.requests} requests, socket errors {r.socket_errors}, "
        f"non-2xx/3xx {r.non_2xx_3xx}"
    )
    stack.delete_lb(lb["id"])
    return {
        "changes": len(applied),
        "reloads": reloads,
        "changes_took_s": round(changes_done, 1),
        "change_active_ms": dist([a["active_s"] for a in applied], 1000),
        "wrk": asdict(r) | {"socket_errors": r.socket_errors},
    }


QUIET_CORES = 0.3  # a wrk run counts as quiet when other processes used less than this meanwhile


def ratio_stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "values": [round(v, 3) for v in values],
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def bench_overhead(stack: Stack, plan: Plan) -> dict[str, Any]:
    """wrk req/s through a quadriga VIP and through hand-written HAProxy configs over the same nginx,
    alternated in ABBA rounds; also the HAProxy CPU per request on each path."""
    backends = stack.backends[:2]
    lb = stack.create(stack.graph("overhead", backends, monitor=False))
    stack.wait_active(lb["id"])
    vip = lb["vip_address"]
    engine = stack.engine_dir(lb["id"])
    engine_cfg = (engine / "haproxy.cfg").read_text()
    nbthread, maxconn = engine_limits(engine_cfg)
    variants: dict[str, tuple[str, Callable[[], list[int]] | None]] = {
        "quadriga": (f"http://{vip}:80/", partial(engine_processes, engine))
    }
    twin = hand_twin(stack, lb["id"], vip, backends, nbthread, maxconn)
    variants["hand-written, same netns" if stack.driver == "netns" else "hand-written"] = (
        f"http://{twin.bind[0]}:{twin.bind[1]}/",
        twin.pids,
    )
    if stack.driver == "netns":
        port = free_port("127.0.0.1")
        hand_dir = stack.workdir / "hand"
        host = HandHaproxy(hand_dir / "host", ("127.0.0.1", port), backends, nbthread, maxconn, "").start()
        stack.hand.append(host)
        variants["hand-written, host loopback"] = (f"http://127.0.0.1:{port}/", host.pids)
    variants["nginx directly"] = (f"http://{backends[0].address}:{backends[0].port}/", None)
    for url, _ in variants.values():
        run_wrk(url, plan.warmup_wrk_s, plan, stack.root)
    runs: dict[str, list[WrkResult]] = {name: [] for name in variants}
    for rnd in range(plan.overhead_rounds):
        order = list(variants) if rnd % 2 == 0 else list(reversed(variants))  # ABBA: drift hits both alike
        for name in order:
            url, proxy = variants[name]
            runs[name].append(run_wrk(url, plan.overhead_wrk_s, plan, stack.root, proxy))
        log(f"  round {rnd + 1}: " + ", ".join(f"{n} {runs[n][-1].rps:,.0f}" for n in variants))
    for hand in list(stack.hand):
        hand.stop()
        stack.hand.remove(hand)
    ratios = {}
    for name in variants:
        if name in ("quadriga", "nginx directly"):
            continue
        pairs = list(zip(runs["quadriga"], runs[name], strict=True))
        quiet = [(a, b) for a, b in pairs if max(a.cpu_other_cores or 0, b.cpu_other_cores or 0) < QUIET_CORES]
        cpu = [(a, b) for a, b in pairs if a.proxy_us_per_req and b.proxy_us_per_req]
        ratios[f"quadriga ÷ {name}"] = {
            "rps": ratio_stats([a.rps / b.rps for a, b in pairs if b.rps]),
            "rps_quiet": ratio_stats([a.rps / b.rps for a, b in quiet if b.rps]),
            # hand-written CPU per request ÷ quadriga's: below 1 when quadriga's engine costs more per request
            "cpu_efficiency": ratio_stats([b.proxy_us_per_req / a.proxy_us_per_req for a, b in cpu]),
        }
    stack.delete_lb(lb["id"])
    return {
        "driver": stack.driver,
        "nbthread": nbthread,
        "variants": {
            name: {
                "rps": [round(r.rps) for r in rs],
                "median_rps": round(statistics.median(r.rps for r in rs)),
                "p50_ms": [r.p50_ms for r in rs],
                "p99_ms": [r.p99_ms for r in rs],
                "proxy_us_per_req": [r.proxy_us_per_req for r in rs],
                "median_proxy_us_per_req": (
                    round(statistics.median(x), 2)
                    if (x := [r.proxy_us_per_req for r in rs if r.proxy_us_per_req])
                    else None
                ),
                "socket_errors": sum(r.socket_errors for r in rs),
                "non_2xx_3xx": sum(r.non_2xx_3xx for r in rs),
                "other_cores": [r.cpu_other_cores for r in rs],
            }
            for name, rs in runs.items()
        },
        "ratios": ratios,
        "engine_config": engine_cfg,
        "hand_config": twin.text,
    }


# ---------------------------------------------------------------------------------------------- report
def report(info: dict[str, Any], results: dict[str, Any], plan: Plan, quick: bool) -> str:
    """The markdown summary: machine, then one table per benchmark with its target."""
    out = [
        "## Machine\n",
        f"- {info['nproc']} × {info['cpu_model']}, {info['memory_gib']} GiB, kernel {info['kernel']}",
        f"- {info['haproxy']}; {info['nginx']}; {info['wrk'].split(' Copyright')[0]}; Python {info['python']}",
        f"- commit {info['commit']}" + (" (work tree has uncommitted changes)" if info["work_tree_dirty"] else ""),
        f"- mode: {'--quick' if quick else 'full'}; wrk -t{plan.wrk_threads} -c{plan.wrk_connections}\n",
    ]
    if p := results.get("provisioning"):
        f2, act, post = p["first200_s"], p["active_s"], p["post_ms"]
        ok = (
            None
            if not f2.get("n")
            else f2["p50"] <= TARGETS["provision_first200_p50_s"] and f2["p95"] <= TARGETS["provision_first200_p95_s"]
        )
        out += [
            f"### Provisioning ({p['lbs']} LBs, one after another; POST with the whole graph)\n",
            "| measure | n | p50 | p95 | min | max | target | |",
            "|---|---|---|---|---|---|---|---|",
            f"| POST → first 200 through the VIP (s) | {f2.get('n')} | {fmt(f2.get('p50'), 3)} | "
            f"{fmt(f2.get('p95'), 3)} | {fmt(f2.get('min'), 3)} | {fmt(f2.get('max'), 3)} | p50 ≤ 1 s, p95 ≤ 2 s "
            f"(Octavia {OCTAVIA_PROVISIONING}) | {verdict(ok)} |",
            f"| POST → ACTIVE (s) | {act.get('n')} | {fmt(act.get('p50'), 3)} | {fmt(act.get('p95'), 3)} | "
            f"{fmt(act.get('min'), 3)} | {fmt(act.get('max'), 3)} | | |",
            f"| POST answered (ms) | {post.get('n')} | {fmt(post.get('p50'))} | {fmt(post.get('p95'))} | "
            f"{fmt(post.get('min'))} | {fmt(post.get('max'))} | | |",
            "",
        ]
        if p["no_200"]:
            out.append(f"- {p['no_200']} LBs never answered 200 within {ACTIVE_TIMEOUT:.0f} s\n")
    if (p := results.get("provisioning")) and (sp := results.get("provisioning_spares")):
        out += [
            f"### Provisioning with spare engines ({sp['lbs']} LBs each; the agent keeps {sp['spares']} spares, "
            "and each create starts with a full pool)\n",
            "| measure | spares | n | p50 | p95 | min | max |",
            "|---|---|---|---|---|---|---|",
        ]
        for title, key in (("POST → first 200 through the VIP (s)", "first200_s"), ("POST → ACTIVE (s)", "active_s")):
            for count, run in ((0, p), (sp["spares"], sp)):
                d = run[key]
                out.append(
                    f"| {title} | {count} | {d.get('n')} | {fmt(d.get('p50'), 3)} | {fmt(d.get('p95'), 3)} | "
                    f"{fmt(d.get('min'), 3)} | {fmt(d.get('max'), 3)} |"
                )
        out.append("")
    for prop in results.get("propagation", []):
        hm = "with" if prop["health_monitor"] else "without"
        out += [
            f"### Change propagation (pool {hm} a health monitor; {prop['requests']:,} probe requests)\n",
            "| change | n | p50 ms | p95 ms | max ms | API answered p50 ms | ACTIVE p50 ms | target p50 ≤ 200 ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for kind, title, key in (
            ("add", "member added → first request it serves", "served_ms"),
            ("weight0", "weight 0 → no new requests", "stopped_ms"),
            ("admin_down", "admin down → no new requests", "stopped_ms"),
        ):
            d = prop[kind][key]
            ok = None if not d.get("n") else d["p50"] <= TARGETS["propagation_p50_ms"]
            out.append(
                f"| {title} | {d.get('n')} | {fmt(d.get('p50'))} | {fmt(d.get('p95'))} | {fmt(d.get('max'))} | "
                f"{fmt(prop[kind]['http_ms'].get('p50'))} | {fmt(prop[kind]['active_ms'].get('p50'))} | {verdict(ok)} |"
            )
        late = prop["weight0"]["late_hits"] + prop["admin_down"]["late_hits"]
        out += [
            "",
            f"- requests a stopped member still got after its change was ACTIVE: {late}; "
            f"added members that never served: {prop['add']['not_served']}; probe errors: {prop['probe_errors'] or 0}",
            "",
        ]
    if r := results.get("reload"):
        w = r["wrk"]
        ok = w["socket_errors"] == 0 and w["non_2xx_3xx"] == 0
        out += [
            f"### Reload safety (wrk {w['seconds']} s keep-alive through a VIP while changes go through the API)\n",
            "| changes | HAProxy reloads | requests | req/s | p99 ms | socket errors (connect/read/write/timeout) "
            "| non-2xx/3xx | target 0 / 0 |",
            "|---|---|---|---|---|---|---|---|",
            f"| {r['changes']} in {r['changes_took_s']} s | {r['reloads']} | {w['requests']:,} | {w['rps']:,.0f} | "
            f"{fmt(w['p99_ms'], 2)} | {w['socket_errors']} ({w['connect_errors']}/{w['read_errors']}/"
            f"{w['write_errors']}/{w['timeout_errors']}) | {w['non_2xx_3xx']} | {verdict(ok)} |",
            "",
            f"- each change → ACTIVE: p50 {fmt(r['change_active_ms'].get('p50'))} ms, "
            f"p95 {fmt(r['change_active_ms'].get('p95'))} ms",
            "",
        ]
    for o in results.get("overhead", []):
        out += [
            f"### Data-plane overhead, {o['driver']} driver (nbthread {o['nbthread']}, mode http, 2 nginx backends, "
            f"{plan.overhead_rounds} ABBA rounds of {plan.overhead_wrk_s} s)\n",
            "| path | median req/s | each round | p50 ms (median) | p99 ms (median) | HAProxy CPU µs/req (median) "
            "| errors | others' CPU, cores (each round) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, v in o["variants"].items():
            p50s = [x for x in v["p50_ms"] if x is not None]
            p99s = [x for x in v["p99_ms"] if x is not None]
            out.append(
                f"| {name} | {v['median_rps']:,} | {', '.join(f'{x:,}' for x in v['rps'])} | "
                f"{fmt(statistics.median(p50s) if p50s else None, 2)} | "
                f"{fmt(statistics.median(p99s) if p99s else None, 2)} | {fmt(v['median_proxy_us_per_req'])} | "
                f"{v['socket_errors'] + v['non_2xx_3xx']} | {', '.join(fmt(x, 2) for x in v['other_cores'])} |"
            )
        out += [
            "",
            "| ratio | req/s: median (min – max), n | req/s, quiet rounds only* | HAProxy CPU/req, hand-written "
            "÷ quadriga | target ≥ 0.95 (req/s) |",
            "|---|---|---|---|---|",
        ]
        for name, rt in o["ratios"].items():
            cells = []
            for key in ("rps", "rps_quiet", "cpu_efficiency"):
                d = rt[key]
                cells.append(f"{d['median']:.3f} ({d['min']:.3f} – {d['max']:.3f}), {d['n']}" if d["n"] else "–")
            out.append(
                f"| {name} | {' | '.join(cells)} | {verdict(rt['rps']['median'] >= TARGETS['overhead_ratio'])} |"
            )
        out += ["", f"\\* both runs of the pair with other processes under {QUIET_CORES} cores.", ""]
    if f := results.get("footprint"):
        er, ep = f["engine_rss_mib"], f["engine_pss_mib"]
        engine_mib, total_mib = TARGETS["engine_mb"] * MIB_PER_MB, TARGETS["total_mb"] * MIB_PER_MB
        out += [
            f"### Footprint ({f['lbs']} LBs, {f['engines']} engines)\n",
            "| what | RSS MiB (p50 / max) | PSS MiB (p50 / max) | target | |",
            "|---|---|---|---|---|",
            f"| one engine, master + worker | {fmt(er.get('p50'))} / {fmt(er.get('max'))} | "
            f"{fmt(ep.get('p50'))} / {fmt(ep.get('max'))} | ≤ 20 MB ({engine_mib:.1f} MiB) | "
            f"RSS {verdict(er['max'] <= engine_mib if er.get('n') else None)}, "
            f"PSS {verdict(ep['max'] <= engine_mib if ep.get('n') else None)} |",
            f"| master | {fmt(f['master_rss_mib'].get('p50'))} / {fmt(f['master_rss_mib'].get('max'))} | "
            f"{fmt(f['master_pss_mib'].get('p50'))} / {fmt(f['master_pss_mib'].get('max'))} | | |",
            f"| worker | {fmt(f['worker_rss_mib'].get('p50'))} / {fmt(f['worker_rss_mib'].get('max'))} | "
            f"{fmt(f['worker_pss_mib'].get('p50'))} / {fmt(f['worker_pss_mib'].get('max'))} | | |",
            f"| quadriga serve | {f['serve_rss_mib']} | {f['serve_pss_mib']} | | |",
            f"| quadriga serve + all engines | {f['total_rss_mib']} | {f['total_pss_mib']} | "
            f"≤ 250 MB ({total_mib:.1f} MiB) | RSS {verdict(f['total_rss_mib'] <= total_mib)}, "
            f"PSS {verdict(f['total_pss_mib'] <= total_mib)} |",
            "",
        ]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------- main
def interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class Runner:
    """Runs the selected benchmarks on one stack after the other, collecting results and failures."""

    plan: Plan
    wait_quiet: float
    results: dict[str, Any]
    failures: list[str]

    def step(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run one benchmark; a failure is recorded and the next benchmark still runs."""
        log(f"== {name}")
        if self.wait_quiet > 0:
            wait_until_quiet(self.wait_quiet, 0.3, log)
        try:
            return fn(*args)
        except Exception as exc:
            self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            log(f"!! {name} failed: {exc}")
            return None

    def footprint(self, stack: Stack) -> dict[str, Any]:
        for i in range(self.plan.footprint_lbs - len(stack.lb_ids)):
            stack.wait_active(stack.create(stack.graph(f"fp-{i}", stack.backends[:2]))["id"])
        return bench_footprint(stack)

    def run(self, stack: Stack, wanted: list[str], monitors: list[bool]) -> None:
        plan, results, d = self.plan, self.results, stack.driver
        if "provisioning" in wanted:
            fp = partial(bench_footprint, stack) if "footprint" in wanted else None
            prov = self.step(f"provisioning ({d})", bench_provisioning, stack, plan, fp)
            if prov is not None:
                if "footprint" in prov:
                    results["footprint"] = prov.pop("footprint")
                results["provisioning"] = prov
        if "footprint" in wanted and results.get("footprint") is None:
            results["footprint"] = self.step(f"footprint ({d})", self.footprint, stack)
        self.step("deleting the load balancers", stack.delete_all)
        if "propagation" in wanted:
            for monitor in monitors:
                r = self.step(f"propagation ({d}, health monitor {monitor})", bench_propagation, stack, plan, monitor)
                if r is not None:
                    results.setdefault("propagation", []).append(r)
        if "reload" in wanted:
            results["reload"] = self.step(f"reload safety ({d})", bench_reload, stack, plan)
        if "overhead" in wanted:
            r = self.step(f"overhead ({d})", bench_overhead, stack, plan)
            if r is not None:
                results.setdefault("overhead", []).append(r)


def on_stack(runner: Runner, stack: Stack, label: str, work: Callable[[Stack], None]) -> list[str]:
    """Open `stack`, do `work` on it, close it whatever happens; returns what it left behind."""
    try:
        stack.open()
        work(stack)
    except Exception as exc:
        runner.failures.append(f"{label} stack: {type(exc).__name__}: {exc}")
        log(f"!! {label} stack failed: {exc}")
    finally:
        log(f"== stopping the {label} stack")
        stack.close()
    return stack.leftovers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts and short wrk runs (< 2 minutes)")
    ap.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma list of: {', '.join(BENCHMARKS)}")
    ap.add_argument(
        "--drivers",
        default="netns,loopback",
        help="network drivers: the first runs every benchmark, the others only the overhead comparison "
        "(default netns,loopback; netns needs root)",
    )
    ap.add_argument(
        "--propagation-without-monitor",
        action="store_true",
        help="measure propagation also on a pool without a health monitor",
    )
    ap.add_argument(
        "--spare-engines",
        type=int,
        default=0,
        metavar="N",
        help="also measure provisioning on a quadriga whose agent keeps N spare engines (default: not measured)",
    )
    ap.add_argument("--out", default="dataplane-results.json", help="JSON file with every measurement")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each benchmark wait up to this long until other processes use < 0.3 cores",
    )
    args = ap.parse_args(argv)
    selected = [b.strip() for b in args.only.split(",") if b.strip()]
    drivers = [d.strip() for d in args.drivers.split(",") if d.strip()]
    if set(selected) - set(BENCHMARKS) or not selected:
        ap.error(f"--only takes {', '.join(BENCHMARKS)}")
    if set(drivers) - {"netns", "loopback"} or not drivers:
        ap.error("--drivers takes netns and/or loopback")
    if missing := check_tools("netns" in drivers):
        print("dataplane_bench: missing on this machine:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    plan = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    info = machine_info()
    started = dt.datetime.now(dt.UTC)
    runner = Runner(plan, args.wait_quiet, {}, [])
    leftovers: list[str] = []
    monitors = [True, False] if args.propagation_without_monitor else [True]
    workdir = Path(tempfile.mkdtemp(prefix="qdpb-"))  # short: HAProxy's unix socket paths must fit
    try:
        for n, driver in enumerate(drivers):
            wanted = selected if n == 0 else [b for b in selected if b == "overhead"]
            if not wanted:
                continue
            stack = Stack(driver, workdir, plan)
            leftovers += on_stack(runner, stack, driver, partial(runner.run, wanted=wanted, monitors=monitors))
            if n == 0 and args.spare_engines > 0 and "provisioning" in wanted:

                def spares(st: Stack, label: str = f"provisioning ({driver}, spares)") -> None:
                    prov = runner.step(label, bench_provisioning, st, plan, None)
                    if prov is not None:
                        runner.results["provisioning_spares"] = {**prov, "spares": args.spare_engines}

                stack = Stack(driver, workdir, plan, spares=args.spare_engines)
                leftovers += on_stack(runner, stack, f"{driver} with spares", spares)
    except KeyboardInterrupt:
        runner.failures.append("interrupted")
        log("!! interrupted: cleaned up")
    finally:
        for pid in pids_mentioning(str(workdir)):
            leftovers.append(f"process {pid}: {' '.join(cmdline(pid))[:160]}")
            stop_pid(pid)
        shutil.rmtree(workdir, ignore_errors=True)

    results = {k: v for k, v in runner.results.items() if v is not None}
    print(report(info, results, plan, args.quick))
    if runner.failures:
        print("### Failures\n\n" + "\n".join(f"- {f}" for f in runner.failures) + "\n")
    if leftovers:
        print("### Left behind by quadriga (removed by the benchmark)\n\n" + "\n".join(f"- {x}" for x in leftovers))
    record = {
        "machine": info,
        "date": started.isoformat(timespec="seconds"),
        "command": "python bench/dataplane_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "plan": asdict(plan),
        "targets": TARGETS,
        "results": results,
        "failures": runner.failures,
        "leftovers": leftovers,
    }
    Path(args.out).write_text(json.dumps(record, indent=1))
    log(f"raw numbers written to {args.out}; {time.monotonic() - T0:.0f} s in all")
    return 1 if runner.failures or leftovers else 0


T0 = time.monotonic()

if __name__ == "__main__":
    sys.exit(main())
