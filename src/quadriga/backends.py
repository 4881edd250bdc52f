"""Small HTTP backends: members to put behind a load balancer in the demo, the tests and the benchmarks.

Each answers every GET with its own name (body and `X-Backend` header), `/echo` with the request's headers
as JSON (to see what the load balancer inserted), `/status/<code>` with that status code, `/sleep/<ms>` after
that long (at most 10 s: a slow member), and `/set-cookie/<name>/<value>` with that cookie set (an
application cookie). It keeps the last requests it got (`seen`, e.g. a health check's method, version and
Host) and how many it is answering (`in_flight`). It binds with IP_FREEBIND, so it can listen on a network's
gateway address before the network driver has created the bridge that holds it."""

from __future__ import annotations

import collections
import json
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Self

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
MAX_SLEEP_MS = 10000


@dataclass(frozen=True)
class Seen:
    """One request a backend got."""

    method: str
    path: str
    version: str
    headers: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Backend

    def do_GET(self) -> None:
        server = self.server
        server.seen.append(Seen(self.command, self.path, self.request_version, dict(self.headers.items())))
        with server.lock:
            server.in_flight += 1
        try:
            self._answer()
        finally:
            with server.lock:
                server.in_flight -= 1

    def _answer(self) -> None:
        status, body, cookie = 200, f"{self.server.name}\n".encode(), None
        parts = self.path.split("/")
        if self.path == "/echo":
            body = json.dumps({k: v for k, v in self.headers.items()}, sort_keys=True).encode()
        elif self.path.startswith("/status/") and self.path[8:].isdigit():
            status = int(self.path[8:])
        elif len(parts) == 3 and parts[1] == "sleep" and parts[2].isdigit():
            time.sleep(min(int(parts[2]), MAX_SLEEP_MS) / 1000)
        elif len(parts) == 4 and parts[1] == "set-cookie":
            cookie = f"{parts[2]}={parts[3]}; Path=/"
        self.send_response(status)
        self.send_header("X-Backend", self.server.name)
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET
    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        return


class ThreadedServer(socketserver.ThreadingTCPServer):
    """A TCP server in a thread of its own, bound with IP_FREEBIND; `port` 0 picks a free one. Use
    `start()` / `stop()`, or `with`. Subclasses bring the request handler."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: str, port: int, handler: type[socketserver.BaseRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        super().__init__((address, port), handler, bind_and_activate=False)
        self.socket.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise
        self._thread: threading.Thread | None = None

    def handle_error(self, request: object, client_address: object) -> None:
        """A client (HAProxy's health check, for one) that hangs up early is normal here, not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def address(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Backend(ThreadedServer):
    """One HTTP backend answering with its name (see the module docstring)."""

    def __init__(self, name: str, address: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.seen: collections.deque[Seen] = collections.deque(maxlen=200)  # the last requests, oldest first
        self.in_flight = 0  # requests being answered now
        self.lock = threading.Lock()
        super().__init__(address, port, _Handler)
