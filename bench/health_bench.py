#!/usr/bin/env python3
"""Health receiver benchmark (issue 4): heartbeats processed per second on one core. Target: >= 5,000/s
(5,000 engines at the default 1 s interval).

Payload profiles (UUID ids): typical = 2 listeners and 10 members, large = 20 listeners and 500 members;
"steady" = members in one heartbeat of 10 (the sender's default while they do not change), "full" = in
every heartbeat (the worst case: every member changing all the time).

  in-process  `HeartbeatReceiver.handle` on pre-encoded datagrams: decode (size checks, HMAC-SHA256,
              inflate, shape check, schema) + freshness and replay check + batching into a no-op
              `on_batch` on the receiver's delivery thread. The whole process is pinned to one CPU.
              `decode` alone is timed too, for the breakdown.
  udp         a real receiver on 127.0.0.1 (this process, pinned to CPU 0) and a sender process (pinned
              to CPU 1 when there is one) that sends pre-encoded datagrams over loopback:
                paced  at --rate (default 5,000/s) for --seconds: are they all processed, and at what CPU cost?
                flood  as fast as the sender can: the receiver's ceiling (the kernel drops what it cannot take)

Everything goes to 127.0.0.1; every loop is bounded by a count and a time limit.

Usage:
  python bench/health_bench.py [--quick] [--rate 5000] [--seconds 5] [--count 50000] [--wait-quiet S]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

import machine  # bench/machine.py (the script's directory is on sys.path)

from quadriga.health.codec import Heartbeat, ListenerBeat, Payload, decode, encode
from quadriga.health.receiver import HeartbeatReceiver

KEY_ID, KEY = "bench", b"b" * 32
KEYS = {KEY_ID: KEY}
# name -> listeners, pools, members per pool, one heartbeat in how many carries the members
PROFILES = {
    "typical, steady": (2, 1, 10, 10),
    "typical, full": (2, 1, 10, 1),
    "large, steady": (20, 10, 50, 10),
    "large, full": (20, 10, 50, 1),
}
UDP_PROFILES = ("typical, steady", "large, steady")
ENGINES = 5000
TIME_LIMIT = 60.0  # seconds, for any one wait
SKEW = 3600.0  # the datagrams are encoded before the runs, so their timestamps age; the check still runs


def machine_info() -> dict[str, str]:
    model = machine.cpu_model() or "unknown"
    return {
        "nproc": str(os.cpu_count()),
        "usable cpus": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def datagrams(profile: str, count: int, seed: int = 0) -> list[bytes]:
    """`count` signed heartbeats of ENGINES engines, each engine's seq growing, in round-robin order."""
    rng = random.Random(seed)

    def ids(n: int) -> list[str]:
        return [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n)]

    listeners, pools, members, members_every = PROFILES[profile]
    full = Payload(
        loadbalancer_id=ids(1)[0],
        revision=12,
        running=True,
        lb_network_ip="10.1.2.3",
        listeners={
            lid: ListenerBeat(
                status="OPEN",
                bytes_in=123_456,
                bytes_out=7_890_123,
                active_connections=42,
                total_connections=1_234,
                request_errors=1,
            )
            for lid in ids(listeners)
        },
        members={pid: dict.fromkeys(ids(members), "UP") for pid in ids(pools)},
    )
    partial = full.model_copy(update={"members": {}, "partial": True})
    engines = ids(min(ENGINES, count))
    boot, now = time.time_ns(), time.time()
    return [
        encode(
            Heartbeat(KEY_ID, engines[n % len(engines)], boot, n + 1, now, partial if n % members_every else full), KEY
        )
        for n in range(count)
    ]


def system_busy() -> float:
    """CPU seconds all processes used since boot (not idle, not waiting for I/O)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process and its waited-for children."""
    return sum(os.times()[:4])


class Others:
    """Measures the cores other processes use while the block runs: their load skews every figure."""

    def __enter__(self) -> Others:
        self.busy, self.own, self.wall = system_busy(), own_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        used = system_busy() - self.busy - (own_cpu() - self.own)
        self.cores = max(0.0, used / (time.perf_counter() - self.wall))


def others_busy(window: float = 2.0) -> float:
    with Others() as others:
        time.sleep(window)
    return others.cores


def wait_quiet(limit: float) -> float:
    """Wait (at most `limit` seconds) until other processes use less than 0.3 cores; returns what they use."""
    deadline = time.monotonic() + limit
    load = others_busy()
    while load >= 0.3 and time.monotonic() < deadline:
        load = others_busy()
    return load


def pin(cpu: int) -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[cpu % len(os.sched_getaffinity(0))]})


class Tally:
    """A no-op `on_batch` that counts, and notes when the last batch arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.first = self.last = 0.0
        self.lock = threading.Lock()

    def __call__(self, batch: list[Heartbeat]) -> None:
        now = time.perf_counter()
        with self.lock:
            if not self.count:
                self.first = now
            self.count += len(batch)
            self.last = now


def wait_until(condition: Callable[[], bool], limit: float = TIME_LIMIT) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return bool(condition())


# --- in process ----------------------------------------------------------------------------------------


def in_process(profile: str, count: int) -> dict[str, float]:
    pin(0)
    data = datagrams(profile, count)
    start = time.perf_counter()
    for d in data:
        decode(d, KEYS)
    decode_us = (time.perf_counter() - start) / count * 1e6

    tally = Tally()
    receiver = HeartbeatReceiver(("127.0.0.1", 0), KEYS, tally, max_pending=count + 1, max_skew=SKEW)
    receiver.start()
    try:
        with Others() as others:
            cpu, start = time.process_time(), time.perf_counter()
            for d in data:
                receiver.handle(d)
            assert wait_until(lambda: tally.count == count), "not all heartbeats were delivered"
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert receiver.counters()["accepted"] == count and not receiver.drops(), receiver.counters()
    finally:
        receiver.stop()
    return {
        "bytes": sum(map(len, data)) / count,
        "decode_us": decode_us,
        "per_s": count / elapsed,
        "cpu_us": cpu / count * 1e6,
        "others": others.cores,
    }


# --- over UDP ------------------------------------------------------------------------------------------


def go(child: subprocess.Popen[str]) -> tuple[float, float, dict[str, float]]:
    """Start a sender child (`--send`) once it is ready: this process's CPU time and the clock at the start,
    and the child's account of what it sent (it reports once done)."""
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "ready"
    cpu, start = time.process_time(), time.perf_counter()
    child.stdin.write("go\n")
    child.stdin.flush()
    return cpu, start, json.loads(child.stdout.readline())


