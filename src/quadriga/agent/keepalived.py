"""The keepalived of one ACTIVE_STANDBY engine: started in the engine's network namespace from the engine's
directory, so it outlives the agent like HAProxy does and a restarted agent adopts it through its pid file.

keepalived runs in the foreground (`-n`, logging to `keepalived.log` in the directory, since this machine may
have no syslog) under `setsid -f`, which detaches it from the agent at once. Before any signal, a pid is checked
through /proc/<pid>/cmdline to be a keepalived run with this directory's config, so a recycled pid never gets a
signal meant for keepalived."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from quadriga.agent.haproxy import write_atomic
from quadriga.engine.spec import EngineSpec
from quadriga.engine.vrrp import KeepalivedPaths, check_script, notify_script, render_keepalived, vip_prefixes

log = logging.getLogger("quadriga.agent")

START_TIMEOUT = 5.0
STOP_TIMEOUT = 2.0
POLL_INTERVAL = 0.02
LOG_TAIL = 2000  # characters of keepalived's log quoted in an error


class KeepalivedError(Exception):
    """keepalived could not be started or stopped; the message says why (with its own words)."""


def keepalived_binary() -> str | None:
    """keepalived's path (Debian puts it in /usr/sbin), or None when it is not installed."""
    return shutil.which("keepalived") or next(
        (p for p in ("/usr/sbin/keepalived", "/sbin/keepalived") if os.access(p, os.X_OK)), None
    )


