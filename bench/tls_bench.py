#!/usr/bin/env python3
"""TLS benchmark: full TLS handshakes/s and HTTPS requests/s through a quadriga TERMINATED_HTTPS VIP ÷ the
same through a hand-written haproxy.cfg with the same certificate (issue 5, target ≥ 0.95).

Both sides: the same HAProxy binary, the engine's nbthread and maxconn (read from its rendered config), the
same certificate (a TestCA ECDSA P-256 leaf; quadriga gets it as a PKCS12 bundle stored through the
Barbican-compatible API, the hand-written side as one PEM file, `bind ... ssl crt <pem>`), mode http and the
same 2 nginx backends, no health checks. The hand-written HAProxy runs in the engine's own namespace on the
VIP (netns driver) or on 127.0.0.1 (loopback driver), as in dataplane_bench's overhead comparison, whose
set-up (Stack, nginx, HandHaproxy, wrk) this script reuses. Rounds alternate the two sides ABBA (odd rounds
reversed); every round gives one ratio per figure, reported as p50, min and max over the rounds.

Full handshakes: bench/tls_client.py (stdlib only, so it starts at once), `--clients` processes (default 2,
the machine's cores), started together once all are ready, each with one connection at a time: connect, TLS
handshake (SNI = the certificate's name, no verification in the loop; the served certificate is checked once
per side before measuring), close, no HTTP request. Why this client:
- wrk with `Connection: close` resumes its TLS sessions (SSL_clear keeps the session): HAProxy reported
  SslFrontendSessionReuse_pct 100 and a key rate of 0 here, so it measures resumptions, not handshakes.
- `openssl s_time -new` does full handshakes but cost 1.7 ms of client CPU per handshake here against
  1.45 ms for this loop (both OpenSSL 3.0), gives no per-connection errors and cannot tell a resumed session.
- This loop never offers a session, and counts `session_reused` per connection (reported; must be 0).
Client placement: with OpenSSL 3.0 the client's handshake costs ~1.5× HAProxy's (1.45 vs ~0.85 ms CPU here),
so on 2 cores no client can saturate HAProxy. Pinning the client to one core makes that core the bottleneck
(750 handshakes/s pinned vs 740 unpinned, HAProxy ~0.6 cores busy either way), which would hide HAProxy's
differences, so the clients are limited in number (one in-flight handshake each) but not pinned: client and
HAProxy share both cores and handshakes/s moves with HAProxy's cost, diluted by the client's share. The
undiluted figure is HAProxy's own CPU per handshake (master + workers, from /proc), reported next to it.

HTTPS requests/s: wrk `-t2 -c50` keep-alive (one handshake per connection, then requests), as dataplane_bench.

Safety: traffic goes only to the VIP (a 10.x subnet on quadriga's own bridge, or 127/8) and 127.0.0.1;
every target passes `check_target`/`safe_target`. Every client run has a fixed duration and a hard timeout;
every process started is stopped by pid, also on failure or Ctrl-C.

Usage:
    python bench/tls_bench.py --rounds 3 --out tls.json                 # real comparison
    python bench/tls_bench.py --rounds 2 --seconds 2 --quadriga-http    # dry run: quadriga side plain HTTP
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import select
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.hazmat.primitives.serialization import Encoding

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from api_bench import wait_until_quiet  # noqa: E402 - bench/api_bench.py
from dataplane_bench import (  # noqa: E402 - bench/dataplane_bench.py
    QUIET_CORES,
    WRK_GRACE,
    CpuMeter,
    Plan,
    Stack,
    WrkResult,
    _run,
    check_tools,
    cmdline,
    engine_limits,
    engine_processes,
    fmt,
    hand_twin,
    interrupt,
    log,
    machine_info,
    pids_mentioning,
    proc_cpu,
    ratio_stats,
    run_wrk,
    safe_target,
    stop_pid,
    verdict,
)
from tests.support.certs import Issued, TestCA  # noqa: E402

TARGET = 0.95
CLIENT_START_LIMIT = 30.0  # seconds a handshake client may take to say it is ready
SERVER_NAME = "bench.quadriga.test"


def pem_bundle(issued: Issued) -> str:
    """Certificate, intermediates and key in one file: what `bind ... ssl crt` takes."""
    return issued.cert_pem + issued.chain_pem + issued.key_pem


# ----------------------------------------------------------------------------------- handshake client
@dataclass
class HandshakeResult:
    seconds: float
    handshakes: int = 0
    errors: int = 0
    reused: int = 0
    rate: float = 0.0
    client_us_per_hs: float | None = None
    proxy_us_per_hs: float | None = None
    cpu_other_cores: float | None = None
    first_errors: list[str] = field(default_factory=list)


def run_handshakes(
    host: str, port: int, tls: bool, seconds: float, clients: int, workdir: Path, proxy: Any
) -> HandshakeResult:
    """`clients` tls_client.py processes against host:port for `seconds`, started together once all are
    ready; HAProxy's CPU (master + workers) from /proc over the same window."""
    safe_target(host)
    result = HandshakeResult(seconds)
    job = {"host": host, "port": port, "tls": tls, "server_name": SERVER_NAME, "seconds": seconds}
    job["limit"] = int(seconds * 20_000)  # far above this machine's rate: a bound, not a target
    argv = [sys.executable, str(REPO / "bench" / "tls_client.py"), json.dumps(job)]
    children = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(clients)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            ready, _, _ = select.select([child.stdout], [], [], CLIENT_START_LIMIT)
            if not ready or child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a handshake client did not start within {CLIENT_START_LIMIT} s")
        with CpuMeter(workdir) as meter:
            proxy0 = sum(map(proc_cpu, proxy()))
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            outputs = [json.loads(child.communicate(timeout=seconds + WRK_GRACE)[0]) for child in children]
            proxy_used = sum(map(proc_cpu, proxy())) - proxy0
    finally:
        for child in children:
            if child.poll() is None:
                stop_pid(child.pid, signal.SIGKILL, wait=1)
    result.cpu_other_cores = meter.other_cores
    for out in outputs:
        result.handshakes += out["handshakes"]
        result.errors += out["errors"]
        result.reused += out["reused"]
        if out["first_error"]:
            result.first_errors.append(out["first_error"])
    result.rate = round(result.handshakes / statistics.mean(o["elapsed_s"] for o in outputs), 1)
    if result.handshakes:
        result.client_us_per_hs = round(sum(o["cpu_s"] for o in outputs) / result.handshakes * 1e6, 1)
        result.proxy_us_per_hs = round(proxy_used / result.handshakes * 1e6, 1)
    return result


