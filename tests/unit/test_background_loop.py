"""The controller's background loop: wakes served at once after a quiet spell, and with `min_gap` a burst of
wakes served by a few passes instead of one pass per wake."""

from __future__ import annotations

import threading
import time

from quadriga.controller.loop import BackgroundLoop


class Counting(BackgroundLoop):
    name = "counting"

    def __init__(self, min_gap: float) -> None:
        super().__init__(interval=60.0, min_gap=min_gap)
        self.passes: list[float] = []
        self.passed = threading.Event()

    def run_once(self) -> int:
        self.passes.append(time.monotonic())
        self.passed.set()
        return 0


def _started(loop: Counting) -> Counting:
    loop.start()
    assert loop.passed.wait(5), "the first pass never ran"
    return loop


def _burst(loop: Counting, seconds: float) -> None:
    """Wake the loop every millisecond for `seconds` (a client creating many objects)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        loop.wake()
        time.sleep(0.001)


def test_a_burst_of_wakes_is_served_by_passes_at_least_min_gap_apart():
    loop = _started(Counting(min_gap=0.1))
    try:
        before = len(loop.passes)
        _burst(loop, 0.5)
        time.sleep(0.3)  # the last wakes are served too
        passes = loop.passes[before:]
        assert 2 <= len(passes) <= 8  # about 5 passes for some 400 wakes
        gaps = [b - a for a, b in zip(loop.passes, loop.passes[1:], strict=False)]
        assert min(gaps) >= 0.09
        assert loop.passes[-1] > time.monotonic() - 0.5  # the burst's last wakes got a pass after them
    finally:
        loop.stop()


def test_a_wake_after_a_quiet_spell_is_served_at_once():
    loop = _started(Counting(min_gap=0.5))
    try:
        time.sleep(0.6)  # longer than min_gap since the last pass
        loop.passed.clear()
        woken = time.monotonic()
        loop.wake()
        assert loop.passed.wait(5)
        assert loop.passes[-1] - woken < 0.25  # not held back by min_gap
    finally:
        loop.stop()


def test_without_min_gap_every_wake_can_have_its_pass():
    loop = _started(Counting(min_gap=0.0))
    try:
        before = len(loop.passes)
        _burst(loop, 0.3)
        time.sleep(0.1)
        assert len(loop.passes) - before > 20
    finally:
        loop.stop()
