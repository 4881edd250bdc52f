"""Fuzzing: whatever arrives, `decode` raises only HeartbeatError and the receiver never crashes and
counts every bad datagram, including over real UDP."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import random
import socket
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quadriga.health.codec import HeartbeatError, Payload, decode
from quadriga.health.receiver import HeartbeatReceiver
from tests.health.helpers import KEY, KEYS, Collector, datagram, payload, raw_datagram, wait_for

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


def decodes_or_refuses(data: bytes) -> None:
    with contextlib.suppress(HeartbeatError):  # anything else fails the test
        decode(data, KEYS)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    decodes_or_refuses(data)
    decodes_or_refuses(b"QH\x01\x02k1" + data)  # past the magic, version and key id


@FUZZ
@given(st.binary(max_size=2000))
def test_signed_random_headers_and_bodies(rest: bytes) -> None:
    """What a holder of the key could send: everything after the key id is arbitrary but signed."""
    signed = b"QH\x01\x02k1" + rest
    decodes_or_refuses(signed + hmac.digest(KEY, signed, hashlib.sha256))


@FUZZ
@given(st.binary(max_size=2000), st.booleans())
def test_signed_random_bodies(body: bytes, compress: bool) -> None:
    decodes_or_refuses(raw_datagram(body, compress=compress))


@FUZZ
@given(json_values)
def test_signed_random_json(value: object) -> None:
    decodes_or_refuses(raw_datagram(json.dumps(value).encode()))


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(Payload.model_fields)), json_values, max_size=8))
def test_signed_payloads_with_random_field_values(fields: dict[str, object]) -> None:
    body = json.loads(payload().model_dump_json())
    body.update(fields)
    decodes_or_refuses(raw_datagram(json.dumps(body).encode()))


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_receiver_handles_anything_and_counts_it(datagrams: list[bytes]) -> None:
    receiver = HeartbeatReceiver(("127.0.0.1", 0), KEYS, Collector())
    for data in datagrams:
        assert receiver.handle(data) is False
    assert sum(receiver.drops().values()) == len(datagrams)


def bit_flips(data: bytes, count: int, rng: random.Random) -> list[bytes]:
    flipped = []
    for _ in range(count):
        copy = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            copy[rng.randrange(len(copy))] ^= 1 << rng.randrange(8)
        flipped.append(bytes(copy))
    return flipped


def test_random_and_bit_flipped_datagrams_over_udp() -> None:
    rng = random.Random(1234)
    valid = datagram()
    bad = bit_flips(valid, 1500, rng)
    bad += [rng.randbytes(rng.randint(0, 3000)) for _ in range(500)]
    bad += [valid[: rng.randrange(len(valid))] for _ in range(200)]  # truncated
    bad += [raw_datagram(rng.randbytes(200), compress=rng.random() < 0.5) for _ in range(200)]  # signed junk
    bad += [raw_datagram(zlib.compress(bytes(10 << 20)), compress=False)]  # a signed zlib bomb
    rng.shuffle(bad)
    collector = Collector()
    with (
        HeartbeatReceiver(("127.0.0.1", 0), KEYS, collector, flush_interval=0.02) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        for start in range(0, len(bad), 100):  # in bursts the socket buffer holds, so UDP loses none
            for data in bad[start : start + 100]:
                sock.sendto(data, receiver.address)
            assert wait_for(lambda n=start + len(bad[start : start + 100]): sum(receiver.drops().values()) == n)
        drops = receiver.drops()
        assert sum(drops.values()) == len(bad)
        assert set(drops) <= {"bad_signature", "malformed", "too_large", "unknown_key", "unsupported_version"}
        sock.sendto(valid, receiver.address)  # still alive and well
        assert wait_for(lambda: len(collector.heartbeats) == 1)
    assert receiver.counters()["accepted"] == 1
