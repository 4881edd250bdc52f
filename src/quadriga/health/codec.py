"""The heartbeat datagram: what an agent tells the health receivers about one engine, once a second.

Anyone on the network can send UDP, so `decode` trusts nothing: it checks sizes before it reads anything,
authenticates before it decompresses or parses anything, decompresses with a hard output limit (a zlib
bomb never allocates more than MAX_BODY), bounds the JSON's nesting and container count before parsing,
and validates a strict schema. Every refusal is a `HeartbeatError` whose `reason` names it for counters.

Wire format, version 1 (integers big-endian)::

    "QH"            2 bytes   magic
    version         1 byte    1
    key id length   1 byte    k, 1..32
    key id          k bytes   ASCII, which key signed it (so keys can be rotated)
    engine id len   1 byte    e, 1..64
    engine id       e bytes   ASCII, ID_PATTERN
    boot            8 bytes   the sender's boot id: grows across sender restarts
    seq             8 bytes   the sender's sequence number: grows with every datagram it sends
    timestamp       8 bytes   the sender's wall clock, ns since the epoch
    body            n bytes   zlib-compressed JSON: a `Payload`
    tag            32 bytes   HMAC-SHA256(key, every byte before the tag)

The header is outside the body so that the receiver can check (boot, seq) and freshness without
inflating anything; the tag covers it all."""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from quadriga.engine.spec import ID_PATTERN, Id

MAGIC = b"QH"
VERSION = 1
MAX_DATAGRAM = 64_000  # below IPv4's 65,507-byte UDP limit
MAX_BODY = 256 << 10  # decompressed JSON bytes; what fits in a datagram inflates to far less
MAX_DEPTH = 6  # JSON nesting; the schema needs 3
MAX_CONTAINERS = 4096  # JSON objects and arrays in one body
MAX_ERROR = 2048  # characters of an engine's error text
MIN_KEY = 16  # bytes of an HMAC key
TAG_SIZE = 32
KEY_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,32}$"

_FIXED = struct.Struct("!QQQ")  # boot, seq, timestamp
_UINT64 = (1 << 64) - 1
_MIN_SIZE = len(MAGIC) + 1 + 1 + 1 + 1 + 1 + _FIXED.size + TAG_SIZE
_KEY_ID = re.compile(KEY_ID_PATTERN)
_ENGINE_ID = re.compile(ID_PATTERN)
# A JSON string, escapes included, or an unterminated one up to the end: every match attempt succeeds and
# nothing backtracks, so removing all strings takes linear time whatever the input.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


class HeartbeatError(ValueError):
    """A datagram that is not a valid heartbeat. `reason` is the counter it is dropped under."""

    reason = "invalid"


class TooLarge(HeartbeatError):
    reason = "too_large"


class Malformed(HeartbeatError):
    reason = "malformed"


class UnsupportedVersion(HeartbeatError):
    reason = "unsupported_version"


class UnknownKey(HeartbeatError):
    reason = "unknown_key"


class BadSignature(HeartbeatError):
    reason = "bad_signature"


# --- the payload -------------------------------------------------------------------------------------

