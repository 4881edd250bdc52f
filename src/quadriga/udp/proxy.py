"""The UDP proxy of one engine: serves the engine's UDP listeners (`quadriga.engine.udp.UdpConfig`) on its VIPs.

Each client address (per VIP and listener) is a *flow*: a UDP socket connected to the member chosen for it
(`quadriga.udp.balance`). Datagrams from the client go out on that socket; the member's answers come back on it
and are sent to the client from the VIP's socket, so the client sees the VIP answer. A flow ends after the
listener's idle timeout, when its member goes DOWN, MAINT or away (the client's next datagram opens a flow to
another member), or when the config no longer has its listener.

One event loop, non-blocking sockets read with `add_reader`: a datagram is handled synchronously from arrival to
forwarding. Health checks run as tasks (`quadriga.udp.checks`).

SIGHUP reloads the config file: sockets of VIP:ports still served are kept, and so are flows whose member still
exists with the same address and still serves; a config that cannot be loaded (unreadable, a port that cannot
be bound) leaves the running one serving and is reported as `failed`. The status socket answers one line of JSON:
the config digest served, the last failure, listener counters and member statuses in HAProxy's words."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import resource
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from quadriga.engine.udp import UdpConfig, UdpListener
from quadriga.udp.balance import Member, Pool
from quadriga.udp.checks import check

log = logging.getLogger("quadriga.udp")

SWEEP_INTERVAL = 0.5
MAX_DATAGRAM = 65535
READ_BURST = 64  # datagrams read per wake-up of one socket, so one busy socket does not starve the others
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
# File descriptors kept out of the flows' reach: VIP sockets, health checks (and `ping`'s pipes), status
# connections, the event loop's own. A flow holds one (its socket to the member).
FD_RESERVE = 64


@dataclass
class Flow:
    listener: Listener
    vip: socket.socket
    client: tuple[str, int]
    member: Member
    upstream: socket.socket
    last: float
    key: str | None = None  # the client's session persistence key in its pool (None: no persistence)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self.upstream.fileno())
        self.upstream.close()
        self.member.flows -= 1


@dataclass
class Listener:
    config: UdpListener
    sockets: dict[str, socket.socket] = field(default_factory=dict)  # VIP -> its bound socket
    flows: dict[tuple[str, tuple[str, int]], Flow] = field(default_factory=dict)  # (VIP, client) -> flow
    bytes_in: int = 0
    bytes_out: int = 0
    total_flows: int = 0
    dropped: int = 0

    @property
    def status(self) -> str:
        if not self.config.enabled:
            return "STOP"
        if self.config.max_flows is not None and len(self.flows) >= self.config.max_flows:
            return "FULL"
        return "OPEN"

    def allows(self, address: str) -> bool:
        if not self.config.allowed_cidrs:
            return True
        ip = ipaddress.ip_address(address)
        return any(ip in ipaddress.ip_network(cidr) for cidr in self.config.allowed_cidrs)


class ConfigError(Exception):
    """A config that cannot be served (unreadable, invalid, or a VIP:port that cannot be bound)."""


class Proxy:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.loop = asyncio.get_running_loop()
        self.config = UdpConfig(revision=0)
        self.digest = ""
        self.failed: str | None = None  # digest of the last config that could not be loaded
        self.error: str | None = None
        self.listeners: dict[str, Listener] = {}
        self.pools: dict[str, Pool] = {}
        self.checks: list[asyncio.Task[None]] = []
        self.max_flows = max(0, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FD_RESERVE)  # over all listeners

    # --- config ------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Serve the config file now; on failure (ConfigError) the previous config keeps serving."""
        try:
            raw = self.config_path.read_bytes()
        except OSError as exc:
            raise self._failed("", f"cannot read {self.config_path}: {exc}") from exc
        digest = hashlib.sha256(raw).hexdigest()
        try:
            config = UdpConfig.model_validate_json(raw)
        except ValidationError as exc:
            raise self._failed(digest, f"invalid config: {exc}") from exc
        if digest == self.digest:
            return
        old_sockets = {
            (vip, li.config.port): sock for li in self.listeners.values() for vip, sock in li.sockets.items()
        }
        try:
            sockets = self._bind(config, old_sockets)
        except OSError as exc:
            raise self._failed(digest, str(exc)) from exc
        pools = {p.id: Pool.build(p, self.pools.get(p.id)) for p in config.pools}
        listeners = {li.id: Listener(li) for li in config.listeners}
        for li in listeners.values():
            for vip in li.config.vips if li.config.enabled else ():
                li.sockets[vip] = sockets[(vip, li.config.port)]
        self._carry_flows(listeners, pools)
        for key, sock in old_sockets.items():
            if sockets.get(key) is not sock:
                self.loop.remove_reader(sock.fileno())
                sock.close()
        for li in listeners.values():
            for vip, sock in li.sockets.items():
                self.loop.remove_reader(sock.fileno())  # a kept socket: now read for its new listener
                self.loop.add_reader(sock.fileno(), self._from_clients, li, sock, vip)
        self.config, self.digest, self.listeners, self.pools = config, digest, listeners, pools
        self.failed = self.error = None
        self._restart_checks()
        flows = sum(len(li.flows) for li in listeners.values())
        log.info(
            "event=loaded revision=%s listeners=%s pools=%s flows_kept=%s",
            config.revision,
            len(listeners),
            len(pools),
            flows,
        )

    def _failed(self, digest: str, error: str) -> ConfigError:
        self.failed, self.error = digest, error
        log.error("event=load_failed error=%s", json.dumps(error))
        return ConfigError(error)

    def _bind(
        self, config: UdpConfig, old: dict[tuple[str, int], socket.socket]
    ) -> dict[tuple[str, int], socket.socket]:
        """A socket for every VIP:port `config` serves: the running one, or a new one bound now."""
        result: dict[tuple[str, int], socket.socket] = {}
        try:
            for li in config.listeners:
                for vip in li.vips if li.enabled else ():
                    key = (vip, li.port)
                    result[key] = old.get(key) or _bind(vip, li.port)
        except OSError:
            for key, sock in result.items():
                if old.get(key) is not sock:
                    sock.close()
            raise
        return result

    def _carry_flows(self, listeners: dict[str, Listener], pools: dict[str, Pool]) -> None:
        """Move the running flows into the new listeners, where their member is still there and serving."""
        for old in self.listeners.values():
            new = listeners.get(old.config.id)
            for key, flow in old.flows.items():
                member = _kept_member(flow, new, pools)
                if new is None or member is None:
                    flow.close(self.loop)
                    continue
                flow.member.flows -= 1
                flow.listener, flow.member = new, member
                flow.key = pools[new.config.pool_id or ""].persistence_key(flow.client[0])
                member.flows += 1
                new.flows[key] = flow
            if new is not None:
                new.bytes_in, new.bytes_out, new.total_flows = old.bytes_in, old.bytes_out, old.total_flows

    # --- traffic -----------------------------------------------------------------------------------------

    def _from_clients(self, listener: Listener, sock: socket.socket, vip: str) -> None:
        for _ in range(READ_BURST):
            try:
                data, client = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error for an earlier answer to a client
            client = client[:2]
            flow = listener.flows.get((vip, client))
            if flow is None:
                flow = self._open(listener, sock, vip, client)
                if flow is None:
                    listener.dropped += 1
                    continue
            flow.last = time.monotonic()
            listener.bytes_in += len(data)
            with contextlib.suppress(OSError):  # a full buffer or an ICMP error: UDP may drop
                flow.upstream.send(data)

    def _open(self, listener: Listener, sock: socket.socket, vip: str, client: tuple[str, int]) -> Flow | None:
        limit = listener.config.max_flows
        if limit is not None and len(listener.flows) >= limit:
            return None
        if sum(len(li.flows) for li in self.listeners.values()) >= self.max_flows:
            return None  # out of file descriptors soon: its status socket and health checks need some
        if not listener.allows(client[0]):
            return None
        pool = self.pools.get(listener.config.pool_id or "")
        member = pool.choose(client, time.monotonic()) if pool is not None else None
        if pool is None or member is None:
            return None
        family = socket.AF_INET6 if ":" in member.config.address else socket.AF_INET
        try:
            upstream = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:  # EMFILE/ENFILE/ENOBUFS: this datagram is dropped, the loop goes on
            log.warning("event=flow_failed listener=%s error=%s", listener.config.id, exc)
            return None
        try:
            upstream.setblocking(False)
            upstream.connect((member.config.address, member.config.port))
        except OSError as exc:
            upstream.close()
            log.warning("event=flow_failed listener=%s member=%s error=%s", listener.config.id, member.config.id, exc)
            return None
        flow = Flow(listener, sock, client, member, upstream, time.monotonic(), pool.persistence_key(client[0]))
        member.flows += 1
        listener.flows[(vip, client)] = flow
        listener.total_flows += 1
        self.loop.add_reader(upstream.fileno(), self._from_member, flow)
        return flow

    def _from_member(self, flow: Flow) -> None:
        for _ in range(READ_BURST):
            try:
                data = flow.upstream.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ECONNREFUSED: the member's port is closed (ICMP port unreachable)
            flow.last = time.monotonic()
            flow.listener.bytes_out += len(data)
            with contextlib.suppress(OSError):
                flow.vip.sendto(data, flow.client)

    def sweep(self) -> None:
        """End idle flows and flows whose member stopped serving; forget persistence entries that expired with
        no flow left to keep them."""
        now = time.monotonic()
        for li in self.listeners.values():
            pool = self.pools.get(li.config.pool_id or "")
            for key, flow in list(li.flows.items()):
                if now - flow.last > li.config.idle_timeout_s or not flow.member.serving:
                    del li.flows[key]
                    flow.close(self.loop)
                elif flow.key is not None and pool is not None:
                    pool.keep(flow.key, flow.member.config.id, flow.last)
        for pool in self.pools.values():
            pool.expire(now)

    # --- health ------------------------------------------------------------------------------------------

    def _restart_checks(self) -> None:
        for task in self.checks:
            task.cancel()
        self.checks = [
            self.loop.create_task(self._watch(pool, member))
            for pool in self.pools.values()
            if pool.config.monitor is not None
            for member in pool.members.values()
            if member.config.enabled
        ]

    async def _watch(self, pool: Pool, member: Member) -> None:
        monitor = pool.config.monitor
        assert monitor is not None and member.health is not None
        while True:
            passed = await check(monitor, member.config.check_address, member.config.check_port)
            if member.health.record(passed):
                log.info("event=health pool=%s member=%s status=%s", pool.config.id, member.config.id, member.status)
                if not member.serving:
                    self.sweep()
            await asyncio.sleep(monitor.delay_s)

    # --- status ------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "revision": self.config.revision,
            "digest": self.digest,
            "failed": self.failed,
            "error": self.error,
            "listeners": {
                li.config.id: {
                    "status": li.status,
                    "bytes_in": li.bytes_in,
                    "bytes_out": li.bytes_out,
                    "active_connections": len(li.flows),
                    "total_connections": li.total_flows,
                }
                for li in self.listeners.values()
            },
            "members": {pool_id: pool.statuses() for pool_id, pool in self.pools.items()},
        }

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(reader.readline(), 1.0)
            writer.write(json.dumps(self.status()).encode() + b"\n")
            await writer.drain()
        writer.close()

    def close(self) -> None:
        for task in self.checks:
            task.cancel()
        for li in self.listeners.values():
            for flow in li.flows.values():
                flow.close(self.loop)
            for sock in li.sockets.values():
                self.loop.remove_reader(sock.fileno())
                sock.close()
        self.listeners = {}


