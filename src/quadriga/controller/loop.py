"""A background loop: `run_once` every `interval` seconds, or at once when woken, in a thread of its own.
With `min_gap`, passes start at least that far apart: wakes that arrive during a pass or right after it
are served together by the next pass, so a burst of wakes (a client creating many objects) costs a few
bigger passes instead of one pass per wake; a wake after a quiet spell is still served at once.
An exception in one pass is logged and the next pass tries again, so the loop itself never dies."""

from __future__ import annotations

import logging
import threading
import time


class BackgroundLoop:
    name = "loop"

    def __init__(self, interval: float, min_gap: float = 0.0) -> None:
        self.interval = interval
        self.min_gap = min_gap
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        raise NotImplementedError

    def on_start(self) -> None:
        """Called in the loop's thread before the first pass."""

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        log = logging.getLogger(f"quadriga.{self.name}")
        self.on_start()
        while not self._stop.is_set():
            self._wake.clear()
            started = time.monotonic()
            try:
                self.run_once()
            except Exception:  # keep the loop alive; the next pass retries
                log.exception("%s pass failed", self.name)
            self._wake.wait(self.interval)
            rest = self.min_gap - (time.monotonic() - started)
            if rest > 0:
                self._stop.wait(rest)