def served(host: str, port: int) -> dict[str, Any]:
    """The certificate (DER) and protocol a TLS listener serves for SERVER_NAME: checked once per side."""
    safe_target(host)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as c,
    ):
        return {"der": c.getpeercert(binary_form=True), "version": c.version(), "cipher": c.cipher()[0]}


# ------------------------------------------------------------------------------------------ key manager
def key_manager_url(state_dir: Path) -> str:
    """The key manager's endpoint from the clouds.yaml `quadriga serve` writes into its state directory."""
    clouds = yaml.safe_load((state_dir / "clouds.yaml").read_text())
    for cloud in clouds.get("clouds", {}).values():
        if url := cloud.get("key_manager_endpoint_override"):
            return str(url).rstrip("/").removesuffix("/v1")
    raise RuntimeError("this quadriga lists no key_manager_endpoint_override: no secret store (TLS not merged?)")


def store_pkcs12(base: str, issued: Issued) -> str:
    """POST the certificate as a base64 PKCS12 secret (Octavia's usual flow); returns its secret_ref."""
    safe_target(base.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0])
    body = {
        "name": "tls-bench",
        "payload": base64.b64encode(issued.pkcs12()).decode(),
        "payload_content_type": "application/octet-stream",
        "payload_content_encoding": "base64",
    }
    r = httpx.post(f"{base}/v1/secrets", json=body, timeout=30, trust_env=False)
    if r.status_code != 201:
        raise RuntimeError(f"POST /v1/secrets -> {r.status_code}: {r.text[:300]}")
    return r.json()["secret_ref"]


