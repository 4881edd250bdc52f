"""Housekeeping: what nobody asks for but a long-running controller needs.

* Purge: load balancers and engines marked DELETED stay visible for a while (Octavia keeps them for
  `load_balancer_expiry_age`), then their rows and statistics are removed.
* Orphans: an engine an agent runs that no live amphora row owns (left by a crash between the agent's
  apply and the database write, or by a database restored from a backup) serves an address nobody
  manages. It is removed, after it has been seen as an orphan twice in a row so that an engine being
  placed right now is never touched. Each agent also removes what none of its engines owns (namespaces,
  veths, HAProxy processes whose engine directory is gone; see `Agent.collect_orphans`).
* Certificates: agents' certificates are renewed before they expire (`CertificateRotation`)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Protocol

from sqlalchemy import delete, select

from quadriga import constants as c
from quadriga.controller.certificates import CertificateRotation
from quadriga.controller.loop import BackgroundLoop
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.providers.engine import AMP_DELETED, AgentHandle

log = logging.getLogger("quadriga.housekeeping")


class HousekeptAgent(AgentHandle, Protocol):
    def collect_orphans(self) -> list[str]: ...


class Housekeeping(BackgroundLoop):
    name = "housekeeping"

    def __init__(
        self,
        db: Database,
        agents: Mapping[str, HousekeptAgent],
        *,
        interval: float = 60.0,
        purge_after: dt.timedelta = dt.timedelta(days=7),
        rotation: CertificateRotation | None = None,
    ) -> None:
        super().__init__(interval)
        self.db = db
        self.agents = agents
        self.purge_after = purge_after
        self.rotation = rotation
        self._suspects: set[tuple[str, str]] = set()

    def run_once(self) -> int:
        renewed = self.rotation.run_once() if self.rotation is not None else 0
        return renewed + self.purge() + self.collect_orphans()

    def purge(self) -> int:
        """Remove DELETED load balancers and engines older than `purge_after`. Returns how many rows."""
        cutoff = m.utcnow() - self.purge_after
        with self.db.write() as session:
            lb_ids = list(
                session.scalars(
                    select(m.LoadBalancer.id).where(
                        m.LoadBalancer.provisioning_status == c.DELETED, m.LoadBalancer.updated_at < cutoff
                    )
                )
            )
            amp_ids = list(
                session.scalars(
                    select(m.Amphora.id).where(m.Amphora.status == AMP_DELETED, m.Amphora.updated_at < cutoff)
                )
            )
            if lb_ids:
                session.execute(delete(m.ListenerStatistics).where(m.ListenerStatistics.load_balancer_id.in_(lb_ids)))
                session.execute(delete(m.Tag).where(m.Tag.resource_id.in_(lb_ids)))
                session.execute(delete(m.LoadBalancer).where(m.LoadBalancer.id.in_(lb_ids)))
            if amp_ids:
                session.execute(delete(m.ListenerStatistics).where(m.ListenerStatistics.amphora_id.in_(amp_ids)))
                session.execute(delete(m.Amphora).where(m.Amphora.id.in_(amp_ids)))
        if lb_ids or amp_ids:
            log.info("purged %d deleted load balancer(s) and %d deleted engine(s)", len(lb_ids), len(amp_ids))
        return len(lb_ids) + len(amp_ids)

    def collect_orphans(self) -> int:
        """Remove engines that agents run but no live amphora owns (seen so on two passes), then have each agent
        remove what none of its engines owns. Returns how many objects were removed."""
        found: set[tuple[str, str]] = set()
        for name, agent in self.agents.items():
            try:
                found |= {(name, report.engine_id) for report in agent.reports()}
            except Exception as exc:  # its engines fall silent: the failover watchdog acts on that
                log.debug("agent %s not asked for orphans: %s", name, exc)
        with self.db.read() as session:
            owned = set(session.scalars(select(m.Amphora.id).where(m.Amphora.status != AMP_DELETED)))
        orphans = {(name, engine_id) for name, engine_id in found if engine_id not in owned}
        confirmed, self._suspects = orphans & self._suspects, orphans - self._suspects
        for name, engine_id in sorted(confirmed):
            try:
                self.agents[name].remove(engine_id)
            except Exception as exc:
                log.warning("orphan engine %s on agent %s not removed: %s", engine_id, name, exc)
                self._suspects.add((name, engine_id))
                continue
            log.warning("removed orphan engine %s on agent %s: no load balancer owns it", engine_id, name)
        collected = 0
        for name, agent in self.agents.items():
            try:
                removed = agent.collect_orphans()
            except Exception as exc:
                log.debug("agent %s did not collect its orphans: %s", name, exc)
                continue
            if removed:
                log.warning("agent %s collected %d orphan(s): %s", name, len(removed), ", ".join(removed))
            collected += len(removed)
        return len(confirmed) + collected
