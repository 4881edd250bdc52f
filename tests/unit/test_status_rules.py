"""Octavia's status rules on plain objects: what a change marks, and how success and failure settle."""

from __future__ import annotations

from quadriga import status
from quadriga.db import models as m


def make_tree():
    lb = m.LoadBalancer(id="lb", provisioning_status="ACTIVE", revision=3, applied_revision=3)
    listener = m.Listener(id="li", provisioning_status="ACTIVE")
    pool = m.Pool(id="po", provisioning_status="ACTIVE")
    member = m.Member(id="me", provisioning_status="ACTIVE")
    lb.listeners, lb.pools, pool.members = [listener], [pool], [member]
    return lb, listener, pool, member


def test_a_child_change_marks_the_subject_its_parents_and_bumps_the_revision():
    lb, listener, pool, member = make_tree()
    status.mark_change(lb, "member", member, "update", [pool, listener])
    assert (member.provisioning_status, pool.provisioning_status) == ("PENDING_UPDATE", "PENDING_UPDATE")
    assert (listener.provisioning_status, lb.provisioning_status) == ("PENDING_UPDATE", "PENDING_UPDATE")
    assert lb.revision == 4 and lb.pending_subject == "member:me"


def test_failure_puts_only_the_subject_in_error():
    lb, listener, pool, member = make_tree()
    status.mark_change(lb, "member", member, "update", [pool, listener])
    status.fail(None, lb, "haproxy -c said no")
    assert member.provisioning_status == "ERROR"
    assert {lb.provisioning_status, listener.provisioning_status, pool.provisioning_status} == {"ACTIVE"}
    assert lb.status_reason == "haproxy -c said no" and lb.applied_revision == lb.revision


def test_a_failed_load_balancer_create_is_error():
    lb, *_ = make_tree()
    lb.provisioning_status = "PENDING_CREATE"
    lb.pending_subject = "loadbalancer:lb"
    status.fail(None, lb, "no engine")
    assert lb.provisioning_status == "ERROR"
