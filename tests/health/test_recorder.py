"""The recorder: heartbeats become operating statuses and statistics, each heartbeat counted once however
many receivers deliver it; a partial heartbeat keeps member statuses; unknown engines are ignored; an engine
that lost its config gets it pushed again."""

from __future__ import annotations

import socket
import threading
import time

from sqlalchemy import select

from quadriga.db import models as m
from quadriga.health import recorder as recorder_module
from quadriga.health.codec import encode
from quadriga.health.receiver import HeartbeatReceiver
from quadriga.health.recorder import HeartbeatRecorder
from tests.health.helpers import KEY, KEYS, heartbeat, wait_for
from tests.health.served import operating, serve_lb, statistics
from tests.support.api_harness import Api
from tests.support.scripted_agent import ScriptedAgent


def test_heartbeats_set_operating_statuses_and_add_up_statistics(api: Api):
    served = serve_lb(api)
    with api.db.read() as s:
        changed = s.get(m.Amphora, served.engine_id).updated_at
    recorder = HeartbeatRecorder(api.db)
    recorder.record([served.beat(1), served.beat(2)])
    recorder.record([served.beat(3)])
    assert operating(api, served) == {
        "lb": "DEGRADED",
        "listener": "ONLINE",
        "pool": "DEGRADED",
        "member0": "ONLINE",
        "member1": "ERROR",
    }
    # deltas summed over three heartbeats; active connections is the last value, a gauge
    assert statistics(api, served) == {
        "bytes_in": 300,
        "bytes_out": 600,
        "total_connections": 3,
        "active_connections": 3,
    }
    stats = api.ok(api.get(f"/v2/lbaas/loadbalancers/{served.lb_id}/stats"), 200)["stats"]
    assert stats["bytes_in"] == 300 and stats["total_connections"] == 3
    with api.db.read() as s:
        amp = s.get(m.Amphora, served.engine_id)
        assert (amp.heartbeat_boot, amp.heartbeat_seq) == (1, 3) and amp.heartbeat_at is not None
        assert amp.updated_at == changed  # a heartbeat is no change of the amphora (its list and show agree)
    assert recorder.counters()["applied"] == 3


def test_each_heartbeat_counts_once_across_recorders_and_out_of_order(api: Api):
    served = serve_lb(api)
    first, second = HeartbeatRecorder(api.db), HeartbeatRecorder(api.db)
    first.record([served.beat(1), served.beat(2)])
    second.record([served.beat(2), served.beat(1), served.beat(3)])  # 1 and 2 were applied by the first
    first.record([served.beat(3)])
    assert statistics(api, served)["bytes_in"] == 300
    assert second.counters()["duplicate"] == 2 and first.counters()["duplicate"] == 1
    # a new boot of the sender starts its sequence again: newer, applied
    second.record([served.beat(1, boot=2)])
    assert statistics(api, served)["bytes_in"] == 400


def test_two_receivers_getting_every_heartbeat_record_each_once(api: Api):
    """As deployed: an agent sends every heartbeat to two receivers, each with its own recorder."""
    served = serve_lb(api)
    recorders = [HeartbeatRecorder(api.db), HeartbeatRecorder(api.db)]
    receivers = [HeartbeatReceiver(("127.0.0.1", 0), KEYS, r.record, flush_interval=0.02) for r in recorders]
    for receiver in receivers:
        receiver.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for seq in range(1, 21):
                datagram = encode(served.beat(seq), KEY)
                for receiver in receivers:
                    sock.sendto(datagram, receiver.address)
        assert wait_for(lambda: sum(r.counters().get("delivered", 0) for r in receivers) == 40, timeout=10)
    finally:
        for receiver in receivers:
            receiver.stop()
    applied = sum(r.counters().get("applied", 0) for r in recorders)
    duplicate = sum(r.counters().get("duplicate", 0) for r in recorders)
    assert (applied, duplicate) == (20, 20)
    assert statistics(api, served)["bytes_in"] == 20 * 100


