"""The receiver's rules, one datagram at a time through `handle` (the real UDP path is in
test_heartbeat_udp.py): replay protection, freshness, key rotation, bounded memory, batching."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from quadriga.health.codec import Heartbeat
from quadriga.health.receiver import HeartbeatReceiver
from tests.health.helpers import KEY, KEY_ID, KEYS, NEW_KEY, NEW_KEY_ID, Collector, datagram, wait_for


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def receiver(collector: Collector) -> Iterator[HeartbeatReceiver]:
    """Not started: tests call `handle` directly."""
    yield HeartbeatReceiver(("127.0.0.1", 0), KEYS, collector)


def test_replayed_datagram_is_dropped(receiver: HeartbeatReceiver) -> None:
    data = datagram(seq=5)
    assert receiver.handle(data)
    assert not receiver.handle(data)
    assert receiver.drops() == {"replayed": 1}
    assert receiver.counters()["accepted"] == 1


def test_stale_sequence_number_is_dropped(receiver: HeartbeatReceiver) -> None:
    assert receiver.handle(datagram(seq=5))
    assert not receiver.handle(datagram(seq=4))
    assert receiver.handle(datagram(seq=6))
    assert receiver.drops() == {"stale": 1}


def test_new_boot_is_accepted_and_the_old_one_is_then_stale(receiver: HeartbeatReceiver) -> None:
    assert receiver.handle(datagram(boot=100, seq=900))
    assert receiver.handle(datagram(boot=200, seq=1))  # the agent restarted: its sequence starts again
    assert not receiver.handle(datagram(boot=100, seq=901))  # a replay from before the restart
    assert receiver.drops() == {"stale": 1}


def test_sequence_is_per_engine(receiver: HeartbeatReceiver) -> None:
    assert receiver.handle(datagram("engine-a", seq=10))
    assert receiver.handle(datagram("engine-b", seq=3))
    assert not receiver.drops()


@pytest.mark.parametrize("offset", [-31.0, 31.0])
def test_datagram_outside_the_clock_window_is_dropped(receiver: HeartbeatReceiver, offset: float) -> None:
    assert not receiver.handle(datagram(timestamp=time.time() + offset))
    assert receiver.drops() == {"expired": 1}


def test_clock_window_can_be_disabled(collector: Collector) -> None:
    receiver = HeartbeatReceiver(("127.0.0.1", 0), KEYS, collector, max_skew=None)
    assert receiver.handle(datagram(timestamp=1.0))


def test_unknown_engine_is_accepted(receiver: HeartbeatReceiver) -> None:
    """The receiver knows no engines; the recorder ignores ids that are not in its database."""
    assert receiver.handle(datagram("not-in-any-database"))


def test_key_rotation(receiver: HeartbeatReceiver) -> None:
    new = {NEW_KEY_ID: NEW_KEY}
    assert not receiver.handle(datagram(seq=1, key_id=NEW_KEY_ID, key=NEW_KEY))  # not yet
    receiver.set_keys({KEY_ID: KEY, **new})  # rotation starts: both
    assert receiver.handle(datagram(seq=2))
    assert receiver.handle(datagram(seq=3, key_id=NEW_KEY_ID, key=NEW_KEY))
    receiver.set_keys(new)  # rotation done
    assert not receiver.handle(datagram(seq=4))
    assert receiver.handle(datagram(seq=5, key_id=NEW_KEY_ID, key=NEW_KEY))
    counters = receiver.counters()
    assert (counters["key.k1"], counters["key.k2"]) == (1, 2)
    assert receiver.drops() == {"unknown_key": 2}


@pytest.mark.parametrize("keys", [{}, {"k1": b"short"}, {"bad id": KEY}])
def test_unusable_keys_are_refused(receiver: HeartbeatReceiver, keys: dict[str, bytes]) -> None:
    with pytest.raises(ValueError):
        receiver.set_keys(keys)
    assert receiver.handle(datagram())  # the old keys still work


def test_bad_datagrams_are_counted_by_reason(receiver: HeartbeatReceiver) -> None:
    good = datagram()
    for data in (good[:-1], good + b"x", b"", b"\x00" * 100, bytes(70_000), datagram(key=NEW_KEY)):
        assert not receiver.handle(data)
    assert receiver.drops() == {"bad_signature": 3, "malformed": 2, "too_large": 1}


def test_tracked_engines_are_bounded(collector: Collector) -> None:
    receiver = HeartbeatReceiver(("127.0.0.1", 0), KEYS, collector, max_engines=3)
    for n in range(5):
        assert receiver.handle(datagram(f"engine-{n}"))
    assert receiver.counters()["evicted"] == 2
    assert receiver.last_seen("engine-0") is None
    assert receiver.last_seen("engine-4") is not None


def test_silent_engines(receiver: HeartbeatReceiver) -> None:
    receiver.handle(datagram("engine-a"))
    receiver.handle(datagram("engine-b"))
    time.sleep(0.15)
    receiver.handle(datagram("engine-b", seq=2))
    assert receiver.silent(0.1) == ["engine-a"]
    assert receiver.silent(10) == []
    receiver.forget("engine-a")
    assert receiver.silent(0.1) == []


def test_batches_by_size_and_by_time(collector: Collector) -> None:
    with HeartbeatReceiver(("127.0.0.1", 0), KEYS, collector, batch_size=4, flush_interval=2) as receiver:
        start = time.monotonic()
        for n in range(10):
            receiver.handle(datagram(f"engine-{n}"))
        assert wait_for(lambda: len(collector.heartbeats) == 8, timeout=1)  # two full batches, at once
        assert wait_for(lambda: len(collector.heartbeats) == 10, timeout=5)  # the rest, after the interval
        assert time.monotonic() - start >= 2
    assert [len(b) for b in collector.batches] == [4, 4, 2]
    assert receiver.counters()["delivered"] == 10


def test_stop_delivers_what_was_accepted(collector: Collector) -> None:
    receiver = HeartbeatReceiver(("127.0.0.1", 0), KEYS, collector, flush_interval=60)
    receiver.start()
    receiver.handle(datagram())
    receiver.stop()
    assert len(collector.heartbeats) == 1


def test_a_failing_callback_loses_its_batch_only() -> None:
    calls: list[list[Heartbeat]] = []

    def on_batch(batch: list[Heartbeat]) -> None:
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("database down")

    with HeartbeatReceiver(("127.0.0.1", 0), KEYS, on_batch, flush_interval=0.05) as receiver:
        receiver.handle(datagram(seq=1))
        assert wait_for(lambda: len(calls) == 1)
        receiver.handle(datagram(seq=2))
        assert wait_for(lambda: len(calls) == 2)
    counters = receiver.counters()
    assert (counters["callback_errors"], counters["delivered"]) == (1, 1)


def test_a_slow_callback_overflows_the_queue_but_not_liveness() -> None:
    entered, release = threading.Event(), threading.Event()

    def on_batch(batch: list[Heartbeat]) -> None:
        entered.set()
        release.wait(5)

    with HeartbeatReceiver(("127.0.0.1", 0), KEYS, on_batch, batch_size=1, max_pending=2) as receiver:
        assert receiver.handle(datagram("engine-0"))
        assert entered.wait(2)  # the delivering thread is stuck in the callback now
        for n in range(1, 6):
            assert receiver.handle(datagram(f"engine-{n}"))  # accepted: the engine is alive
        assert receiver.drops() == {"overflow": 3}
        assert receiver.silent(5) == []
        release.set()
    assert receiver.counters()["delivered"] == 3
