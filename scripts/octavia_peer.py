#!/usr/bin/env python3
"""Run the real OpenStack Octavia API (PyPI octavia==19.0.0, SQLite, noauth, its noop provider) on loopback,
as a reference peer for the differential test and the side-by-side benchmark.

    scripts/octavia-peer.sh install                 # the cached virtualenv only (.cache/octavia-venv)
    scripts/octavia-peer.sh start DIR [--port N] [--no-activator]
    scripts/octavia-peer.sh stop DIR

`start` installs if needed, writes DIR/etc/octavia.conf, creates the schema with SQLAlchemy's create_all
and seeds the lookup tables (`octavia-db-manage upgrade` fails on SQLite), then starts three process
groups: gunicorn (2 sync workers), octavia-driver-agent, and the activator, and prints the API's URL.
The noop provider never reports a status, so objects would stay PENDING_* forever; the activator does what
an asynchronous provider does: it reports ACTIVE (or DELETED) through the driver agent's status socket.
Touching DIR/activator.paused pauses it (the benchmark measures Octavia without it).
`stop` kills exactly the process groups `start` recorded in DIR/pids. The recipe and its pitfalls:
shared/reference/octavia-peer.md.

This file runs under any Python 3.11 (stdlib only); the `_schema` and `_activator` commands run under the
peer's virtualenv, which has octavia installed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("OCTAVIA_PEER_VENV", REPO / ".cache" / "octavia-venv"))
PACKAGES = ["octavia==19.0.0", "gunicorn==27.0.1"]
HOST = "127.0.0.1"
WORKERS = 2
ACTIVATOR_INTERVAL = 0.1  # seconds between passes; an LB is ACTIVE ~0.2 s after its POST
STARTUP_TIMEOUT = 60.0

CONF = """\
[DEFAULT]
debug = False
log_file = {dir}/log/octavia.log
transport_url = fake:/
[api_settings]
bind_host = {host}
bind_port = {port}
auth_strategy = noauth
enabled_provider_drivers = noop_driver:The No-Op provider driver.
default_provider_driver = noop_driver
pagination_max_limit = 1000
[database]
connection = sqlite:///{dir}/octavia.sqlite
pool_timeout =
max_pool_size =
max_overflow =
[controller_worker]
network_driver = network_noop_driver
compute_driver = compute_noop_driver
amphora_driver = amphora_noop_driver
volume_driver = volume_noop_driver
image_driver = image_noop_driver
[certificates]
cert_manager = noop_cert_manager
[driver_agent]
status_socket_path = {dir}/run/status.sock
stats_socket_path = {dir}/run/stats.sock
get_socket_path = {dir}/run/get.sock
enabled_provider_agents = noop_agent
[oslo_messaging]
topic = octavia_prov
"""

# octavia.wsgi.api hands gunicorn's own argv to oslo.config; this module passes the config file instead.
WSGI = """\
from octavia.api import app as _app

