"""The heartbeat datagram: round trip, authentication, and every kind of bad input refused with a typed
error, fast and with bounded memory."""

from __future__ import annotations

import json
import random
import time
import tracemalloc
import uuid
import zlib

import pytest

from quadriga.health.codec import (
    MAX_BODY,
    MAX_DATAGRAM,
    BadSignature,
    Heartbeat,
    HeartbeatError,
    Malformed,
    TooLarge,
    UnknownKey,
    UnsupportedVersion,
    decode,
    encode,
)
from tests.health.helpers import (
    KEY,
    KEY_ID,
    KEYS,
    NEW_KEY,
    NEW_KEY_ID,
    datagram,
    heartbeat,
    payload,
    raw_datagram,
    zeros_bomb,
)


def test_round_trip() -> None:
    sent = heartbeat("engine-7", boot=1_700_000_000_000_000_000, seq=42)
    got = decode(encode(sent, KEY), KEYS)
    assert got == Heartbeat(KEY_ID, "engine-7", sent.boot, 42, pytest.approx(sent.timestamp, abs=1e-6), sent.payload)
    assert got.payload.listeners["listener-2"].request_errors == 1
    assert got.payload.members["pool-1"]["member-2"] == "DOWN 1/2"


def test_round_trip_of_free_text_with_quotes_brackets_and_newlines() -> None:
    error = '[ALERT] (1) : parsing "haproxy.cfg" {line 3}\\n\n]]]]]]]]]]]]' + "é"
    sent = Heartbeat(KEY_ID, "engine-1", 1, 1, time.time(), payload(error=error, running=False, listeners={}))
    assert decode(encode(sent, KEY), KEYS).payload.error == error


def test_partial_flag_round_trips() -> None:
    sent = Heartbeat(KEY_ID, "engine-1", 1, 1, time.time(), payload(members={}, partial=True))
    assert decode(encode(sent, KEY), KEYS).payload.partial


def test_a_typical_heartbeat_is_small() -> None:
    assert len(datagram()) < 400


def test_wrong_key_is_a_bad_signature() -> None:
    with pytest.raises(BadSignature):
        decode(datagram(key=NEW_KEY), KEYS)


def test_unknown_key_id() -> None:
    with pytest.raises(UnknownKey):
        decode(datagram(key_id=NEW_KEY_ID, key=NEW_KEY), KEYS)


def test_rotation_accepts_both_keys_then_only_the_new_one() -> None:
    old, new = datagram(), datagram(key_id=NEW_KEY_ID, key=NEW_KEY)
    both = {KEY_ID: KEY, NEW_KEY_ID: NEW_KEY}
    assert decode(old, both).key_id == KEY_ID
    assert decode(new, both).key_id == NEW_KEY_ID
    assert decode(new, {NEW_KEY_ID: NEW_KEY}).key_id == NEW_KEY_ID
    with pytest.raises(UnknownKey):
        decode(old, {NEW_KEY_ID: NEW_KEY})


def test_same_key_id_with_another_key_is_a_bad_signature() -> None:
    with pytest.raises(BadSignature):
        decode(datagram(), {KEY_ID: NEW_KEY})


def test_every_truncation_is_refused() -> None:
    data = datagram()
    for size in range(len(data)):
        with pytest.raises((BadSignature, Malformed)):
            decode(data[:size], KEYS)


def test_every_single_bit_flip_is_refused() -> None:
    data = datagram()
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(HeartbeatError):
            decode(bytes(flipped), KEYS)


def test_oversized_datagram_is_refused_before_anything_else() -> None:
    data = datagram()
    with pytest.raises(TooLarge):
        decode(data + bytes(MAX_DATAGRAM + 1 - len(data)), KEYS)


def test_oversized_payload_cannot_be_encoded() -> None:
    """4,000 members with random UUIDs: under MAX_BODY as JSON, over MAX_DATAGRAM compressed."""
    rng = random.Random(4)
    members = {"pool-1": {str(uuid.UUID(int=rng.getrandbits(128))): "UP" for _ in range(4000)}}
    with pytest.raises(TooLarge, match="datagram"):
        encode(Heartbeat(KEY_ID, "engine-1", 1, 1, time.time(), payload(members=members)), KEY)


def test_not_a_heartbeat() -> None:
    with pytest.raises(Malformed):
        decode(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(64), KEYS)


def test_unsupported_version() -> None:
    with pytest.raises(UnsupportedVersion):
        decode(raw_datagram(b"{}", version=2), KEYS)


def test_unknown_engine_is_the_recorders_business() -> None:
    """The codec cannot know the engines: any well-formed engine id decodes. The recorder ignores ids
    that are not in its database."""
    assert decode(datagram("never-heard-of-it"), KEYS).engine_id == "never-heard-of-it"