Counter = Annotated[int, Field(ge=0, le=(1 << 63) - 1)]
# HAProxy's words, unchanged (`show stat`'s status column: "UP", "no check", "DOWN 1/2", "MAINT (via x)").
Status = Annotated[str, StringConstraints(pattern=r"^[\x20-\x7e]{1,64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ListenerBeat(_Strict):
    """One listener. Counters are deltas since the sender's previous heartbeat for this engine (summed
    by the receiver side); `active_connections` is a gauge, the current value."""

    status: Status  # the frontend's: OPEN, FULL or STOP
    bytes_in: Counter = 0
    bytes_out: Counter = 0
    active_connections: Counter = 0
    total_connections: Counter = 0
    request_errors: Counter = 0


class Payload(_Strict):
    """An `EngineReport` minus the engine id (in the header), with counter deltas instead of totals."""

    loadbalancer_id: Id
    revision: Annotated[int, Field(ge=0, le=(1 << 63) - 1)]
    running: bool
    lb_network_ip: Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f.:]{2,45}$")] | None = None
    # free text, but no NUL: it ends up in the database
    error: Annotated[str, StringConstraints(max_length=MAX_ERROR, pattern=r"^[^\x00]*$")] | None = None
    listeners: Annotated[dict[Id, ListenerBeat], Field(max_length=1000)] = {}
    # pool id -> member id -> HAProxy's server status
    members: Annotated[dict[Id, Annotated[dict[Id, Status], Field(max_length=10_000)]], Field(max_length=1000)] = {}
    # True when `members` was left out (unchanged since the sender last sent them, or too many to fit in
    # a datagram): keep the members' last known statuses.
    partial: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One engine's heartbeat. `key_id` names the key that signs it (encode) or that verified it (decode)."""

    key_id: str
    engine_id: str
    boot: int
    seq: int
    timestamp: float  # the sender's wall clock, seconds since the epoch
    payload: Payload


# --- encoding ----------------------------------------------------------------------------------------


def check_key(key_id: str, key: bytes) -> None:
    """Refuse key ids the header cannot carry and keys too short to authenticate anything."""
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(f"invalid heartbeat key id {key_id!r}: it must match {KEY_ID_PATTERN}")
    if len(key) < MIN_KEY:
        raise ValueError(f"heartbeat key {key_id!r} is too short: at least {MIN_KEY} bytes are needed")


def encode(heartbeat: Heartbeat, key: bytes) -> bytes:
    """The signed datagram. Raises TooLarge when it would exceed MAX_DATAGRAM (the caller may drop
    members and set `partial`), ValueError for a header field the format cannot carry."""
    check_key(heartbeat.key_id, key)
    if not _ENGINE_ID.fullmatch(heartbeat.engine_id):
        raise ValueError(f"invalid engine id {heartbeat.engine_id!r}")
    timestamp = round(heartbeat.timestamp * 1e9)
    if not all(0 <= v <= _UINT64 for v in (heartbeat.boot, heartbeat.seq, timestamp)):
        raise ValueError("boot, seq and timestamp must fit in 64 unsigned bits")
    key_id, engine_id = heartbeat.key_id.encode(), heartbeat.engine_id.encode()
    body = heartbeat.payload.model_dump_json().encode()
    if len(body) > MAX_BODY:
        raise TooLarge(f"payload of {len(body)} bytes exceeds {MAX_BODY}")
    signed = b"".join(
        (
            MAGIC,
            bytes((VERSION, len(key_id))),
            key_id,
            bytes((len(engine_id),)),
            engine_id,
            _FIXED.pack(heartbeat.boot, heartbeat.seq, timestamp),
            zlib.compress(body, 6),
        )
    )
    if len(signed) + TAG_SIZE > MAX_DATAGRAM:
        raise TooLarge(f"datagram of {len(signed) + TAG_SIZE} bytes exceeds {MAX_DATAGRAM}")
    return signed + hmac.digest(key, signed, hashlib.sha256)


# --- decoding ----------------------------------------------------------------------------------------


def decode(data: bytes, keys: Mapping[str, bytes]) -> Heartbeat:
    """The heartbeat `data` carries, authenticated with one of `keys` (key id -> key; during a rotation
    both the old and the new key). Raises a HeartbeatError subclass for anything else."""
    if len(data) > MAX_DATAGRAM:
        raise TooLarge(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    if len(data) < _MIN_SIZE:
        raise Malformed(f"datagram of {len(data)} bytes is shorter than any heartbeat")
    if data[:2] != MAGIC:
        raise Malformed("not a heartbeat (bad magic)")
    if data[2] != VERSION:
        raise UnsupportedVersion(f"version {data[2]} (this receiver reads {VERSION})")
    pos = 4 + data[3]
    key_id = _ascii(data[4:pos], _KEY_ID, "key id")
    key = keys.get(key_id)
    if key is None:
        raise UnknownKey(f"unknown key id {key_id!r}")
    signed, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
    if not hmac.compare_digest(hmac.digest(key, signed, hashlib.sha256), tag):
        raise BadSignature(f"bad signature (key id {key_id!r})")
    # Authenticated from here on: only a holder of the key can send what follows.
    if pos >= len(signed):
        raise Malformed("truncated header")
    end = pos + 1 + signed[pos]
    engine_id = _ascii(signed[pos + 1 : end], _ENGINE_ID, "engine id")
    if end + _FIXED.size > len(signed):
        raise Malformed("truncated header")
    boot, seq, timestamp = _FIXED.unpack_from(signed, end)
    body = _inflate(signed[end + _FIXED.size :])
    _check_shape(body)
    try:
        payload = Payload.model_validate_json(body)
    except ValidationError as exc:
        raise Malformed(f"invalid payload: {exc.error_count()} errors, first: {exc.errors()[0]['msg']}") from None
    return Heartbeat(key_id, engine_id, boot, seq, timestamp / 1e9, payload)


def _ascii(raw: bytes, pattern: re.Pattern[str], what: str) -> str:
    try:
        value = raw.decode("ascii")
    except UnicodeDecodeError:
        raise Malformed(f"{what} is not ASCII") from None
    if not pattern.fullmatch(value):
        raise Malformed(f"invalid {what} {value[:64]!r}")
    return value


def _inflate(compressed: bytes) -> bytes:
    """Decompress, never producing more than MAX_BODY + 1 bytes whatever the input."""
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(compressed, MAX_BODY + 1)
    except zlib.error as exc:
        raise Malformed(f"body is not zlib data: {exc}") from None
    if len(body) > MAX_BODY:
        raise TooLarge(f"body inflates to more than {MAX_BODY} bytes")
    if not inflater.eof or inflater.unused_data:
        raise Malformed("body is a truncated zlib stream or has trailing bytes")
    return body


def _check_shape(body: bytes) -> None:
    """Bound the JSON's container count and nesting before a parser sees it, at C speed: strings are cut
    out (brackets inside them do not count), and what remains of the brackets must match a regular
    expression for balanced brackets at most MAX_DEPTH deep."""
    if b"\\" in body:  # escapes: find the strings the exact way
        brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKET)
    else:  # none: every string lies between two consecutive quotes (kept, with the brackets, for this)
        brackets = b"".join(body.translate(None, _NOT_STRUCTURE).split(b'"')[::2])
    if len(brackets) > 2 * MAX_CONTAINERS:
        raise TooLarge(f"more than {MAX_CONTAINERS} JSON containers")
    if not _NESTING.fullmatch(brackets):
        raise Malformed(f"JSON is not an object nested at most {MAX_DEPTH} deep")


def _nesting(depth: int) -> re.Pattern[bytes]:
    """One JSON value's brackets, balanced and at most `depth` deep. Bounded nesting is a regular language,
    so this is a plain regular expression: no recursion, and the next byte always decides the branch."""
    level = b""  # balanced brackets up to the depth built so far
    for _ in range(depth):
        level = rb"(?:\[(?:" + level + rb")*+\]|\{(?:" + level + rb")*+\})"
    return re.compile(level)


_NESTING = _nesting(MAX_DEPTH)
