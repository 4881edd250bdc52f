#!/usr/bin/env python3
"""OpenStack's own conformance suite (tempest + octavia-tempest-plugin) against quadriga with Keystone auth.

    scripts/conformance.sh install             # the cached virtualenv only (.cache/tempest-venv)
    scripts/conformance.sh run [--regex R] [--noop | --no-noop] [--dir DIR] [--time-limit S] [--keep] [--concurrency N]

`run` installs if needed, starts a real Keystone (scripts/keystone.sh) and `quadriga serve --auth-strategy
keystone` on free loopback ports, registers quadriga's load-balancer, network and key-manager
endpoints in Keystone's catalog, writes DIR/workspace/etc/tempest.conf (admin credentials, dynamic
credentials: tempest creates a project and users with the keystone default roles per test class), runs
`tempest run --regex R --concurrency N` (N defaults to 1, R defaults to octavia_tempest_plugin.tests.api.v2) and writes
DIR/summary.json and prints the figures: tests run, passed, failed, skipped, time, and each failure's and
skip's first line. Both servers are stopped at the end (--keep leaves them running and prints their URLs).

`--noop` (the default, tempest's test_with_noop) runs quadriga's `noop` provider with the `loopback` network
driver: no data plane, as Octavia's noop drivers. `--no-noop` runs the `amphora` provider (HAProxy engines)
with the `netns` network driver (root): the plugin's 10.x and IPv6 subnets get a bridge each and every load
balancer an engine in a namespace of its own, and objects go ONLINE as the engines report. Whatever the
run leaves (engines, namespaces, bridges) is removed at the end, also when quadriga had to be killed.

This file runs under quadriga's Python (`quadriga serve` is started with it); tempest runs from its own
virtualenv, never quadriga's: its dependencies (oslo.*, stestr pins) are its own.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import keystone_ctl  # scripts/, beside this file

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("QUADRIGA_TEMPEST_VENV", REPO / ".cache" / "tempest-venv"))
# Branchless plugin: its newest release tests Octavia 2025.x (octavia 19.0.0, the peer's version). Barbican's
# plugin only registers `[service_available] barbican`, which the TLS listener tests read (unregistered, they skip).
PACKAGES = ["tempest==47.0.0", "octavia-tempest-plugin==3.5.0", "barbican-tempest-plugin==4.6.0"]
HOST = "127.0.0.1"
PASSWORD = "quadriga-test"  # scripts/keystone_ctl.py's default: every user's password in the test Keystone
DEFAULT_REGEX = "octavia_tempest_plugin.tests.api.v2"
STARTUP_TIMEOUT = 120.0
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ConformanceError(RuntimeError):
    """A step failed; the message says which and why."""


def log(msg: str) -> None:
    print(f"conformance: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ install
def install() -> Path:
    """Create the cached virtualenv once (about a minute); later calls only check its marker."""
    marker = VENV / (".installed-" + "-".join(PACKAGES))
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with (VENV.parent / (VENV.name + ".lock")).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return VENV
        log(f"installing {' '.join(PACKAGES)} into {VENV}")
        for cmd in (
            ["python3", "-m", "venv", "--clear", str(VENV)],
            [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PACKAGES],
        ):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
                raise ConformanceError(f"{' '.join(cmd[:4])} ... failed (exit {done.returncode}):\n{tail}")
        marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    return VENV


# ------------------------------------------------------------------------------------------------ servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, body: dict | None = None, token: str = "") -> tuple[dict, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    with NO_PROXY.open(req, timeout=30) as resp:
        raw = resp.read()
        return (json.loads(raw) if raw else {}), dict(resp.headers)


def keystone_script(*args: str) -> str:
    done = subprocess.run([str(REPO / "scripts" / "keystone.sh"), *args], capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise ConformanceError(f"keystone.sh {args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


class Quadriga:
    """`quadriga serve` with Keystone auth, in a process group of its own."""

    def __init__(self, workdir: Path, auth_url: str, provider: str, network_driver: str) -> None:
        self.dir = workdir / "quadriga"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lb_port, self.net_port, self.km_port, self.agent_port = (free_port() for _ in range(4))
        self.lb_url = f"http://{HOST}:{self.lb_port}"
        self.net_url = f"http://{HOST}:{self.net_port}/"
        self.km_url = f"http://{HOST}:{self.km_port}"
        config = self.dir / "quadriga.toml"
        config.write_text(
            '[api]\nauth_strategy = "keystone"\n'
            f'[keystone]\nauth_url = "{auth_url}"\nusername = "quadriga"\npassword = "{PASSWORD}"\n'
            'project_name = "service"\n'
        )
        self.command = [
            sys.executable,
            "-m",
            "quadriga",
            "serve",
            *("--config", str(config), "--state-dir", str(self.dir / "state"), "--host", HOST),
            *("--port", str(self.lb_port), "--network-port", str(self.net_port)),
            *("--keymanager-port", str(self.km_port), "--agent-port", str(self.agent_port)),
            *("--health-listen", f"{HOST}:0", "--provider", provider, "--network-driver", network_driver),
        ]
        self.network_driver = network_driver
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
        }
        with (self.dir / "serve.log").open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise ConformanceError(f"quadriga serve exited ({self.process.returncode}); see {self.dir}/serve.log")
            with contextlib.suppress(OSError), NO_PROXY.open(self.lb_url + "/healthcheck", timeout=2) as resp:
                if resp.status == 200:
                    return
            if time.monotonic() > deadline:
                raise ConformanceError(f"quadriga serve not healthy after {STARTUP_TIMEOUT:.0f}s; see serve.log")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_group(self.process, grace=60)  # the agent removes every engine before it exits

    def clean_up(self) -> None:
        """What a stopped (or killed) `quadriga serve` left of its data plane: HAProxy engines (daemons of
        their own that outlive a killed agent), namespaces, veths and bridges. A clean stop leaves nothing;
        after a kill this removes it with the agent's own shutdown."""
        if self.network_driver != "netns":
            return
        sys.path.insert(0, str(REPO / "src"))
        from quadriga.agent.agent import ENGINES, Agent
        from quadriga.agent.orphans import haproxy_engines
        from quadriga.network.drivers.netns import NetnsDriver, instance_for

        state = self.dir / "state" / "agent"
        driver = NetnsDriver(instance_for(state))
        left = driver.leftovers() + [f"haproxy {e}" for e in haproxy_engines((state / ENGINES).absolute())]
        if not left:
            return
        named = ", ".join(left[:5]) + (", ..." if len(left) > 5 else "")
        log(f"quadriga left {len(left)} data-plane objects ({named}): removing them")
        Agent(state, driver).shutdown()


