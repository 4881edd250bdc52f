"""The `amphora` provider: quadriga's own data plane, HAProxy engines run by agents.

The API-time hooks refuse what an engine could never serve (a VIP the network driver cannot reach, an L7
regular expression HAProxy cannot compile) with a 400, so nothing broken is stored. `apply` is the
controller's half: it places the load balancer on agents, builds the engines' whole declarative spec and pushes
it over the agents' mutual-TLS API. The agent answers only once the config is live, so the controller marks
objects ACTIVE only when traffic can flow. Placement is recorded in the amphorae table before the push, so a
controller that dies mid-way finds the same engines again on its next pass (every step is idempotent).

Topology comes from the load balancer's flavor (`loadbalancer_topology`, as in Octavia): SINGLE is one engine
(role STANDALONE); ACTIVE_STANDBY is two engines, MASTER and BACKUP, each with an address of its own on the VIP
network (a port of the embedded network, `vrrp_port_id`/`vrrp_ip`), sharing the VIPs (`ha_ip`) through
keepalived and their stick tables through HAProxy's peers. Their specs differ only in `ha`. A failover replaces
one engine: the survivor keeps serving (and is told its new peer first), the replacement takes the lost role.

TLS refs are read through `tls` (TLSMaterial) at every apply, so a certificate renewed behind its ref is
served at the next change. Content that cannot be served (a deleted secret, a certificate that no longer
loads) rejects the change, and the engines keep serving their last good config; a key manager that cannot
be reached is retried."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from quadriga import constants as c
from quadriga.agent.client import AgentRejected, AgentStale, AgentUnavailable
from quadriga.api.errors import Validation
from quadriga.certs.tls import CertificateError, TLSMaterial
from quadriga.db import models as m
from quadriga.db.session import Database
from quadriga.engine.build import UnsupportedFeature, spec_from_loadbalancer
from quadriga.engine.regex import regex_error
from quadriga.engine.render import tls_options_error
from quadriga.engine.report import EngineReport
from quadriga.engine.spec import (
    SUPPORTED_LISTENER_PROTOCOLS,
    SUPPORTED_POOL_PROTOCOLS,
    EngineSpec,
    HASpec,
)
from quadriga.keymanager import KeyManagerUnavailable, SecretNotFound
from quadriga.network import embedded
from quadriga.providers.base import ApplyError, ProviderDriver, RejectedChange, UnsupportedOption
from quadriga.providers.noop import AZ_METADATA, FLAVOR_METADATA

log = logging.getLogger("quadriga.provider.engine")

# The amphora statuses Octavia uses for the engines' life cycle. An engine being replaced (failover) is
# PENDING_DELETE: the next apply places a new engine, and removes the old one once the new one serves.
BOOTING, ALLOCATED, AMP_ERROR, AMP_DELETED = "BOOTING", "ALLOCATED", "ERROR", "DELETED"
AMP_PENDING_DELETE = "PENDING_DELETE"
LIVE = (BOOTING, ALLOCATED, AMP_ERROR)

SINGLE, ACTIVE_STANDBY = "SINGLE", "ACTIVE_STANDBY"
TOPOLOGIES = (SINGLE, ACTIVE_STANDBY)
STANDALONE, MASTER, BACKUP = "STANDALONE", "MASTER", "BACKUP"
PRIORITY = {MASTER: 100, BACKUP: 90}  # keepalived's; the higher wins the first election
VRID = 1  # VRRP router id: unicast between the two engines of a pair, so one id serves every pair


def topology_of(session: Session, flavor_id: str | None) -> str:
    """The `loadbalancer_topology` of a flavor's profile; SINGLE without a flavor or without that key."""
    flavor = session.get(m.Flavor, flavor_id) if flavor_id else None
    if flavor is None:
        return SINGLE
    try:
        data = json.loads(flavor.flavor_profile.flavor_data or "{}")
    except ValueError:
        return SINGLE  # the flavor API accepts JSON objects only
    return str(data.get("loadbalancer_topology") or SINGLE)


