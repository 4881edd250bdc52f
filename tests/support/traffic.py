"""Client-side traffic for the e2e tests that `Cloud.get` cannot send: raw bytes, requests from a fixed
source port, TLS handshakes. Every function checks its target with `check_target` first and bounds every
wait with a timeout."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from tests.support.dataplane import check_target

TIMEOUT = 5.0


@dataclass(frozen=True)
class Answer:
    """A parsed HTTP/1.x response."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace").strip()


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body)


def request_bytes(path: str = "/", host: str = "quadriga.test", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.contextmanager
def connection(
    address: str, port: int, *, source: tuple[str, int] | None = None, timeout: float = TIMEOUT
) -> Iterator[socket.socket]:
    """A TCP connection to `address`:`port` (optionally from a fixed source address and port). It is closed
    with a reset (SO_LINGER 0), so no TIME_WAIT keeps the same source port from being used again at once."""
    check_target(address)
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if source is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(source)
        sock.connect((address, port))
        yield sock
    finally:
        sock.close()


def read_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything until the peer closes (bounded by the socket's timeout and `limit` bytes)."""
    chunks, size = [], 0
    while size < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def exchange(
    address: str, port: int, data: bytes, *, source: tuple[str, int] | None = None, timeout: float = TIMEOUT
) -> bytes:
    """Send `data` on a new connection and return all the peer sent back until it closed."""
    with connection(address, port, source=source, timeout=timeout) as sock:
        sock.sendall(data)
        return read_all(sock)


def get(
    address: str,
    port: int,
    path: str = "/",
    *,
    host: str = "quadriga.test",
    headers: dict[str, str] | None = None,
    source: tuple[str, int] | None = None,
    timeout: float = TIMEOUT,
) -> Answer:
    """One HTTP/1.1 GET (Connection: close) on a new connection; `source` pins the client's address and port."""
    return parse(exchange(address, port, request_bytes(path, host, headers), source=source, timeout=timeout))


def tls_get(address: str, port: int, path: str = "/", server_name: str | None = None) -> tuple[bytes, Answer]:
    """A TLS handshake with whatever answers at `address`:`port` (no verification: the certificates are
    self-signed) and one GET over it. Returns the peer's certificate (DER) and the answer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        connection(address, port) as sock,
        context.wrap_socket(sock, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(request_bytes(path))
        return der, parse(read_all(tls))


class KeepAlive:
    """One client connection that carries one request after another (HTTP/1.1 keep-alive): what a change
    applied without a reload must leave working."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the load balancer closed the connection")
        self.buffer += chunk

    def get(self, path: str = "/") -> Answer:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: quadriga.test\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        answer = parse(head + b"\r\n\r\n")
        length = int(answer.headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(answer.status, answer.headers, body)


@contextlib.contextmanager
def keep_alive(address: str, port: int, timeout: float = TIMEOUT) -> Iterator[KeepAlive]:
    with connection(address, port, timeout=timeout) as sock:
        yield KeepAlive(sock)
