"""One HAProxy master-worker process, run daemonized from a directory of its own.

HAProxy runs as `haproxy -W -D -p <pid file> -S <master socket> -f <config>`: daemonized, so the engine
keeps serving when the agent dies, and a restarted agent adopts it again through the pid file. The
master CLI (`-S`) tells how many reloads the master did and which of them failed, and which workers are
current; the worker's stats socket (in the config) answers which worker serves it. A reload is complete
when the master counted it, did not count it as failed, and a new worker answers on the stats socket.

Before any signal, a pid is checked through /proc/<pid>/cmdline to be an `haproxy` run with this
directory's config, so a recycled pid never gets a signal meant for HAProxy."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from quadriga.agent.runtime import Processes, RuntimeApi, RuntimeApiError
from quadriga.engine.render import EMPTY_SERVER_STATE, EnginePaths

log = logging.getLogger("quadriga.agent")

CONFIG = "haproxy.cfg"
PID_FILE = "haproxy.pid"
MASTER_SOCKET = "master.sock"
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
COMMAND_TIMEOUT = 30.0  # `haproxy -c` and the daemonizing start take ~10-20 ms here
POLL_INTERVAL = 0.01
SETTLE_TRIES = 50  # times POLL_INTERVAL: how long a re-executing master may look like no process
_LEVEL = re.compile(r"^\[(ALERT|WARNING)\]\s+\(\d+\) : ")


class HaproxyError(Exception):
    """HAProxy refused to check, start or reload; the message carries HAProxy's own words."""


class ConfigRejected(HaproxyError):
    """`haproxy -c` refused a config."""