application = _app.setup_app(argv=["octavia-api", "--config-file", {conf!r}])
"""


class PeerError(RuntimeError):
    """The peer could not be installed or started; the message says why."""


def log(msg: str) -> None:
    print(f"octavia-peer: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ install
def venv_python() -> Path:
    return VENV / "bin" / "python"


def install() -> Path:
    """Create the cached virtualenv once (about a minute); later calls only check its marker."""
    marker = VENV / (".installed-" + "-".join(PACKAGES))
    VENV.parent.mkdir(parents=True, exist_ok=True)
    # One installer at a time: scripts/test.sh installs in the background while a test that needs the peer
    # waits here until it is done.
    with (VENV.parent / (VENV.name + ".lock")).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _install(marker)


def _install(marker: Path) -> Path:
    if marker.exists():
        return VENV
    log(f"installing {' '.join(PACKAGES)} into {VENV} (about a minute)")
    started = time.monotonic()
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PACKAGES],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise PeerError(f"{' '.join(cmd[:4])} ... failed (exit {done.returncode}):\n{tail}")
    marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    log(f"installed in {time.monotonic() - started:.0f} s")
    return VENV


# ------------------------------------------------------------------------------------------------ start/stop
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _spawn(name: str, cmd: list[str], peer_dir: Path, pids: dict[str, int]) -> None:
    """Start `cmd` in a process group of its own (so `stop` reaches its children), logging to log/NAME.out."""
    with open(peer_dir / "log" / f"{name}.out", "ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=peer_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    pids[name] = proc.pid
    (peer_dir / "pids").write_text(json.dumps(pids))


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "<no log>"


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (stop from another process)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return waited == 0


def _wait_until(peer_dir: Path, pids: dict[str, int], what: str, ready: Any) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not ready():
        for name, pid in pids.items():
            if not _alive(pid):
                raise PeerError(f"{name} exited while waiting for {what}:\n{_tail(peer_dir / 'log' / f'{name}.out')}")
        if time.monotonic() > deadline:
            raise PeerError(
                f"{what} not ready after {STARTUP_TIMEOUT:.0f} s:\n{_tail(peer_dir / 'log' / 'octavia.log')}"
            )
        time.sleep(0.1)


def _api_up(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "/", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def start(peer_dir: Path, port: int | None = None, activator: bool = True) -> str:
    """Install if needed, write the config, create the schema and start the processes; returns the API URL."""
    install()
    peer_dir = peer_dir.resolve()
    if (peer_dir / "pids").exists():
        raise PeerError(f"{peer_dir} already has a running peer (pids file); stop it first")
    port = port or free_port()
    for sub in ("etc", "log", "run"):
        (peer_dir / sub).mkdir(parents=True, exist_ok=True)
    conf = peer_dir / "etc" / "octavia.conf"
    conf.write_text(CONF.format(dir=peer_dir, host=HOST, port=port))
    (peer_dir / "octavia_peer_wsgi.py").write_text(WSGI.format(conf=str(conf)))
    (peer_dir / "octavia.sqlite").unlink(missing_ok=True)
    py = str(venv_python())
    done = subprocess.run([py, __file__, "_schema", str(conf)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise PeerError(f"schema creation failed:\n{done.stderr[-3000:]}")
    pids: dict[str, int] = {}
    try:
        _spawn("driver-agent", [str(VENV / "bin" / "octavia-driver-agent"), "--config-file", str(conf)], peer_dir, pids)
        gunicorn = [str(VENV / "bin" / "gunicorn"), "--workers", str(WORKERS), "--bind", f"{HOST}:{port}"]
        gunicorn += [
            "--no-control-socket",
            "--preload",
            "--chdir",
            str(peer_dir),
            "--timeout",
            "120",
            "octavia_peer_wsgi:application",
        ]
        _spawn("gunicorn", gunicorn, peer_dir, pids)
        url = f"http://{HOST}:{port}"
        _wait_until(peer_dir, pids, "the API", lambda: _api_up(url))
        if activator:
            sock = peer_dir / "run" / "status.sock"
            _wait_until(peer_dir, pids, "the driver agent's sockets", sock.exists)
            _spawn("activator", [py, __file__, "_activator", str(peer_dir)], peer_dir, pids)
    except BaseException:
        stop(peer_dir)
        raise
    (peer_dir / "url").write_text(url)
    return url


def stop(peer_dir: Path, grace: float = 3.0) -> None:
    """SIGTERM each process group `start` recorded, SIGKILL the groups after `grace` seconds (the driver agent
    takes 15 s to stop on its own; nothing of the peer's state needs a clean shutdown). Idempotent."""
    pid_file = peer_dir / "pids"
    try:
        pids: dict[str, int] = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # the leader and any straggler in its group (driver-agent's children)
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid_file.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ in the venv
def create_schema(conf: str) -> None:
    """What octavia/tests/functional/db/base.py does: create_all, the lookup tables and the NIL_UUID rows."""
    import configparser

    import sqlalchemy
    from octavia.common import constants as c
    from octavia.db import base_models, models
    from sqlalchemy.orm import Session

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(conf)
    engine = sqlalchemy.create_engine(parser["database"]["connection"])
    base_models.BASE.metadata.create_all(engine)
    lookups = [
        (c.SUPPORTED_PROVISIONING_STATUSES, models.ProvisioningStatus),
        (c.SUPPORTED_HEALTH_MONITOR_TYPES, models.HealthMonitorType),
        (c.SUPPORTED_LB_ALGORITHMS, models.Algorithm),
        (c.SUPPORTED_PROTOCOLS, models.Protocol),
        (c.SUPPORTED_OPERATING_STATUSES, models.OperatingStatus),
        (c.SUPPORTED_SP_TYPES, models.SessionPersistenceType),
        (c.SUPPORTED_AMPHORA_ROLES, models.AmphoraRoles),
        (c.SUPPORTED_LB_TOPOLOGIES, models.LBTopology),
        (c.SUPPORTED_VRRP_AUTH, models.VRRPAuthMethod),
        (c.SUPPORTED_L7RULE_TYPES, models.L7RuleType),
        (c.SUPPORTED_L7RULE_COMPARE_TYPES, models.L7RuleCompareType),
        (c.SUPPORTED_L7POLICY_ACTIONS, models.L7PolicyAction),
        (c.SUPPORTED_CLIENT_AUTH_MODES, models.ClientAuthenticationMode),
    ]
    placeholder = "DELETED-PLACEHOLDER"
    with Session(engine) as session, session.begin():
        for names, model in lookups:
            session.add_all(model(name=name) for name in names)
        session.add(models.FlavorProfile(id=c.NIL_UUID, name=placeholder, provider_name=c.DELETED, flavor_data="{}"))
        session.flush()
        session.add(
            models.Flavor(
                id=c.NIL_UUID, flavor_profile_id=c.NIL_UUID, name=placeholder, enabled=False, description=placeholder
            )
        )
        session.add(
            models.AvailabilityZoneProfile(
                id=c.NIL_UUID, name=placeholder, provider_name=c.DELETED, availability_zone_data="{}"
            )
        )
        session.flush()
        session.add(
            models.AvailabilityZone(
                availability_zone_profile_id=c.NIL_UUID, name=c.NIL_UUID, enabled=False, description=placeholder
            )
        )


# (table, status key, parent column, parent table): how the activator walks from a child to its LB.
TABLES = [
    ("load_balancer", "loadbalancers", None, None),
    ("listener", "listeners", "load_balancer_id", "load_balancer"),
    ("pool", "pools", "load_balancer_id", "load_balancer"),
    ("health_monitor", "healthmonitors", "pool_id", "pool"),
    ("member", "members", "pool_id", "pool"),
    ("l7policy", "l7policies", "listener_id", "listener"),
    ("l7rule", "l7rules", "l7policy_id", "l7policy"),
]
SET_ON_ACTIVATION = ("health_monitor", "l7policy", "l7rule")


def pending_report(db: sqlite3.Connection) -> dict[str, list[dict[str, str]]]:
    """One status report for every PENDING_* object: ACTIVE for creates/updates, DELETED for deletes, with
    DELETED for every descendant of a deleted object (the API marks only the object itself). Measured
    operating statuses are left as created, as quadriga's noop provider does; health monitors and L7 policies
    and rules go ONLINE (OFFLINE when disabled) as they are activated, as Octavia's amphora flows set them."""
    rows: dict[str, dict[str, tuple[str, str | None, bool]]] = {}
    for table, _key, parent_col, _parent in TABLES:
        cols = f"id, provisioning_status, {parent_col or 'NULL'}, {'enabled' if table in SET_ON_ACTIVATION else 1}"
        rows[table] = {r[0]: (r[1], r[2], bool(r[3])) for r in db.execute(f"SELECT {cols} FROM {table}")}
    report: dict[str, dict[str, dict[str, str]]] = {key: {} for _t, key, _p, _pt in TABLES}
    deleted: dict[str, set[str]] = {table: set() for table, *_ in TABLES}
    for table, key, _parent_col, parent in TABLES:  # parents come before children in TABLES
        for oid, (status, parent_id, enabled) in rows[table].items():
            if status == "PENDING_DELETE" or (parent and parent_id in deleted[parent]):
                deleted[table].add(oid)
                report[key][oid] = {"provisioning_status": "DELETED"}
            elif status in ("PENDING_CREATE", "PENDING_UPDATE"):
                report[key][oid] = {"provisioning_status": "ACTIVE"}
                if table in SET_ON_ACTIVATION:
                    report[key][oid]["operating_status"] = "ONLINE" if enabled else "OFFLINE"
    return {key: [{"id": i, **s} for i, s in items.items()] for key, items in report.items()}


def run_activator(peer_dir: Path) -> None:
    from octavia_lib.api.drivers import driver_lib

    run = peer_dir / "run"
    lib = driver_lib.DriverLibrary(
        status_socket=str(run / "status.sock"), stats_socket=str(run / "stats.sock"), get_socket=str(run / "get.sock")
    )
    uri = f"file:{peer_dir / 'octavia.sqlite'}?mode=ro"
    paused = peer_dir / "activator.paused"
    while True:
        time.sleep(ACTIVATOR_INTERVAL)
        if paused.exists():
            continue
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
                report = pending_report(db)
            if not any(report.values()):
                continue
            lib.update_loadbalancer_status(report)
        except Exception as exc:  # locked database, a status the agent refuses: the next pass retries
            print(f"activator: {type(exc).__name__}: {exc}", flush=True)


# ------------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="create the cached virtualenv")
    p = sub.add_parser("start", help="start a peer in DIR; prints its URL")
    p.add_argument("dir", type=Path)
    p.add_argument("--port", type=int, default=None, help="default: a free port")
    p.add_argument("--no-activator", action="store_true", help="leave objects PENDING_* as the noop provider does")
    p = sub.add_parser("stop", help="stop the peer started in DIR")
    p.add_argument("dir", type=Path)
    sub.add_parser("_schema").add_argument("conf")
    sub.add_parser("_activator").add_argument("dir", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "install":
            print(install())
        elif args.cmd == "start":
            print(start(args.dir, args.port, activator=not args.no_activator))
        elif args.cmd == "stop":
            stop(args.dir.resolve())
        elif args.cmd == "_schema":
            create_schema(args.conf)
        elif args.cmd == "_activator":
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            run_activator(args.dir)
    except PeerError as exc:
        log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
