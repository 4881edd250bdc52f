"""A real Keystone (PyPI `keystone`) for tests and local clouds: SQLite, fernet tokens, gunicorn on loopback.

Run by scripts/keystone.sh with the Python of Keystone's own virtualenv (stdlib only here):

    keystone_ctl.py setup DIR [--port 5000] [--token-expiration 3600]   conf, db_sync, fernet/credential keys, bootstrap
    keystone_ctl.py serve DIR [--port 5000] [--threads 4]                gunicorn in the foreground (exec)
    keystone_ctl.py populate DIR [--load-balancer URL] [--network URL] [--key-manager URL]
                                                                      projects, users, roles, catalog (prints JSON)
    keystone_ctl.py start DIR [...]                                       all three, the server in the background
    keystone_ctl.py stop DIR                                              stops what `start` started

What `populate` creates (all in the Default domain, every password is --password):
- projects `project-a`, `project-b`, `service`;
- users: `admin` (admin of project `admin`, from bootstrap), `member-a`/`reader-a` (member/reader of
  project-a), `member-b` (member of project-b), `lb-admin`, `lb-global-observer`, `lb-quota-admin`,
  `lb-member-a`, `lb-observer-a` (Octavia's deprecated load-balancer_* roles on project-a),
  `domain-admin` (admin of the Default domain only: its tokens are domain-scoped) and `quadriga`, the
  service user that validates tokens (role `service` on project `service`);
- catalog entries in RegionOne (public, internal, admin): identity (this Keystone) and load-balancer, network
  and key-manager when their URLs are given (an existing entry is replaced)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
REGION = "RegionOne"
PROJECTS = ("project-a", "project-b", "service")
# user -> (role, project); None as the project: a role on the Default domain
USERS: dict[str, tuple[str, str | None]] = {
    "member-a": ("member", "project-a"),
    "reader-a": ("reader", "project-a"),
    "member-b": ("member", "project-b"),
    "lb-admin": ("load-balancer_admin", "project-a"),
    "lb-global-observer": ("load-balancer_global_observer", "project-a"),
    "lb-quota-admin": ("load-balancer_quota_admin", "project-a"),
    "lb-member-a": ("load-balancer_member", "project-a"),
    "lb-observer-a": ("load-balancer_observer", "project-a"),
    "domain-admin": ("admin", None),
    "quadriga": ("service", "service"),
}
SERVICES = {  # catalog type -> (service name, populate flag)
    "load-balancer": ("octavia", "load_balancer"),
    "network": ("neutron", "network"),
    "key-manager": ("barbican", "key_manager"),
}
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def auth_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v3"


def write_conf(confdir: Path, token_expiration: int) -> Path:
    """keystone.conf for a throwaway Keystone: everything lives in `confdir`."""
    conf = confdir / "keystone.conf"
    conf.write_text(
        "[DEFAULT]\n"
        f"log_file = {confdir / 'keystone.log'}\n"
        "[database]\n"
        f"connection = sqlite:///{confdir / 'keystone.db'}\n"
        "[token]\n"
        "provider = fernet\n"
        f"expiration = {token_expiration}\n"
        "[fernet_tokens]\n"
        f"key_repository = {confdir / 'fernet-keys'}\n"
        "[credential]\n"
        f"key_repository = {confdir / 'credential-keys'}\n"
        # Without a cache one token validation is ~350 SQL queries (seconds on a busy machine). The memory
        # backend is per process, so gunicorn runs one worker process (with threads): a revocation is seen
        # by every request.
        "[cache]\n"
        "enabled = true\n"
        "backend = dogpile.cache.memory\n"
        "[identity]\n"
        "password_hash_rounds = 4\n"  # bcrypt's minimum: a test Keystone, logins in milliseconds, not 0.3 s
    )
    return conf


def manage(conf: Path, *args: str) -> subprocess.Popen:
    """`keystone-manage ARGS`, started (`finish` waits for it): each one spends seconds importing Keystone,
    so the key setups run beside the database's."""
    user = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
    cmd = [str(BIN / "keystone-manage"), "--config-file", str(conf), *args]
    if args[0] in ("fernet_setup", "credential_setup"):
        cmd += user
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=300)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(proc.args[:4])} failed:\n{out}")


def setup(confdir: Path, port: int, token_expiration: int, password: str) -> None:
    """Configure Keystone in `confdir` from a bootstrapped template (made once per virtualenv and password:
    db_sync, fernet_setup, credential_setup and bootstrap take up to a minute; a copy takes none). The
    identity endpoint's port is set by `populate`. A directory set up before is left alone."""
    if (confdir / "keystone.db").exists():
        return
    template = Path(sys.prefix) / f"template-{hashlib.sha256(password.encode()).hexdigest()[:12]}"
    if not (template / "keystone.db").exists():
        building = Path(tempfile.mkdtemp(prefix="template-", dir=sys.prefix))
        conf = write_conf(building, token_expiration)
        keys = [manage(conf, "fernet_setup"), manage(conf, "credential_setup")]
        finish(manage(conf, "db_sync"))
        url = auth_url(port)
        bootstrap = manage(
            conf,
            "bootstrap",
            *("--bootstrap-password", password, "--bootstrap-username", "admin"),
            *("--bootstrap-project-name", "admin", "--bootstrap-role-name", "admin"),
            *("--bootstrap-service-name", "keystone", "--bootstrap-region-id", REGION),
            *("--bootstrap-admin-url", url, "--bootstrap-internal-url", url, "--bootstrap-public-url", url),
        )
        for proc in (*keys, bootstrap):
            finish(proc)
        shutil.rmtree(template, ignore_errors=True)
        building.rename(template)
    confdir.mkdir(parents=True, exist_ok=True)
    for keys in ("fernet-keys", "credential-keys"):
        shutil.copytree(template / keys, confdir / keys, dirs_exist_ok=True)
    shutil.copy2(template / "keystone.db", confdir / "keystone.db")
    write_conf(confdir, token_expiration)


