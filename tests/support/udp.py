"""UDP traffic for the tests: echo members that answer with their name, and clients that send through a VIP.
Every wait is bounded; every target is checked with `check_target` (loopback or quadriga's own bridges)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter

from quadriga.backends import IP_FREEBIND
from tests.support.dataplane import check_target

TIMEOUT = 2.0


class UdpEcho:
    """A UDP member on `address` that answers every datagram with "<name> <datagram>". `stop()` closes its
    port (the kernel then answers ICMP port unreachable), `start()` opens the same port again. Bound with
    IP_FREEBIND, as `quadriga.backends`: a network's gateway address exists once its first engine is plugged."""

    def __init__(self, name: str, address: str = "127.0.0.1", port: int = 0) -> None:
        self.name, self.address, self.port = name, address, port
        self.received = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.start()

    def start(self) -> UdpEcho:
        sock = socket.socket(socket.AF_INET6 if ":" in self.address else socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.bind((self.address, self.port))
        sock.settimeout(0.1)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def _serve(self, sock: socket.socket) -> None:
        while self._sock is sock:
            try:
                data, client = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received += 1
            with contextlib.suppress(OSError):
                sock.sendto(self.name.encode() + b" " + data, client)

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if self._thread is not None:
            self._thread.join(timeout=2)
        if sock is not None:
            sock.close()


class UdpClient:
    """One client socket (so one flow through the proxy) sending to VIP:port."""

    def __init__(self, vip: str, port: int, source: str | None = None) -> None:
        check_target(vip)
        self.target = (vip, port)
        self.sock = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(TIMEOUT)
        if source is not None:
            self.sock.bind((source, 0))

    def ask(self, payload: bytes = b"ping", timeout: float = TIMEOUT) -> str | None:
        """Who answered one datagram (None: no answer within `timeout`)."""
        self.sock.settimeout(timeout)
        self.sock.sendto(payload, self.target)
        try:
            data, sender = self.sock.recvfrom(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
        assert sender[:2] == self.target, f"answer from {sender}, not from the VIP {self.target}"
        assert data.endswith(b" " + payload), data
        return data.split(b" ", 1)[0].decode()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def udp_answers(
    vip: str, port: int, count: int, *, source: str | None = None, timeout: float = TIMEOUT
) -> list[str | None]:
    """Who answered each of `count` datagrams, each from a new client socket (a new flow)."""
    answers = []
    for i in range(count):
        with UdpClient(vip, port, source) as client:
            answers.append(client.ask(f"n{i}".encode(), timeout))
    return answers


def spread(answers: list[str | None]) -> dict[str | None, int]:
    return dict(Counter(answers))
