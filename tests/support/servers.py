"""Members that speak more than plain HTTP, for the e2e tests: an HTTPS backend with its own self-signed
certificate, and a backend that reads the PROXY protocol header (v1 or v2) HAProxy sends first.

Both bind like `quadriga.backends.Backend` (IP_FREEBIND, so the gateway address of a private network is fine)
and bound every wait with a socket timeout, so a client that never speaks cannot hold a thread for long."""

from __future__ import annotations

import collections
import datetime
import ipaddress
import json
import socket
import socketserver
import ssl
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quadriga.backends import IP_FREEBIND, Backend, ThreadedServer

SOCKET_TIMEOUT = 5.0
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


# --- certificates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfSigned:
    """A self-signed certificate and its key, PEM encoded; `der` is what a TLS client sees as the peer's."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER)


def self_signed(common_name: str) -> SelfSigned:
    """A fresh P-256 certificate for `common_name`, valid for a day: unique per call, so a test can tell
    which server a TLS client really reached."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SelfSigned(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def server_context(cert: SelfSigned) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="qg-tls-") as directory:
        cert_file, key_file = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        cert_file.write_bytes(cert.cert_pem)
        key_file.write_bytes(cert.key_pem)
        key_file.chmod(0o600)
        context.load_cert_chain(cert_file, key_file)
    return context


# --- HTTPS backend ---------------------------------------------------------------------------------


class TlsBackend(Backend):
    """`Backend`'s answers over TLS, with a certificate of its own (`certificate`). It records the SNI name
    of every handshake (`server_names`), so a test can see what an HTTPS health check sent. The handshake
    runs in the request's thread: a client that connects and never speaks TLS (a TCP check) blocks nothing."""

    def __init__(
        self, name: str, address: str = "127.0.0.1", port: int = 0, *, certificate: SelfSigned | None = None
    ) -> None:
        super().__init__(name, address, port)
        self.certificate = certificate or self_signed(name)
        self.context = server_context(self.certificate)
        self.context.sni_callback = self._record_sni
        self.server_names: collections.deque[str | None] = collections.deque(maxlen=200)
        # The client certificates of the handshakes (an empty dict for none, or when none is asked for: set
        # `context.verify_mode` and load a CA to ask for them).
        self.client_certificates: collections.deque[dict] = collections.deque(maxlen=200)

    def _record_sni(self, _sock: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
        self.server_names.append(server_name)

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        request.settimeout(SOCKET_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:  # not TLS, or a check that hangs up after the handshake starts
            return
        self.client_certificates.append(tls.getpeercert() or {})
        try:
            super().finish_request(tls, client_address)
        except OSError:  # the client went away mid-request: nothing to answer
            return
        finally:
            tls.close()


# --- PROXY protocol backend ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyHeader:
    """What a PROXY protocol header said about the client's connection."""

    version: int
    source: str
    source_port: int
    destination: str
    destination_port: int


class _Reader:
    """Buffered reads from a socket with a bound on every wait."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def fill(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed before the header was complete")
            self.buffer += chunk
        return self.buffer

    def take(self, size: int) -> bytes:
        data = self.fill(size)[:size]
        self.buffer = self.buffer[size:]
        return data

    def until(self, marker: bytes, limit: int) -> bytes:
        while marker not in self.buffer:
            if len(self.buffer) > limit:
                raise ValueError(f"no {marker!r} in the first {limit} bytes")
            self.fill(len(self.buffer) + 1)
        head, _, self.buffer = self.buffer.partition(marker)
        return head


def read_proxy_header(reader: _Reader) -> ProxyHeader:
    """Parse a PROXY protocol v1 line or v2 binary header (TCP over IPv4 or IPv6)."""
    start = reader.fill(6)
    if start.startswith(b"PROXY "):
        words = reader.until(b"\r\n", 107).decode("ascii").split()
        if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
            raise ValueError(f"unexpected PROXY v1 line {words!r}")
        return ProxyHeader(1, words[2], int(words[4]), words[3], int(words[5]))
    head = reader.take(16)
    if head[:12] != PROXY_V2_SIGNATURE or head[12] != 0x21:  # version 2, command PROXY
        raise ValueError(f"no PROXY header: {head!r}")
    family, length = head[13], struct.unpack("!H", head[14:16])[0]
    body = reader.take(length)
    if family == 0x11:  # TCP over IPv4
        src, dst, sport, dport = struct.unpack("!4s4sHH", body[:12])
    elif family == 0x21:  # TCP over IPv6
        src, dst, sport, dport = struct.unpack("!16s16sHH", body[:36])
    else:
        raise ValueError(f"unexpected PROXY v2 address family {family:#x}")
    return ProxyHeader(2, str(ipaddress.ip_address(src)), sport, str(ipaddress.ip_address(dst)), dport)


class _ProxyHandler(socketserver.BaseRequestHandler):
    server: ProxyProtocolBackend

    def handle(self) -> None:
        self.request.settimeout(SOCKET_TIMEOUT)
        reader = _Reader(self.request)
        try:
            header = read_proxy_header(reader)
            reader.until(b"\r\n\r\n", 65536)  # the HTTP request that follows the header
        except (OSError, ValueError) as exc:
            self._reply(400, {"error": str(exc)})
            return
        self.server.headers.append(header)
        self._reply(200, {"backend": self.server.name, **header.__dict__})

    def _reply(self, status: int, document: dict[str, object]) -> None:
        body = json.dumps(document).encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        try:
            self.request.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
        except OSError:
            return


class ProxyProtocolBackend(ThreadedServer):
    """A member behind a PROXY or PROXYV2 pool: it reads the PROXY header, then answers the HTTP request
    that follows with JSON saying which client address and VIP the header carried (400 without a header)."""

    def __init__(self, name: str, address: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.headers: collections.deque[ProxyHeader] = collections.deque(maxlen=200)
        super().__init__(address, port, _ProxyHandler)


# --- a port that accepts no connection -------------------------------------------------------------


class Unaccepting:
    """A listening socket that never accepts: once its one-slot accept queue is full, the kernel drops
    further SYNs, so a client's connect hangs until its own timeout (a member that does not answer)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        self.sock.bind((address, 0))
        self.sock.listen(0)

    @property
    def address(self) -> str:
        return str(self.sock.getsockname()[0])

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def stop(self) -> None:
        self.sock.close()


class ClosedPort:
    """A port bound (so nothing else takes it) but not listening: connections to it are refused at once."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        self.sock.bind((address, 0))

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def stop(self) -> None:
        self.sock.close()