@pytest.mark.parametrize("engine_id", [b"", b"-leading-dash", b"a" * 65, b"bad\nid", b"caf\xc3\xa9", b"a:b"])
def test_bad_engine_id_is_malformed(engine_id: bytes) -> None:
    with pytest.raises(Malformed):
        decode(raw_datagram(payload().model_dump_json().encode(), engine_id=engine_id), KEYS)


@pytest.mark.parametrize(
    ("body", "compress"),
    [
        (b"not zlib at all", False),
        (zlib.compress(b"{}")[:-3], False),  # truncated stream
        (zlib.compress(b"{}") + b"trailing", False),
        (b"not json", True),
        (b"[1, 2, 3]", True),
        (b'{"loadbalancer_id": "lb-1"}', True),  # fields missing
        (b'{"loadbalancer_id": "lb-1", "revision": "7", "running": true}', True),  # strict: no "7" for 7
        (b'{"loadbalancer_id": "lb-1", "revision": 7, "running": true, "extra": 1}', True),
        (
            b'{"loadbalancer_id": "lb-1", "revision": 7, "running": true,'
            b' "listeners": {"l": {"status": "OPEN", "bytes_in": -1}}}',
            True,
        ),
        (b'{"loadbalancer_id": "lb-1", "revision": 7, "running": true, "members": {"p": {"m": "\\u0000"}}}', True),
        (b'{"loadbalancer_id": "lb-1", "revision": 7, "running": true, "error": "a\\u0000"}', True),
        (b'{"loadbalancer_id": "lb-1", "revision": 7, "running": true, "error": "\\ud800"}', True),
    ],
)
def test_signed_but_malformed_body(body: bytes, compress: bool) -> None:
    """A holder of the key (or a buggy sender) gets no further than a typed error either."""
    with pytest.raises(Malformed):
        decode(raw_datagram(body, compress=compress), KEYS)


@pytest.mark.parametrize(("depth", "error"), [(7, Malformed), (4000, Malformed), (100_000, TooLarge)])
def test_json_bomb_deep_nesting_is_refused_fast(depth: int, error: type[HeartbeatError]) -> None:
    bomb = b'{"listeners": {"l": {"status": ' + b"[" * depth + b"]" * depth + b"}}}"
    data = raw_datagram(bomb)
    assert len(data) < MAX_DATAGRAM
    start = time.perf_counter()
    with pytest.raises(error, match="nested|containers"):
        decode(data, KEYS)
    assert time.perf_counter() - start < 0.1


def test_json_bomb_of_many_containers_is_refused_fast() -> None:
    bomb = b'{"listeners": [' + b"{}," * 80_000 + b"{}]}"
    start = time.perf_counter()
    with pytest.raises(TooLarge, match="containers"):
        decode(raw_datagram(bomb), KEYS)
    assert time.perf_counter() - start < 0.1


def test_nesting_is_counted_outside_strings_only() -> None:
    body = json.loads(payload().model_dump_json())
    body["error"] = "[" * 100 + "{" * 100 + '\\"['
    assert decode(raw_datagram(json.dumps(body).encode()), KEYS).payload.error == body["error"]


def test_zlib_bomb_of_a_gigabyte_is_refused_by_its_size() -> None:
    data = raw_datagram(zeros_bomb(1024), compress=False)  # 1 GiB of zeros in about 1 MB, signed
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(TooLarge):
        decode(data, KEYS)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.1
    assert peak < 64 << 10  # nothing allocated: the size is checked first


def test_zlib_bomb_that_fits_a_datagram_inflates_no_further_than_the_limit() -> None:
    bomb = zeros_bomb(60)  # 60 MiB of zeros, signed with the right key
    data = raw_datagram(bomb, compress=False)
    assert len(data) < MAX_DATAGRAM
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(TooLarge, match="inflates"):
        decode(data, KEYS)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.1
    assert peak < 2 * MAX_BODY + (256 << 10)


@pytest.mark.parametrize(
    ("key_id", "key"), [("", KEY), ("has space", KEY), ("x" * 33, KEY), (KEY_ID, b"short"), (KEY_ID, b"")]
)
def test_encode_refuses_unusable_keys(key_id: str, key: bytes) -> None:
    with pytest.raises(ValueError):
        encode(heartbeat(key_id=key_id), key)


@pytest.mark.parametrize(("boot", "seq"), [(-1, 1), (1, 1 << 64)])
def test_encode_refuses_values_the_header_cannot_carry(boot: int, seq: int) -> None:
    with pytest.raises(ValueError):
        encode(heartbeat(boot=boot, seq=seq), KEY)