# -------------------------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class Settings:
    rounds: int
    seconds: int
    clients: int
    quadriga_http: bool  # dry run: quadriga's listener is plain HTTP
    wait_quiet: float  # before each round, wait up to this long until others use < QUIET_CORES


@dataclass
class Side:
    host: str
    port: int
    tls: bool
    proxy: Any  # () -> pids of the HAProxy in the path
    handshakes: list[HandshakeResult] = field(default_factory=list)
    wrk: list[WrkResult] = field(default_factory=list)
    negotiated: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/"


def tls_graph(stack: Stack, ref: str | None) -> dict[str, Any]:
    """Stack.graph's load balancer (round robin over 2 nginx, no monitor) with a TERMINATED_HTTPS listener
    on 443 whose default certificate is `ref`; plain HTTP on 80 when `ref` is None (dry run)."""
    body = stack.graph("tls", stack.backends[:2], monitor=False)
    if ref is not None:
        body["listeners"][0].update(protocol="TERMINATED_HTTPS", protocol_port=443, default_tls_container_ref=ref)
    return body


def measure(stack: Stack, settings: Settings, workdir: Path) -> dict[str, Any]:
    """Store the certificate, create the VIP and its hand-written twin, check both serve it, then the
    ABBA rounds: handshakes on both sides, then wrk on both sides."""
    issued = TestCA("quadriga bench CA").issue(SERVER_NAME, [SERVER_NAME])
    pem = stack.workdir / "hand-cert.pem"
    pem.touch(mode=0o600)  # the key: readable by us only, from the start
    pem.write_text(pem_bundle(issued))
    ref = None if settings.quadriga_http else store_pkcs12(key_manager_url(stack.state_dir), issued)
    lb = stack.create(tls_graph(stack, ref))
    stack.wait_active(lb["id"])
    vip, engine = lb["vip_address"], stack.engine_dir(lb["id"])
    engine_cfg = (engine / "haproxy.cfg").read_text()
    nbthread, maxconn = engine_limits(engine_cfg)
    twin = hand_twin(stack, lb["id"], vip, stack.backends[:2], nbthread, maxconn, f"ssl crt {pem}")
    sides = {
        "quadriga": Side(vip, 80 if ref is None else 443, ref is not None, partial(engine_processes, engine)),
        "hand-written": Side(twin.bind[0], twin.bind[1], True, twin.pids),
    }
    for name, side in sides.items():
        if side.tls:
            got = served(side.host, side.port)
            if got.pop("der") != issued.cert.public_bytes(Encoding.DER):
                raise RuntimeError(f"{name} serves another certificate than the one stored")
            side.negotiated = got
    wrk_plan = Plan(wrk_threads=2, wrk_connections=50)
    for side in sides.values():  # warm-up: caches, first handshakes, nginx keep-alive pools
        run_wrk(side.url, 1, wrk_plan, workdir)
        run_handshakes(side.host, side.port, side.tls, 1, settings.clients, workdir, side.proxy)
    for rnd in range(settings.rounds):
        if settings.wait_quiet > 0:
            wait_until_quiet(settings.wait_quiet, QUIET_CORES, log)
        order = list(sides) if rnd % 2 == 0 else list(reversed(sides))  # ABBA: drift hits both alike
        for name in order:
            s = sides[name]
            s.handshakes.append(
                run_handshakes(s.host, s.port, s.tls, settings.seconds, settings.clients, workdir, s.proxy)
            )
        for name in order:
            s = sides[name]
            s.wrk.append(run_wrk(s.url, settings.seconds, wrk_plan, workdir, s.proxy))
        log(
            f"  round {rnd + 1}: "
            + ", ".join(
                f"{n} {sides[n].handshakes[-1].rate:,.0f} hs/s {sides[n].wrk[-1].rps:,.0f} req/s" for n in sides
            )
        )
    stack.hand.remove(twin)
    twin.stop()
    stack.delete_lb(lb["id"])
    return summarize(sides, nbthread, engine_cfg, twin.text)