class Keepalived:
    """keepalived for the engine in `directory`, run with `command_prefix` (`ip netns exec <ns>`)."""

    def __init__(self, directory: Path, *, command_prefix: Sequence[str] = (), binary: str | None = None) -> None:
        self.directory = Path(directory).absolute()
        self.command_prefix = list(command_prefix)
        self.binary = binary or keepalived_binary() or "keepalived"
        self.paths = KeepalivedPaths.under(self.directory)

    def ensure(self, spec: EngineSpec, device: str, haproxy_pid_file: Path) -> str:
        """Make keepalived run `spec`'s VRRP instance on `device`: start it, reload it (SIGHUP) when its config
        changed, or leave it be. Returns what it did."""
        config = render_keepalived(spec, self.paths, device)
        _write_script(self.paths.check_script, check_script(haproxy_pid_file))
        _write_script(self.paths.notify_script, notify_script(self.paths))
        changed = not self.paths.config.exists() or self.paths.config.read_text() != config
        if changed:
            write_atomic(self.paths.config, config)
        pid = self.pid()
        if pid is None:
            self._drop_stale_vips(spec, device)
            self.start()
            return "started"
        if changed:
            os.kill(pid, signal.SIGHUP)
            log.info("reloaded keepalived pid=%s dir=%s", pid, self.directory)
            return "reloaded"
        return "unchanged"

    def pid(self) -> int | None:
        """The parent keepalived's pid, if the pid file names a live keepalived of this directory."""
        return read_pid(self.paths.pid_file, self._is_ours)

    def state(self) -> str | None:
        """The VRRP state keepalived last reported (MASTER, BACKUP, FAULT), None when it does not run."""
        if self.pid() is None:
            return None
        try:
            return self.paths.state_file.read_text().strip() or None
        except OSError:
            return None

    def start(self) -> int:
        """Start keepalived detached; return its pid once its VRRP child runs."""
        for path in (self.paths.pid_file, self.paths.vrrp_pid_file, self.paths.state_file):
            path.unlink(missing_ok=True)
        argv = ["setsid", "-f", *self.command_prefix, self.binary, "-n", "-l", "-D", "-P"]
        argv += ["-f", str(self.paths.config), "-p", str(self.paths.pid_file), "-r", str(self.paths.vrrp_pid_file)]
        with open(self.paths.log_file, "ab") as out:
            try:
                subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=10, check=True
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise KeepalivedError(f"cannot run keepalived: {exc}") from exc
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            pid, child = self.pid(), read_pid(self.paths.vrrp_pid_file, self._is_ours)
            if pid is not None and child is not None:
                log.info("started keepalived pid=%s vrrp=%s dir=%s", pid, child, self.directory)
                return pid
            time.sleep(POLL_INTERVAL)
        self.stop()
        raise KeepalivedError(f"keepalived did not start within {START_TIMEOUT:.0f} s: {self._log_tail()}")

    def stop(self) -> None:
        """SIGTERM (keepalived then hands the VIPs over at once: it advertises priority 0), SIGKILL after
        STOP_TIMEOUT; then remove its pid and state files. Idempotent."""
        pids = [p for p in (self.pid(), read_pid(self.paths.vrrp_pid_file, self._is_ours)) if p is not None]
        pids += [p for p in self._processes() if p not in pids]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                if self._is_ours(pid):
                    # A stopped (hung) keepalived is killed outright: woken up, it would advertise the MASTER
                    # state it froze in, and take the VIPs from the peer that serves them now.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL if _stopped(pid) else sig)
            deadline = time.monotonic() + STOP_TIMEOUT
            while any(self._is_ours(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(POLL_INTERVAL)
            if not any(self._is_ours(p) for p in pids):
                break
            log.warning("keepalived %s of %s still runs: sending SIGKILL", pids, self.directory)
        if any(self._is_ours(p) for p in pids):
            raise KeepalivedError(f"keepalived processes {pids} of {self.directory} survived SIGKILL")
        if pids:
            log.info("stopped keepalived pids=%s dir=%s", pids, self.directory)
        for path in (self.paths.pid_file, self.paths.vrrp_pid_file, self.paths.state_file):
            path.unlink(missing_ok=True)

    def remove_files(self) -> None:
        for path in self.paths.all():
            path.unlink(missing_ok=True)

    # --- helpers ---------------------------------------------------------------------------------------

    def _drop_stale_vips(self, spec: EngineSpec, device: str) -> None:
        """Remove VIPs a killed keepalived left in the namespace: the kernel would keep answering ARP for them
        while the peer serves. keepalived adds them again if this engine wins the election."""
        lines = [f"addr del {vip}/{prefix} dev {device}" for vip, prefix in vip_prefixes(spec)]
        try:
            subprocess.run(
                [*self.command_prefix, "ip", "-force", "-batch", "-"],
                input="\n".join(lines) + "\n",
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot clear stale VIPs of %s: %s", self.directory, exc)

    def _processes(self) -> list[int]:
        return pids_where(self._is_ours)

    def _is_ours(self, pid: int) -> bool:
        argv = live_argv(pid)
        return bool(argv) and Path(argv[0]).name == "keepalived" and has_option(argv, "-f", str(self.paths.config))

    def _log_tail(self) -> str:
        return log_tail(self.paths.log_file)


def live_argv(pid: int) -> list[str]:
    """The command line of process `pid`; empty when it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    if process_state(pid) in ("Z", "X", ""):
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def has_option(argv: list[str], option: str, value: str) -> bool:
    return any(a == option and b == value for a, b in zip(argv, argv[1:], strict=False))


def pids_where(is_ours: Callable[[int], bool]) -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and is_ours(int(name))]


def log_tail(path: Path) -> str:
    """The end of a process's log, quoted in an error."""
    try:
        return path.read_text(errors="replace")[-LOG_TAIL:].strip() or "no output"
    except OSError:
        return "no output"


def process_state(pid: int) -> str:
    """The process's state letter (R, S, T, Z, ...), "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""


def _stopped(pid: int) -> bool:
    return process_state(pid) in ("T", "t")


def read_pid(path: Path, is_ours: Callable[[int], bool]) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    pid = int(text) if text.isdigit() else None
    return pid if pid is not None and is_ours(pid) else None


def _write_script(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o700)
    tmp.replace(path)
