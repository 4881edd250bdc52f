"""The UDP proxy's decisions without sockets: algorithms, persistence, backup, weight 0, health rise/fall."""

from __future__ import annotations

from collections import Counter
from typing import Any

from quadriga.engine.udp import UdpMember, UdpMonitor, UdpPool
from quadriga.udp.balance import Health, Pool

MONITOR = UdpMonitor(type="UDP-CONNECT", delay_s=1, timeout_s=1, rise=2, fall=3)


def mb(name: str, **kw: Any) -> UdpMember:
    port = 1000 + int(name[1:])
    return UdpMember(id=name, address="10.0.0.1", port=port, check_address="10.0.0.1", check_port=port, **kw)


def pool(*members: UdpMember, **kw: Any) -> Pool:
    return Pool.build(UdpPool(**({"id": "p", "algorithm": "ROUND_ROBIN", "members": members} | kw)))


def picks(p: Pool, count: int, client: str = "192.0.2.1", now: float = 0.0) -> list[str]:
    chosen = []
    for i in range(count):
        member = p.choose((client, 40000 + i), now)
        chosen.append(member.config.id if member else "-")
    return chosen


def test_health_rises_and_falls_like_haproxy() -> None:
    h = Health(rise=2, fall=3)
    assert h.up
    assert [h.record(False), h.record(False), h.record(True)] == [False, False, False]  # the streak restarts
    assert [h.record(False), h.record(False), h.record(False)] == [False, False, True] and not h.up
    assert [h.record(True), h.record(True)] == [False, True] and h.up


def test_weighted_round_robin_is_smooth() -> None:
    p = pool(mb("m0", weight=3), mb("m1", weight=1))
    assert picks(p, 8) == ["m0", "m0", "m1", "m0"] * 2


def test_least_connections_counts_live_flows_per_weight() -> None:
    p = pool(mb("m0", weight=2), mb("m1"), algorithm="LEAST_CONNECTIONS")
    p.members["m0"].flows, p.members["m1"].flows = 3, 1
    assert picks(p, 1) == ["m1"]  # 1/1 < 3/2
    p.members["m1"].flows = 2
    assert picks(p, 1) == ["m0"]  # 3/2 < 2/1


def test_source_ip_hashes_the_client_address_and_moves_only_the_lost_members_clients() -> None:
    members = [mb(f"m{i}") for i in range(4)]
    p = pool(*members, algorithm="SOURCE_IP")
    clients = [f"198.51.100.{i}" for i in range(1, 200)]
    before = {c: picks(p, 3, c) for c in clients}
    assert all(len(set(v)) == 1 for v in before.values())  # every source port of a client: one member
    assert len(Counter(v[0] for v in before.values())) == 4
    smaller = pool(*members[:3], algorithm="SOURCE_IP")
    after = {c: picks(smaller, 1, c)[0] for c in clients}
    assert all(after[c] == v[0] for c, v in before.items() if v[0] != "m3")


def test_persistence_keeps_a_client_for_the_timeout_and_granularity_groups_clients() -> None:
    p = pool(mb("m0"), mb("m1"), mb("m2"), persistence_s=10, persistence_prefix=24)
    first = picks(p, 1, "192.0.2.1", now=0)[0]
    assert picks(p, 5, "192.0.2.1", now=5) == [first] * 5
    assert picks(p, 3, "192.0.2.77", now=6) == [first] * 3  # same /24
    p.expire(17)  # 10 s after the last new flow
    assert not p.sticky
    first = picks(p, 1, "192.0.2.1", now=17)[0]  # a new choice, persisted again
    # A persisted member that goes down loses its clients to the others.
    held = p.sticky["192.0.2.0/24"][0]
    p.members[held].health = Health(rise=1, fall=1, up=False)
    assert picks(p, 1, "192.0.2.1", now=18) != [held]


def test_backup_members_serve_only_when_no_other_member_can() -> None:
    p = pool(mb("m0", backup=True), mb("m1"), mb("m2", weight=0))
    assert set(picks(p, 4)) == {"m1"}  # weight 0 takes no new flows
    p = pool(mb("m0", backup=True), mb("m1"), mb("m2", enabled=False), monitor=MONITOR)
    assert p.statuses() == {"m0": "UP", "m1": "UP", "m2": "MAINT"}
    p.members["m1"].health = Health(rise=1, fall=1, up=False)
    assert p.statuses()["m1"] == "DOWN"
    assert set(picks(p, 3)) == {"m0"}
    p.members["m0"].health = Health(rise=1, fall=1, up=False)
    assert picks(p, 2) == ["-", "-"]


def test_a_disabled_pool_serves_nothing_and_reports_maint() -> None:
    p = pool(mb("m0", enabled=False), enabled=False)
    assert picks(p, 2) == ["-", "-"] and p.statuses() == {"m0": "MAINT"}
    assert pool(mb("m0")).statuses() == {"m0": "no check"}


def test_a_rebuilt_pool_keeps_the_health_of_unchanged_members() -> None:
    old = pool(mb("m0"), mb("m1"), monitor=MONITOR)
    old.members["m0"].health = Health(rise=2, fall=3, up=False)
    old.members["m1"].health = Health(rise=2, fall=3, up=False)
    moved = mb("m1").model_copy(update={"port": 9999})
    new = Pool.build(old.config.model_copy(update={"members": (mb("m0"), moved, mb("m2"))}), old)
    assert new.statuses() == {"m0": "DOWN", "m1": "UP", "m2": "UP"}
