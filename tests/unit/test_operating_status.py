"""Octavia's operating-status rules, applied to what HAProxy reports (quadriga.status.operating)."""

from __future__ import annotations

import pytest

from quadriga import status
from quadriga.db import models as m
from quadriga.engine.report import EngineReport, ListenerReport


def tree(*, monitor: bool = True, members: int = 3) -> m.LoadBalancer:
    lb = m.LoadBalancer(id="lb", admin_state_up=True)
    pool = m.Pool(id="pool", admin_state_up=True)
    pool.members = [m.Member(id=f"m{n}", admin_state_up=True) for n in range(members)]
    if monitor:
        pool.health_monitor = m.HealthMonitor(id="hm", admin_state_up=True)
    listener = m.Listener(id="li", admin_state_up=True, default_pool_id="pool")
    lb.listeners = [listener]
    lb.pools = [pool]
    return lb


def report(member_states: list[str], listener: str = "OPEN", running: bool = True) -> EngineReport:
    return EngineReport(
        engine_id="e",
        loadbalancer_id="lb",
        revision=1,
        running=running,
        listeners={"li": ListenerReport(status=listener)},
        members={"pool": {f"m{n}": s for n, s in enumerate(member_states)}},
    )


@pytest.mark.parametrize(
    ("haproxy", "octavia"),
    [
        ("UP", "ONLINE"),
        ("UP 1/3", "ONLINE"),
        ("DOWN", "ERROR"),
        ("DOWN 1/2", "ERROR"),
        ("DRAIN", "DRAINING"),
        ("NOLB", "DRAINING"),
        ("MAINT", "OFFLINE"),
        ("MAINT (via x/y)", "OFFLINE"),
        ("no check", "NO_MONITOR"),
        (None, "OFFLINE"),
    ],
)
def test_member_status_words(haproxy, octavia):
    assert status.member_operating(haproxy) == octavia


def test_all_up_is_online_everywhere():
    got = status.operating(tree(), report(["UP", "UP", "UP"]))
    assert got == {"li": "ONLINE", "pool": "ONLINE", "m0": "ONLINE", "m1": "ONLINE", "m2": "ONLINE", "lb": "ONLINE"}


def test_one_member_down_degrades_pool_and_load_balancer():
    got = status.operating(tree(), report(["UP", "DOWN", "UP"]))
    assert (got["m1"], got["pool"], got["lb"]) == ("ERROR", "DEGRADED", "DEGRADED")


def test_every_member_down_is_pool_and_load_balancer_error():
    got = status.operating(tree(), report(["DOWN", "DOWN", "MAINT"]))
    assert (got["pool"], got["lb"], got["m2"]) == ("ERROR", "ERROR", "OFFLINE")


def test_full_listener_is_degraded():
    got = status.operating(tree(), report(["UP", "UP", "UP"], listener="FULL"))
    assert (got["li"], got["lb"]) == ("DEGRADED", "DEGRADED")


def test_no_engine_running_is_load_balancer_error_and_children_offline():
    got = status.operating(tree(), None)
    assert got["lb"] == "ERROR"
    assert {got[k] for k in ("li", "pool", "m0")} == {"OFFLINE"}


def test_monitors_and_l7_are_not_measured():
    # Octavia's health manager never touches them: ONLINE (or OFFLINE when disabled) from their activation on,
    # also on a pool no listener reaches, and whatever the engine reports.
    lb = tree()
    policy = m.L7Policy(id="pol", admin_state_up=True, rules=[m.L7Rule(id="rule", admin_state_up=True)])
    lb.listeners[0].l7policies = [policy]
    for reported in (report(["UP"] * 3), report([]).model_copy(update={"members": {}}), None):
        assert not {"hm", "pol", "rule"} & set(status.operating(lb, reported))


def test_disabled_load_balancer_is_offline():
    lb = tree()
    lb.admin_state_up = False
    assert status.operating(lb, report(["UP"] * 3))["lb"] == "OFFLINE"


def test_pool_no_listener_reaches_is_offline_and_its_members_keep_their_status():
    # As Octavia's health manager: the pool goes OFFLINE; its members are left as they are (NO_MONITOR as
    # created without a monitor, OFFLINE with one), not reported on.
    lb = tree()
    got = status.operating(lb, report([]).model_copy(update={"members": {}}))
    assert (got["pool"], got["lb"]) == ("OFFLINE", "ONLINE") and not {"m0", "m1", "m2"} & set(got)


def test_a_member_the_engine_does_not_report_yet_is_offline_unless_no_monitor():
    lb = tree(members=2)
    lb.pools[0].members[0].operating_status = "NO_MONITOR"
    lb.pools[0].members[1].operating_status = "ONLINE"
    got = status.operating(lb, report([]).model_copy(update={"members": {"pool": {}}}))
    assert (got["m0"], got["m1"]) == ("NO_MONITOR", "OFFLINE")


@pytest.mark.parametrize(
    ("haproxy", "octavia"),
    [("UP", "DRAINING"), ("no check", "DRAINING"), ("DOWN", "ERROR"), ("MAINT", "OFFLINE"), ("DRAIN", "DRAINING")],
)
def test_a_member_of_weight_0_is_draining_while_it_could_serve(haproxy, octavia):
    # HAProxy keeps saying UP (or "no check") for a server of weight 0: it takes no new connections.
    assert status.member_operating(haproxy, weight=0) == octavia
    lb = tree()
    lb.pools[0].members[1].weight = 0
    assert status.operating(lb, report(["UP", haproxy, "UP"]))["m1"] == octavia


def test_a_listener_at_its_connection_limit_is_degraded():
    # HAProxy 2.6 still says OPEN for a frontend at its maxconn.
    lb = tree()
    lb.listeners[0].connection_limit = 2
    at_limit = report(["UP"] * 3).model_copy(
        update={"listeners": {"li": ListenerReport(status="OPEN", active_connections=2)}}
    )
    below = report(["UP"] * 3).model_copy(
        update={"listeners": {"li": ListenerReport(status="OPEN", active_connections=1)}}
    )
    assert (status.operating(lb, at_limit)["li"], status.operating(lb, at_limit)["lb"]) == ("DEGRADED", "DEGRADED")
    assert status.operating(lb, below)["li"] == "ONLINE"
    lb.listeners[0].connection_limit = -1  # unlimited
    assert status.operating(lb, at_limit)["li"] == "ONLINE"
