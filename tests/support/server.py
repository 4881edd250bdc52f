"""Run `quadriga serve` as a subprocess for tests and benchmarks.

    with QuadrigaServer(default_project="demo") as server:
        httpx.get(server.lb_url + "/v2/lbaas/loadbalancers")
        server.write_clouds_yaml(tmp_path / "clouds.yaml")

The server gets free loopback ports (the kernel picks its health receiver's UDP port), a fresh state
directory (removed afterwards unless `keep_state_dir=True` or QUADRIGA_TEST_KEEP_STATE=1) and a log file,
`server.log`, in that directory.
`start()` waits for `GET /healthcheck` to answer 200 (and the networking port to accept connections);
`stop()` sends SIGTERM to the server's PID, waits, then SIGKILLs it. Both are idempotent, and any server
still running when the interpreter exits is stopped by an atexit hook.

Databases: `database="sqlite"` (the default) lets the server use its own SQLite file in the state
directory; `database="postgresql"` takes the URL from $QUADRIGA_TEST_DATABASE_URL and raises
`DatabaseNotConfigured` when it is unset (callers usually turn that into `pytest.skip`); an explicit
`database_url=` wins over both. On PostgreSQL every server gets a schema of its own (created before the
server starts, dropped after it stops, selected with libpq's `options=-csearch_path=...`) so that servers
never see each other's rows; pass `isolated_schema=False` to use the database as it is (the default for an
explicit `database_url`).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

POSTGRES_URL_ENV = "QUADRIGA_TEST_DATABASE_URL"
KEEP_STATE_ENV = "QUADRIGA_TEST_KEEP_STATE"
LOG_NAME = "server.log"
CLOUD_NAME = "quadriga"
LOOPBACK = "127.0.0.1"

_REPO_ROOT = Path(__file__).resolve().parents[2]
_PORT_IN_USE_MARKERS = ("address already in use", f"[errno {errno.EADDRINUSE}]")
# Never let a proxy from the environment intercept requests to the loopback server.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerStartupError(RuntimeError):
    """`quadriga serve` exited or did not become healthy; the message ends with the log's tail."""


class DatabaseNotConfigured(RuntimeError):
    """A PostgreSQL run was requested but $QUADRIGA_TEST_DATABASE_URL is not set."""


def postgres_url_from_env() -> str | None:
    """The PostgreSQL URL the test suites should use, or None when none is configured."""
    return os.environ.get(POSTGRES_URL_ENV) or None


def resolve_database_url(database: str | None, database_url: str | None = None) -> str | None:
    """The `--database-url` to pass: an explicit URL, the PostgreSQL URL from the env, or None (server default)."""
    if database_url:
        return database_url
    if database in (None, "", "sqlite"):
        return None
    if database in ("postgresql", "postgres", "pg"):
        url = postgres_url_from_env()
        if not url:
            raise DatabaseNotConfigured(f"set ${POSTGRES_URL_ENV} to run against PostgreSQL")
        return url
    raise ValueError(f"unknown database kind {database!r} (expected 'sqlite' or 'postgresql')")


def _sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1] if url.startswith("postgresql://") else url


