#!/usr/bin/env python3
"""Control-plane API benchmark for `quadriga serve` (issue 2).

With 1,000 load balancers stored, it measures latency (p50/p99) and requests/s of

  (a) POST loadbalancer      200 sequential, then 800 with 8 clients, on a fresh database
  (b) GET one LB             random ids
  (c) GET a page             ?limit=50 (first page)
  (d) GET all                no limit: all 1,000 LBs
  (e) batch member update    PUT /v2/lbaas/pools/{id}/members with 200 members -> 202, then wait until the
                             LB is ACTIVE again; both the HTTP latency and the time until ACTIVE are reported

each with 1 client and with 8 concurrent clients (Python threads on the same machine, like the recorded
Octavia figures in shared/reference/octavia-peer.md). Two connection modes, each on its own fresh server
and database:

  new        a new TCP connection per request, `Connection: close` (primary; what the Octavia figures used,
             gunicorn sync workers close every connection)
  keepalive  one persistent connection per client thread (secondary)

Everything goes to 127.0.0.1 only, every loop is bounded by a request count and by a hard time limit per
scenario (`--time-limit`, default 120 s), after which the scenario stops and reports what it has.

Usage:
  python bench/api_bench.py [--db sqlite|postgres] [--out results.json] [--quick] [--modes new,keepalive]

Without --db it runs SQLite, plus PostgreSQL when $QUADRIGA_BENCH_DATABASE_URL is set. The PostgreSQL
database named there is WIPED (all tables and enum types of its current schema are dropped) before each run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import machine  # bench/machine.py (the script's directory is on sys.path)

REPO = Path(__file__).resolve().parents[1]
PG_ENV = "QUADRIGA_BENCH_DATABASE_URL"
HOST = "127.0.0.1"
PROJECT = "bench"
BASE_HEADERS = {"X-Project-Id": PROJECT, "Accept": "application/json"}
MAX_ERROR_SAMPLES = 5
# Waiting for ACTIVE after a batch update polls GET LB at this interval (so "time until ACTIVE" has this
# resolution); 8 waiting clients poll at most 160 times a second, which costs the server ~0.4 core at most.
BATCH_POLL_INTERVAL = 0.05
KEEPALIVE_IDLE_REOPEN = 4.0  # seconds; below uvicorn's default keep-alive timeout (5 s)

# Recorded reference figures of the real Octavia 19.0.0 API (2 sync gunicorn workers, SQLite file, new
# connection per request, load generator on the same 2 cores): shared/reference/octavia-peer.md,
# section "Performance". Ranges over 3 runs: (rps_low, rps_high, p50_low, p50_high, p99_low, p99_high).
OCTAVIA_REFERENCE: dict[tuple[str, int], tuple[float, float, float, float, float, float]] = {
    ("post", 1): (24.6, 28.0, 34, 38, 70, 192),
    ("post", 8): (26.4, 55.4, 146, 243, 197, 1481),
    ("get_one", 1): (64, 74, 14, 16, 19, 20),
    ("get_one", 8): (130, 143, 54, 62, 76, 104),
    ("get_page", 1): (22.6, 30.1, 28, 42, 138, 178),
    ("get_page", 8): (48, 54, 140, 166, 249, 285),
    ("get_all", 1): (2.4, 2.7, 353, 435, 515, 630),
    ("get_all", 8): (4.5, 5.2, 1452, 1823, 1913, 1992),
}

TITLES = {
    "post": "(a) POST loadbalancer",
    "get_one": "(b) GET one LB",
    "get_page": "(c) GET list limit=50",
    "get_all": "(d) GET list, no limit",
    "batch_http": "(e) PUT 200 members (HTTP)",
    "batch_active": "(e) PUT 200 members → ACTIVE",
}


@dataclass(frozen=True)
class Plan:
    lbs_sequential: int
    lbs_concurrent: int
    get_one: tuple[int, int]  # (sequential count, 8-client count)
    get_page: tuple[int, int]
    get_all: tuple[int, int]
    batch: tuple[int, int]
    batch_members: int = 200
    clients: int = 8


FULL = Plan(200, 800, get_one=(500, 500), get_page=(300, 300), get_all=(20, 40), batch=(10, 16))
QUICK = Plan(20, 80, get_one=(50, 50), get_page=(30, 30), get_all=(5, 8), batch=(3, 8))


# ---------------------------------------------------------------------------------------------- machine
def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    versions = {}
    for dist in ("quadriga", "fastapi", "starlette", "uvicorn", "sqlalchemy", "pydantic", "psycopg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return machine.basics() | {
        "sqlite": sqlite3.sqlite_version,
        "commit": _run(["git", "rev-parse", "HEAD"]),
        "work_tree_dirty": bool(dirty),
        "packages": versions,
    }


def print_machine(info: dict[str, Any]) -> None:
    print("## Machine\n")
    print(f"- CPU: {info['nproc']} × {info['cpu_model']}")
    print(f"- Memory: {info['memory_gib']} GiB, kernel {info['kernel']}")
    print(f"- Python {info['python']}, SQLite {info['sqlite']}")
    if info.get("postgres"):
        print(f"- PostgreSQL: {info['postgres']}")
    print("- Packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    dirty = " (work tree has uncommitted changes)" if info["work_tree_dirty"] else ""
    print(f"- Commit: {info['commit']}{dirty}\n", flush=True)


# ---------------------------------------------------------------------------------------------- server
def _load_server_class() -> Any:
    """tests/support/server.py's QuadrigaServer, or the small stand-in below when it is not there."""
    sys.path.insert(0, str(REPO))
    try:
        from tests.support.server import QuadrigaServer  # type: ignore[import-not-found]

        return QuadrigaServer
    except Exception:
        return _MiniServer
    finally:
        sys.path.remove(str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _MiniServer:
    """Stand-in for tests/support/server.py: free ports, temp state dir, wait for /healthcheck, kill by PID."""

    def __init__(self, *, database_url: str | None = None, extra_args: list[str] = (), **_: Any) -> None:
        self.database_url = database_url
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _MiniServer:
        self.state_dir = Path(tempfile.mkdtemp(prefix="quadriga-bench-"))
        self.lb_port, self.net_port = _free_port(), _free_port()
        self.lb_url, self.net_url = f"http://{HOST}:{self.lb_port}", f"http://{HOST}:{self.net_port}"
        cmd = [sys.executable, "-m", "quadriga", "serve", "--state-dir", str(self.state_dir), "--host", HOST]
        cmd += ["--port", str(self.lb_port), "--network-port", str(self.net_port), "--health-listen", f"{HOST}:0"]
        cmd += ["--keymanager-port", "0"]
        cmd += self.extra_args
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        self.log_path = self.state_dir / "server.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(OSError), opener.open(self.lb_url + "/healthcheck", timeout=2) as r:
                if r.status == 200:
                    return self
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("quadriga serve did not become healthy")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def log_tail(self, lines: int = 50) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __exit__(self, *_: object) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.state_dir, ignore_errors=True)


