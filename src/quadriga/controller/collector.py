"""The status collector: operating statuses and statistics come from the data plane, never from "the call
succeeded" (DESIGN non-negotiable 3).

Every `interval` seconds it asks each agent for its engines' reports (HAProxy's own view: frontend and
server states, counters) and, in one transaction, turns them into Octavia's operating statuses with
`quadriga.status.operating` and into listener statistics. HAProxy's counters restart at every reload, so
statistics are accumulated from deltas against the last values read (kept in the row), and only grow.

It also notices an engine that lost what its agent had confirmed (HAProxy gone, or running an older
revision, e.g. after a host reboot): it marks the load balancer's engines stale, and the reconciler pushes
the config again, without touching provisioning statuses."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from quadriga import constants as c
from quadriga import status
from quadriga.controller.loop import BackgroundLoop
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.engine.report import EngineReport, ListenerReport
from quadriga.providers.engine import ALLOCATED, AgentHandle

log = logging.getLogger("quadriga.collector")

COUNTERS = ("bytes_in", "bytes_out", "total_connections", "request_errors")


class StatusCollector(BackgroundLoop):
    name = "collector"

    def __init__(
        self,
        db: Database,
        agents: Mapping[str, AgentHandle],
        *,
        interval: float = 1.0,
        wake_reconciler: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(interval)
        self.db = db
        self.agents = agents
        self.wake_reconciler = wake_reconciler
        self._unreachable: set[str] = set()

    def run_once(self) -> int:
        """Collect every agent's reports and write what changed. Returns how many engines reported."""
        reports: dict[str, EngineReport] = {}
        reached: set[str] = set()
        for name, agent in self.agents.items():
            try:
                found = agent.reports()
            except Exception as exc:
                if name not in self._unreachable:
                    log.warning("agent %s does not answer (%s); its engines keep their last statuses", name, exc)
                    self._unreachable.add(name)
                continue
            if name in self._unreachable:
                log.info("agent %s answers again", name)
                self._unreachable.discard(name)
            reached.add(name)
            reports.update((r.engine_id, r) for r in found)
        stale = self._write(reports, reached)
        if stale:
            self.wake_reconciler()
        return len(reports)

    def _write(self, reports: dict[str, EngineReport], reached: set[str]) -> bool:
        stale = False
        with self.db.write() as session:
            amps = session.scalars(
                select(m.Amphora).where(m.Amphora.status == ALLOCATED, m.Amphora.compute_id.in_(reached))
            ).all()
            lbs = _load_trees(session, [a.load_balancer_id for a in amps if a.load_balancer_id])
            for amp in amps:
                lb = lbs.get(amp.load_balancer_id or "")
                if lb is None or lb.provisioning_status in (c.DELETED, c.PENDING_DELETE):
                    continue
                report = reports.get(amp.id)
                objects = {obj.id: obj for obj in status.tree(lb)}
                for obj_id, value in status.operating(lb, report).items():
                    if objects[obj_id].operating_status != value:
                        objects[obj_id].operating_status = value
                if report is not None:
                    _statistics(session, lb.id, amp.id, report.listeners)
                if _lost(amp, report) and lb.lease_owner is None and lb.revision == lb.applied_revision:
                    log.warning(
                        "engine %s of load balancer %s lost its config (reports %s, had revision %s): pushing again",
                        amp.id,
                        lb.id,
                        "nothing" if report is None else f"revision {report.revision}, running={report.running}",
                        amp.applied_revision,
                    )
                    lb.applied_revision = lb.revision - 1
                    stale = True
        return stale


def _lost(amp: m.Amphora, report: EngineReport | None) -> bool:
    if report is None or not report.running:
        return True
    return amp.applied_revision is not None and report.revision < amp.applied_revision


def _load_trees(session: Session, lb_ids: list[str]) -> dict[str, m.LoadBalancer]:
    if not lb_ids:
        return {}
    rows = session.scalars(
        select(m.LoadBalancer)
        .where(m.LoadBalancer.id.in_(lb_ids))
        .options(
            selectinload(m.LoadBalancer.listeners).selectinload(m.Listener.l7policies).selectinload(m.L7Policy.rules),
            selectinload(m.LoadBalancer.pools).selectinload(m.Pool.members),
            selectinload(m.LoadBalancer.pools).selectinload(m.Pool.health_monitor),
        )
    ).all()
    return {lb.id: lb for lb in rows}


def _statistics(session: Session, lb_id: str, amp_id: str, listeners: dict[str, ListenerReport]) -> None:
    for listener_id, now in listeners.items():
        row = session.get(m.ListenerStatistics, (listener_id, amp_id))
        if row is None:
            row = m.ListenerStatistics(
                listener_id=listener_id,
                amphora_id=amp_id,
                load_balancer_id=lb_id,
                raw={},
                **dict.fromkeys((*COUNTERS, "active_connections"), 0),
            )
            session.add(row)
        raw = dict(row.raw or {})
        for name in COUNTERS:
            value = getattr(now, name)
            last = raw.get(name, 0)
            # A counter below its last value means HAProxy restarted it (a reload): all of it is new.
            setattr(row, name, getattr(row, name) + (value - last if value >= last else value))
            raw[name] = value
        row.active_connections = now.active_connections
        row.raw = raw
        row.updated_at = m.utcnow()