def _kept_member(flow: Flow, listener: Listener | None, pools: dict[str, Pool]) -> Member | None:
    """The member of the new config that `flow` keeps: the same member at the same address, still serving, behind
    the same VIP socket and a listener that still allows the client; None when the flow must end."""
    if listener is None or listener.sockets.get(flow.vip.getsockname()[0]) is not flow.vip:
        return None
    pool = pools.get(listener.config.pool_id or "")
    member = pool.members.get(flow.member.config.id) if pool is not None else None
    if member is None or not member.serving or not listener.allows(flow.client[0]):
        return None
    old = flow.member.config
    return member if (member.config.address, member.config.port) == (old.address, old.port) else None


def _bind(vip: str, port: int) -> socket.socket:
    """A non-blocking UDP socket on VIP:port. IP_FREEBIND lets it bind a VIP that is not here yet (the standby
    of an ACTIVE_STANDBY pair, whose VIP keepalived brings when it takes over), as ip_nonlocal_bind does for
    HAProxy."""
    family = socket.AF_INET6 if ":" in vip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.setblocking(False)
        sock.bind((vip, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind UDP {vip}:{port}: {exc.strerror}") from exc
    return sock


async def serve(config_path: Path, status_path: Path, pid_file: Path) -> None:
    """Run the proxy until SIGTERM/SIGINT; SIGHUP reloads. The pid file is written once the first config
    serves (the agent waits for it)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # flows take one each: as many as allowed
    proxy = Proxy(config_path)
    proxy.load()  # a first config that cannot serve ends the process (ConfigError)
    status_path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(proxy.answer, path=str(status_path))
    os.chmod(status_path, 0o600)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, proxy)
    tmp = pid_file.with_name(pid_file.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(pid_file)
    log.info("event=started pid=%s config=%s", os.getpid(), config_path)
    try:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_INTERVAL)
            proxy.sweep()
    finally:
        server.close()
        proxy.close()
        status_path.unlink(missing_ok=True)
        log.info("event=stopped pid=%s", os.getpid())


def _reload(proxy: Proxy) -> None:
    with contextlib.suppress(ConfigError):  # reported through the status socket; the old config serves
        proxy.load()
