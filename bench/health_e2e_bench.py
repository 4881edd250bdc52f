#!/usr/bin/env python3
"""Health receiver end to end (issue 4): heartbeats *applied to the database* per second on one core.
Target: >= 5,000/s (5,000 engines at the default 1 s interval).

N ACTIVE load balancers (1 or 2 listeners, a pool of 3 members each) and their ALLOCATED engines are bulk
inserted, then a sender process (pinned to CPU 1) sends one heartbeat per engine per second over UDP on
127.0.0.1 to a real `HeartbeatReceiver` whose `on_batch` is the real `HeartbeatRecorder.record` (this
process, pinned to CPU 0). Steady state, as the agents send it: every heartbeat carries counter deltas and
active connections (random, below any limit);
members only in one heartbeat of 10 and when they changed; --change of the engines change a member's
status each second. On SQLite (a file in a temporary directory) and on PostgreSQL (a private server on
127.0.0.1 started with scripts/pg.sh, as the tests do, and stopped after; its CPU is not in "CPU").

First, the recorder alone: `record` on the same heartbeats, decoded beforehand, in batches of 500 (its
capacity without the receiver). Then end to end: heartbeats sent, lost (sent but never accepted),
dropped (by the receiver), applied (written by the recorder), applied/s over the run (first batch start
to last batch end), batch latency p50/p95 (`record` calls), the CPU of this process per second of run
and per heartbeat (and the part inside `record`), whether the database's statistics add up (checked only
when every heartbeat was applied).

Usage:
  python bench/health_e2e_bench.py [--db sqlite,postgresql] [--engines 5000] [--seconds 10] [--change 0.02]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import machine  # bench/machine.py (the script's directory is on sys.path)
from health_bench import KEY, KEY_ID, KEYS, SKEW, TIME_LIMIT, Others, go, pin, write_datagrams
from sqlalchemy import func, insert, select

from quadriga import constants as c
from quadriga.db import models as m
from quadriga.db.migrate import upgrade
from quadriga.db.session import Database
from quadriga.health.codec import Heartbeat, ListenerBeat, Payload, decode, encode
from quadriga.health.receiver import HeartbeatReceiver
from quadriga.health.recorder import HeartbeatRecorder
from quadriga.providers.engine import ALLOCATED

ROOT = Path(__file__).resolve().parent.parent
REVISION = 2
MEMBERS = 3
MEMBERS_EVERY = 10  # the sender's default: members in one heartbeat of 10 while they do not change
DELTA = ListenerBeat(status="OPEN", bytes_in=1000, bytes_out=5000, active_connections=3, total_connections=10)


class Fleet:
    """The ids of the load balancers' trees, engine by engine."""

    def __init__(self, engines: int, seed: int = 0) -> None:
        rng = random.Random(seed)

        def uid() -> str:
            return str(uuid.UUID(int=rng.getrandbits(128)))

        self.engines = [uid() for _ in range(engines)]
        self.lbs = [uid() for _ in range(engines)]
        self.listeners = [[uid() for _ in range(1 + n % 2)] for n in range(engines)]
        self.pools = [uid() for _ in range(engines)]
        self.members = [[uid() for _ in range(MEMBERS)] for _ in range(engines)]

    def insert(self, db: Database) -> None:
        """Everything in a few multi-row INSERTs (no API: 5,000 trees in seconds)."""
        project = "bench"
        common = {"project_id": project, "provisioning_status": c.ACTIVE, "operating_status": c.ONLINE}
        with db.write() as s:
            s.execute(
                insert(m.LoadBalancer),
                [
                    {**common, "id": lb, "provider": "amphora", "revision": REVISION, "applied_revision": REVISION}
                    for lb in self.lbs
                ],
            )
            s.execute(
                insert(m.Pool),
                [
                    {**common, "id": p, "load_balancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
                    for lb, p in zip(self.lbs, self.pools, strict=True)
                ],
            )
            s.execute(
                insert(m.Listener),
                [
                    {
                        **common,
                        "id": li,
                        "load_balancer_id": lb,
                        "protocol": "HTTP",
                        "protocol_port": 80 + k,
                        "default_pool_id": p,
                    }
                    for lb, p, lis in zip(self.lbs, self.pools, self.listeners, strict=True)
                    for k, li in enumerate(lis)
                ],
            )
            s.execute(
                insert(m.Member),
                [
                    {**common, "id": mb, "pool_id": p, "address": f"10.0.{k}.{n % 250 + 1}", "protocol_port": 80}
                    for n, (p, mbs) in enumerate(zip(self.pools, self.members, strict=True))
                    for k, mb in enumerate(mbs)
                ],
            )
            s.execute(
                insert(m.Amphora),
                [
                    {"id": e, "load_balancer_id": lb, "status": ALLOCATED, "applied_revision": REVISION}
                    for e, lb in zip(self.engines, self.lbs, strict=True)
                ],
            )

    def datagrams(self, seconds: int, change: float, seed: int = 0) -> tuple[list[bytes], int]:
        """One heartbeat per engine per second, round by round (the first carries every engine's members);
        and how many of the rounds after the first carry members."""
        rng = random.Random(seed)
        words = [["UP"] * MEMBERS for _ in self.engines]
        boot, now, data, full = time.time_ns(), time.time(), [], 0
        for second in range(seconds):
            changing = set(rng.sample(range(len(self.engines)), int(change * len(self.engines))))
            for n, engine in enumerate(self.engines):
                if n in changing:
                    words[n][0] = "DOWN" if words[n][0] == "UP" else "UP"
                members = second == 0 or n in changing or (second + n) % MEMBERS_EVERY == 0
                full += members and second > 0
                payload = Payload(
                    loadbalancer_id=self.lbs[n],
                    revision=REVISION,
                    running=True,
                    lb_network_ip="127.0.0.1",
                    listeners={
                        li: DELTA.model_copy(update={"active_connections": rng.randrange(100)})
                        for li in self.listeners[n]
                    },
                    members={self.pools[n]: dict(zip(self.members[n], words[n], strict=True))} if members else {},
                    partial=not members,
                )
                data.append(encode(Heartbeat(KEY_ID, engine, boot, second + 1, now + second, payload), KEY))
        return data, full


@contextmanager
def database(kind: str) -> Iterator[Database]:
    """An empty, migrated database: SQLite in a temporary directory, or a private PostgreSQL on loopback."""
    with tempfile.TemporaryDirectory(prefix="quadriga-bench-") as tmp:
        if kind == "sqlite":
            db = Database(f"sqlite:///{tmp}/bench.db")
            try:
                upgrade(db.engine)
                yield db
            finally:
                db.dispose()
            return
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        pg_dir = tempfile.mkdtemp(prefix="quadriga-pg-")  # pg.sh hands it to the postgres user
        pg = [str(ROOT / "scripts/pg.sh")]
        url = subprocess.run([*pg, "start", pg_dir, str(port)], check=True, capture_output=True, text=True).stdout
        try:
            db = Database(url.strip())
            try:
                upgrade(db.engine)
                yield db
            finally:
                db.dispose()
        finally:
            subprocess.run([*pg, "stop", pg_dir], check=False)


class TimedRecorder:
    """`on_batch`: the recorder's `record`, timed."""

    def __init__(self, recorder: HeartbeatRecorder) -> None:
        self.recorder = recorder
        self.latencies: list[float] = []
        self.first = self.last = 0.0
        self.cpu = 0.0  # CPU seconds of the delivery thread inside `record`

    def __call__(self, batch: list[Heartbeat]) -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        self.first = self.first or start
        self.recorder.record(batch)
        self.last = time.perf_counter()
        self.cpu += time.thread_time() - cpu
        self.latencies.append(self.last - start)


def direct(kind: str, engines: int, seconds: int, change: float, batch: int = 500) -> dict[str, float]:
    """The recorder alone: `record` on decoded batches (as the receiver delivers them), in this thread."""
    pin(0)
    fleet = Fleet(engines)
    beats = [decode(d, KEYS) for d in fleet.datagrams(seconds + 1, change)[0]]
    with database(kind) as db:
        fleet.insert(db)
        recorder = HeartbeatRecorder(db)
        recorder.record(beats[:engines])
        rest = beats[engines:]
        cpu, start = time.process_time(), time.perf_counter()
        for n in range(0, len(rest), batch):
            recorder.record(rest[n : n + batch])
        cpu, wall = time.process_time() - cpu, time.perf_counter() - start
        assert recorder.counters()["applied"] == len(beats), recorder.counters()
    return {"per_s": len(rest) / wall, "cpu_us": cpu / len(rest) * 1e6, "cores": cpu / wall}


def run(kind: str, engines: int, seconds: int, change: float) -> dict[str, object]:
    pin(0)
    fleet = Fleet(engines)
    data, full = fleet.datagrams(seconds + 1, change)
    warm, data = data[:engines], data[engines:]
    with database(kind) as db, tempfile.NamedTemporaryFile(prefix="quadriga-beats-") as beats:
        fleet.insert(db)
        write_datagrams(beats.name, data)
        recorder = HeartbeatRecorder(db)
        # warm-up: the first round (every member's first status) goes in directly, before the clock starts
        warm_start = time.perf_counter()
        recorder.record([decode(d, KEYS) for d in warm])
        warm_s = time.perf_counter() - warm_start
        timed = TimedRecorder(recorder)
        receiver = HeartbeatReceiver(("127.0.0.1", 0), KEYS, timed, max_pending=len(data) + 1, max_skew=SKEW)
        receiver.start()
        job = json.dumps([receiver.address[1], "", len(data), engines, beats.name])
        bench = Path(__file__).with_name("health_bench.py")
        try:
            with Others() as others:
                child = subprocess.Popen(
                    [sys.executable, str(bench), "--send", job],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                cpu, start, sent = go(child)
                seen = -1  # done when nothing more is applied for 1 s
                while seen != recorder.counters().get("applied", 0) and time.perf_counter() - start < TIME_LIMIT * 5:
                    seen = recorder.counters().get("applied", 0)
                    time.sleep(1.0)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - start
                child.wait(timeout=TIME_LIMIT)
        finally:
            receiver.stop()
        counts = receiver.counters()
        applied = recorder.counters().get("applied", 0) - len(warm)
        with db.read() as s:
            total = s.scalar(select(func.coalesce(func.sum(m.ListenerStatistics.total_connections), 0)))
        # every heartbeat (warm-up included) adds DELTA to each of its engine's listeners: when all were
        # applied, the statistics must say so exactly
        rounds = seconds + 1
        listeners = sum(map(len, fleet.listeners))
        expected = listeners * DELTA.total_connections * rounds if applied == len(data) else None
    lat = sorted(timed.latencies) or [0.0]
    busy = timed.last - timed.first
    return {
        "db": kind,
        "warm_s": warm_s,
        "engines": engines,
        "sent": sent["sent"],
        "sent_per_s": sent["sent"] / sent["seconds"],
        "with_members": full,
        "lost": sent["sent"] - counts.get("accepted", 0),
        "dropped": sum(receiver.drops().values()) + counts.get("callback_errors", 0),
        "applied": applied,
        "applied_per_s": applied / busy if busy > 0 else float("nan"),
        "batches": len(timed.latencies),
        "p50_ms": statistics.median(lat) * 1e3,
        "p95_ms": lat[int(0.95 * (len(lat) - 1))] * 1e3,
        "cpu_per_s": cpu / wall,
        "cpu_us": cpu / max(applied, 1) * 1e6,
        "record_cpu_us": timed.cpu / max(applied, 1) * 1e6,
        "stats_ok": expected is not None and total == expected,
        "others": others.cores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--engines", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=10, help="rounds of heartbeats after the warm-up, one a second")
    parser.add_argument("--change", type=float, default=0.02, help="share of engines changing a member each second")
    args = parser.parse_args()
    info = machine.basics() | {"usable_cpus": len(os.sched_getaffinity(0))}
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print()
    kinds = args.db.split(",")
    print("| db | engines | record alone: heartbeats/s | CPU µs/heartbeat | CPU (cores) | others (cores) |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in kinds:
        with Others() as others:
            d = direct(kind, args.engines, args.seconds, args.change)
        print(
            f"| {kind} | {args.engines:,} | {d['per_s']:,.0f} | {d['cpu_us']:.0f} | {d['cores']:.2f} "
            f"| {others.cores:.2f} |"
        )
    print()
    print(
        "| db | engines | sent | sent/s | with members | lost | dropped | applied | applied/s "
        "| batches | batch p50 ms | batch p95 ms | CPU (cores) | CPU µs/heartbeat | of which record "
        "| statistics add up | warm-up s "
        "| others (cores) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for kind in kinds:
        r = run(kind, args.engines, args.seconds, args.change)
        print(
            f"| {r['db']} | {r['engines']:,} | {r['sent']:,} | {r['sent_per_s']:,.0f} | {r['with_members']:,} "
            f"| {r['lost']:,} | {r['dropped']:,} | {r['applied']:,} | {r['applied_per_s']:,.0f} | {r['batches']} "
            f"| {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['cpu_per_s']:.2f} | {r['cpu_us']:.0f} "
            f"| {r['record_cpu_us']:.0f} "
            f"| {'yes' if r['stats_ok'] else 'NO'} | {r['warm_s']:.1f} | {r['others']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