def _pg_sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1] if url.startswith("postgresql://") else url


def wipe_postgres(url: str) -> str:
    """Drop every table and enum type in the current schema (a fresh database); returns the server version."""
    from sqlalchemy import create_engine, text

    engine = create_engine(_pg_sqlalchemy_url(url))
    try:
        with engine.begin() as conn:
            tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))
            for (name,) in tables.all():
                conn.execute(text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
            types = conn.execute(
                text(
                    "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                    "WHERE n.nspname = current_schema() AND t.typtype = 'e'"
                )
            )
            for (name,) in types.all():
                conn.execute(text(f'DROP TYPE IF EXISTS "{name}" CASCADE'))
            return conn.execute(text("SHOW server_version")).scalar_one()
    finally:
        engine.dispose()


def system_busy_seconds() -> float | None:
    """CPU seconds all processes on the machine have been busy (every core), from /proc/stat."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    except (OSError, ValueError, IndexError):
        return None


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run_guarded(bench: Any, label: str, log: Callable[[str], None]) -> str | None:
    """Run `bench`; a failure stops it early and is returned (and logged) so the other runs still report."""
    try:
        bench.run()
    except Exception as exc:
        failure = f"{type(exc).__name__}: {exc}"
        log(f"!! {label} stopped early: {failure}")
        return failure
    return None


def wait_until_quiet(max_wait: float, threshold: float, log: Callable[[str], None]) -> float | None:
    """Wait (at most `max_wait` s) until the machine's busy CPU over 5 s is below `threshold` cores; returns
    the last measurement. Other people's test runs on the same 2 cores distort every figure."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = system_busy_seconds(), time.monotonic()
        time.sleep(5)
        b1, t1 = system_busy_seconds(), time.monotonic()
        if b0 is None or b1 is None:
            return None
        busy = (b1 - b0) / (t1 - t0)
        if busy < threshold or time.monotonic() >= deadline:
            log(f"-- machine busy {busy:.2f} cores before the run" + ("" if busy < threshold else " (gave up waiting)"))
            return round(busy, 2)
        log(f"-- machine busy {busy:.2f} cores (others' processes); waiting for < {threshold}")


def listening_pid(port: int) -> int | None:
    """The PID of the local process listening on TCP `port` (to account the PostgreSQL server's CPU)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def process_tree_cpu_seconds(pid: int | None) -> float | None:
    """CPU of `pid` and its direct children (PostgreSQL's postmaster and its backends), reaped ones included."""
    if pid is None:
        return None
    total = 0.0
    found = False
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(proc.name) == pid or int(fields[1]) == pid:
            total += sum(int(x) for x in fields[11:15]) / tick
            found = found or int(proc.name) == pid
    return total if found else None


def process_cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------- HTTP
@dataclass
class Reply:
    status: int  # 0: no HTTP answer (the exception text is in body)
    body: bytes
    seconds: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    """A tiny http.client wrapper: a new connection per request (`keepalive=False`) or one persistent one."""

    def __init__(self, url: str, keepalive: bool, retry_stale: bool = False) -> None:
        hostport = url.split("://", 1)[1]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.keepalive = keepalive
        self.retry_stale = retry_stale  # unmeasured control traffic: reopen a kept-alive connection the server closed
        self.conn: http.client.HTTPConnection | None = None
        self.last_used = 0.0

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        reused = self.conn is not None
        reply = self._request(method, path, body)
        if reply.status == 0 and reused and self.retry_stale:
            reply = self._request(method, path, body)
        return reply

    def _request(self, method: str, path: str, body: Any = None) -> Reply:
        if self.conn is not None and time.monotonic() - self.last_used > KEEPALIVE_IDLE_REOPEN:
            self.close()  # uvicorn drops idle connections after 5 s; a pooling client would reopen too
        headers = dict(BASE_HEADERS)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if not self.keepalive:
            headers["Connection"] = "close"
        start = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            self.conn.request(method, path, body=payload, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
            status = resp.status
            if not self.keepalive or resp.will_close:
                self.close()
            self.last_used = time.monotonic()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Reply(0, f"{type(exc).__name__}: {exc}".encode(), time.perf_counter() - start)
        return Reply(status, data, time.perf_counter() - start)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ---------------------------------------------------------------------------------------------- load
@dataclass
class Result:
    scenario: str
    clients: int
    mode: str
    requested: int
    latencies: list[float] = field(default_factory=list)  # seconds, every answered or failed request
    errors: int = 0
    error_statuses: Counter = field(default_factory=Counter)
    error_samples: list[dict[str, Any]] = field(default_factory=list)
    wall: float = 0.0
    timed_out: bool = False
    server_cpu: float | None = None
    client_cpu: float | None = None
    db_cpu: float | None = None  # PostgreSQL server processes (SQLite runs inside the server process)
    other_cores: float | None = None  # CPU used by other processes on the machine meanwhile, in cores
    load_before: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, reply: Reply, what: str = "") -> None:
        self.latencies.append(reply.seconds)
        if not reply.ok:
            self.errors += 1
            self.error_statuses[reply.status] += 1
            if len(self.error_samples) < MAX_ERROR_SAMPLES:
                self.error_samples.append(
                    {"request": what, "status": reply.status, "body": reply.body[:1000].decode(errors="replace")}
                )

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        n = len(lat)

        def pct(q: float) -> float | None:
            return round(lat[max(0, math.ceil(q * n) - 1)] * 1000, 2) if n else None

        return {
            "scenario": self.scenario,
            "title": TITLES[self.scenario],
            "clients": self.clients,
            "mode": self.mode,
            "requested": self.requested,
            "completed": n,
            "errors": self.errors,
            "error_statuses": {str(k): v for k, v in self.error_statuses.items()},
            "error_samples": self.error_samples,
            "wall_s": round(self.wall, 3),
            "rps": round(n / self.wall, 2) if self.wall > 0 else None,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "min_ms": round(lat[0] * 1000, 2) if n else None,
            "max_ms": round(lat[-1] * 1000, 2) if n else None,
            "mean_ms": round(sum(lat) / n * 1000, 2) if n else None,
            "timed_out": self.timed_out,
            "server_cpu_ms_per_req": round(self.server_cpu / n * 1000, 2)
            if n and self.server_cpu is not None
            else None,
            "client_cpu_ms_per_req": round(self.client_cpu / n * 1000, 2)
            if n and self.client_cpu is not None
            else None,
            "db_cpu_ms_per_req": round(self.db_cpu / n * 1000, 2) if n and self.db_cpu is not None else None,
            "other_cores": None if self.other_cores is None else round(self.other_cores, 2),
            "loadavg_before": self.load_before,
            "extra": self.extra,
            "latencies_ms": [round(x * 1000, 3) for x in self.latencies],
        }


def run_load(
    results: list[Result],
    clients: int,
    count: int,
    time_limit: float,
    server_pid: int | None,
    db_pid: int | None,
    job: Callable[[int, int, list[Result]], None],
) -> None:
    """Run `job(worker, index, results)` `count` times over `clients` threads; stop starting new jobs at the
    deadline. `results` share the wall clock and CPU accounting."""
    lock = threading.Lock()
    next_index = iter(range(count))
    deadline = time.monotonic() + time_limit
    stopped = threading.Event()
    failures: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            while True:
                if time.monotonic() >= deadline:
                    stopped.set()
                    return
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                job(w, i, results)
        except BaseException as exc:
            failures.append(exc)

    load0, busy0 = load_average(), system_busy_seconds()
    cpu0, ccpu0, dcpu0 = process_cpu_seconds(server_pid), time.process_time(), process_tree_cpu_seconds(db_pid)
    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(time_limit + 300)
    wall = time.perf_counter() - start
    cpu1, ccpu1, dcpu1 = process_cpu_seconds(server_pid), time.process_time(), process_tree_cpu_seconds(db_pid)
    db_cpu = dcpu1 - dcpu0 if dcpu0 is not None and dcpu1 is not None else None
    busy1 = system_busy_seconds()
    other = None
    if None not in (busy0, busy1, cpu0, cpu1) and wall > 0:
        other = max(0.0, ((busy1 - busy0) - (cpu1 - cpu0) - (ccpu1 - ccpu0) - (db_cpu or 0.0)) / wall)
    for r in results:
        r.wall = wall
        r.timed_out = stopped.is_set() or any(t.is_alive() for t in threads)
        r.server_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        r.client_cpu = ccpu1 - ccpu0
        r.other_cores = other
        r.db_cpu = db_cpu
        r.load_before = load0
    if failures:
        raise failures[0]


# ---------------------------------------------------------------------------------------------- bench
class Bench:
    def __init__(self, server: Any, mode: str, plan: Plan, time_limit: float, log: Callable[[str], None]) -> None:
        self.server = server
        self.mode = mode
        self.keepalive = mode == "keepalive"
        self.plan = plan
        self.time_limit = time_limit
        self.log = log
        self.ctl = Http(server.lb_url, keepalive=True, retry_stale=True)  # unmeasured control traffic
        self.results: list[Result] = []
        self.notes: list[str] = []
        self.lb_ids: list[str] = []
        self.db_pid: int | None = None
        self.create_only = False  # stop after the POSTs (and the wait until all are ACTIVE)
        self._local = threading.local()
        self._open: list[Http] = []
        self._open_lock = threading.Lock()

    def http(self) -> Http:
        """The calling thread's measured connection (new per scenario thread)."""
        h = getattr(self._local, "http", None)
        if h is None:
            h = self._local.http = Http(self.server.lb_url, self.keepalive)
            with self._open_lock:
                self._open.append(h)
        return h

    def load(self, names: list[str], clients: int, count: int, job: Callable[[int, int, list[Result]], None]):
        results = [Result(n, clients, self.mode, count) for n in names]
        self._local = threading.local()  # every scenario's threads open their own connections
        try:
            run_load(results, clients, count, self.time_limit, self.server.pid, self.db_pid, job)
        finally:
            with self._open_lock:
                for h in self._open:
                    h.close()
                self._open.clear()
        self.results.extend(results)
        for r in results:
            s = r.summary()
            self.log(
                f"  {s['title']:<32} c={clients} n={s['completed']:>4} rps={s['rps']} p50={s['p50_ms']}ms "
                f"p99={s['p99_ms']}ms errors={s['errors']}{' TIME LIMIT' if s['timed_out'] else ''}"
            )
        return results

    # -- setup ------------------------------------------------------------------------------------
    def create_subnet(self) -> str:
        net = Http(self.server.net_url, keepalive=True, retry_stale=True)
        r = net.request("POST", "/v2.0/networks", {"network": {"name": "bench"}})
        if r.status != 201:
            raise RuntimeError(f"network create: {r.status} {r.body[:500]!r}")
        body = {
            "subnet": {
                "network_id": r.json()["network"]["id"],
                "cidr": "10.99.0.0/16",
                "ip_version": 4,
                "name": "bench-subnet",
            }
        }
        r = net.request("POST", "/v2.0/subnets", body)
        if r.status != 201:
            raise RuntimeError(f"subnet create: {r.status} {r.body[:500]!r}")
        net.close()
        return r.json()["subnet"]["id"]

    def list_all(self) -> list[dict[str, Any]]:
        r = self.ctl.request("GET", "/v2/lbaas/loadbalancers")
        if not r.ok:
            raise RuntimeError(f"list: {r.status} {r.body[:500]!r}")
        return r.json()["loadbalancers"]

    def wait_all_active(self, expected: int, limit: float = 120) -> float:
        start = time.monotonic()
        statuses: Counter = Counter()
        while time.monotonic() - start < limit:
            lbs = self.list_all()
            statuses = Counter(lb["provisioning_status"] for lb in lbs)
            if len(lbs) >= expected and statuses.get("ACTIVE", 0) == len(lbs):
                return time.monotonic() - start
            time.sleep(0.25)
        raise RuntimeError(f"LBs not all ACTIVE after {limit}s: {dict(statuses)}")

    def wait_lb_active(
        self, http: Http, lb_id: str, limit: float = 60, interval: float = 0.01
    ) -> tuple[float, str, int]:
        """Poll GET LB every `interval` s until ACTIVE; (seconds waited, final status, GETs sent)."""
        start = time.perf_counter()
        status = "?"
        polls = 0
        while time.perf_counter() - start < limit:
            polls += 1
            r = http.request("GET", f"/v2/lbaas/loadbalancers/{lb_id}")
            if r.ok:
                status = r.json()["loadbalancer"]["provisioning_status"]
                if status in ("ACTIVE", "ERROR"):
                    return time.perf_counter() - start, status, polls
            else:
                status = f"HTTP {r.status}"
            time.sleep(interval)
        return time.perf_counter() - start, status, polls

    # -- scenarios --------------------------------------------------------------------------------
    def run(self) -> None:
        p = self.plan
        subnet = self.create_subnet()
        lock = threading.Lock()

        def post(w: int, i: int, res: list[Result]) -> None:
            name = f"bench-{w}-{i}-{random.getrandbits(32):08x}"
            r = self.http().request(
                "POST", "/v2/lbaas/loadbalancers", {"loadbalancer": {"name": name, "vip_subnet_id": subnet}}
            )
            res[0].record(r, "POST /v2/lbaas/loadbalancers")
            if r.status == 201:
                with lock:
                    self.lb_ids.append(r.json()["loadbalancer"]["id"])

        self.log(f"[{self.mode}] POST load balancers")
        self.load(["post"], 1, p.lbs_sequential, post)
        self.load(["post"], p.clients, p.lbs_concurrent, post)
        total = p.lbs_sequential + p.lbs_concurrent
        after_post = Counter(lb["provisioning_status"] for lb in self.list_all())
        self.notes.append(f"statuses right after the last POST: {dict(after_post)}")
        waited = self.wait_all_active(len(self.lb_ids))
        self.notes.append(f"{len(self.lb_ids)} of {total} LBs created; all ACTIVE {waited:.2f} s after the last POST")
        lbs = self.list_all()
        ids = [lb["id"] for lb in lbs]
        self.notes.append(activation_lag_note(lbs))
        if len(ids) != total:
            self.notes.append(f"GET all returned {len(ids)} LBs, expected {total}")
        if self.create_only:
            return

        def get_one(w: int, i: int, res: list[Result]) -> None:
            lb_id = random.choice(ids)
            res[0].record(self.http().request("GET", f"/v2/lbaas/loadbalancers/{lb_id}"), f"GET LB {lb_id}")

        page_sizes: list[int] = []

        def get_page(w: int, i: int, res: list[Result]) -> None:
            r = self.http().request("GET", "/v2/lbaas/loadbalancers?limit=50")
            res[0].record(r, "GET /v2/lbaas/loadbalancers?limit=50")
            if r.ok and i == 0:
                page_sizes.append(len(r.json()["loadbalancers"]))

        all_sizes: list[tuple[int, int]] = []

        def get_all(w: int, i: int, res: list[Result]) -> None:
            r = self.http().request("GET", "/v2/lbaas/loadbalancers")
            res[0].record(r, "GET /v2/lbaas/loadbalancers")
            if r.ok and i == 0:
                all_sizes.append((len(r.json()["loadbalancers"]), len(r.body)))

        for name, job, counts in (
            ("get_one", get_one, p.get_one),
            ("get_page", get_page, p.get_page),
            ("get_all", get_all, p.get_all),
        ):
            self.log(f"[{self.mode}] {TITLES[name]}")
            self.load([name], 1, counts[0], job)
            self.load([name], p.clients, counts[1], job)
        if page_sizes:
            self.notes.append(f"?limit=50 returned {page_sizes[0]} items")
        if all_sizes:
            self.notes.append(f"GET all returned {all_sizes[0][0]} items, {all_sizes[0][1] / 1024:.0f} KiB of JSON")

        self.log(f"[{self.mode}] batch member update")
        self.batch(ids[: p.clients])

    def members(self, generation: int) -> list[dict[str, Any]]:
        """Half the members stay (their weight changes every generation), half alternate between two address
        sets, so each batch updates 100, deletes 100 and creates 100 members."""
        half = self.plan.batch_members // 2
        stable = [
            {"address": f"10.98.0.{1 + k}", "protocol_port": 80, "weight": 1 + generation % 50} for k in range(half)
        ]
        block = 1 + generation % 2
        moving = [
            {"address": f"10.98.{block}.{1 + k}", "protocol_port": 80} for k in range(self.plan.batch_members - half)
        ]
        return stable + moving

    def batch(self, lb_ids: list[str]) -> None:
        pools: list[str] = []
        for lb_id in lb_ids:
            r = self.ctl.request(
                "POST",
                "/v2/lbaas/pools",
                {"pool": {"loadbalancer_id": lb_id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}},
            )
            if r.status != 201:
                raise RuntimeError(f"pool create: {r.status} {r.body[:500]!r}")
            pools.append(r.json()["pool"]["id"])
            self.wait_lb_active(self.ctl, lb_id)
        # Fill every pool once (generation 0), unmeasured.
        for lb_id, pool in zip(lb_ids, pools, strict=True):
            r = self.ctl.request("PUT", f"/v2/lbaas/pools/{pool}/members", {"members": self.members(0)})
            if r.status != 202:
                raise RuntimeError(f"initial batch: {r.status} {r.body[:500]!r}")
            self.wait_lb_active(self.ctl, lb_id)
        generation = [1] * len(pools)
        poll = threading.local()
        lock = threading.Lock()

        def job(w: int, i: int, res: list[Result]) -> None:
            pool, lb_id = pools[w], lb_ids[w]
            body = {"members": self.members(generation[w])}
            generation[w] += 1
            start = time.perf_counter()
            r = self.http().request("PUT", f"/v2/lbaas/pools/{pool}/members", body)
            res[0].record(r, f"PUT /v2/lbaas/pools/{pool}/members")
            if r.status != 202:
                res[1].record(Reply(r.status, r.body, time.perf_counter() - start), "batch (no 202)")
                return
            if getattr(poll, "http", None) is None:
                poll.http = Http(self.server.lb_url, keepalive=True)
            _, status, polls = self.wait_lb_active(poll.http, lb_id, interval=BATCH_POLL_INTERVAL)
            with lock:
                res[1].extra["polls"] = res[1].extra.get("polls", 0) + polls
            elapsed = time.perf_counter() - start
            ok = status == "ACTIVE"
            res[1].record(Reply(200 if ok else 0, f"LB ended {status}".encode(), elapsed), f"wait ACTIVE {lb_id}")

        for clients, count in ((1, self.plan.batch[0]), (self.plan.clients, self.plan.batch[1])):
            self.load(["batch_http", "batch_active"], clients, count, job)
        # Sanity check: every pool holds exactly the last generation's members, all ACTIVE.
        for pool in pools:
            r = self.ctl.request("GET", f"/v2/lbaas/pools/{pool}/members")
            members = r.json().get("members", []) if r.ok else []
            states = Counter(m["provisioning_status"] for m in members)
            if len(members) != self.plan.batch_members or states.get("ACTIVE", 0) != len(members):
                self.notes.append(f"pool {pool}: {len(members)} members after the batches, statuses {dict(states)}")


def activation_lag_note(lbs: list[dict[str, Any]]) -> str:
    """How long the LBs took from POST to ACTIVE: updated_at - created_at (whole seconds only)."""
    lags = []
    for lb in lbs:
        with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
            created = dt.datetime.fromisoformat(lb["created_at"].rstrip("Z"))
            updated = dt.datetime.fromisoformat(lb["updated_at"].rstrip("Z"))
            lags.append((updated - created).total_seconds())
    if not lags:
        return "POST→ACTIVE lag: no timestamps"
    lags.sort()
    p50, p90 = lags[len(lags) // 2], lags[min(len(lags) - 1, math.ceil(0.9 * len(lags)) - 1)]
    return (
        f"POST→ACTIVE lag during the POST runs (updated_at − created_at, 1 s resolution): "
        f"p50 {p50:.0f} s, p90 {p90:.0f} s, max {lags[-1]:.0f} s"
    )


# ---------------------------------------------------------------------------------------------- output
def fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def markdown_table(summaries: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | clients | connection | n | rps | p50 ms | p99 ms | errors | server CPU ms/req "
        "| PostgreSQL CPU ms/req | other procs' CPU (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = list(TITLES)
    for s in sorted(summaries, key=lambda s: (s["mode"] != "new", order.index(s["scenario"]), s["clients"])):
        n = f"{s['completed']}" + (" (time limit)" if s["timed_out"] else "")
        lines.append(
            f"| {s['title']} | {s['clients']} | {s['mode']} | {n} | {fmt(s['rps'])} | {fmt(s['p50_ms'])} | "
            f"{fmt(s['p99_ms'])} | {s['errors']} | {fmt(s['server_cpu_ms_per_req'])} | "
            f"{fmt(s['db_cpu_ms_per_req'])} | {fmt(s['other_cores'], 2)} |"
        )
    return "\n".join(lines)


def comparison_table(summaries: list[dict[str, Any]]) -> str:
    """quadriga (new connection per request) next to the recorded Octavia figures."""
    lines = [
        "| scenario | clients | Octavia rps | quadriga rps | rps ratio "
        "| Octavia p50 ms | quadriga p50 ms | p50 ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        ref = OCTAVIA_REFERENCE.get((s["scenario"], s["clients"]))
        if s["mode"] != "new" or ref is None or not s["rps"]:
            continue
        rps_mid, p50_mid = (ref[0] + ref[1]) / 2, (ref[2] + ref[3]) / 2
        lines.append(
            f"| {s['title']} | {s['clients']} | {ref[0]:g} – {ref[1]:g} | {s['rps']:.1f} | "
            f"{s['rps'] / rps_mid:.1f}× | {ref[2]:g} – {ref[3]:g} | {s['p50_ms']:.1f} | {s['p50_ms'] / p50_mid:.2f}× |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--db", choices=["sqlite", "postgres"], help=f"default: sqlite, plus postgres when ${PG_ENV} is set"
    )
    ap.add_argument("--out", default="bench-results.json", help="JSON file with the raw numbers")
    ap.add_argument("--quick", action="store_true", help="100 LBs and small counts (smoke run, < 60 s)")
    ap.add_argument("--modes", default="new,keepalive", help="comma list of: new, keepalive")
    ap.add_argument("--time-limit", type=float, default=120.0, help="hard limit per scenario, seconds")
    ap.add_argument("--create-only", action="store_true", help="only the POST scenarios (the 1,000 creates)")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run wait up to this long until other processes use < 0.3 cores (default: don't wait)",
    )
    args = ap.parse_args(argv)

    pg_url = os.environ.get(PG_ENV)
    dbs = [args.db] if args.db else ["sqlite"] + (["postgres"] if pg_url else [])
    if "postgres" in dbs and not pg_url:
        ap.error(f"--db postgres needs ${PG_ENV}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"new", "keepalive"}:
        ap.error("--modes takes new and/or keepalive")
    plan = QUICK if args.quick else FULL
    server_cls = _load_server_class()

    info = machine_info()
    if "postgres" in dbs:
        info["postgres"] = wipe_postgres(pg_url)
    started = dt.datetime.now(dt.UTC)
    print_machine(info)
    print(f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"- Command: python bench/api_bench.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"- Plan: {plan}\n", flush=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    runs = []
    for db in dbs:
        for mode in modes:
            url = None
            if db == "postgres":
                wipe_postgres(pg_url)
                url = pg_url
            busy_before = wait_until_quiet(args.wait_quiet, 0.3, log) if args.wait_quiet > 0 else None
            log(f"== {db} / {mode}: starting quadriga serve")
            with server_cls(database_url=url, extra_args=["--provider-delay", "0"]) as server:
                bench = Bench(server, mode, plan, args.time_limit, log)
                bench.create_only = args.create_only
                if url:
                    bench.db_pid = listening_pid(urllib.parse.urlsplit(url).port or 5432)
                failure = run_guarded(bench, f"{db}/{mode}", log)
                log_tail = server.log_tail(80) if any(r.errors for r in bench.results) or failure else ""
            runs.append(
                {
                    "db": db,
                    "mode": mode,
                    "failure": failure,
                    "machine_busy_cores_before": busy_before,
                    "notes": bench.notes,
                    "server_log_tail": log_tail,
                    "scenarios": [r.summary() for r in bench.results],
                }
            )

    for db in dbs:
        summaries = [s for run in runs if run["db"] == db for s in run["scenarios"]]
        print(f"### {db}\n")
        print(markdown_table(summaries) + "\n")
        if args.quick:
            print("(--quick: 100 LBs, so no comparison with the Octavia figures, which were taken with 1,000)\n")
        elif any(s["mode"] == "new" for s in summaries):
            print(
                f"Against the recorded Octavia figures ({db}, new connection per request; "
                "ratio = quadriga / Octavia midpoint):\n"
            )
            print(comparison_table(summaries) + "\n")
        for run in runs:
            if run["db"] != db:
                continue
            for note in run["notes"]:
                print(f"- {run['mode']}: {note}")
            if run["failure"]:
                print(f"- {run['mode']}: STOPPED EARLY: {run['failure']}")
            for s in run["scenarios"]:
                for e in s["error_samples"]:
                    print(
                        f"- {run['mode']} {s['title']} c={s['clients']}: {e['request']} -> {e['status']}: "
                        f"{e['body'][:300]}"
                    )
        print()

    out = {
        "machine": info,
        "date": started.isoformat(timespec="seconds"),
        "command": "python bench/api_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "plan": plan.__dict__,
        "time_limit_s": args.time_limit,
        "octavia_reference": {f"{k[0]}/{k[1]}": v for k, v in OCTAVIA_REFERENCE.items()},
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    log(f"raw numbers written to {args.out}")
    failed = any(run["failure"] for run in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
