"""Health checks of UDP pool members, as Octavia's amphora runs them for UDP pools (keepalived's checkers):

* UDP-CONNECT: one datagram on a socket connected to the member (Octavia's `nc -uz`). An ICMP port unreachable
  comes back as ECONNREFUSED: the check fails. An answer, or silence until the timeout, passes: UDP says no more.
* TCP: a TCP connection opens within the timeout.
* HTTP: `<method> <url_path>` over TCP answers with one of the expected status codes.
* PING: one ICMP echo (`ping`, as HAProxy's PING check does), answered within the timeout."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from quadriga.engine.udp import UdpMonitor

PROBE = b"\x00"  # what the UDP-CONNECT check sends


async def check(monitor: UdpMonitor, address: str, port: int) -> bool:
    """True when the member at `address`:`port` passes one check of `monitor`."""
    try:
        if monitor.type == "UDP-CONNECT":
            return await _udp_connect(address, port, monitor.timeout_s)
        if monitor.type == "PING":
            return await asyncio.wait_for(_ping(address, monitor.timeout_s), monitor.timeout_s + 1)
        return await asyncio.wait_for(_tcp(monitor, address, port), monitor.timeout_s)
    except (TimeoutError, OSError, ValueError):
        return False


async def _udp_connect(address: str, port: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((address, port))
        sock.send(PROBE)
        try:
            await asyncio.wait_for(loop.sock_recv(sock, 2048), timeout)
        except TimeoutError:
            return True  # no ICMP error within the timeout: the port is taken to be open
        except ConnectionRefusedError:
            return False
        return True


async def _tcp(monitor: UdpMonitor, address: str, port: int) -> bool:
    reader, writer = await asyncio.open_connection(address, port)
    try:
        if monitor.type == "TCP":
            return True
        host = monitor.host or address
        request = f"{monitor.http_method} {monitor.url_path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        words = (await reader.readline()).split()
        return len(words) >= 2 and words[1].isdigit() and int(words[1]) in monitor.expected_codes
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _ping(address: str, timeout: float) -> bool:
    process = await asyncio.create_subprocess_exec(
        "ping",
        "-6" if ":" in address else "-4",
        "-c",
        "1",
        "-W",
        str(max(1, int(timeout))),
        address,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        return await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
