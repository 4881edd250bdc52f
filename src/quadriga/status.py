"""Octavia's provisioning-status rules, in one place.

The API side (`lock_for_change`, `mark_change`) runs inside a write transaction: it locks the load
balancer row, refuses changes while it is not ACTIVE (409), and marks the object and its parents
PENDING_* together with the desired state. The controller side (`complete`, `fail`) runs once the
data plane has (or has not) taken the change: pending objects become ACTIVE, deleted ones disappear,
and on failure the subject of the change goes to ERROR while its parents return to ACTIVE."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from quadriga import constants as c
from quadriga.api.errors import Immutable, NotFound
from quadriga.db import models as m
from quadriga.network import embedded

log = logging.getLogger("quadriga.status")

# The kinds of object in a load balancer's tree (also the quota resource names); the subject of a change
# is recorded on the load balancer as "<kind>:<id>".
KINDS: dict[str, Any] = {
    "loadbalancer": m.LoadBalancer,
    "listener": m.Listener,
    "pool": m.Pool,
    "member": m.Member,
    "healthmonitor": m.HealthMonitor,
    "l7policy": m.L7Policy,
    "l7rule": m.L7Rule,
}
LABELS = {
    "loadbalancer": "Load Balancer",
    "listener": "Listener",
    "pool": "Pool",
    "member": "Member",
    "healthmonitor": "Health Monitor",
    "l7policy": "L7 Policy",
    "l7rule": "L7 Rule",
}
# Objects whose operating status is set when a change to them is applied, not measured: ONLINE when enabled
# (Octavia's amphora flows do the same, and tempest expects it of every provider, noop included).
SET_ON_ACTIVATION = (m.HealthMonitor, m.L7Policy, m.L7Rule)


def lock_loadbalancer(session: Session, lb_id: str, *, deleting: bool = False) -> m.LoadBalancer:
    """Take the load balancer's row lock and check that it accepts a change (the test half of
    Octavia's test-and-set). A DELETE is also accepted from ERROR."""
    lb = session.scalars(select(m.LoadBalancer).where(m.LoadBalancer.id == lb_id).with_for_update()).one_or_none()
    if lb is None or lb.provisioning_status == c.DELETED:
        raise NotFound("Load Balancer", lb_id)
    allowed = (c.ACTIVE, c.ERROR) if deleting else (c.ACTIVE,)
    if lb.provisioning_status not in allowed:
        raise Immutable("Load Balancer", lb.id)
    return lb


def require_active(obj: Any, kind: str) -> None:
    """A parent (pool, listener, policy) must be ACTIVE for a child to change under it."""
    if obj.provisioning_status != c.ACTIVE:
        raise Immutable(LABELS[kind], obj.id)


def mark_change(lb: m.LoadBalancer, kind: str, subject: Any, action: str, parents: Iterable[Any] = ()) -> None:
    """Record an accepted change: the subject goes PENDING_<action>, its parents and the load balancer
    PENDING_UPDATE, and the desired revision moves on so the controller picks it up."""
    subject.provisioning_status = {"create": c.PENDING_CREATE, "update": c.PENDING_UPDATE, "delete": c.PENDING_DELETE}[
        action
    ]
    for parent in parents:
        if parent is not subject and parent is not lb:
            parent.provisioning_status = c.PENDING_UPDATE
    if subject is not lb:
        lb.provisioning_status = c.PENDING_UPDATE
    lb.revision += 1
    lb.pending_subject = f"{kind}:{subject.id}"
    lb.apply_attempts = 0
    lb.status_reason = None


def tree(lb: m.LoadBalancer) -> Iterator[Any]:
    """Every object of a load balancer's tree, parents before children."""
    yield lb
    yield from lb.listeners
    for li in lb.listeners:
        for pol in li.l7policies:
            yield pol
            yield from pol.rules
    for p in lb.pools:
        yield p
        if p.health_monitor:
            yield p.health_monitor
        yield from p.members


def complete(session: Session, lb: m.LoadBalancer) -> None:
    """The data plane runs the desired state: settle every pending object."""
    if lb.provisioning_status == c.PENDING_DELETE:
        purge_tree(session, lb)
        embedded.release_vip(session, lb.vip_port_id)
        lb.provisioning_status = c.DELETED
        lb.operating_status = c.OFFLINE
    else:
        doomed = [o for o in tree(lb) if o.provisioning_status == c.PENDING_DELETE]
        for obj in reversed(doomed):
            delete_object(session, obj)
        for obj in tree(lb):
            if obj.provisioning_status in (c.PENDING_CREATE, c.PENDING_UPDATE):
                obj.provisioning_status = c.ACTIVE
                if isinstance(obj, SET_ON_ACTIVATION):
                    obj.operating_status = c.ONLINE if obj.admin_state_up else c.OFFLINE
    lb.applied_revision = lb.revision
    lb.pending_subject = None
    lb.apply_attempts = 0
    lb.status_reason = None


def fail(session: Session, lb: m.LoadBalancer, reason: str) -> None:
    """The change could not be applied: its subject goes to ERROR, everything else pending back to ACTIVE."""
    kind, _, subject_id = (lb.pending_subject or "loadbalancer:" + lb.id).partition(":")
    for obj in tree(lb):
        if obj.provisioning_status not in c.PENDING_STATUSES:
            continue
        is_subject = obj.id == subject_id or obj is lb and kind == "loadbalancer"
        obj.provisioning_status = c.ERROR if is_subject else c.ACTIVE
    lb.applied_revision = lb.revision
    lb.pending_subject = None
    lb.status_reason = reason
    log.error("change to load balancer %s failed: %s", lb.id, reason)