def test_concurrent_recorders_never_count_twice(api: Api):
    served = serve_lb(api)
    batch = [served.beat(seq) for seq in range(1, 51)]
    recorders = [HeartbeatRecorder(api.db) for _ in range(4)]
    threads = [threading.Thread(target=r.record, args=(list(batch),)) for r in recorders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statistics(api, served)["bytes_in"] == 50 * 100


def test_a_partial_heartbeat_keeps_the_members_last_reported(api: Api):
    served = serve_lb(api)
    recorder = HeartbeatRecorder(api.db)
    recorder.record([served.beat(1)])
    before = operating(api, served)
    assert (before["member0"], before["member1"], before["pool"]) == ("ONLINE", "ERROR", "DEGRADED")
    listener = served.beat(2).payload.listeners[served.listener_id].model_copy(update={"status": "FULL"})
    recorder.record([served.beat(2, members={}, partial=True, listeners={served.listener_id: listener})])
    after = operating(api, served)
    assert (after["member0"], after["member1"], after["pool"]) == ("ONLINE", "ERROR", "DEGRADED")
    assert after["listener"] == "DEGRADED"  # what the partial heartbeat does carry is applied
    # the tree changes under unchanged HAProxy words (weight 0 keeps "UP"): the statuses follow the tree
    with api.db.write() as s:
        s.get(m.Member, served.members[0]).weight = 0
    recorder.record([served.beat(3, members={}, partial=True, revision=served.revision + 1)])
    assert operating(api, served)["member0"] == "DRAINING"
    # a recorder that never saw the members (just started) keeps the stored statuses
    fresh = HeartbeatRecorder(api.db)
    fresh.record([served.beat(4, members={}, partial=True, revision=served.revision + 2)])
    assert operating(api, served)["member0"] == "DRAINING" and operating(api, served)["member1"] == "ERROR"
    # full heartbeat then partial in one batch: the members of the full one count
    up = {served.pool_id: dict.fromkeys(served.members, "UP")}
    fresh.record([served.beat(5, members=up), served.beat(6, members={}, partial=True)])
    assert operating(api, served)["member1"] == "ONLINE"


def test_a_heartbeat_saying_haproxy_is_down_sets_error_and_is_no_sign_of_life(api: Api):
    served = serve_lb(api)
    recorder = HeartbeatRecorder(api.db)
    recorder.record([served.beat(1)])
    alive = recorder.last_serving(served.engine_id)
    assert alive is not None
    time.sleep(0.01)
    recorder.record([served.beat(2, running=False, listeners={}, members={}, error="haproxy died")])
    assert operating(api, served)["lb"] == "ERROR" and operating(api, served)["listener"] == "OFFLINE"
    assert recorder.last_serving(served.engine_id) == alive


def test_heartbeats_of_unknown_engines_are_counted_and_ignored(api: Api):
    served = serve_lb(api)
    recorder = HeartbeatRecorder(api.db)
    stranger = heartbeat("no-such-engine")
    recorder.record([stranger, served.beat(1)])
    assert recorder.counters()["unknown"] == 1 and recorder.counters()["applied"] == 1
    with api.db.read() as s:
        assert s.get(m.Amphora, "no-such-engine") is None
        assert {r.amphora_id for r in s.scalars(select(m.ListenerStatistics))} == {served.engine_id}


def test_an_engine_serving_an_older_revision_gets_its_config_again(api: Api, agent: ScriptedAgent):
    served = serve_lb(api)
    woken = threading.Event()
    recorder = HeartbeatRecorder(api.db, wake_reconciler=lambda: (woken.set(), api.reconciler.wake()))
    pushes = len(agent.applied)
    recorder.record([served.beat(1, revision=served.revision - 1)])
    assert woken.is_set() and recorder.counters()["stale_config"] == 1
    assert wait_for(lambda: len(agent.applied) == pushes + 1, timeout=10)
    engine_id, spec = agent.applied[-1]
    assert engine_id == served.engine_id and spec.revision == served.revision
    api.wait_lb(served.lb_id)
    lb = api.ok(api.get(f"/v2/lbaas/loadbalancers/{served.lb_id}"), 200)["loadbalancer"]
    assert lb["provisioning_status"] == "ACTIVE"
    # the same revision again is no loss
    recorder.record([served.beat(2)])
    assert recorder.counters()["stale_config"] == 1


def test_a_heartbeat_naming_another_load_balancer_is_not_applied(api: Api):
    served = serve_lb(api)
    recorder = HeartbeatRecorder(api.db)
    recorder.record([served.beat(1, loadbalancer_id="someone-else")])
    assert statistics(api, served) == {}


def test_unchanged_heartbeats_skip_the_status_pass_but_never_miss_a_change(api: Api):
    served = serve_lb(api)
    first, second = HeartbeatRecorder(api.db), HeartbeatRecorder(api.db)
    first.record([served.beat(1)])
    assert operating(api, served)["member1"] == "ERROR"
    all_up = {served.pool_id: dict.fromkeys(served.members, "UP")}
    second.record([served.beat(2, members=all_up)])  # another receiver's recorder writes newer statuses
    assert operating(api, served)["member1"] == "ONLINE"
    first.record([served.beat(3)])  # same as the first one wrote: still written, the row moved meanwhile
    assert operating(api, served)["member1"] == "ERROR"
    with api.db.write() as s:  # someone else's write without a heartbeat: a status the next key must not hide
        s.get(m.Member, served.members[1]).operating_status = "OFFLINE"
    first.record([served.beat(4, revision=served.revision + 1)])  # a tree change moves the revision
    assert operating(api, served)["member1"] == "ERROR"
    assert statistics(api, served)["bytes_in"] == 400  # statistics are written every time


def test_active_connections_count_for_statuses_only_at_the_connection_limit(api: Api, monkeypatch):
    """Active connections move all the time: below the listener's connection limit they change no status,
    so they load no tree; reaching the limit makes the listener DEGRADED."""
    served = serve_lb(api)
    with api.db.write() as s:
        s.get(m.Listener, served.listener_id).connection_limit = 3
    passes: list[set[str]] = []
    real = recorder_module._load_trees
    monkeypatch.setattr(recorder_module, "_load_trees", lambda s, ids: passes.append(set(ids)) or real(s, ids))
    recorder = HeartbeatRecorder(api.db)
    recorder.record([served.beat(1)])  # the helper's active connections are the seq: 1
    assert operating(api, served)["listener"] == "ONLINE" and passes[-1] == {served.lb_id}
    recorder.record([served.beat(2)])
    assert passes[-1] == set() and statistics(api, served)["active_connections"] == 2
    recorder.record([served.beat(3)])
    assert operating(api, served)["listener"] == "DEGRADED" and passes[-1] == {served.lb_id}
    assert operating(api, served)["lb"] == "DEGRADED"