def serve_command(confdir: Path, port: int, threads: int) -> list[str]:
    return [
        str(BIN / "gunicorn"),
        "--pythonpath",
        str(HERE),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--timeout",
        "60",
        "--preload",  # import Keystone once, before the worker is forked
        "--no-control-socket",  # gunicorn's default socket path is one per user: side-by-side servers share it
        "--error-logfile",
        str(confdir / "gunicorn.log"),
        "keystone_wsgi:application",
    ]


def serve_env(confdir: Path) -> dict[str, str]:
    return {**os.environ, "OS_KEYSTONE_CONFIG_DIR": str(confdir)}


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"Keystone's gunicorn exited with {proc.returncode}; see its server.log")
        try:
            with NO_PROXY.open(auth_url(port), timeout=2) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    sys.exit(f"Keystone did not answer on {auth_url(port)} within {timeout:.0f}s")


class Client:
    """Just enough of the identity API to populate a fresh Keystone, as its admin."""

    def __init__(self, url: str, password: str) -> None:
        self.url = url
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": password}},
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        }
        self.token = ""
        _, headers = self.call("POST", "/auth/tokens?nocatalog", body)
        self.token = headers["X-Subject-Token"]

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[dict, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("X-Auth-Token", self.token)
        try:
            with NO_PROXY.open(req, timeout=30) as resp:
                raw = resp.read()
                return (json.loads(raw) if raw else {}), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            sys.exit(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}")

    def find_or_create(self, kind: str, name: str, body: dict, query: str = "") -> str:
        found = self.call("GET", f"/{kind}s?name={name}{query}")[0][f"{kind}s"]
        if found:
            return found[0]["id"]
        return self.call("POST", f"/{kind}s", {kind: {"name": name, **body}})[0][kind]["id"]


def populate(url: str, password: str, endpoints: dict[str, str]) -> dict:
    """Projects, users, role assignments and catalog entries (see the module docstring); returns their ids."""
    ks = Client(url, password)
    projects = {name: ks.find_or_create("project", name, {"domain_id": "default"}) for name in PROJECTS}
    projects["admin"] = ks.find_or_create("project", "admin", {})
    users = {"admin": ks.find_or_create("user", "admin", {})}
    roles: dict[str, str] = {}
    for user, (role, project) in USERS.items():
        users[user] = ks.find_or_create("user", user, {"domain_id": "default", "password": password})
        if role not in roles:
            roles[role] = ks.find_or_create("role", role, {})
        target = f"projects/{projects[project]}" if project else "domains/default"
        ks.call("PUT", f"/{target}/users/{users[user]}/roles/{roles[role]}")
    names = {"identity": "keystone", **{kind: name for kind, (name, _) in SERVICES.items()}}
    endpoints = {"identity": url, **endpoints}
    for kind, url_ in endpoints.items():
        name = names[kind]
        service = ks.find_or_create("service", name, {"type": kind})
        for old in ks.call("GET", f"/endpoints?service_id={service}")[0]["endpoints"]:
            ks.call("DELETE", f"/endpoints/{old['id']}")
        for interface in ("public", "internal", "admin"):
            ks.call(
                "POST",
                "/endpoints",
                {"endpoint": {"service_id": service, "interface": interface, "url": url_, "region_id": REGION}},
            )
    return {"auth_url": url, "region": REGION, "projects": projects, "users": users, "endpoints": endpoints}


def start(confdir: Path, port: int, threads: int) -> int:
    """gunicorn in the background (its pid in gunicorn.pid); returns once Keystone answers."""
    log = (confdir / "server.log").open("ab")
    proc = subprocess.Popen(
        serve_command(confdir, port, threads),
        env=serve_env(confdir),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (confdir / "gunicorn.pid").write_text(f"{proc.pid}\n")
    wait_ready(port, proc)
    return proc.pid


def stop(confdir: Path) -> None:
    pidfile = confdir / "gunicorn.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pidfile.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(prog="keystone.sh", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["setup", "serve", "populate", "start", "stop"])
    parser.add_argument("dir", type=Path, help="Keystone's config, database and keys live here")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=4, help="request threads of the one worker")
    parser.add_argument("--token-expiration", type=int, default=3600, help="token lifetime in seconds")
    parser.add_argument("--password", default="quadriga-test", help="every user's password (a test Keystone)")
    for kind, (_, flag) in SERVICES.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", help=f"URL of the {kind} endpoint to register")
    args = parser.parse_args()
    confdir = args.dir.resolve()
    endpoints = {kind: getattr(args, flag) for kind, (_, flag) in SERVICES.items() if getattr(args, flag)}
    if args.command == "setup":
        setup(confdir, args.port, args.token_expiration, args.password)
    elif args.command == "serve":
        command = serve_command(confdir, args.port, args.threads)
        os.execve(command[0], command, serve_env(confdir))
    elif args.command == "populate":
        print(json.dumps(populate(auth_url(args.port), args.password, endpoints)))
    elif args.command == "start":
        setup(confdir, args.port, args.token_expiration, args.password)
        pid = start(confdir, args.port, args.threads)
        info = populate(auth_url(args.port), args.password, endpoints)
        (confdir / "keystone.json").write_text(json.dumps(info, indent=2))
        print(json.dumps({**info, "pid": pid}))
    else:
        stop(confdir)


if __name__ == "__main__":
    main()