def udp(profile: str, mode: str, count: int, rate: float) -> dict[str, float]:
    """Receiver here (CPU 0), sender in a child process (CPU 1)."""
    pin(0)
    tally = Tally()
    receiver = HeartbeatReceiver(("127.0.0.1", 0), KEYS, tally, max_pending=count + 1, max_skew=SKEW)
    receiver.start()
    job = json.dumps([receiver.address[1], profile, count, rate if mode == "paced" else 0])
    with Others() as others:
        child = subprocess.Popen(
            [sys.executable, __file__, "--send", job], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            cpu, start, sent = go(child)
            seen = -1  # done when nothing more arrives for 0.5 s
            while seen != receiver.counters().get("accepted", 0) and time.perf_counter() - start < TIME_LIMIT:
                seen = receiver.counters().get("accepted", 0)
                time.sleep(0.5)
            assert wait_until(lambda: tally.count == seen), "accepted heartbeats were not delivered"
            cpu = time.process_time() - cpu
            busy = tally.last - tally.first
        finally:
            child.wait(timeout=TIME_LIMIT)
            receiver.stop()
    received = receiver.counters().get("accepted", 0)
    return {
        "sent": sent["sent"],
        "send_per_s": sent["sent"] / sent["seconds"],
        "received": received,
        "lost": sent["sent"] - received,
        "dropped": sum(receiver.drops().values()),
        "per_s": received / busy if busy > 0 else float("nan"),
        "cpu_us": cpu / max(received, 1) * 1e6,
        "others": others.cores,
    }


def send(port: int, profile: str, count: int, rate: float, path: str | None = None) -> None:
    """The child: encode first (or read the datagrams `path` holds, length-prefixed), then send when told,
    paced at `rate` per second (0: as fast as it can)."""
    pin(1)
    data = read_datagrams(path) if path else datagrams(profile, count, seed=1)
    print("ready", flush=True)
    sys.stdin.readline()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.perf_counter()
    burst = max(1, int(rate / 100)) if rate else len(data)  # paced: bursts every 10 ms
    for n in range(0, len(data), burst):
        for d in data[n : n + burst]:
            sock.sendto(d, ("127.0.0.1", port))
        if rate:
            delay = start + (n + burst) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    print(json.dumps({"sent": len(data), "seconds": time.perf_counter() - start}), flush=True)
    sock.close()


def write_datagrams(path: str, data: list[bytes]) -> None:
    """Store datagrams for a sender child: each one after its 2-byte length."""
    with open(path, "wb") as f:
        for d in data:
            f.write(len(d).to_bytes(2, "big") + d)


def read_datagrams(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        blob = f.read()
    data, at = [], 0
    while at < len(blob):
        size = int.from_bytes(blob[at : at + 2], "big")
        data.append(blob[at + 2 : at + 2 + size])
        at += 2 + size
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--count", type=int, default=50_000, help="heartbeats per in-process and flood run")
    parser.add_argument("--rate", type=float, default=5000, help="paced UDP rate, heartbeats/s")
    parser.add_argument("--seconds", type=float, default=5, help="paced UDP duration")
    parser.add_argument(
        "--wait-quiet", type=float, default=0, metavar="S", help="first wait up to S s until others use < 0.3 cores"
    )
    parser.add_argument("--send", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        send(*json.loads(args.send))
        return
    count = 5000 if args.quick else args.count
    paced = int(args.rate * (1 if args.quick else args.seconds))

    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine_info().items()))
    if args.wait_quiet:
        print(f"other processes use {wait_quiet(args.wait_quiet):.2f} cores at the start")
    print()
    print("| profile | bytes | decode µs | in-process heartbeats/s | CPU µs/heartbeat | others (cores) |")
    print("|---|---:|---:|---:|---:|---:|")
    for profile in PROFILES:
        r = in_process(profile, count)
        print(
            f"| {profile} | {r['bytes']:.0f} | {r['decode_us']:.1f} | {r['per_s']:,.0f} | {r['cpu_us']:.1f} "
            f"| {r['others']:.2f} |"
        )
    print()
    print(
        "| profile | mode | sent | sent/s | received | lost | dropped | processed/s | receiver CPU µs/heartbeat "
        "| others (cores) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for profile in UDP_PROFILES:
        for mode, n in (("paced", paced), ("flood", count)):
            r = udp(profile, mode, n, args.rate)
            print(
                f"| {profile} | {mode} | {r['sent']:,} | {r['send_per_s']:,.0f} | {r['received']:,} | {r['lost']:,} "
                f"| {r['dropped']} | {r['per_s']:,.0f} | {r['cpu_us']:.1f} | {r['others']:.2f} |"
            )
    print(f"\nother processes use {others_busy():.2f} cores at the end")


if __name__ == "__main__":
    main()
