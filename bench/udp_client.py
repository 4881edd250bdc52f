#!/usr/bin/env python3
"""UDP load client of bench/udp_bench.py (stdlib only, so it starts at once).

`python bench/udp_client.py '<json job>'` with job = {"targets": [[host, port], ...], "clients": N, "count": C,
"warmup": W, "timeout": T, "limit": L, "payload": bytes}: N sockets, each bound to its own source port (so each
is its own flow through a proxy) and connected to targets[i % len(targets)], each sends C + W datagrams one
after the other (the next once the previous one is answered, or after T seconds without an answer: lost), all
N at the same time from one epoll loop. The first W round trips of every socket are not recorded. Stops after
L seconds whatever is left. Prints one JSON line: the round-trip times (µs) of the recorded datagrams, lost
datagrams, errors (ICMP refusals), the seconds from the first recorded send to the last answer, and who
answered (the answer's first word)."""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from collections import Counter


def run(job: dict) -> dict:
    targets = [(str(h), int(p)) for h, p in job["targets"]]
    clients, count, warmup = int(job["clients"]), int(job["count"]), int(job.get("warmup", 0))
    timeout_ns, limit = int(float(job.get("timeout", 1.0)) * 1e9), float(job.get("limit", 60.0))
    payload = b"x" * int(job.get("payload", 64))
    socks = []
    for i in range(clients):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.connect(targets[i % len(targets)])
        sock.setblocking(False)
        socks.append(sock)
    by_fd = {s.fileno(): i for i, s in enumerate(socks)}
    left = [count + warmup] * clients
    sent_at = [0] * clients
    rtts: list[float] = []
    answered: Counter[str] = Counter()
    lost = errors = 0
    first_recorded: int | None = None
    last_answer = 0
    poller = select.epoll()
    now = time.perf_counter_ns

    def send(i: int) -> None:
        nonlocal first_recorded
        if left[i] == count and first_recorded is None:
            first_recorded = now()
        left[i] -= 1
        sent_at[i] = now()
        socks[i].send(payload)

    active = clients
    for i, sock in enumerate(socks):
        poller.register(sock.fileno(), select.EPOLLIN)
        send(i)
    deadline = time.monotonic() + limit
    next_sweep = now() + timeout_ns // 4
    while active and time.monotonic() < deadline:
        for fd, _ in poller.poll(0.05):
            i = by_fd[fd]
            try:
                data = socks[i].recv(65535)
            except BlockingIOError:
                continue
            except ConnectionRefusedError:
                errors += 1
                data = None
            t = now()
            if data is not None and left[i] < count:  # past the warm-up
                rtts.append((t - sent_at[i]) / 1000)
                answered[data.split(b" ", 1)[0].strip().decode(errors="replace")] += 1
                last_answer = t
            if left[i]:
                send(i)
            elif sent_at[i]:
                sent_at[i] = 0
                poller.unregister(fd)
                active -= 1
        if now() >= next_sweep:  # datagrams without an answer within the timeout are lost
            t = now()
            for i in range(clients):
                if sent_at[i] and t - sent_at[i] > timeout_ns:
                    lost += 1
                    if left[i]:
                        send(i)
                    else:
                        sent_at[i] = 0
                        poller.unregister(socks[i].fileno())
                        active -= 1
            next_sweep = t + timeout_ns // 4
    unfinished = sum(left) + sum(1 for s in sent_at if s)
    for sock in socks:
        sock.close()
    elapsed = (last_answer - first_recorded) / 1e9 if first_recorded and last_answer > first_recorded else None
    return {
        "rtt_us": [round(x, 1) for x in rtts],
        "answered": len(rtts),
        "lost": lost,
        "errors": errors,
        "unfinished": unfinished,
        "seconds": elapsed,
        "by": dict(answered),
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
