"""The reconcile loop: drive every load balancer whose desired revision differs from the applied one.

For each, the controller takes a time-bounded lease (so several controllers can run), hands the whole
desired tree to the load balancer's provider, and settles the statuses in one transaction. Every step is
idempotent: if the process dies anywhere, the lease expires and the next pass does the work again, so no
object stays PENDING_* because a process died. Failures are retried a bounded number of times with
backoff, then the change goes to ERROR with the reason."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, selectinload

from quadriga import status
from quadriga.controller.loop import BackgroundLoop
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.providers.base import ApplyError, ProviderDriver, RejectedChange

log = logging.getLogger("quadriga.controller")

# A load balancer's whole tree (status.tree walks it), loaded with the load balancers of a batch.
TREE = (
    selectinload(m.LoadBalancer.listeners).selectinload(m.Listener.l7policies).selectinload(m.L7Policy.rules),
    selectinload(m.LoadBalancer.pools).selectinload(m.Pool.members),
    selectinload(m.LoadBalancer.pools).selectinload(m.Pool.health_monitor),
)


class Reconciler(BackgroundLoop):
    name = "reconciler"

    def __init__(
        self,
        db: Database,
        providers: dict[str, ProviderDriver],
        *,
        lease_seconds: float = 30.0,
        max_attempts: int = 5,
        poll_interval: float = 1.0,
        batch_size: int = 50,
        min_gap: float = 0.05,
        owner: str | None = None,
    ) -> None:
        # Passes start at least `min_gap` apart: under a burst of creates each pass settles several load
        # balancers (one lease, one read and one settle transaction for all of them), which costs less
        # than a pass per create; it delays activation by at most `min_gap`, and only under load.
        super().__init__(poll_interval, min_gap)
        self.db = db
        self.providers = providers
        # A stable `owner` (one per controller identity) lets a restarted controller take back at once the
        # leases its killed predecessor held, instead of waiting for them to expire.
        self.owner = owner or f"controller-{uuid.uuid4().hex[:8]}"
        self.reclaim = owner is not None
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.batch_size = batch_size

    def on_start(self) -> None:
        log.info("reconciler %s started", self.owner)
        if not self.reclaim:
            return
        with self.db.write() as session:
            taken = session.execute(
                update(m.LoadBalancer)
                .where(m.LoadBalancer.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires_at=None)
            ).rowcount
        if taken:
            log.warning("took back %d lease(s) a previous run of controller %s left behind", taken, self.owner)

    # --- one pass ----------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Reconcile every load balancer that needs it, in batches: one transaction takes the leases of
        a batch, the provider applies each, one transaction settles them all. Returns how many settled."""
        settled = 0
        while ids := self._take_leases():
            settled += self._settle(self._apply(ids))
            if len(ids) < self.batch_size:
                break
        return settled

    def _take_leases(self) -> list[str]:
        now = m.utcnow()
        due = [
            m.LoadBalancer.revision != m.LoadBalancer.applied_revision,
            or_(m.LoadBalancer.lease_expires_at.is_(None), m.LoadBalancer.lease_expires_at < now),
        ]
        with self.db.write() as session:
            ids = list(
                session.scalars(  # in id order, as every transaction locking several load balancers
                    select(m.LoadBalancer.id)
                    .where(*due)
                    .order_by(m.LoadBalancer.id)
                    .limit(self.batch_size)
                    .with_for_update()
                )
            )
            if ids:
                session.execute(
                    update(m.LoadBalancer)
                    .where(m.LoadBalancer.id.in_(ids), *due)
                    .values(lease_owner=self.owner, lease_expires_at=now + dt.timedelta(seconds=self.lease_seconds))
                )
        return ids

    def _apply(self, ids: list[str]) -> list[Outcome]:
        """Hand each load balancer's desired tree to its provider; never raises. Load balancers of
        providers without a data plane are read together, in one query for the batch (such a provider
        reads no more than the row); the others each with their tree, in a transaction of its own taken
        just before its apply, so that it sees the newest state."""
        outcomes, own = [], []
        with self.db.read() as session:
            query = select(m.LoadBalancer).where(m.LoadBalancer.id.in_(ids)).order_by(m.LoadBalancer.id)
            for lb in session.scalars(query).all():
                provider = self.providers.get(lb.provider)
                if provider is not None and provider.data_plane:
                    own.append(lb.id)
                else:
                    outcomes.append(self._apply_one(lb))
        for lb_id in own:
            with self.db.read() as session:
                lb = session.scalars(
                    select(m.LoadBalancer)
                    .where(m.LoadBalancer.id == lb_id)
                    .options(selectinload(m.LoadBalancer.listeners), selectinload(m.LoadBalancer.pools))
                ).one_or_none()
                if lb is not None:
                    outcomes.append(self._apply_one(lb))
        return outcomes

    def _apply_one(self, lb: m.LoadBalancer) -> Outcome:
        started = time.monotonic()
        provider = self.providers.get(lb.provider)
        try:
            if provider is None:
                raise ApplyError(f"provider {lb.provider!r} is not enabled on this controller")
            provider.apply(lb)
            error, final = None, False
        except RejectedChange as exc:
            error, final = str(exc), True
        except ApplyError as exc:
            error, final = str(exc), False
        except Exception as exc:  # a provider bug must not wedge the load balancer
            log.exception("provider %s failed on load balancer %s", lb.provider, lb.id)
            error, final = f"internal error in provider {lb.provider}: {exc}", False
        return Outcome(lb.id, lb.revision, error, time.monotonic() - started, final)

    def _settle(self, outcomes: list[Outcome]) -> int:
        settled = 0
        if not outcomes:
            return 0
        with self.db.write() as session:
            # One locking query for the batch (in id order, the lock order), its trees loaded with it.
            lbs = session.scalars(
                select(m.LoadBalancer)
                .where(m.LoadBalancer.id.in_([out.lb_id for out in outcomes]))
                .order_by(m.LoadBalancer.id)
                .options(*TREE)
                .with_for_update()
            ).all()
            by_id = {lb.id: lb for lb in lbs}
            for out in sorted(outcomes, key=lambda o: o.lb_id):
                lb = by_id.get(out.lb_id)
                if lb is None:
                    continue  # purged meanwhile
                if lb.lease_owner != self.owner:
                    continue  # our lease expired and another controller took over
                lb.lease_owner = None
                lb.lease_expires_at = None
                if lb.revision != out.revision:
                    continue  # a newer change arrived meanwhile; the next pass applies it
                if out.error is None:
                    status.complete(session, lb)
                    log.info("load balancer %s at revision %d is live (%.0f ms)", lb.id, out.revision, out.ms)
                    settled += 1
                elif self._retry_or_fail(session, lb, out):
                    settled += 1
        return settled

    def _retry_or_fail(self, session: Session, lb: m.LoadBalancer, out: Outcome) -> bool:
        lb.apply_attempts += 1
        if out.final or lb.apply_attempts >= self.max_attempts:
            status.fail(session, lb, out.error or "")
            return True
        backoff = min(2**lb.apply_attempts, 30)
        lb.lease_expires_at = m.utcnow() + dt.timedelta(seconds=backoff)
        lb.status_reason = out.error
        log.warning(
            "load balancer %s revision %d failed (attempt %d/%d, retry in %ds): %s",
            lb.id,
            out.revision,
            lb.apply_attempts,
            self.max_attempts,
            backoff,
            out.error,
        )
        return False


@dataclass(frozen=True)
class Outcome:
    lb_id: str
    revision: int
    error: str | None
    seconds: float
    final: bool = False  # the data plane refused the change: no retry

    @property
    def ms(self) -> float:
        return self.seconds * 1000