def summarize(sides: dict[str, Side], nbthread: int, engine_cfg: str, hand_cfg: str) -> dict[str, Any]:
    q, h = sides["quadriga"], sides["hand-written"]

    def quiet(a: Any, b: Any) -> bool:
        return max(a.cpu_other_cores or 0, b.cpu_other_cores or 0) < QUIET_CORES

    hs, rq = list(zip(q.handshakes, h.handshakes, strict=True)), list(zip(q.wrk, h.wrk, strict=True))
    ratios = {
        "handshakes_per_s": ratio_stats([a.rate / b.rate for a, b in hs if b.rate]),
        "handshakes_per_s_quiet": ratio_stats([a.rate / b.rate for a, b in hs if b.rate and quiet(a, b)]),
        # hand-written HAProxy CPU per handshake ÷ quadriga's: below 1 when quadriga's engine costs more
        "handshake_cpu_efficiency": ratio_stats(
            [b.proxy_us_per_hs / a.proxy_us_per_hs for a, b in hs if a.proxy_us_per_hs and b.proxy_us_per_hs]
        ),
        "requests_per_s": ratio_stats([a.rps / b.rps for a, b in rq if b.rps]),
        "requests_per_s_quiet": ratio_stats([a.rps / b.rps for a, b in rq if b.rps and quiet(a, b)]),
        "request_cpu_efficiency": ratio_stats(
            [b.proxy_us_per_req / a.proxy_us_per_req for a, b in rq if a.proxy_us_per_req and b.proxy_us_per_req]
        ),
    }
    per_side = {}
    for name, s in sides.items():
        per_side[name] = {
            "url": s.url,
            "negotiated": s.negotiated,
            "handshakes": [asdict(r) for r in s.handshakes],
            "median_hs_per_s": statistics.median(r.rate for r in s.handshakes),
            "median_proxy_us_per_hs": _median([r.proxy_us_per_hs for r in s.handshakes]),
            "median_client_us_per_hs": _median([r.client_us_per_hs for r in s.handshakes]),
            "wrk": [{k: v for k, v in asdict(r).items() if k != "raw"} for r in s.wrk],
            "median_rps": round(statistics.median(r.rps for r in s.wrk)),
            "median_proxy_us_per_req": _median([r.proxy_us_per_req for r in s.wrk]),
            "errors": sum(r.errors for r in s.handshakes) + sum(r.socket_errors + r.non_2xx_3xx for r in s.wrk),
            "reused_sessions": sum(r.reused for r in s.handshakes),
        }
    return {
        "nbthread": nbthread,
        "sides": per_side,
        "ratios": ratios,
        "engine_config": engine_cfg,
        "hand_config": hand_cfg,
    }


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