class Haproxy:
    """The HAProxy of one engine directory: `<dir>/haproxy.cfg`, its pid file, master socket, stats socket
    and server-state file (the last two at the paths `EnginePaths.under(<dir>)` renders into the config)."""

    def __init__(
        self,
        directory: Path,
        *,
        binary: str = "haproxy",
        command_prefix: Sequence[str] = (),
        wait_timeout: float = 10.0,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.binary = binary
        self.command_prefix = list(command_prefix)
        self.wait_timeout = wait_timeout
        self.paths = EnginePaths.under(self.directory)
        self.config = self.directory / CONFIG
        self.pid_file = self.directory / PID_FILE
        self.master_socket = self.directory / MASTER_SOCKET
        for sock in (self.master_socket, self.paths.runtime_socket):
            if len(os.fsencode(sock)) > UNIX_PATH_MAX:
                raise ValueError(f"unix socket path {sock} is over {UNIX_PATH_MAX} bytes: use a shorter state dir")
        self.runtime = RuntimeApi(self.paths.runtime_socket)
        self.master_cli = RuntimeApi(self.master_socket)

    # --- config ----------------------------------------------------------------------------------------

    def check(self, config: Path) -> str:
        """Run `haproxy -c` on `config`; return HAProxy's warnings (empty when none), raise ConfigRejected
        with its alerts (HaproxyError when the check itself could not run to its end). Runs without the command
        prefix: checking needs no network namespace, so a config can be checked before the engine's network is
        plugged."""
        result = self._run([self.binary, "-c", "-f", str(config)])
        messages = _messages(result.stdout, self.directory)
        if result.returncode < 0:  # killed (the OOM killer, an operator): no verdict on the config
            raise HaproxyError(f"haproxy -c was killed by signal {-result.returncode} before it judged {config.name}")
        if result.returncode != 0:
            raise ConfigRejected(messages or f"haproxy -c exited with {result.returncode}")
        return messages

    # --- processes -------------------------------------------------------------------------------------

    def master_pid(self) -> int | None:
        """The master's pid from the pid file, if that process is our HAProxy and alive. The master
        re-executes itself at start and on every reload: for a moment its pid file is empty and its
        cmdline too, and such an in-between answer is read again until it settles."""
        for _ in range(SETTLE_TRIES):
            try:
                fields = self.pid_file.read_text().split()
            except OSError:
                return None
            if fields:
                pid = int(fields[0]) if fields[0].isdigit() else -1
                if self._is_ours(pid):
                    return pid
                if not _reexecuting(pid):
                    return None
            time.sleep(POLL_INTERVAL)
        return None

    def processes(self) -> list[int]:
        """Every live process (master, current and old workers) that runs HAProxy with our config."""
        return [int(name) for name in os.listdir("/proc") if name.isdigit() and self._is_ours(int(name))]

    def adopt(self) -> bool:
        """True when an HAProxy of this directory runs and answers (left behind by an earlier agent)."""
        master = self.master_pid()
        if master is None:
            return False
        try:
            procs = self.master_cli.show_proc()
            worker = int(self.runtime.show_info()["Pid"])
        except RuntimeApiError as exc:
            log.warning("haproxy master %s of %s does not answer: %s", master, self.directory, exc)
            return False
        if procs.master != master or worker not in procs.workers:
            log.warning("haproxy of %s answers as master=%s worker=%s", self.directory, procs.master, worker)
            return False
        log.info("adopted haproxy master=%s worker=%s dir=%s", master, worker, self.directory)
        return True

    def show_proc(self) -> Processes:
        """The master's view: its pid, reload counters and current workers."""
        return self.master_cli.show_proc()

    def start(self) -> int:
        """Start the master (daemonized); return the worker's pid once it serves."""
        if self.master_pid() is not None:
            raise HaproxyError(f"haproxy already runs for {self.directory}")
        # A server-state file describes a live process; a fresh start must not inherit a stale one.
        write_atomic(self.paths.server_state_file, EMPTY_SERVER_STATE)
        self.pid_file.unlink(missing_ok=True)  # written by the daemon a moment after the launcher exits
        argv = [*self.command_prefix, self.binary, "-W", "-D", "-p", str(self.pid_file)]
        argv += ["-S", f"unix@{self.master_socket}", "-f", str(self.config)]
        result = self._run(argv)
        if result.returncode != 0:
            raise HaproxyError(_messages(result.stdout, self.directory) or f"haproxy exited with {result.returncode}")
        master = self._wait_master()
        worker = self._wait_serving(master, None)
        log.info("started haproxy master=%s worker=%s dir=%s", master, worker, self.directory)
        return worker

    def reload(self, carry_state: Callable[[str], str] | None = None) -> int:
        """Seamless reload: save the servers' state (through `carry_state`, which decides what the new
        config inherits), SIGUSR2 the master, and return the new worker's pid once it serves. Raises
        HaproxyError when the master could not load the config (the old worker then keeps serving)."""
        master = self.master_pid()
        if master is None:
            raise HaproxyError(f"haproxy does not run for {self.directory}")
        try:
            before = self.master_cli.show_proc()
        except RuntimeApiError as exc:
            raise HaproxyError(f"haproxy's master does not answer, so it is not reloaded: {exc}") from exc
        self._save_server_state(carry_state)
        os.kill(master, signal.SIGUSR2)
        worker = self._wait_serving(master, before)
        log.info("reloaded haproxy master=%s worker=%s dir=%s", master, worker, self.directory)
        return worker

    def stop(self, grace: float = 3.0, kill_after: float = 2.0) -> None:
        """Soft-stop (SIGUSR1: finish the requests in flight), SIGTERM after `grace` seconds, SIGKILL
        `kill_after` seconds later; then remove the pid file and sockets."""
        master = self.master_pid()
        pids = sorted(set(self.processes()) | ({master} if master else set()))
        if pids:
            self._signal([master] if master else pids, signal.SIGUSR1)
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_after), (None, kill_after)):
                if self._wait_gone(pids, wait):
                    break
                if sig is None:
                    raise HaproxyError(f"haproxy processes {self.processes()} of {self.directory} survived SIGKILL")
                log.warning("haproxy of %s still runs after %.1f s: sending %s", self.directory, wait, sig.name)
                self._signal(pids, sig)
            log.info("stopped haproxy pids=%s dir=%s", pids, self.directory)
        for path in (self.pid_file, self.master_socket, self.paths.runtime_socket):
            path.unlink(missing_ok=True)

    # --- helpers ---------------------------------------------------------------------------------------

    def _is_ours(self, pid: int) -> bool:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]  # a zombie has none
        if not argv or not Path(argv[0]).name.startswith("haproxy"):
            return False
        return any(a == "-f" and b == str(self.config) for a, b in zip(argv, argv[1:], strict=False))

    def _signal(self, pids: Sequence[int], sig: signal.Signals) -> None:
        for pid in pids:
            if self._is_ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                    os.kill(pid, signal.SIGCONT)  # a stopped (hung) process cannot act on the signal

    def _wait_gone(self, pids: Sequence[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(self._is_ours(pid) or _reexecuting(pid) for pid in pids):
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL * 5)
        return True

    def _wait_master(self) -> int:
        deadline = time.monotonic() + self.wait_timeout
        while (master := self.master_pid()) is None:
            if time.monotonic() >= deadline:
                raise HaproxyError(f"haproxy started, but {self.pid_file} names no live haproxy")
            time.sleep(POLL_INTERVAL)
        return master

    def _save_server_state(self, carry_state: Callable[[str], str] | None) -> None:
        try:
            state = self.runtime.show_servers_state()
        except RuntimeApiError as exc:
            # Only health states are lost: the new worker starts from its config.
            log.warning("cannot save the server state of %s before a reload: %s", self.directory, exc)
            state = EMPTY_SERVER_STATE
        write_atomic(self.paths.server_state_file, carry_state(state) if carry_state else state)

    def _wait_serving(self, master: int, before: Processes | None) -> int:
        """Wait until a worker that did not exist `before` answers on the stats socket. The master is watched
        by pid: while it re-executes itself it has neither a pid file nor a cmdline for a moment."""
        deadline = time.monotonic() + self.wait_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                procs = self.master_cli.show_proc()
                if before is not None and procs.failed_reloads > before.failed_reloads:
                    raise HaproxyError(
                        "HAProxy's master could not load the new config, and the previous one keeps serving "
                        "(haproxy -c accepted it: look for an address already in use or a missing file)"
                    )
                new = [w for w in procs.workers if before is None or w not in before.workers]
                if new and (before is None or procs.reloads > before.reloads):
                    pid = int(self.runtime.show_info()["Pid"])
                    if pid in new:
                        return pid
                    last = f"worker {pid} answers, waiting for {new}"
            except RuntimeApiError as exc:
                last = str(exc)
                if not _alive(master):
                    raise HaproxyError(f"haproxy of {self.directory} exited") from exc
            time.sleep(POLL_INTERVAL)
        raise HaproxyError(f"no new haproxy worker served {self.directory} within {self.wait_timeout} s: {last}")

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        # Output goes to a file, not a pipe: the daemonized master inherits the descriptors, and reading a
        # pipe would wait for it.
        with tempfile.TemporaryFile() as out:
            try:
                result = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise HaproxyError(f"cannot run {argv[0]}: {exc}") from exc
            out.seek(0)
            return subprocess.CompletedProcess(argv, result.returncode, out.read().decode(errors="replace"))


def _reexecuting(pid: int) -> bool:
    """A live process with an empty cmdline: what a master looks like while it re-executes itself."""
    try:
        return _alive(pid) and not Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """The process exists and is no zombie. (Its cmdline is briefly empty while the master re-executes
    itself on a reload, so this is what tells a reloading master from a dead one.)"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _messages(output: str, directory: Path) -> str:
    """HAProxy's alerts and warnings, without its chatter (NOTICE lines, pids) and with paths relative to
    the engine directory: the message travels to the controller and into status reasons."""
    chatter = ("[NOTICE]", "Configuration file is valid")
    lines = [line for line in output.splitlines() if line.strip() and not any(c in line for c in chatter)]
    text = "\n".join(_LEVEL.sub(r"\1: ", line) for line in lines).strip()
    return text.replace(f"{directory}/", "")


def write_atomic(path: Path, text: str) -> None:
    """Write a file that readers (HAProxy, a restarted agent) see either whole or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)