@dataclass(frozen=True)
class Placed:
    """One engine of a load balancer, as placed: where it runs and its ACTIVE_STANDBY part."""

    engine_id: str
    agent: str
    new: bool  # never confirmed serving: pushed after the engines that do
    role: str
    ha_address: str | None = None
    priority: int | None = None


def _ha_parts(engines: list[Placed]) -> dict[str, HASpec | None]:
    """Each engine's HASpec: mirrored for the two engines of a pair, None for a SINGLE engine."""
    if len(engines) != 2 or any(e.ha_address is None for e in engines):
        return {e.engine_id: None for e in engines}
    a, b = engines
    return {
        mine.engine_id: HASpec.model_validate(
            {
                "role": mine.role,
                "priority": mine.priority or PRIORITY.get(mine.role, PRIORITY[BACKUP]),
                "vrid": VRID,
                "name": mine.engine_id,
                "address": mine.ha_address,
                "peer_name": peer.engine_id,
                "peer_address": peer.ha_address,
            }
        )
        for mine, peer in ((a, b), (b, a))
    }


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
        active_standby_unavailable: str | None = None,
        tls: TLSMaterial | None = None,
    ) -> None:
        self.db = db
        self.tls = tls  # None: TLS listeners and pools with refs are refused
        self.agents = agents
        self.check_vip = check_vip
        self.cert_expiration = cert_expiration
        self.active_standby_unavailable = active_standby_unavailable  # why ACTIVE_STANDBY cannot run here

    def get_supported_flavor_metadata(self) -> dict[str, str]:
        return FLAVOR_METADATA

    def get_supported_availability_zone_metadata(self) -> dict[str, str]:
        return AZ_METADATA

    def validate_flavor(self, flavor_data: dict[str, Any]) -> None:
        super().validate_flavor(flavor_data)
        topology = flavor_data.get("loadbalancer_topology", SINGLE)
        if topology not in TOPOLOGIES:
            raise Validation(f"loadbalancer_topology {topology!r} is not one of {', '.join(TOPOLOGIES)}")

    # --- API-time checks ---------------------------------------------------------------------------
    def loadbalancer_create(self, lb: m.LoadBalancer) -> None:
        session = object_session(lb)
        unavailable = self.active_standby_unavailable
        if unavailable and session is not None and topology_of(session, lb.flavor_id) == ACTIVE_STANDBY:
            raise Validation(f"ACTIVE_STANDBY topology (flavor {lb.flavor_id}): {unavailable}")
        if self.check_vip is not None:
            for address in [lb.vip_address] + [v.get("ip_address") for v in lb.additional_vips or []]:
                if not address:
                    continue
                reason = self.check_vip(address, None)
                if reason:
                    raise Validation(f"VIP {address}: {reason}")
        for li in lb.listeners:
            self._check_listener(li)
            for policy in li.l7policies:
                for rule in policy.rules:
                    self._check_rule(rule)
        for pool in lb.pools:
            self._check_pool(pool)

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

    def listener_create(self, listener: m.Listener) -> None:
        self._check_listener(listener)

    def listener_update(self, old: dict[str, Any], listener: m.Listener) -> None:
        self._check_listener(listener)

    def pool_create(self, pool: m.Pool) -> None:
        self._check_pool(pool)

    def pool_update(self, old: dict[str, Any], pool: m.Pool) -> None:
        self._check_pool(pool)

    # What the engine cannot carry (SCTP listeners and pools: this host's kernel has no SCTP sockets, so neither
    # HAProxy nor a user-space proxy can serve them; their health monitor type is refused for other pools already)
    # is refused now, with Octavia's answer for an option a provider does not support (501), not accepted and then
    # failed at the apply: the load balancer would go to ERROR, and stay unable to take any other change while
    # the object is in its tree. UDP is served by the engine's UDP proxy.
    def _check_listener(self, listener: m.Listener) -> None:
        if listener.protocol not in SUPPORTED_LISTENER_PROTOCOLS:
            self._unsupported(f"listener protocol {listener.protocol}")
        self._check_tls_options(listener)

    def _check_pool(self, pool: m.Pool) -> None:
        if pool.protocol not in SUPPORTED_POOL_PROTOCOLS:
            self._unsupported(f"pool protocol {pool.protocol}")
        self._check_tls_options(pool)

    def _unsupported(self, what: str) -> None:
        raise UnsupportedOption(
            f"Provider '{self.name}' does not support a requested option: {what} (the engine's kernel has no SCTP "
            "sockets, so it cannot carry SCTP)"
        )

    def _check_tls_options(self, obj: m.Listener | m.Pool) -> None:
        """A TLS listener without a default certificate, tls_versions and tls_ciphers the engine could not serve
        are a 400 now, not an ERROR at the apply."""
        uses_tls = obj.tls_enabled if isinstance(obj, m.Pool) else obj.protocol in c.TLS_LISTENER_PROTOCOLS
        if uses_tls and isinstance(obj, m.Listener) and not obj.default_tls_container_ref:
            raise Validation(
                "A TERMINATED_HTTPS listener of this provider needs a default_tls_container_ref: the certificate "
                "served to clients whose server name matches no SNI certificate."
            )
        if uses_tls and (error := tls_options_error(obj.tls_versions or (), obj.tls_ciphers)):
            raise Validation(f"{type(obj).__name__} {obj.id}: {error}")

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
            spec = spec_from_loadbalancer(lb, self.tls)
        except KeyManagerUnavailable as exc:
            raise ApplyError(f"the key manager is unavailable: {exc}") from exc
        except SecretNotFound as exc:
            raise RejectedChange(f"a TLS secret of load balancer {lb.id} is gone: {exc}") from exc
        except (UnsupportedFeature, CertificateError, ValueError) as exc:
            raise RejectedChange(str(exc)) from exc
        deleting = lb.provisioning_status == c.PENDING_DELETE
        session = object_session(lb)
        topology = topology_of(session, lb.flavor_id) if session is not None else SINGLE
        engines = self._place(lb.id, topology, create=not deleting)
        if deleting:
            for engine in engines:
                self._push(engine, None)
            self._retire_replaced(lb.id)
            return
        ha = _ha_parts(engines)
        # Engines that serve first: a survivor learns its new peer before the replacement starts advertising.
        for engine in sorted(engines, key=lambda e: e.new):
            self._push(engine, spec.model_copy(update={"ha": ha[engine.engine_id]}))
        self._retire_replaced(lb.id)

    def _push(self, engine: Placed, spec: EngineSpec | None) -> None:
        """Make `engine` serve `spec`, or remove it (None)."""
        agent = self.agents.get(engine.agent)
        engine_id = engine.engine_id
        if agent is None:
            raise ApplyError(f"engine {engine_id} lives on agent {engine.agent!r}, which this controller does not know")
        try:
            if spec is None:
                agent.remove(engine_id)
                self._record(engine_id, AMP_DELETED, None, None)
                return
            report = agent.apply(engine_id, spec)
        except AgentRejected as exc:
            self._record(engine_id, None, None, str(exc))
            revision = spec.revision if spec else "removal"
            raise RejectedChange(f"engine {engine_id} refused revision {revision}: {exc}") from exc
        except AgentStale as exc:
            raise ApplyError(f"engine {engine_id} runs a newer revision than {spec and spec.revision}: {exc}") from exc
        except AgentUnavailable as exc:
            raise ApplyError(f"agent {engine.agent} unavailable: {exc}") from exc
        self._record(engine_id, ALLOCATED, report, None)

    def _retire_replaced(self, lb_id: str) -> None:
        """Remove the engines a failover replaced, now that their successor serves. An agent that cannot be
        reached keeps its engine PENDING_DELETE, to be retried at the next apply."""
        with self.db.read() as session:
            doomed = [
                (amp.id, amp.agent or "")
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

    def _place(self, lb_id: str, topology: str, *, create: bool) -> list[Placed]:
        """The engines of `lb_id`, placing the missing ones (one for SINGLE; MASTER and BACKUP for
        ACTIVE_STANDBY, each replacing a lost one in its role) on the least loaded agents."""
        with self.db.write() as session:
            live = list(
                session.scalars(
                    select(m.Amphora)
                    .where(m.Amphora.load_balancer_id == lb_id, m.Amphora.status.in_(LIVE))
                    .order_by(m.Amphora.created_at, m.Amphora.id)
                )
            )
            roles = [STANDALONE] if topology == SINGLE else [MASTER, BACKUP]
            if create:
                for role in roles:
                    if not any(amp.role == role for amp in live):
                        live.append(self._new_engine(session, lb_id, role, avoid={a.agent for a in live}))
            return [
                Placed(
                    engine_id=amp.id,
                    agent=amp.agent or "",
                    new=amp.applied_revision is None,
                    role=amp.role or STANDALONE,
                    ha_address=amp.vrrp_ip if amp.role in (MASTER, BACKUP) else None,
                    priority=amp.vrrp_priority,
                )
                for amp in live
            ]

    def _new_engine(self, session: Session, lb_id: str, role: str, avoid: set[str | None]) -> m.Amphora:
        """A new engine row on the least loaded agent (another one than its peer's, when there is one); an
        ACTIVE_STANDBY engine also gets its own address on the VIP's subnet."""
        if not self.agents:
            raise ApplyError("no agent is configured to run engines")
        load = dict(
            session.execute(
                select(m.Amphora.agent, func.count()).where(m.Amphora.status.in_(LIVE)).group_by(m.Amphora.agent)
            ).all()
        )
        agent_name = min(self.agents, key=lambda name: (name in avoid, load.get(name, 0), name))
        engine_id = m.new_id()
        amp = m.Amphora(
            id=engine_id, load_balancer_id=lb_id, compute_id=engine_id, agent=agent_name, status=BOOTING, role=role
        )
        if self.cert_expiration is not None:
            amp.cert_expiration = self.cert_expiration(agent_name)
        lb = session.get(m.LoadBalancer, lb_id)
        if role == STANDALONE and lb is not None:
            # As Octavia's amphora: ha_* is the VIP, vrrp_* the engine's own port on the VIP network, which for
            # an engine holding the VIP itself is the VIP's port (released with the load balancer, not with it).
            amp.vrrp_port_id, amp.vrrp_ip = lb.vip_port_id, lb.vip_address
            amp.ha_port_id, amp.ha_ip = lb.vip_port_id, lb.vip_address
        if role != STANDALONE:
            subnet = session.get(m.Subnet, lb.vip_subnet_id) if lb and lb.vip_subnet_id else None
            if lb is None or subnet is None:
                raise RejectedChange(f"load balancer {lb_id} has no VIP subnet for its ACTIVE_STANDBY engines")
            try:
                port = embedded.create_port(
                    session,
                    subnet.network,
                    lb.project_id,
                    [embedded.IpRequest(subnet_id=subnet.id)],
                    name=f"octavia-lb-vrrp-{amp.id}",
                    device_owner=embedded.VIP_OWNER,
                    device_id=amp.id,
                    managed=True,
                )
            except embedded.NetError as exc:
                raise RejectedChange(f"no address for an ACTIVE_STANDBY engine on subnet {subnet.id}: {exc}") from exc
            amp.vrrp_port_id, amp.vrrp_ip, amp.ha_ip, amp.ha_port_id = (
                port.id,
                port.fixed_ips[0].ip_address,
                lb.vip_address,
                lb.vip_port_id,
            )
            amp.vrrp_id, amp.vrrp_priority = VRID, PRIORITY[role]
        session.add(amp)
        session.flush()
        log.info("load balancer %s placed on agent %s as engine %s (%s)", lb_id, agent_name, amp.id, role)
        return amp

    def _record(self, engine_id: str, status: str | None, report: EngineReport | None, reason: str | None) -> None:
        with self.db.write() as session:
            amp = session.get(m.Amphora, engine_id)
            if amp is None:
                return
            if status is not None:
                amp.status = status
            if status == AMP_DELETED and amp.vrrp_port_id and amp.vrrp_port_id != amp.ha_port_id:
                embedded.release_vip(session, amp.vrrp_port_id)  # its own address on the VIP network
                amp.vrrp_port_id = None
            if report is not None:
                amp.applied_revision = report.revision
                amp.lb_network_ip = report.lb_network_ip or amp.lb_network_ip
            amp.status_reason = reason