# ---------------------------------------------------------------------------------------------- report
def report(info: dict[str, Any], r: dict[str, Any], settings: Settings, driver: str) -> str:
    out = [
        "## Machine\n",
        f"- {info['nproc']} × {info['cpu_model']}, {info['memory_gib']} GiB, kernel {info['kernel']}, "
        f"Python {info['python']}",
        f"- {info['haproxy']}; {info['openssl']}; {info['nginx']}; {info['wrk']}",
        f"- commit {info['commit']}{' (work tree dirty)' if info['work_tree_dirty'] else ''}",
        "",
    ]
    if settings.quadriga_http:
        out.append("**DRY RUN: the quadriga side is a plain HTTP listener; the ratios mean nothing.**\n")
    out += [
        f"### TLS termination, {driver} driver (nbthread {r['nbthread']}, {settings.rounds} ABBA rounds of "
        f"{settings.seconds} s per figure, {settings.clients} handshake clients, wrk -t2 -c50)\n",
        "| side | negotiated | full handshakes/s (median) | each round | HAProxy CPU µs/handshake | client CPU "
        "µs/handshake | resumed | HTTPS req/s (median) | each round | HAProxy CPU µs/req | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in r["sides"].items():
        neg = s["negotiated"]
        hs_rounds = ", ".join(f"{x['rate']:,.0f}" for x in s["handshakes"])
        rq_rounds = ", ".join(f"{x['rps']:,.0f}" for x in s["wrk"])
        out.append(
            f"| {name} | {neg.get('version', 'plain')} {neg.get('cipher', '')} | {s['median_hs_per_s']:,.0f} | "
            f"{hs_rounds} | {fmt(s['median_proxy_us_per_hs'])} | {fmt(s['median_client_us_per_hs'])} | "
            f"{s['reused_sessions']} | {s['median_rps']:,} | {rq_rounds} | {fmt(s['median_proxy_us_per_req'])} | "
            f"{s['errors']} |"
        )
    out += [
        "",
        "| ratio, quadriga ÷ hand-written (per round) | p50 | min | max | n | target |",
        "|---|---|---|---|---|---|",
    ]
    titles = {
        "handshakes_per_s": ("full handshakes/s", True),
        "handshakes_per_s_quiet": ("full handshakes/s, quiet rounds*", False),
        "handshake_cpu_efficiency": ("HAProxy CPU per handshake, hand-written ÷ quadriga", False),
        "requests_per_s": ("HTTPS req/s (keep-alive)", True),
        "requests_per_s_quiet": ("HTTPS req/s, quiet rounds*", False),
        "request_cpu_efficiency": ("HAProxy CPU per request, hand-written ÷ quadriga", False),
    }
    for key, (title, targeted) in titles.items():
        d = r["ratios"][key]
        if not d["n"]:
            out.append(f"| {title} | – | – | – | 0 | |")
            continue
        ok = verdict(d["median"] >= TARGET) if targeted else ""
        out.append(f"| {title} | {d['median']:.3f} | {d['min']:.3f} | {d['max']:.3f} | {d['n']} | {ok} |")
    out += ["", f"\\* both runs of the pair with other processes under {QUIET_CORES} cores.", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="ABBA rounds (default 6)")
    ap.add_argument("--seconds", type=int, default=5, help="length of each handshake and wrk run (default 5)")
    ap.add_argument("--clients", type=int, default=os.cpu_count() or 2, help="handshake client processes")
    ap.add_argument("--driver", choices=("netns", "loopback"), default="netns", help="quadriga's network driver")
    ap.add_argument("--quadriga-http", action="store_true", help="dry run: quadriga's listener is plain HTTP")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=f"before each round wait up to this long until other processes use < {QUIET_CORES} cores",
    )
    ap.add_argument("--out", default="tls-results.json", help="JSON file with every measurement")
    args = ap.parse_args(argv)
    if not (1 <= args.rounds <= 50 and 1 <= args.seconds <= 60 and 1 <= args.clients <= 16):
        ap.error("--rounds 1-50, --seconds 1-60, --clients 1-16")
    if missing := check_tools(need_netns=args.driver == "netns"):
        print("tls_bench: missing on this machine:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    settings = Settings(args.rounds, args.seconds, args.clients, args.quadriga_http, args.wait_quiet)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    info = machine_info() | {"openssl": _run(["openssl", "version"]).stdout.strip()}
    started = dt.datetime.now(dt.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="qtlb-"))  # short: HAProxy's unix socket paths must fit
    stack = Stack(args.driver, workdir, Plan())
    result: dict[str, Any] | None = None
    failures: list[str] = []
    try:
        stack.open()
        result = measure(stack, settings, workdir)
    except KeyboardInterrupt:
        failures.append("interrupted")
    except Exception as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
        log(f"!! failed: {exc}")
    finally:
        stack.close()
        for pid in pids_mentioning(str(workdir)):
            failures.append(f"left behind: process {pid}: {' '.join(cmdline(pid))[:160]}")
            stop_pid(pid)
        shutil.rmtree(workdir, ignore_errors=True)
    if result is not None:
        print(report(info, result, settings, args.driver))
    for failure in failures + stack.leftovers:
        print(f"- {failure}")
    record = {
        "machine": info,
        "date": started.isoformat(timespec="seconds"),
        "command": "python bench/tls_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": asdict(settings),
        "driver": args.driver,
        "target": TARGET,
        "result": result,
        "failures": failures,
        "leftovers": stack.leftovers,
    }
    Path(args.out).write_text(json.dumps(record, indent=1))
    log(f"raw numbers written to {args.out}")
    return 1 if failures or stack.leftovers or result is None else 0


if __name__ == "__main__":
    sys.exit(main())