def _with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***, for messages and logs."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def _run_ddl(url: str, statement: str) -> None:
    from sqlalchemy import create_engine, text  # only PostgreSQL runs need it

    engine = create_engine(_sqlalchemy_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (the server may still lose a race for it; `start` retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_command() -> list[str]:
    """How to launch quadriga: `python -m quadriga` when the package has a __main__, else the console script."""
    main_candidates = [_REPO_ROOT / "src" / "quadriga" / "__main__.py"]
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("quadriga")
        if spec is not None and spec.origin:
            main_candidates.append(Path(spec.origin).parent / "__main__.py")
    if any(p.is_file() for p in main_candidates):
        return [sys.executable, "-m", "quadriga"]
    # sys.executable is not resolved on purpose: a venv's bin/python is usually a symlink.
    script = Path(sys.executable).parent / "quadriga"
    if not script.exists():
        raise ServerStartupError(f"neither quadriga/__main__.py nor {script} exists; is quadriga installed?")
    return [str(script)]


def scrubbed_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without OS_* variables (they would leak into the OpenStack clients) and with
    proxies bypassed for loopback, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    no_proxy = ",".join(filter(None, [env.get("no_proxy", ""), "127.0.0.1", "localhost"]))
    env["no_proxy"] = env["NO_PROXY"] = no_proxy
    if extra:
        env.update(extra)
    return env


_running: set[QuadrigaServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


class QuadrigaServer:
    """One `quadriga serve` subprocess with its own ports and state directory."""

    def __init__(
        self,
        *,
        database: str | None = "sqlite",
        database_url: str | None = None,
        auth_strategy: str | None = None,
        default_project: str | None = None,
        provider: str | None = None,
        network_driver: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        host: str = LOOPBACK,
        state_dir: str | os.PathLike[str] | None = None,
        keep_state_dir: bool | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        port_attempts: int = 3,
        isolated_schema: bool | None = None,
    ) -> None:
        self.base_database_url = resolve_database_url(database, database_url)
        is_pg = bool(self.base_database_url and self.base_database_url.startswith("postgresql"))
        if isolated_schema is None:
            isolated_schema = is_pg and not database_url
        if isolated_schema and not is_pg:
            raise ValueError("isolated_schema needs a PostgreSQL database")
        self.schema = f"quadriga_test_{uuid.uuid4().hex[:12]}" if isolated_schema else None
        self.database_url = (
            _with_search_path(self.base_database_url, self.schema)
            if self.schema and self.base_database_url
            else self.base_database_url
        )
        self._schema_created = False
        self.auth_strategy = auth_strategy
        self.default_project = default_project
        self.provider = provider
        self.network_driver = network_driver
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.host = host
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port_attempts = max(1, port_attempts)
        self._given_state_dir = Path(state_dir) if state_dir is not None else None
        if keep_state_dir is None:
            keep_state_dir = os.environ.get(KEEP_STATE_ENV, "") not in ("", "0", "false", "no")
        self._keep = keep_state_dir
        self.keep_state_dir = keep_state_dir or self._given_state_dir is not None

        self.state_dir: Path | None = None
        self.lb_port: int | None = None
        self.net_port: int | None = None
        self.agent_port: int | None = None
        self.km_port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._log: IO[bytes] | None = None

    # -- addresses -------------------------------------------------------------------------------
    @property
    def lb_url(self) -> str:
        """Base URL of the Octavia API, without a trailing slash (e.g. http://127.0.0.1:40123)."""
        self._require_ports()
        return f"http://{self.host}:{self.lb_port}"

    @property
    def net_url(self) -> str:
        """Base URL of the networking API, without a trailing slash."""
        self._require_ports()
        return f"http://{self.host}:{self.net_port}"

    @property
    def keymanager_url(self) -> str:
        """Root of the key-manager API (the secret store), without /v1 and without a trailing slash."""
        self._require_ports()
        return f"http://{self.host}:{self.km_port}"

    @property
    def log_path(self) -> Path:
        if self.state_dir is None:
            raise RuntimeError("server has not been started")
        return self.state_dir / LOG_NAME

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _require_ports(self) -> None:
        if self.lb_port is None or self.net_port is None:
            raise RuntimeError("server has not been started")

    # -- clients ---------------------------------------------------------------------------------
    def cloud_config(self) -> dict[str, Any]:
        """The clouds.yaml entry for this server (auth_type none, explicit endpoint overrides), as `serve`
        prints it: the auth endpoint is the key manager's, which python-barbicanclient uses."""
        return {
            "auth_type": "none",
            "auth": {"endpoint": self.keymanager_url + "/v1"},
            "load_balancer_endpoint_override": self.lb_url,
            "network_endpoint_override": self.net_url + "/",
            "key_manager_endpoint_override": self.keymanager_url + "/v1",
            "region_name": "RegionOne",
        }

    def write_clouds_yaml(self, path: str | os.PathLike[str] | None = None, cloud_name: str = CLOUD_NAME) -> Path:
        """Write a clouds.yaml with one cloud, `cloud_name`, pointing at this server; returns its path.

        The default path is inside the state directory but distinct from the server's own clouds.yaml."""
        if path is None:
            if self.state_dir is None:
                raise RuntimeError("server has not been started")
            path = self.state_dir / "clouds.test.yaml"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"clouds": {cloud_name: self.cloud_config()}}, sort_keys=False))
        return path

    def client_env(self, clouds_yaml: str | os.PathLike[str]) -> dict[str, str]:
        """An environment for OpenStack client subprocesses that sees only `clouds_yaml`."""
        return scrubbed_env({"OS_CLIENT_CONFIG_FILE": str(clouds_yaml)})

    def log_tail(self, lines: int = 50) -> str:
        if self._log is not None:
            with contextlib.suppress(ValueError, OSError):
                self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, RuntimeError):
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle -------------------------------------------------------------------------------
    def command(self) -> list[str]:
        self._require_ports()
        assert self.state_dir is not None
        cmd = [
            *server_command(),
            "serve",
            "--state-dir",
            str(self.state_dir),
            "--host",
            self.host,
            "--port",
            str(self.lb_port),
            "--network-port",
            str(self.net_port),
            "--agent-port",
            str(self.agent_port),
            "--keymanager-port",
            str(self.km_port),
            "--health-listen",  # a free UDP port per server, picked by the kernel (servers run side by side)
            f"{self.host}:0",
        ]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        if self.auth_strategy:
            cmd += ["--auth-strategy", self.auth_strategy]
        if self.default_project:
            cmd += ["--default-project", self.default_project]
        if self.provider:
            cmd += ["--provider", self.provider]
        if self.network_driver:
            cmd += ["--network-driver", self.network_driver]
        return cmd + self.extra_args

    def display_command(self) -> str:
        """The command line for messages, without the database password."""
        return " ".join(redact_url(a) if a == self.database_url else a for a in self.command())

    def start(self) -> QuadrigaServer:
        if self.running:
            return self
        if self.schema and not self._schema_created:
            assert self.base_database_url is not None
            try:
                _run_ddl(self.base_database_url, f'CREATE SCHEMA "{self.schema}"')
            except Exception as exc:
                raise ServerStartupError(
                    f"cannot create schema {self.schema} on {redact_url(self.base_database_url)}: {exc}"
                ) from exc
            self._schema_created = True
        if self.state_dir is None:
            if self._given_state_dir is not None:
                self._given_state_dir.mkdir(parents=True, exist_ok=True)
                self.state_dir = self._given_state_dir
            else:
                self.state_dir = Path(tempfile.mkdtemp(prefix="quadriga-test-"))
        try:
            for attempt in range(1, self.port_attempts + 1):
                self.lb_port = free_port(self.host)
                self.net_port = free_port(self.host)
                while self.net_port == self.lb_port:
                    self.net_port = free_port(self.host)
                self.agent_port = free_port(self.host)
                while self.agent_port in (self.lb_port, self.net_port):
                    self.agent_port = free_port(self.host)
                self.km_port = free_port(self.host)
                while self.km_port in (self.lb_port, self.net_port, self.agent_port):
                    self.km_port = free_port(self.host)
                try:
                    self._spawn_and_wait()
                    return self
                except ServerStartupError:
                    lost_port_race = any(m in self.log_tail(20).lower() for m in _PORT_IN_USE_MARKERS)
                    self._terminate(report_crash=False)  # the exception carries the log's tail
                    if not lost_port_race or attempt == self.port_attempts:
                        raise
        except BaseException:
            self._terminate(report_crash=False)
            self.stop()
            raise
        raise AssertionError("unreachable")

    def _spawn_and_wait(self) -> None:
        assert self.state_dir is not None
        cmd = self.command()
        env = scrubbed_env({"PYTHONUNBUFFERED": "1", **self.extra_env})
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate
        self._log.write(f"$ {self.display_command()}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.state_dir),
            start_new_session=True,  # a terminal's Ctrl-C goes to pytest, which then stops us cleanly
        )
        _running.add(self)
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        health = f"{self.lb_url}/healthcheck"
        last_error = "no attempt"
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerStartupError(
                    f"quadriga serve exited with code {code} during startup\n"
                    f"command: {self.display_command()}\n--- last 50 lines of {self.log_path} ---\n"
                    f"{self.log_tail(50)}"
                )
            try:
                with _NO_PROXY_OPENER.open(health, timeout=2) as resp:
                    if resp.status == 200 and self._port_open(self.net_port):
                        return
                    last_error = f"healthcheck answered {resp.status}"
            except urllib.error.HTTPError as exc:
                last_error = f"healthcheck answered {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise ServerStartupError(
                    f"quadriga serve not healthy after {self.startup_timeout:.0f}s ({last_error}; networking port "
                    f"{self.net_port} open: {self._port_open(self.net_port)})\ncommand: {self.display_command()}\n"
                    f"--- last 50 lines of {self.log_path} ---\n{self.log_tail(50)}"
                )
            time.sleep(0.1)

    def _port_open(self, port: int | None) -> bool:
        if port is None:
            return False
        try:
            with socket.create_connection((self.host, port), timeout=1):
                return True
        except OSError:
            return False

    def _terminate(self, report_crash: bool = True) -> None:
        """Stop the process by its PID: SIGTERM, wait `stop_timeout`, then SIGKILL."""
        proc, self.process = self.process, None
        if proc is not None:
            died_early = proc.poll()
            if died_early is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=self.stop_timeout)
            elif died_early != 0 and report_crash:
                # It crashed while in use: make the reason visible in the test output.
                sys.stderr.write(
                    f"quadriga serve (pid {proc.pid}) had exited with code {died_early}; "
                    f"last lines of its log:\n{self.log_tail(50)}\n"
                )
        self._reaped(proc)

    def _reaped(self, proc: subprocess.Popen[bytes] | None) -> None:
        """Forget a process that has exited (keeping its exit code) and close its log."""
        if proc is not None:
            self.returncode = proc.returncode
        _running.discard(self)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the server (a crash: no clean-up runs) and reap it; its state directory, database and
        ports stay for `restart`."""
        proc, self.process = self.process, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=self.stop_timeout)
        self._reaped(proc)

    def restart(self) -> QuadrigaServer:
        """Start a stopped or killed server again with the same state directory, database and ports."""
        if self.running:
            return self
        self._require_ports()
        try:
            self._spawn_and_wait()
        except BaseException:
            self._terminate(report_crash=False)
            raise
        return self

    def stop(self) -> None:
        """Terminate the server, drop its schema and remove its state directory (unless kept). Idempotent."""
        self._terminate()
        if self._schema_created and not self._keep:
            assert self.base_database_url is not None
            try:
                _run_ddl(self.base_database_url, f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            except Exception as exc:  # leave it rather than hide the test's own outcome
                sys.stderr.write(f"could not drop schema {self.schema}: {exc}\n")
            self._schema_created = False
        if self.state_dir is not None and not self.keep_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir = None

    def __enter__(self) -> QuadrigaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        ports = f"{self.lb_port}/{self.net_port}" if self.lb_port else "-"
        return f"<QuadrigaServer {state} pid={self.pid} ports={ports} state_dir={self.state_dir}>"
