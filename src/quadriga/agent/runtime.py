"""A small client for HAProxy's runtime API: the worker's stats socket and the master CLI (`-S`).

One command per connection: HAProxy answers and closes, so no session state can leak between calls and
a worker replaced by a reload is never talked to through a stale connection. HAProxy answers errors in
plain text on the same channel as results, so every command that answers nothing (or a known sentence)
on success treats any other answer as a `RuntimeApiError` carrying HAProxy's words."""

from __future__ import annotations

import csv
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ServerState = Literal["ready", "drain", "maint"]


class RuntimeApiError(Exception):
    """The runtime API could not be reached, or HAProxy refused a command (the message says which)."""


@dataclass(frozen=True)
class Processes:
    """The master CLI's `show proc`: the master's reload counters and its current workers."""

    master: int
    reloads: int
    failed_reloads: int
    workers: tuple[int, ...]  # current workers (old ones still finishing connections are not listed)


class RuntimeApi:
    """The runtime API on one unix socket (a worker's stats socket, or the master CLI)."""

    def __init__(self, socket_path: Path, timeout: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def command(self, line: str, timeout: float | None = None) -> str:
        """Send one command and return HAProxy's whole answer (within `timeout`, default the API's)."""
        # ';' separates commands and a newline ends one: a value holding either would run a second command.
        if ";" in line or "\n" in line:
            raise RuntimeApiError(f"refusing a runtime API command with ';' or a newline: {line!r}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout if timeout is None else timeout)
                sock.connect(str(self.socket_path))
                sock.sendall(line.encode() + b"\n")
                sock.shutdown(socket.SHUT_WR)  # the master CLI answers only once the request side is closed
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            what = " ".join(line.split()[:2])
            raise RuntimeApiError(f"runtime API {self.socket_path} ({what}): {exc}") from exc
        return b"".join(chunks).decode(errors="replace")

    def _expect(self, line: str, success: str = "") -> None:
        answer = self.command(line).strip()
        if answer != success:
            raise RuntimeApiError(f"HAProxy refused `{line}`: {answer or 'no answer'}")

    # --- reading ---------------------------------------------------------------------------------------

    def show_info(self) -> dict[str, str]:
        """`show info` as a dict (Pid, Uptime_sec, CurrConns, ...)."""
        info = {}
        for row in self.command("show info").splitlines():
            key, sep, value = row.partition(":")
            if sep:
                info[key.strip()] = value.strip()
        if "Pid" not in info:
            raise RuntimeApiError(f"`show info` answered no Pid: {self.socket_path}")
        return info

    def show_stat(self, timeout: float | None = None) -> list[dict[str, str]]:
        """`show stat` as one dict per row, keyed by the CSV header (pxname, svname, status, ...)."""
        text = self.command("show stat", timeout)
        if not text.startswith("# "):
            raise RuntimeApiError(f"unexpected `show stat` answer: {text[:200]!r}")
        rows = csv.DictReader(text[2:].splitlines())
        return [{k: v for k, v in row.items() if k} for row in rows if row.get("pxname")]

    def show_servers_state(self) -> str:
        """`show servers state` verbatim: the format HAProxy reads back from its server-state file."""
        text = self.command("show servers state")
        if not text.startswith("1\n"):
            raise RuntimeApiError(f"unexpected `show servers state` answer: {text[:200]!r}")
        return text

    def show_proc(self) -> Processes:
        """The master CLI's `show proc`."""
        text = self.command("show proc")
        master = None
        workers: list[int] = []
        section = ""
        for row in text.splitlines():
            if row.startswith("# "):  # "# workers", "# old workers", "# programs"
                section = row[2:].strip()
                continue
            fields = row.split()
            if row.startswith("#") or len(fields) < 5:
                continue
            if fields[1] == "master":  # <pid> master <reloads> [failed: <n>] <uptime> <version>
                master = (int(fields[0]), int(fields[2]), int(fields[4].rstrip("]")))
            elif fields[1] == "worker" and section == "workers":
                workers.append(int(fields[0]))
        if master is None:
            raise RuntimeApiError(f"unexpected `show proc` answer: {text[:200]!r}")
        return Processes(master[0], master[1], master[2], tuple(workers))

    # --- changing servers ------------------------------------------------------------------------------

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        self._expect(f"set server {backend}/{server} weight {weight}")

    def set_state(self, backend: str, server: str, state: ServerState) -> None:
        self._expect(f"set server {backend}/{server} state {state}")

    def add_server(self, backend: str, server: str, address: str, params: Sequence[str] = ()) -> None:
        """Add a dynamic server. HAProxy creates it in maintenance with its checks off: `enable_health`
        and `set_state(..., "ready")` put it in service."""
        self._expect(" ".join([f"add server {backend}/{server} {address}", *params]), "New server registered.")

    def del_server(self, backend: str, server: str) -> None:
        """Delete a server; HAProxy refuses unless it is in maintenance and has no connection left."""
        self._expect(f"del server {backend}/{server}", "Server deleted.")

    def enable_health(self, backend: str, server: str) -> None:
        self._expect(f"enable health {backend}/{server}")

    def disable_health(self, backend: str, server: str) -> None:
        self._expect(f"disable health {backend}/{server}")
