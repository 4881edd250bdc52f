"""The UDP proxy of one engine (`python -m quadriga.udp`, see `quadriga.udp.proxy`): started in the engine's
network namespace from the engine's directory, detached (`setsid -f`) so it outlives the agent like HAProxy does,
and adopted by a restarted agent through its pid file. It runs only while the engine's spec has UDP listeners.

A config change is a SIGHUP; the proxy answers on its status socket with the digest of the config it serves, or
of the one it could not load (a VIP:port it cannot bind): the previous config then keeps serving, the previous
file is put back, and the apply fails. Before any signal a pid is checked through /proc/<pid>/cmdline to be this
directory's proxy."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quadriga.agent.haproxy import write_atomic
from quadriga.agent.keepalived import has_option, live_argv, log_tail, pids_where, read_pid
from quadriga.engine.udp import UdpConfig

log = logging.getLogger("quadriga.agent")

CONFIG = "udp.json"
PID_FILE = "udp.pid"
SOCKET = "udp.sock"
LOG_FILE = "udp.log"
WAIT_TIMEOUT = 10.0
STOP_TIMEOUT = 2.0
POLL_INTERVAL = 0.02


class UdpProxyError(Exception):
    """The UDP proxy could not serve a config (or could not be started or stopped); the message says why."""


class UdpProxy:
    def __init__(self, directory: Path, *, command_prefix: Sequence[str] = ()) -> None:
        self.directory = Path(directory).absolute()
        self.command_prefix = list(command_prefix)
        self.config = self.directory / CONFIG
        self.pid_file = self.directory / PID_FILE
        self.socket = self.directory / SOCKET
        self.log_file = self.directory / LOG_FILE

    def ensure(self, config: UdpConfig | None) -> str:
        """Make the proxy serve `config` (start it, or reload it when the config changed), or stop it (None).
        Returns what it did; raises UdpProxyError, with the previous config still serving."""
        if config is None:
            if self.pid() is None and not self._processes():
                return "unchanged"
            self.stop()
            self.config.unlink(missing_ok=True)
            return "stopped"
        text = config.model_dump_json()
        digest = hashlib.sha256(text.encode()).hexdigest()
        pid = self.pid()
        status = self.status() if pid is not None else None
        if status is not None and status.get("digest") == digest:
            return "unchanged"
        previous = self.config.read_text() if self.config.exists() else None
        write_atomic(self.config, text)
        if pid is None or status is None:
            self.stop()  # whatever is left of a proxy that does not answer
            self.start(digest)
            return "started"
        os.kill(pid, signal.SIGHUP)
        status = self._wait(lambda st: digest in (st.get("digest"), st.get("failed")), "reload")
        if status.get("digest") != digest:
            if previous is not None:
                write_atomic(self.config, previous)
            raise UdpProxyError(f"the UDP proxy could not serve revision {config.revision}: {status.get('error')}")
        return "reloaded"

    def pid(self) -> int | None:
        return read_pid(self.pid_file, self._is_ours)

    def status(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """The proxy's status (digest served, last failure, listener counters, member statuses); None when it
        does not answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(self.socket))
                sock.sendall(b"status\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            return json.loads(data)
        except (OSError, ValueError):
            return None

    def start(self, digest: str) -> int:
        self.pid_file.unlink(missing_ok=True)
        logged = self.log_file.stat().st_size if self.log_file.exists() else 0
        argv = ["setsid", "-f", *self.command_prefix, sys.executable, "-m", "quadriga.udp"]
        argv += ["--config", str(self.config), "--socket", str(self.socket), "--pid-file", str(self.pid_file)]
        with open(self.log_file, "ab") as out:
            try:
                subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=10, check=True
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise UdpProxyError(f"cannot run the UDP proxy: {exc}") from exc
        try:
            self._wait(lambda st: st.get("digest") == digest, "start", exited_after=logged)
        except UdpProxyError:
            self.stop()
            raise
        pid = self.pid()
        log.info("started udp proxy pid=%s dir=%s", pid, self.directory)
        assert pid is not None
        return pid

    def stop(self) -> None:
        """SIGTERM, SIGKILL after STOP_TIMEOUT; then remove the pid file and socket. Idempotent."""
        pids = self._processes()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                if self._is_ours(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                        os.kill(pid, signal.SIGCONT)
            deadline = time.monotonic() + STOP_TIMEOUT
            while any(self._is_ours(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(POLL_INTERVAL)
            if not any(self._is_ours(p) for p in pids):
                break
        if any(self._is_ours(p) for p in pids):
            raise UdpProxyError(f"UDP proxy processes {pids} of {self.directory} survived SIGKILL")
        if pids:
            log.info("stopped udp proxy pids=%s dir=%s", pids, self.directory)
        self.pid_file.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)

    def _wait(self, done: Any, what: str, exited_after: int | None = None) -> dict[str, Any]:
        """The proxy's status once `done(status)`. `exited_after`: an offset in the log; a proxy that logs its
        exit after it (a first config it cannot serve) fails the wait at once."""
        deadline = time.monotonic() + WAIT_TIMEOUT
        while time.monotonic() < deadline:
            status = self.status() if self.pid() is not None else None
            if status is not None and done(status):
                return status
            if exited_after is not None and b" event=exit " in self._log_since(exited_after):
                raise UdpProxyError(f"the UDP proxy did not {what}: {self._log_tail()}")
            time.sleep(POLL_INTERVAL)
        raise UdpProxyError(f"the UDP proxy did not {what} within {WAIT_TIMEOUT:.0f} s: {self._log_tail()}")

    def _log_since(self, offset: int) -> bytes:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return b""

    def _processes(self) -> list[int]:
        return pids_where(self._is_ours)

    def _is_ours(self, pid: int) -> bool:
        argv = live_argv(pid)
        return "quadriga.udp" in argv and has_option(argv, "--config", str(self.config))

    def _log_tail(self) -> str:
        return log_tail(self.log_file)
