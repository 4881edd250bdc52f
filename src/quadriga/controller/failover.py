"""Automatic failover: replace every engine whose heartbeats stop saying it serves for `timeout` seconds,
unless so many fall silent at once that the health path, not the fleet, is the likely culprit.

An engine is failed over the way `PUT /v2/octavia/amphorae/{id}/failover` does it: its load balancer goes
PENDING_UPDATE, the engine PENDING_DELETE, and the reconciler places a new engine with the same VIP and
config, then removes the old one once the new one serves. It happens under the load balancer's row lock and
only from ACTIVE or ERROR, so a failover in flight (or a change in flight) is never started twice, even
with several controllers; a load balancer busy with a change is looked at again on the next pass.

Grace: an engine counts as heard from when this watchdog starts (the receiver next to it has just started
and knows nothing yet) and when it first sees the engine ALLOCATED (just placed), so neither a controller
start nor a new engine triggers a failover.

Circuit breaker (on by default): when at least `breaker_min` engines and more than `breaker_share` of all
engines are silent at once, no engine is failed over. Engines count as silent for the breaker from half the
timeout on, so that a health path that breaks for all of them is seen as one event although their last
heartbeats arrived a little apart. A dead fleet is much less likely than a broken health path (a wrong
heartbeat key, a firewall, a receiver that cannot keep up), and failing everything over at once would move
every VIP for nothing, or worse. `breaker_min` keeps small clouds failing over: with the default 3, one or
two silent engines are always replaced. An open breaker is logged once (and a reminder every
`REMIND_EVERY` seconds), shown in the silent engines' status_reason, and logged again when it closes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from sqlalchemy import select

from quadriga import constants as c
from quadriga import status
from quadriga.controller.loop import BackgroundLoop
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.providers.base import ProviderDriver
from quadriga.providers.engine import ALLOCATED

log = logging.getLogger("quadriga.failover")

BREAKER_REASON = "automatic failover held by the circuit breaker"
REMIND_EVERY = 60.0


class FailoverWatchdog(BackgroundLoop):
    name = "failover"

    def __init__(
        self,
        db: Database,
        providers: Mapping[str, ProviderDriver],
        last_serving: Callable[[str], float | None],
        *,
        timeout: float = 3.0,
        breaker: bool = True,
        breaker_share: float = 0.5,
        breaker_min: int = 3,
        wake_reconciler: Callable[[], None] = lambda: None,
        forget: Callable[[set[str]], None] = lambda _keep: None,
    ) -> None:
        super().__init__(min(0.5, timeout / 4))
        self.db = db
        self.providers = providers
        self.last_serving = last_serving
        self.timeout = timeout
        self.breaker = breaker
        self.breaker_share = breaker_share
        self.breaker_min = breaker_min
        self.wake_reconciler = wake_reconciler
        self.forget = forget
        self._first_seen: dict[str, float] = {}  # engine id -> time.monotonic() it was first seen ALLOCATED
        self._open_since: float | None = None  # the breaker's episode
        self._reminded = 0.0

    def on_start(self) -> None:
        log.info(
            "failover watchdog started: engines silent for %.1f s are replaced; circuit breaker %s",
            self.timeout,
            f"opens when >= {self.breaker_min} and > {self.breaker_share:.0%} of engines are silent"
            if self.breaker
            else "DISABLED",
        )

    def run_once(self) -> int:
        """One look at every ALLOCATED engine. Returns how many were marked for failover."""
        now = time.monotonic()
        with self.db.read() as session:
            engines = dict(
                session.execute(
                    select(m.Amphora.id, m.Amphora.load_balancer_id)
                    .join(m.LoadBalancer, m.LoadBalancer.id == m.Amphora.load_balancer_id)
                    .where(m.Amphora.status == ALLOCATED, m.LoadBalancer.provisioning_status != c.DELETED)
                ).all()
            )
        self._first_seen = {e: self._first_seen.get(e, now) for e in engines}
        self.forget(set(engines))
        ages = {e: now - max(self.last_serving(e) or 0.0, self._first_seen[e]) for e in engines}
        # The breaker counts engines quiet for half the timeout: an agent's heartbeats leave in one pass, but
        # reach the database a little apart, and the first engine past the timeout must not be failed over
        # alone just before the others of a broken health path cross it too.
        quiet = {e: age for e, age in ages.items() if age > self.timeout / 2}
        if self._breaker_open(quiet, len(engines), now):
            return 0
        silent = {e: age for e, age in quiet.items() if age > self.timeout}
        return sum(self._fail_over(engine_id, engines[engine_id], age) for engine_id, age in silent.items())

    def _breaker_open(self, silent: dict[str, float], total: int, now: float) -> bool:
        """Decide the breaker's state for this pass and show it; True while it holds failovers back."""
        tripped = self.breaker and len(silent) >= self.breaker_min and len(silent) > self.breaker_share * total
        reason = (
            f"{BREAKER_REASON}: {len(silent)} of {total} engines silent at once (more than "
            f"{self.breaker_share:.0%}); suspect the health path (receivers, heartbeat keys, network), not the engines"
        )
        if tripped or self._open_since is not None:
            self._show(set(silent) if tripped else set(), reason)
        if tripped and self._open_since is None:
            self._open_since = self._reminded = now
            log.error(
                "CIRCUIT BREAKER OPEN: %d of %d engines have sent no serving heartbeat for more than %.1f s "
                "(e.g. engine=%s): automatic failover is HELD. Check the receivers' drop counters in the log "
                "(reason=bad_signature/unknown_key: heartbeat keys differ), the network from agents to receivers, "
                "and the agents. Failover on demand still works (PUT /v2/octavia/amphorae/{id}/failover).",
                len(silent),
                total,
                self.timeout / 2,
                max(silent, key=lambda e: silent[e]),
            )
        elif tripped and now - self._reminded >= REMIND_EVERY:
            self._reminded = now
            log.error(
                "circuit breaker still open after %.0f s: %d of %d engines silent; automatic failover held",
                now - self._open_since,  # type: ignore[operator]
                len(silent),
                total,
            )
        elif not tripped and self._open_since is not None:
            log.warning(
                "circuit breaker closed after %.0f s: %d of %d engines silent now; automatic failover resumes",
                now - self._open_since,
                len(silent),
                total,
            )
            self._open_since = None
        return tripped

    def _show(self, held: set[str], reason: str) -> None:
        """Put the breaker's reason on the engines it holds back, and take it off the others."""
        with self.db.write() as session:
            shown = session.scalars(select(m.Amphora).where(m.Amphora.status_reason.startswith(BREAKER_REASON)))
            for amp in shown:
                if amp.id not in held:
                    amp.status_reason = None
            if held:
                for amp in session.scalars(select(m.Amphora).where(m.Amphora.id.in_(held))):
                    if amp.status_reason != reason:
                        amp.status_reason = reason

    def _fail_over(self, engine_id: str, lb_id: str, silent_for: float) -> bool:
        """Mark one engine for failover, as the API does; False when it is not (or no longer) the time."""
        with self.db.write() as session:
            lb = session.scalars(select(m.LoadBalancer).where(m.LoadBalancer.id == lb_id).with_for_update()).one()
            amp = session.get(m.Amphora, engine_id)
            if amp is None or amp.status != ALLOCATED:
                return False  # replaced meanwhile (by the API, or another controller)
            if lb.provisioning_status not in (c.ACTIVE, c.ERROR):
                log.info(
                    "engine=%s lb=%s silent for %.1f s, but the load balancer is %s: failover waits for that change",
                    engine_id,
                    lb_id,
                    silent_for,
                    lb.provisioning_status,
                )
                return False
            provider = self.providers.get(lb.provider)
            if provider is None:
                log.error("engine=%s lb=%s silent, but provider %r is not enabled here", engine_id, lb_id, lb.provider)
                return False
            status.mark_change(lb, "loadbalancer", lb, "update")
            provider.amphora_failover(amp)
            amp.status_reason = f"automatic failover: no serving heartbeat for {silent_for:.1f} s"
        log.warning(
            "engine=%s lb=%s FAILOVER: no serving heartbeat for %.1f s (timeout %.1f s); a new engine takes its VIP",
            engine_id,
            lb_id,
            silent_for,
            self.timeout,
        )
        self.wake_reconciler()
        return True
