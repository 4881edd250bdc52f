"""A real sender and real receivers over UDP on 127.0.0.1, with a fake agent."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from quadriga.agent.heartbeat import HeartbeatSender
from quadriga.health.codec import MAX_DATAGRAM
from quadriga.health.receiver import HeartbeatReceiver
from tests.health.helpers import KEY, KEY_ID, KEYS, NEW_KEY, NEW_KEY_ID, Collector, FakeAgent, engine_report, wait_for

INTERVAL = 0.1
ENGINES = ("engine-a", "engine-b", "engine-c")


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent(*(engine_report(e) for e in ENGINES))


def start_receiver(collector: Collector, keys: dict[str, bytes] = KEYS) -> HeartbeatReceiver:
    receiver = HeartbeatReceiver(("127.0.0.1", 0), keys, collector, flush_interval=0.05)
    receiver.start()
    return receiver


@pytest.fixture
def pair(agent: FakeAgent) -> Iterator[tuple[HeartbeatReceiver, HeartbeatSender, Collector]]:
    collector = Collector()
    receiver = start_receiver(collector)
    sender = HeartbeatSender(agent, [receiver.address], KEY_ID, KEY, interval=INTERVAL)
    try:
        yield receiver, sender, collector
    finally:
        sender.stop()
        receiver.stop()


def test_heartbeats_arrive_every_interval_in_batches(
    pair: tuple[HeartbeatReceiver, HeartbeatSender, Collector],
) -> None:
    receiver, sender, collector = pair
    sender.start()
    time.sleep(1.0)
    sender.stop()
    assert wait_for(lambda: receiver.counters()["delivered"] == sender.counters()["sent"])
    beats = collector.heartbeats
    for engine_id in ENGINES:
        times = [hb.timestamp for hb in beats if hb.engine_id == engine_id]
        assert 7 <= len(times) <= 12  # one per interval (a loaded machine may delay a few)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert max(gaps) < 5 * INTERVAL
        assert sum(gaps) / len(gaps) == pytest.approx(INTERVAL, rel=0.3)
    assert len(collector.batches) < len(beats)  # several heartbeats per batch
    assert receiver.drops() == {}


def test_engines_that_stop_sending_fall_silent(
    pair: tuple[HeartbeatReceiver, HeartbeatSender, Collector], agent: FakeAgent
) -> None:
    receiver, sender, _ = pair
    sender.start()
    assert wait_for(lambda: all(receiver.last_seen(e) is not None for e in ENGINES))
    assert receiver.silent(10 * INTERVAL) == []
    agent.remove("engine-b")  # it is gone
    time.sleep(15 * INTERVAL)
    assert receiver.silent(10 * INTERVAL) == ["engine-b"]


def test_several_receivers_each_get_every_heartbeat(agent: FakeAgent) -> None:
    collectors = [Collector(), Collector()]
    receivers = [start_receiver(c) for c in collectors]
    sender = HeartbeatSender(agent, [r.address for r in receivers], KEY_ID, KEY, interval=INTERVAL)
    try:
        for _ in range(3):
            assert sender.send_once() == 2 * len(ENGINES)
        for receiver, collector in zip(receivers, collectors, strict=True):
            assert wait_for(lambda c=collector: len(c.heartbeats) == 3 * len(ENGINES))
            assert receiver.drops() == {}
        assert [(h.engine_id, h.seq) for h in collectors[0].heartbeats] == [
            (h.engine_id, h.seq) for h in collectors[1].heartbeats
        ]
    finally:
        sender.stop()
        for receiver in receivers:
            receiver.stop()


def test_key_rotation_loses_no_heartbeat(pair: tuple[HeartbeatReceiver, HeartbeatSender, Collector]) -> None:
    receiver, sender, collector = pair
    sender.start()
    assert wait_for(lambda: receiver.counters().get("key.k1", 0) >= 3)
    receiver.set_keys({KEY_ID: KEY, NEW_KEY_ID: NEW_KEY})  # 1. every receiver accepts both
    sender.set_key(NEW_KEY_ID, NEW_KEY)  # 2. every agent signs with the new key
    assert wait_for(lambda: receiver.counters().get("key.k2", 0) >= 3)
    receiver.set_keys({NEW_KEY_ID: NEW_KEY})  # 3. the old key is retired
    before = receiver.counters()["key.k2"]
    assert wait_for(lambda: receiver.counters()["key.k2"] >= before + 3)
    assert receiver.drops() == {}
    assert receiver.silent(10 * INTERVAL) == []


def test_oversized_and_garbage_datagrams_over_udp_are_counted(
    pair: tuple[HeartbeatReceiver, HeartbeatSender, Collector],
) -> None:
    receiver, _, _ = pair
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(bytes(MAX_DATAGRAM + 1), receiver.address)
        sock.sendto(bytes(65_000), receiver.address)
        sock.sendto(b"QH\x01\x02k1", receiver.address)
        sock.sendto(b"", receiver.address)
    assert wait_for(lambda: sum(receiver.drops().values()) == 4)
    assert receiver.drops() == {"too_large": 2, "malformed": 2}
