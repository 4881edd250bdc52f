"""Fixtures for the real-client tests: one `quadriga serve` for the session, a clouds.yaml pointing at
it, and `openstack`, which runs the real `openstack` CLI against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import CLOUD_NAME, DatabaseNotConfigured, QuadrigaServer

CLI_TIMEOUT = 60.0
DEFAULT_PROJECT = "demo"

# Commands whose cliff class prints nothing (plain Command), so `-f json` would be rejected.
_NO_OUTPUT_VERBS = {"set", "unset", "delete", "failover", "reset", "configure"}
_VERBS = {"create", "list", "show", "defaults", *_NO_OUTPUT_VERBS}
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class OpenStackCLIError(AssertionError):
    """The `openstack` CLI exited non-zero (or timed out)."""

    def __init__(self, cmd: list[str], returncode: int | None, stdout: str, stderr: str) -> None:
        self.cmd, self.returncode, self.stdout, self.stderr = cmd, returncode, stdout, stderr
        super().__init__(
            f"`{' '.join(cmd)}` exited with {returncode}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )


def _command_words(args: tuple[str, ...]) -> list[str]:
    words = []
    for a in args:
        if a.startswith("-"):
            break
        words.append(a)
    return words


class OpenStackCLI:
    """Runs `openstack --os-cloud quadriga ARGS [-f json]` and returns the parsed JSON output."""

    def __init__(self, executable: Path, env: dict[str, str], cloud: str = CLOUD_NAME) -> None:
        self.executable = executable
        self.env = env
        self.cloud = cloud

    def command(self, args: tuple[str, ...], fmt: bool | None = None) -> list[str]:
        words = _command_words(args)
        verb = next((w for w in words if w in _VERBS), None)
        if fmt is None:
            # `loadbalancer status show` prints JSON itself and takes no -f.
            prints = verb not in _NO_OUTPUT_VERBS or words[-2:] == ["quota", "set"]  # quota set is a ShowOne
            fmt = verb is not None and prints and "status" not in words
        cmd = [str(self.executable), "--os-cloud", self.cloud, *args]
        if fmt:
            cmd += ["-f", "json"]
        return cmd

    def run(
        self, *args: str, fmt: bool | None = None, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI and return the completed process, whatever its exit code."""
        cmd = self.command(args, fmt)
        try:
            return subprocess.run(
                cmd, env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:

            def _text(b: bytes | str | None) -> str:
                return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")

            stderr = _text(exc.stderr) + f"\n(timed out after {timeout}s)"
            raise OpenStackCLIError(cmd, None, _text(exc.stdout), stderr) from None

    def __call__(self, *args: str, fmt: bool | None = None, timeout: float = CLI_TIMEOUT) -> Any:
        """Run the CLI, fail with its output on a non-zero exit, return parsed JSON (None when silent)."""
        proc = self.run(*args, fmt=fmt, timeout=timeout)
        if proc.returncode != 0:
            raise OpenStackCLIError(self.command(args, fmt), proc.returncode, proc.stdout, proc.stderr)
        out = proc.stdout.strip()
        if not out:
            return None
        try:
            return json.loads(out)
        except ValueError:
            raise OpenStackCLIError(
                self.command(args, fmt), proc.returncode, proc.stdout, "stdout is not JSON\n" + proc.stderr
            ) from None

    def fails(self, *args: str, fmt: bool | None = None) -> str:
        """Run a command that must fail; return its stdout+stderr for asserting on the message."""
        proc = self.run(*args, fmt=fmt)
        if proc.returncode == 0:
            raise AssertionError(
                f"`{' '.join(self.command(args, fmt))}` unexpectedly succeeded\n--- stdout ---\n{proc.stdout}"
                f"\n--- stderr ---\n{proc.stderr}"
            )
        return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def quadriga_server() -> Iterator[QuadrigaServer]:
    """One server for the whole client suite. QUADRIGA_TEST_SERVER_DATABASE=postgresql runs it on
    $QUADRIGA_TEST_DATABASE_URL (in a schema of its own) instead of SQLite."""
    database = os.environ.get("QUADRIGA_TEST_SERVER_DATABASE", "sqlite")
    try:
        server = QuadrigaServer(
            database=database, auth_strategy="noauth", default_project=DEFAULT_PROJECT, provider="noop"
        )
    except DatabaseNotConfigured as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture(scope="session")
def clouds_yaml(quadriga_server: QuadrigaServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quadriga_server.write_clouds_yaml(tmp_path_factory.mktemp("clients") / "clouds.yaml")


@pytest.fixture(scope="session")
def openstack(quadriga_server: QuadrigaServer, clouds_yaml: Path) -> OpenStackCLI:
    executable = Path(sys.executable).parent / "openstack"
    if not executable.exists():
        pytest.skip(f"the openstack CLI is not installed next to {sys.executable}")
    return OpenStackCLI(executable, quadriga_server.client_env(clouds_yaml))


@pytest.fixture
def unique() -> Callable[[str], str]:
    """unique("lb") -> "lb-1a2b3c4d": names that cannot collide with leftovers of other tests."""
    suffix = uuid.uuid4().hex[:8]
    return lambda prefix: f"{prefix}-{suffix}"


def api_get(server: QuadrigaServer, path: str) -> tuple[int, Any]:
    """GET on the Octavia API without a client library (for waiting and cross-checks)."""
    try:
        with _NO_PROXY_OPENER.open(server.lb_url + path, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body.decode(errors="replace")


@pytest.fixture
def wait_lb_active(quadriga_server: QuadrigaServer) -> Callable[[str], dict[str, Any]]:
    """Poll the load balancer (fast, over plain HTTP) until its provisioning_status is ACTIVE.

    Used after CLI `set`/`unset` calls made without --wait, which costs the CLI a 3 s sleep."""

    def wait(lb_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            code, body = api_get(quadriga_server, f"/v2/lbaas/loadbalancers/{lb_id}")
            assert code == 200, f"GET load balancer {lb_id} -> {code}: {body}"
            lb = body["loadbalancer"]
            if lb["provisioning_status"] == "ACTIVE":
                return lb
            assert lb["provisioning_status"] != "ERROR", lb
            assert time.monotonic() < deadline, f"load balancer still {lb['provisioning_status']} after {timeout}s"
            time.sleep(0.05)

    return wait
