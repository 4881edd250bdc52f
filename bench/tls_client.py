"""The full-handshake client of tls_bench.py, one process per client: stdlib only, so it starts in
milliseconds even on a busy machine. Protocol on stdin/stdout: it prints "ready", waits for a line ("go"),
runs for the given seconds, then prints one JSON line with its counts.

Each iteration: a new TCP connection, a TLS handshake with SNI and no session offered, then close; no HTTP
request. `session_reused` is counted per connection (a resumed session would not be a full handshake).
Certificates are not verified here: tls_bench checks the served certificate once per side, outside the loop,
so that the loop's client CPU is the handshake's."""

from __future__ import annotations

import json
import resource
import socket
import ssl
import sys
import time
from typing import Any


def handshake_loop(host: str, port: int, tls: bool, server_name: str, seconds: float, limit: int) -> dict[str, Any]:
    """Full handshakes against host:port, one at a time, for `seconds`, at most `limit` connections."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    done = errors = reused = 0
    first_error = ""
    cpu0, start = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    while time.monotonic() - start < seconds and done + errors < limit:
        try:
            with socket.create_connection((host, port), timeout=2) as raw:
                if tls:
                    with ctx.wrap_socket(raw, server_hostname=server_name) as conn:
                        reused += conn.session_reused
            done += 1
        except OSError as exc:
            errors += 1
            first_error = first_error or type(exc).__name__
    elapsed, cpu1 = time.monotonic() - start, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "handshakes": done,
        "errors": errors,
        "reused": reused,
        "first_error": first_error,
        "cpu_s": cpu,
        "elapsed_s": elapsed,
    }


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(handshake_loop(**job)), flush=True)
