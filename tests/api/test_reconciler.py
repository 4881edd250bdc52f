"""The controller's reconcile loop: leases survive a dead controller, failures are bounded, and the
load balancer row lock is a real test-and-set under concurrency."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import select, update

from quadriga.controller.reconciler import Reconciler
from quadriga.db import models as m
from quadriga.providers.base import ApplyError, ProviderDriver

LB = "/v2/lbaas/loadbalancers"


class Failing(ProviderDriver):
    name = "noop"

    def __init__(self) -> None:
        self.calls = 0

    def apply(self, lb: m.LoadBalancer) -> None:
        self.calls += 1
        raise ApplyError("engine refused the config: bad bind")


def _lb_row(api, lb_id):
    with api.db.read() as s:
        return s.get(m.LoadBalancer, lb_id)


def test_a_lease_left_by_a_dead_controller_expires_and_the_work_completes(api):
    api.reconciler.stop()  # the "crashed" controller
    lb = api.ok(api.post(LB, {"loadbalancer": {"vip_subnet_id": api.subnet_id()}}), 201)["loadbalancer"]
    with api.db.write() as s:  # it had taken the lease just before dying
        s.execute(
            update(m.LoadBalancer)
            .where(m.LoadBalancer.id == lb["id"])
            .values(lease_owner="controller-dead", lease_expires_at=m.utcnow() + dt.timedelta(seconds=1))
        )
    survivor = Reconciler(api.db, {"noop": api.reconciler.providers["noop"]}, poll_interval=0.1)
    assert survivor.run_once() == 0  # the lease is still held
    survivor.start()
    try:
        assert api.wait_lb(lb["id"], timeout=10)["provisioning_status"] == "ACTIVE"
    finally:
        survivor.stop()
    row = _lb_row(api, lb["id"])
    assert row.applied_revision == row.revision and row.lease_owner is None


def test_failures_are_retried_then_the_subject_goes_to_error(api):
    lb = api.create_lb()
    api.reconciler.stop()
    failing = Failing()
    controller = Reconciler(api.db, {"noop": failing}, max_attempts=3, poll_interval=0.05)
    body = {"listener": {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}}
    listener = api.ok(api.post("/v2/lbaas/listeners", body), 201)["listener"]
    for _ in range(3):
        with api.db.write() as s:  # skip the backoff wait
            s.execute(update(m.LoadBalancer).values(lease_expires_at=None))
        controller.run_once()
    assert failing.calls == 3
    got = api.ok(api.get(f"/v2/lbaas/listeners/{listener['id']}"), 200)["listener"]
    assert got["provisioning_status"] == "ERROR"
    assert api.ok(api.get(f"{LB}/{lb['id']}"), 200)["loadbalancer"]["provisioning_status"] == "ACTIVE"
    assert "bad bind" in _lb_row(api, lb["id"]).status_reason
    # an ERROR object can still be deleted
    assert api.delete(f"/v2/lbaas/listeners/{listener['id']}").status_code == 204


def test_a_failed_create_puts_the_load_balancer_in_error_and_it_can_be_deleted(api):
    api.reconciler.stop()
    controller = Reconciler(api.db, {"noop": Failing()}, max_attempts=1)
    lb = api.ok(api.post(LB, {"loadbalancer": {"vip_subnet_id": api.subnet_id()}}), 201)["loadbalancer"]
    controller.run_once()
    assert api.ok(api.get(f"{LB}/{lb['id']}"), 200)["loadbalancer"]["provisioning_status"] == "ERROR"
    assert api.put(f"{LB}/{lb['id']}", {"loadbalancer": {"name": "x"}}).status_code == 409
    assert api.delete(f"{LB}/{lb['id']}").status_code == 204


def test_concurrent_changes_to_one_load_balancer_admit_exactly_one(api):
    lb = api.create_lb()
    api.reconciler.stop()  # keep it PENDING_UPDATE after the first change
    results: list[int] = []
    lock = threading.Lock()

    def add(port: int) -> None:
        body = {"listener": {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": port}}
        code = api.post("/v2/lbaas/listeners", body).status_code
        with lock:
            results.append(code)

    threads = [threading.Thread(target=add, args=(1000 + i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] + [409] * 7
    with api.db.read() as s:
        assert len(s.scalars(select(m.Listener.id)).all()) == 1
