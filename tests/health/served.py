"""Load balancers served by a scripted agent, and heartbeats about their engines."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select

from quadriga.db import models as m
from quadriga.health.codec import Heartbeat, ListenerBeat, Payload
from tests.support.api_harness import Api


@dataclass
class Served:
    """One ACTIVE load balancer (an HTTP listener, a pool with two members) and its engine."""

    lb_id: str
    engine_id: str
    listener_id: str
    pool_id: str
    members: tuple[str, str]
    revision: int

    def beat(self, seq: int, *, boot: int = 1, **changes: object) -> Heartbeat:
        """A heartbeat of the engine: listener OPEN with 1 connection and 100/200 bytes, members UP/DOWN."""
        values: dict[str, object] = {
            "loadbalancer_id": self.lb_id,
            "revision": self.revision,
            "running": True,
            "listeners": {
                self.listener_id: ListenerBeat(
                    status="OPEN", bytes_in=100, bytes_out=200, total_connections=1, active_connections=seq
                )
            },
            "members": {self.pool_id: {self.members[0]: "UP", self.members[1]: "DOWN"}},
        }
        values.update(changes)
        return Heartbeat("k1", self.engine_id, boot, seq, time.time(), Payload.model_validate(values))


def serve_lb(api: Api, name: str = "lb") -> Served:
    pool = {
        "name": "p",
        "protocol": "HTTP",
        "lb_algorithm": "ROUND_ROBIN",
        "members": [{"address": "10.0.0.10", "protocol_port": 80}, {"address": "10.0.0.11", "protocol_port": 80}],
    }
    lb = api.create_lb(
        name=name, provider="amphora", listeners=[{"protocol": "HTTP", "protocol_port": 80, "default_pool": pool}]
    )
    with api.db.read() as s:
        amp = s.scalars(select(m.Amphora).where(m.Amphora.load_balancer_id == lb["id"])).one()
        listener = s.scalars(select(m.Listener).where(m.Listener.load_balancer_id == lb["id"])).one()
        pool_row = s.scalars(select(m.Pool).where(m.Pool.load_balancer_id == lb["id"])).one()
        members = sorted(mb.id for mb in pool_row.members)
        revision = s.get(m.LoadBalancer, lb["id"]).revision
    return Served(lb["id"], amp.id, listener.id, pool_row.id, (members[0], members[1]), revision)


def operating(api: Api, served: Served) -> dict[str, str]:
    """Operating status of the load balancer, listener, pool and both members, by those names."""
    with api.db.read() as s:
        return {
            "lb": s.get(m.LoadBalancer, served.lb_id).operating_status,
            "listener": s.get(m.Listener, served.listener_id).operating_status,
            "pool": s.get(m.Pool, served.pool_id).operating_status,
            "member0": s.get(m.Member, served.members[0]).operating_status,
            "member1": s.get(m.Member, served.members[1]).operating_status,
        }


def statistics(api: Api, served: Served) -> dict[str, int]:
    with api.db.read() as s:
        row = s.get(m.ListenerStatistics, (served.listener_id, served.engine_id))
        if row is None:
            return {}
        names = ("bytes_in", "bytes_out", "total_connections", "active_connections")
        return {name: getattr(row, name) for name in names}