def delete_object(session: Session, obj: Any) -> None:
    """Remove one object and everything beneath it, with its tags."""
    if isinstance(obj, m.Listener):
        for pol in list(obj.l7policies):
            delete_object(session, pol)
    elif isinstance(obj, m.L7Policy):
        for rule in list(obj.rules):
            delete_object(session, rule)
    elif isinstance(obj, m.Pool):
        session.execute(update(m.Listener).where(m.Listener.default_pool_id == obj.id).values(default_pool_id=None))
        if obj.health_monitor:
            delete_object(session, obj.health_monitor)
        for mb in list(obj.members):
            delete_object(session, mb)
    session.execute(delete(m.Tag).where(m.Tag.resource_id == obj.id))
    session.delete(obj)
    session.flush()


def purge_tree(session: Session, lb: m.LoadBalancer) -> None:
    """Delete all children of a load balancer (a cascade delete); the row itself stays as DELETED."""
    for li in list(lb.listeners):
        li.default_pool_id = None
    session.flush()
    for li in list(lb.listeners):
        delete_object(session, li)
    for p in list(lb.pools):
        delete_object(session, p)
    session.expire(lb, ["listeners", "pools"])


# --- operating statuses: what the data plane reports, in Octavia's words ---------------------------

# HAProxy's server status words (`show stat`; the first word counts: "UP 1/3" is still up, going down).
MEMBER_STATUS = {
    "UP": c.ONLINE,
    "DOWN": c.ERROR,
    "DRAIN": c.DRAINING,
    "NOLB": c.DRAINING,  # up, but weight 0: takes no new connections
    "MAINT": c.OFFLINE,
    "no": c.NO_MONITOR,  # "no check"
}
LISTENER_STATUS = {"OPEN": c.ONLINE, "FULL": c.DEGRADED, "STOP": c.OFFLINE}


def member_operating(haproxy_status: str | None, weight: int | None = None) -> str:
    """A member's status from HAProxy's word for its server. HAProxy says DRAIN only for a server put in
    drain mode; one of weight 0 stays UP (or "no check") although it takes no new connections, which is
    what Octavia calls DRAINING."""
    if not haproxy_status:
        return c.OFFLINE
    found = MEMBER_STATUS.get(haproxy_status.split()[0], c.ERROR)
    if weight == 0 and found in (c.ONLINE, c.NO_MONITOR):
        return c.DRAINING
    return found


def listener_operating(state: Any | None, connection_limit: int | None) -> str:
    """A listener's status from its frontend's report. HAProxy 2.6 reports a frontend that reached its maxconn
    as OPEN still (only per-socket stats say FULL), so a listener whose connection_limit is reached by the
    current connections HAProxy counts is FULL, i.e. DEGRADED, too."""
    if state is None:
        return c.OFFLINE
    found = LISTENER_STATUS.get(state.status, c.OFFLINE)
    if found == c.ONLINE and connection_limit and connection_limit > 0 and state.active_connections >= connection_limit:
        return c.DEGRADED
    return found


def pool_operating(pool: m.Pool, member_statuses: list[str]) -> str:
    """ERROR when no enabled member can serve, DEGRADED when some cannot, else ONLINE."""
    if not pool.admin_state_up:
        return c.OFFLINE
    enabled = [s for s in member_statuses if s != c.OFFLINE]
    failed = [s for s in enabled if s == c.ERROR]
    if enabled and len(failed) == len(enabled):
        return c.ERROR
    return c.DEGRADED if failed else c.ONLINE


def operating(lb: m.LoadBalancer, report: Any | None, *, keep_members: bool = False) -> dict[str, str]:
    """The operating status of every object of `lb`'s tree (by id) given its engine's report (an
    `EngineReport` or a heartbeat's payload, or None when no engine reports for it: everything is then
    OFFLINE, or ERROR for an enabled load balancer whose engine is gone). `keep_members`: the report leaves
    the members out (a partial heartbeat), so members and pools keep their last statuses. Health monitors and
    L7 policies and rules are not measured (SET_ON_ACTIVATION), as Octavia's health manager leaves them be."""
    result: dict[str, str] = {}
    running = report is not None and report.running
    listeners = {} if not running else report.listeners
    members = {} if not running else report.members
    degraded = failed = False
    for li in lb.listeners:
        result[li.id] = listener_operating(listeners.get(li.id), li.connection_limit)
        degraded |= result[li.id] == c.DEGRADED
    for pool in lb.pools:
        reported = members.get(pool.id)
        if running and keep_members:
            result.update({obj.id: obj.operating_status for obj in [*pool.members, pool]})
            degraded |= pool.operating_status == c.DEGRADED
            failed |= pool.operating_status == c.ERROR
            continue
        if reported is None:  # no engine, or no listener reaches this pool: nothing serves it
            result[pool.id] = c.OFFLINE
            if not running:
                result.update(dict.fromkeys((mb.id for mb in pool.members), c.OFFLINE))
            # else, as Octavia's health manager: the members keep their status (NO_MONITOR as created)
        else:
            for mb in pool.members:
                if mb.id in reported:
                    result[mb.id] = member_operating(reported[mb.id], mb.weight)
                else:  # not in the engine's config yet: as Octavia, OFFLINE unless NO_MONITOR
                    result[mb.id] = c.NO_MONITOR if mb.operating_status == c.NO_MONITOR else c.OFFLINE
            result[pool.id] = pool_operating(pool, [result[mb.id] for mb in pool.members])
            degraded |= result[pool.id] == c.DEGRADED
            failed |= result[pool.id] == c.ERROR
    if not lb.admin_state_up:
        result[lb.id] = c.OFFLINE
    elif not running or failed:  # no engine, or a pool whose every member is down (as Octavia)
        result[lb.id] = c.ERROR
    else:
        result[lb.id] = c.DEGRADED if degraded else c.ONLINE
    return result
