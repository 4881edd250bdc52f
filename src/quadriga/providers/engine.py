"""The `amphora` provider: quadriga's own data plane, HAProxy engines run by agents.

The API-time hooks refuse what an engine could never serve (a VIP the network driver cannot reach, an L7
regular expression HAProxy cannot compile) with a 400, so nothing broken is stored. `apply` is the
controller's half: it places the load balancer on an agent (one engine per load balancer, SINGLE topology),
builds the engine's whole declarative spec and pushes it over the agent's mutual-TLS API. The agent answers
only once the config is live, so the controller marks objects ACTIVE only when traffic can flow. Placement
is recorded in the amphorae table before the push, so a controller that dies mid-way finds the same engine
again on its next pass (every step is idempotent)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import object_session

from quadriga import constants as c
from quadriga.agent.client import AgentRejected, AgentStale, AgentUnavailable
from quadriga.api.errors import Validation
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.engine.build import UnsupportedFeature, spec_from_loadbalancer
from quadriga.engine.regex import regex_error
from quadriga.engine.report import EngineReport
from quadriga.engine.spec import EngineSpec
from quadriga.providers.base import ApplyError, ProviderDriver, RejectedChange
from quadriga.providers.noop import AZ_METADATA, FLAVOR_METADATA

log = logging.getLogger("quadriga.provider.engine")

# The amphora statuses Octavia uses for the engines' life cycle. An engine being replaced (failover) is
# PENDING_DELETE: the next apply places a new engine, and removes the old one once the new one serves.
BOOTING, ALLOCATED, AMP_ERROR, AMP_DELETED = "BOOTING", "ALLOCATED", "ERROR", "DELETED"
AMP_PENDING_DELETE = "PENDING_DELETE"
LIVE = (BOOTING, ALLOCATED, AMP_ERROR)


class AgentHandle(Protocol):
    """What the provider needs of an agent (`quadriga.agent.client.AgentClient` over mutual TLS)."""

    def apply(self, engine_id: str, spec: EngineSpec) -> EngineReport: ...
    def remove(self, engine_id: str) -> None: ...
    def reports(self) -> list[EngineReport]: ...


class EngineProvider(ProviderDriver):
    name = "amphora"
    description = "The quadriga HAProxy engine provider."

    def __init__(
        self,
        db: Database,
        agents: Mapping[str, AgentHandle],
        *,
        check_vip: Callable[[str, str | None], str | None] | None = None,
        cert_expiration: Callable[[str], Any] | None = None,
    ) -> None:
        self.db = db
        self.agents = agents
        self.check_vip = check_vip
        self.cert_expiration = cert_expiration

    def get_supported_flavor_metadata(self) -> dict[str, str]:
        return FLAVOR_METADATA

    def get_supported_availability_zone_metadata(self) -> dict[str, str]:
        return AZ_METADATA

    # --- API-time checks ---------------------------------------------------------------------------
    def loadbalancer_create(self, lb: m.LoadBalancer) -> None:
        if self.check_vip is not None:
            for address in [lb.vip_address] + [v.get("ip_address") for v in lb.additional_vips or []]:
                if not address:
                    continue
                reason = self.check_vip(address, None)
                if reason:
                    raise Validation(f"VIP {address}: {reason}")
        for li in lb.listeners:
            for policy in li.l7policies:
                for rule in policy.rules:
                    self._check_rule(rule)

    def loadbalancer_failover(self, lb: m.LoadBalancer) -> None:
        session = object_session(lb)
        assert session is not None
        for amp in session.scalars(
            select(m.Amphora).where(m.Amphora.load_balancer_id == lb.id, m.Amphora.status.in_(LIVE))
        ):
            self.amphora_failover(amp)

    def amphora_failover(self, amphora: m.Amphora) -> None:
        if amphora.status in LIVE:
            amphora.status = AMP_PENDING_DELETE
            log.info("engine %s of load balancer %s will be replaced", amphora.id, amphora.load_balancer_id)

    def l7rule_create(self, rule: m.L7Rule) -> None:
        self._check_rule(rule)

    def l7rule_update(self, old: dict[str, Any], rule: m.L7Rule) -> None:
        self._check_rule(rule)

    def _check_rule(self, rule: m.L7Rule) -> None:
        if rule.compare_type == "REGEX" and rule.value:
            error = regex_error(rule.value)
            if error:
                raise Validation(f"L7 rule value {rule.value!r} is not a regular expression HAProxy accepts: {error}")

    # --- the controller's side ---------------------------------------------------------------------
    def apply(self, lb: m.LoadBalancer) -> None:
        try:
            spec = spec_from_loadbalancer(lb)
        except (UnsupportedFeature, ValueError) as exc:
            raise RejectedChange(str(exc)) from exc
        deleting = lb.provisioning_status == c.PENDING_DELETE
        engine_id, agent_name = self._place(lb.id, create=not deleting)
        if engine_id is None:
            return  # being deleted and never placed: nothing runs anywhere
        agent = self.agents.get(agent_name)
        if agent is None:
            raise ApplyError(f"engine {engine_id} lives on agent {agent_name!r}, which this controller does not know")
        try:
            if deleting:
                agent.remove(engine_id)
                self._record(engine_id, AMP_DELETED, None, None)
                self._retire_replaced(lb.id)
                return
            report = agent.apply(engine_id, spec)
            self._retire_replaced(lb.id)
        except AgentRejected as exc:
            self._record(engine_id, None, None, str(exc))
            raise RejectedChange(f"engine {engine_id} refused revision {spec.revision}: {exc}") from exc
        except AgentStale as exc:
            raise ApplyError(f"engine {engine_id} runs a newer revision than {spec.revision}: {exc}") from exc
        except AgentUnavailable as exc:
            raise ApplyError(f"agent {agent_name} unavailable: {exc}") from exc
        self._record(engine_id, ALLOCATED, report, None)

    def _retire_replaced(self, lb_id: str) -> None:
        """Remove the engines a failover replaced, now that their successor serves. An agent that cannot be
        reached keeps its engine PENDING_DELETE, to be retried at the next apply."""
        with self.db.read() as session:
            doomed = [
                (amp.id, amp.compute_id or "")
                for amp in session.scalars(
                    select(m.Amphora).where(m.Amphora.load_balancer_id == lb_id, m.Amphora.status == AMP_PENDING_DELETE)
                )
            ]
        for engine_id, agent_name in doomed:
            agent = self.agents.get(agent_name)
            try:
                if agent is None:
                    raise AgentUnavailable(f"agent {agent_name!r} is not known to this controller")
                agent.remove(engine_id)
            except (AgentUnavailable, AgentRejected) as exc:
                log.warning("replaced engine %s on agent %s not removed yet: %s", engine_id, agent_name, exc)
                continue
            self._record(engine_id, AMP_DELETED, None, None)
            log.info("replaced engine %s of load balancer %s removed", engine_id, lb_id)

    def _place(self, lb_id: str, *, create: bool) -> tuple[str | None, str]:
        """The engine (amphora id) and agent of `lb_id`; a new one on the least loaded agent if it has none."""
        with self.db.write() as session:
            amp = session.scalars(
                select(m.Amphora).where(m.Amphora.load_balancer_id == lb_id, m.Amphora.status.in_(LIVE))
            ).first()
            if amp is not None:
                return amp.id, amp.compute_id or ""
            if not create:
                return None, ""
            if not self.agents:
                raise ApplyError("no agent is configured to run engines")
            load = dict(
                session.execute(
                    select(m.Amphora.compute_id, func.count())
                    .where(m.Amphora.status.in_(LIVE))
                    .group_by(m.Amphora.compute_id)
                ).all()
            )
            agent_name = min(self.agents, key=lambda name: (load.get(name, 0), name))
            amp = m.Amphora(load_balancer_id=lb_id, compute_id=agent_name, status=BOOTING, role="STANDALONE")
            if self.cert_expiration is not None:
                amp.cert_expiration = self.cert_expiration(agent_name)
            session.add(amp)
            session.flush()
            log.info("load balancer %s placed on agent %s as engine %s", lb_id, agent_name, amp.id)
            return amp.id, agent_name

    def _record(self, engine_id: str, status: str | None, report: EngineReport | None, reason: str | None) -> None:
        with self.db.write() as session:
            amp = session.get(m.Amphora, engine_id)
            if amp is None:
                return
            if status is not None:
                amp.status = status
            if report is not None:
                amp.applied_revision = report.revision
                amp.lb_network_ip = report.lb_network_ip or amp.lb_network_ip
            amp.status_reason = reason