def capability(lb_url: str, token: str, provider: str, kind: str, name: str) -> str:
    """`name: description` of one of the provider's capabilities: the plugin's expected_*_capability options
    describe the provider under test (their defaults are the amphora driver's wording)."""
    listed = http_json("GET", f"{lb_url}/v2/lbaas/providers/{provider}/{kind}", token=token)[0][kind]
    found = next(c for c in listed if c["name"] == name)
    return f"{name}:{found['description'].replace(',', ' ')}"


# ------------------------------------------------------------------------------------------------ tempest.conf
AZS = """\
# without test_with_noop the availability zone (profile) tests want zone names: the profiles' compute_zone
# (quadriga: an engine host group); no load balancer is placed in them
availability_zone = az1
availability_zone2 = az2
availability_zone3 = az3"""
TIMEOUTS_NOOP = """\
# the noop provider applies a change in milliseconds: a status that has not come in 30 s never will
build_timeout = 30
lb_build_timeout = 30
check_timeout = 10"""
TIMEOUTS_ENGINES = """\
# an engine applies a change in about a second and reports health every second; a new load balancer starts
# an engine in a namespace of its own (a few seconds on a loaded machine)
build_timeout = 60
lb_build_timeout = 90
check_timeout = 30"""


def tempest_conf(
    auth_url: str, providers: dict[str, str], provider: str, noop: bool, workdir: Path, capabilities: dict[str, str]
) -> str:
    """What tempest and the plugin need to know; every choice that is not a default says why."""
    drivers = ",".join(f"{name}:{desc.replace(',', ' ')}" for name, desc in providers.items())
    return f"""\
[DEFAULT]
log_file = {workdir / "tempest.log"}
debug = true

[identity]
uri_v3 = {auth_url}
auth_version = v3
region = RegionOne
v3_endpoint_type = public
disable_ssl_certificate_validation = true

[identity-feature-enabled]
api_v2 = false

[auth]
# tempest creates a project and users per test class, with the keystone default roles the plugin asks for
use_dynamic_credentials = true
admin_username = admin
admin_password = {PASSWORD}
admin_project_name = admin
admin_domain_name = Default
admin_system = false
# no routers in the embedded networking API; the plugin makes its own networks when it needs them
create_isolated_networks = false

[service_available]
load_balancer = true
neutron = true
# the plugin's skip_checks wants compute and image too when test_with_noop is false, even for the API tests,
# which use neither; they are "available" then and never called
nova = {str(not noop).lower()}
glance = {str(not noop).lower()}
cinder = false
swift = false
# quadriga's key-manager API (Barbican's secrets subset, in the catalog as key-manager) stores the TLS
# listener tests' certificates; with test_with_noop the plugin makes up refs instead
barbican = {str(not noop).lower()}

[network]
project_networks_reachable = true

[network-feature-enabled]
ipv6 = true
port_security = true

[load_balancer]
region = RegionOne
catalog_type = load-balancer
endpoint_type = publicURL
provider = {provider}
enabled_provider_drivers = {drivers}
expected_flavor_capability = {capabilities["expected_flavor_capability"]}
expected_availability_zone_capability = {capabilities["expected_availability_zone_capability"]}
RBAC_test_type = keystone_default_roles
test_with_noop = {str(noop).lower()}
test_with_ipv6 = true
{AZS if not noop else ""}
enable_security_groups = true
build_interval = 0.5
check_interval = 0.5
lb_build_interval = 0.5
{TIMEOUTS_NOOP if noop else TIMEOUTS_ENGINES}
log_user_roles = false

[loadbalancer-feature-enabled]
not_implemented_is_error = true
log_offload_enabled = false
prometheus_listener_enabled = true

[enforce_scope]
octavia = false
"""


