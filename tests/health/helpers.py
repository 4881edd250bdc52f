"""Helpers for the heartbeat tests: keys, payloads, hand-built datagrams (written from the wire format in
`quadriga.health.codec`'s docstring, not with `encode`), zlib bombs and a fake agent."""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
import time
import zlib
from collections.abc import Callable

from quadriga.engine.report import EngineReport, ListenerReport
from quadriga.health.codec import Heartbeat, ListenerBeat, Payload, encode

KEY_ID = "k1"
KEY = b"0123456789abcdef0123456789abcdef"
KEYS = {KEY_ID: KEY}
NEW_KEY_ID = "k2"
NEW_KEY = b"fedcba9876543210fedcba9876543210"


def payload(**changes: object) -> Payload:
    values: dict[str, object] = {
        "loadbalancer_id": "lb-1",
        "revision": 7,
        "running": True,
        "lb_network_ip": "10.0.0.5",
        "listeners": {
            "listener-1": ListenerBeat(status="OPEN", bytes_in=10, bytes_out=20, active_connections=3),
            "listener-2": ListenerBeat(status="FULL", total_connections=5, request_errors=1),
        },
        "members": {"pool-1": {"member-1": "UP", "member-2": "DOWN 1/2", "member-3": "no check"}},
    }
    values.update(changes)
    return Payload.model_validate(values)


def heartbeat(
    engine_id: str = "engine-1", *, boot: int = 1, seq: int = 1, timestamp: float | None = None, key_id: str = KEY_ID
) -> Heartbeat:
    return Heartbeat(key_id, engine_id, boot, seq, time.time() if timestamp is None else timestamp, payload())


def datagram(
    engine_id: str = "engine-1",
    *,
    boot: int = 1,
    seq: int = 1,
    timestamp: float | None = None,
    key_id: str = KEY_ID,
    key: bytes = KEY,
) -> bytes:
    return encode(heartbeat(engine_id, boot=boot, seq=seq, timestamp=timestamp, key_id=key_id), key)


def raw_datagram(
    body: bytes,
    *,
    compress: bool = True,
    engine_id: bytes = b"engine-1",
    key_id: bytes = KEY_ID.encode(),
    key: bytes = KEY,
    boot: int = 1,
    seq: int = 1,
    version: int = 1,
) -> bytes:
    """A datagram with any body, signed with `key`: what a holder of the key could send."""
    signed = (
        b"QH"
        + bytes((version, len(key_id)))
        + key_id
        + bytes((len(engine_id),))
        + engine_id
        + struct.pack("!QQQ", boot, seq, time.time_ns())
        + (zlib.compress(body) if compress else body)
    )
    return signed + hmac.digest(key, signed, hashlib.sha256)


def zeros_bomb(mib: int) -> bytes:
    """A valid zlib stream of `mib` MiB of zeros, built in well under a second: after a full flush the
    compressor's output for each further MiB of zeros is the same bytes, so they are repeated."""
    chunk = bytes(1 << 20)
    compressor = zlib.compressobj(9)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeated = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(mib):
        adler = zlib.adler32(chunk, adler)
    return first + repeated * (mib - 1) + b"\x03\x00" + struct.pack("!I", adler)  # empty final block, checksum


def listener_report(status: str = "OPEN", **counters: int) -> ListenerReport:
    return ListenerReport(status=status, **counters)


def engine_report(engine_id: str = "engine-1", **changes: object) -> EngineReport:
    values: dict[str, object] = {
        "engine_id": engine_id,
        "loadbalancer_id": "lb-1",
        "revision": 3,
        "running": True,
        "listeners": {"listener-1": listener_report()},
        "members": {"pool-1": {"member-1": "UP"}},
    }
    values.update(changes)
    return EngineReport.model_validate(values)


class FakeAgent:
    """What `HeartbeatSender` needs of an agent; tests change `engines` or make `reports` fail."""

    def __init__(self, *reports: EngineReport) -> None:
        self.engines = {r.engine_id: r for r in reports}
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def set(self, report: EngineReport) -> None:
        with self._lock:
            self.engines[report.engine_id] = report

    def remove(self, engine_id: str) -> None:
        with self._lock:
            del self.engines[engine_id]

    def reports(self) -> list[EngineReport]:
        if self.fail is not None:
            raise self.fail
        with self._lock:
            return list(self.engines.values())


class Collector:
    """An `on_batch` callback that keeps what it gets."""

    def __init__(self) -> None:
        self.batches: list[list[Heartbeat]] = []
        self.lock = threading.Lock()

    def __call__(self, batch: list[Heartbeat]) -> None:
        with self.lock:
            self.batches.append(batch)

    @property
    def heartbeats(self) -> list[Heartbeat]:
        with self.lock:
            return [hb for batch in self.batches for hb in batch]


def wait_for(condition: Callable[[], object], timeout: float = 5.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())
