"""What an agent reports about one engine: the revision it runs and HAProxy's own view of its objects.

This is the agent -> controller half of the contract (`spec.py` is the other half). Statuses are HAProxy's
words, unchanged (`show stat`'s `status` column); `quadriga.status.operating` turns them into Octavia's
operating statuses, so the rules live in one place."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenerReport(_Report):
    status: str  # the frontend's: OPEN, FULL or STOP
    bytes_in: int = 0
    bytes_out: int = 0
    active_connections: int = 0  # scur
    total_connections: int = 0  # stot
    request_errors: int = 0  # ereq


class EngineReport(_Report):
    engine_id: str
    loadbalancer_id: str
    revision: int  # the revision whose config the running HAProxy serves
    running: bool  # False: no HAProxy process serves this engine (crashed, never started)
    lb_network_ip: str | None = None  # the engine's address on its network (the network driver's)
    listeners: dict[str, ListenerReport] = {}
    # pool id -> member id -> HAProxy's server status (UP, DOWN, MAINT, DRAIN, NOLB, "no check", ...).
    # A pool behind two listeners has two backends; the worse status of the two is reported.
    members: dict[str, dict[str, str]] = {}
    error: str | None = None  # why the last apply failed, if it did (the old config keeps running)
    vrrp_state: str | None = None  # ACTIVE_STANDBY: keepalived's state (MASTER holds the VIPs, BACKUP, FAULT)