# ------------------------------------------------------------------------------------------------ run
def run_tempest(
    workdir: Path, regex: str, conf: str, time_limit: float | None, concurrency: int
) -> tuple[int, float, int]:
    """`tempest run` in a workspace of its own; its subunit stream goes to DIR/tempest.subunit (read even
    when the run is cut short). Returns tempest's exit code, the run's seconds and how many tests matched."""
    ws = workdir / "workspace"
    tempest = str(VENV / "bin" / "tempest")
    env = {**os.environ, "PYTHONPATH": ""}
    if not (ws / ".stestr.conf").exists():
        done = subprocess.run(
            [tempest, "init", "--workspace-path", str(workdir / "workspace.yaml"), str(ws)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        if done.returncode != 0:
            raise ConformanceError(f"tempest init failed:\n{done.stdout}\n{done.stderr}")
    (ws / "etc" / "tempest.conf").write_text(conf)
    listed = subprocess.run(
        [tempest, "run", "--list-tests", "--regex", regex], cwd=ws, capture_output=True, text=True, env=env
    )
    ids = [line.split("[")[0] for line in listed.stdout.splitlines() if re.match(r"\w+(\.\w+)+\[", line)]
    (workdir / "tests.txt").write_text("\n".join(ids) + "\n")
    stream = workdir / "tempest.subunit"
    log(f"tempest run --regex {regex} --concurrency {concurrency}: {len(ids)} tests (stream: {stream})")
    started = time.monotonic()
    with (workdir / "tempest.subunit").open("wb") as out, (workdir / "tempest-run.err").open("wb") as err:
        proc = subprocess.Popen(
            [tempest, "run", "--subunit", "--regex", regex, "--concurrency", str(concurrency)],
            cwd=ws,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            log(f"time limit of {time_limit:.0f} s reached: stopping tempest, summarizing the tests that ran")
            code = stop_group(proc)
        except BaseException:  # SIGTERM or Ctrl-C of this script: no tempest left behind
            stop_group(proc)
            raise
    return code, time.monotonic() - started, len(ids)


def stop_group(proc: subprocess.Popen[bytes], grace: float = 30) -> int:
    """SIGTERM to the process group `proc` leads, SIGKILL after `grace` seconds; its exit code."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


OUTCOMES = ("success", "fail", "skip", "xfail", "uxsuccess")
SUMMARIZE = r"""
import json, sys, subunit, testtools
from testtools import StreamToDict
tests = []
def on_test(t):
    details = t["details"]
    text = ""
    for key in ("traceback", "reason"):
        if key in details:
            text = details[key].as_text()
            break
    tests.append({"id": t["id"].split("[")[0], "status": t["status"], "detail": text})
result = StreamToDict(on_test)
result.startTestRun()
subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout").run(result)
result.stopTestRun()
json.dump(tests, sys.stdout)
"""


def summarize(workdir: Path, seconds: float, matched: int) -> dict[str, Any]:
    """Per-test statuses from the run's subunit stream; a failure's and a skip's meaningful lines. A class
    whose setup fails is one failure (`setUpClass (...)`): its tests count as not run."""
    with (workdir / "tempest.subunit").open("rb") as stream:
        done = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", SUMMARIZE], stdin=stream, capture_output=True, timeout=300
        )
    if done.returncode != 0:
        raise ConformanceError(f"summarizing the subunit stream failed:\n{done.stderr.decode()[-2000:]}")
    # the stream also announces tests ("exists"); keep each test's outcome
    tests = [t for t in json.loads(done.stdout) if t["status"] in OUTCOMES]
    counts: dict[str, int] = {}
    for t in tests:
        counts[t["status"]] = counts.get(t["status"], 0) + 1

    def cause(t: dict[str, Any]) -> str:
        lines = [ln.strip() for ln in t["detail"].splitlines() if ln.strip()]
        if t["status"] == "skip":
            return lines[0] if lines else ""
        marks = ("Error", "Exception", "Details:", "reference =", "actual    =")
        picked = [ln for ln in lines if any(m in ln for m in marks) and not ln.startswith("File ")]
        return " | ".join(picked[-3:]) if picked else (lines[-1] if lines else "")

    # a class whose setup failed or skipped stands for all its tests
    listed = (workdir / "tests.txt").read_text().split()
    for t in tests:
        if t["id"].startswith("setUpClass ("):
            cls = t["id"][len("setUpClass (") : -1]
            t["tests"] = sum(1 for i in listed if i.startswith(cls + "."))
    in_classes = {s: sum(t.get("tests", 0) for t in tests if t["status"] == s) for s in ("fail", "skip")}
    summary = {
        "seconds": round(seconds),
        "matched": matched,
        "run": len(tests),
        "passed": counts.get("success", 0),
        "failed": counts.get("fail", 0),
        "skipped": counts.get("skip", 0),
        "tests_in_failed_classes": in_classes["fail"],
        "tests_in_skipped_classes": in_classes["skip"],
        "counts": counts,
        "failures": [
            {"id": t["id"], "tests": t.get("tests", 1), "cause": cause(t)} for t in tests if t["status"] == "fail"
        ],
        "skips": [
            {"id": t["id"], "tests": t.get("tests", 1), "cause": cause(t)} for t in tests if t["status"] == "skip"
        ],
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run(
    workdir: Path, regex: str, noop: bool, keep: bool, time_limit: float | None, concurrency: int
) -> dict[str, Any]:
    install()
    workdir.mkdir(parents=True, exist_ok=True)
    ks_dir, ks_port = workdir / "keystone", free_port()
    log(f"starting Keystone on {HOST}:{ks_port}")
    keystone_script("install")
    # One request thread: tempest's workers create projects and users at once, and Keystone's SQLite answers
    # "database is locked" (a 500) to concurrent writers.
    info = json.loads(keystone_script("start", str(ks_dir), "--port", str(ks_port), "--threads", "1"))
    auth_url = info["auth_url"]
    provider, network_driver = ("noop", "loopback") if noop else ("amphora", "netns")
    quadriga = Quadriga(workdir, auth_url, provider, network_driver)
    try:
        log(
            f"starting quadriga serve --auth-strategy keystone --provider {provider} --network-driver "
            f"{network_driver} on {quadriga.lb_url}"
        )
        quadriga.start()
        keystone_script(
            "populate",
            str(ks_dir),
            "--port",
            str(ks_port),
            "--load-balancer",
            quadriga.lb_url,
            "--network",
            quadriga.net_url,
            "--key-manager",
            quadriga.km_url,
        )
        token = keystone_ctl.Client(auth_url, PASSWORD).token  # Keystone's bootstrap admin
        listed = http_json("GET", quadriga.lb_url + "/v2/lbaas/providers", token=token)[0]["providers"]
        providers = {p["name"]: p["description"] for p in listed}
        capabilities = {
            option: capability(quadriga.lb_url, token, provider, kind, name)
            for option, kind, name in (
                ("expected_flavor_capability", "flavor_capabilities", "loadbalancer_topology"),
                ("expected_availability_zone_capability", "availability_zone_capabilities", "compute_zone"),
            )
        }
        conf = tempest_conf(auth_url, providers, provider, noop, workdir, capabilities)
        code, seconds, matched = run_tempest(workdir, regex, conf, time_limit, concurrency)
        summary = summarize(workdir, seconds, matched)
        summary["tempest_exit"] = code
        return summary
    finally:
        if keep:
            log(
                f"left running: Keystone {auth_url} (scripts/keystone.sh stop {ks_dir}), quadriga {quadriga.lb_url} "
                f"(process group {quadriga.process.pid if quadriga.process else '-'})"
            )
        else:
            try:
                quadriga.stop()
            finally:
                try:
                    quadriga.clean_up()
                finally:
                    keystone_script("stop", str(ks_dir))


def main() -> None:
    parser = argparse.ArgumentParser(prog="conformance.sh", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="make the cached tempest virtualenv only")
    r = sub.add_parser("run", help="start Keystone and quadriga, run tempest, summarize")
    r.add_argument("--regex", default=DEFAULT_REGEX)
    r.add_argument("--noop", action=argparse.BooleanOptionalAction, default=True, help="test_with_noop (default on)")
    r.add_argument("--dir", type=Path, help="work directory (default: a new one under /tmp)")
    r.add_argument(
        "--time-limit", type=float, help="seconds after which tempest is stopped (the tests run so far count)"
    )
    r.add_argument("--keep", action="store_true", help="leave Keystone and quadriga running")
    r.add_argument("--concurrency", type=int, default=1, help="tempest workers (default 1)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the servers and the data plane are stopped and cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("conformance: stopped by SIGTERM"))
    try:
        if args.command == "install":
            print(install())
            return
        if not args.noop and args.concurrency > 1:
            # every test class makes its networks with the same subnets (10.1.1.0/24, ...), and the netns driver
            # routes a subnet on one bridge of the host at a time: classes must follow each other
            sys.exit("conformance: --no-noop runs with --concurrency 1 (the plugin's classes share their subnets)")
        workdir = (args.dir or Path(tempfile.mkdtemp(prefix="quadriga-conformance-"))).resolve()
        summary = run(workdir, args.regex, args.noop, args.keep, args.time_limit, args.concurrency)
    except ConformanceError as exc:
        sys.exit(f"conformance: {exc}")
    for kind in ("failures", "skips"):
        for t in summary[kind]:
            size = f" ({t['tests']} tests)" if t["id"].startswith("setUpClass") else ""
            print(f"{kind[:-1].upper():8} {t['id']}{size}: {t['cause'][:300]}")
    print(
        f"conformance: {summary['matched']} tests matched; {summary['run']} run, {summary['passed']} passed, "
        f"{summary['failed']} failed, {summary['skipped']} skipped in {summary['seconds']} s "
        f"(details: {workdir}/summary.json, {workdir}/tempest.log); in classes whose setup failed: "
        f"{summary['tests_in_failed_classes']} tests, skipped as a class: {summary['tests_in_skipped_classes']} tests"
    )
    sys.exit(1 if summary["failed"] or summary["tempest_exit"] else 0)


if __name__ == "__main__":
    main()
