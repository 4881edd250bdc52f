"""The UDP proxy's decisions, without sockets: which member a new flow goes to, what a member's health is.

Statuses are HAProxy's words (`show stat`), so `quadriga.status` reads them as it reads HAProxy's: a member is
"UP" or "DOWN" by its checks, "no check" without a health monitor, "MAINT" when it or its pool is disabled."""

from __future__ import annotations

import hashlib
import ipaddress
import math
from dataclasses import dataclass, field

from quadriga.engine.udp import UdpMember, UdpMonitor, UdpPool

UP, DOWN, MAINT, NO_CHECK = "UP", "DOWN", "MAINT", "no check"


@dataclass
class Health:
    """HAProxy's rise/fall: a member starts UP, goes DOWN after `fall` failed checks in a row and UP again after
    `rise` passed ones."""

    rise: int
    fall: int
    up: bool = True
    streak: int = 0  # checks in a row that point the other way

    def record(self, passed: bool) -> bool:
        """Count one check; True when the member changed state."""
        if passed == self.up:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak < (self.rise if passed else self.fall):
            return False
        self.up, self.streak = passed, 0
        return True


@dataclass
class Member:
    config: UdpMember
    health: Health | None  # None: no health monitor
    flows: int = 0  # live flows to this member

    @property
    def status(self) -> str:
        if not self.config.enabled:
            return MAINT
        if self.health is None:
            return NO_CHECK
        return UP if self.health.up else DOWN

    @property
    def serving(self) -> bool:
        """May carry flows (weight 0 drains: it keeps its flows but takes no new ones)."""
        return self.status in (UP, NO_CHECK)


@dataclass
class Pool:
    """One UDP pool's members and balancing state (round-robin credits, the persistence table)."""

    config: UdpPool
    members: dict[str, Member] = field(default_factory=dict)
    credit: dict[str, int] = field(default_factory=dict)  # smooth weighted round robin
    picks: dict[str, int] = field(default_factory=dict)  # least connections' tie-break
    sticky: dict[str, tuple[str, float]] = field(default_factory=dict)  # client key -> (member id, expiry)

    @classmethod
    def build(cls, config: UdpPool, previous: Pool | None = None) -> Pool:
        """A pool for `config`, carrying over from `previous` the health of members whose address and checks
        did not change, and the persistence table."""
        pool = cls(config)
        old = previous.members if previous is not None else {}
        for mc in config.members:
            kept = old.get(mc.id)
            same = kept is not None and _endpoint(kept.config) == _endpoint(mc) and _same_checks(previous, config)
            health = _health(config.monitor)
            if same and kept is not None and kept.health is not None and health is not None:
                health = kept.health
            pool.members[mc.id] = Member(mc, health)
        if previous is not None:
            pool.sticky = {k: v for k, v in previous.sticky.items() if v[0] in pool.members}
        return pool

    def statuses(self) -> dict[str, str]:
        return {mid: m.status for mid, m in self.members.items()}

    def candidates(self) -> list[Member]:
        """Who takes new flows: serving members of weight > 0; backup members only when no other one can."""
        if not self.config.enabled:
            return []
        usable = [m for m in self.members.values() if m.serving and m.config.weight > 0]
        return [m for m in usable if not m.config.backup] or [m for m in usable if m.config.backup]

    def choose(self, client: tuple[str, int], now: float) -> Member | None:
        """The member for a new flow from `client` (address, port), None when no member can take it."""
        candidates = self.candidates()
        if not candidates:
            return None
        key = self.persistence_key(client[0])
        if key is not None and self.config.persistence_s is not None:
            held = self.sticky.get(key)
            if held is not None and held[1] > now:
                member = next((m for m in candidates if m.config.id == held[0]), None)
                if member is not None:
                    self.sticky[key] = (member.config.id, now + self.config.persistence_s)
                    return member
        member = self._pick(candidates, client)
        if key is not None and self.config.persistence_s is not None:
            self.sticky[key] = (member.config.id, now + self.config.persistence_s)
        return member

    def persistence_key(self, address: str) -> str | None:
        """What persists together with `address` (None: this pool has no session persistence)."""
        if self.config.persistence_s is None:
            return None
        return _client_key(address, self.config.persistence_prefix)

    def keep(self, key: str, member_id: str, last: float) -> None:
        """A live flow keeps its client's persistence, as IPVS keeps a template while connections use it: the
        entry lasts `persistence_s` past the flow's last datagram (unless it already sends the client elsewhere)."""
        if self.config.persistence_s is None:
            return
        held = self.sticky.get(key)
        until = last + self.config.persistence_s
        if held is None or (held[0] == member_id and held[1] < until):
            self.sticky[key] = (member_id, until)

    def expire(self, now: float) -> None:
        self.sticky = {k: v for k, v in self.sticky.items() if v[1] > now}

    def _pick(self, candidates: list[Member], client: tuple[str, int]) -> Member:
        algorithm = self.config.algorithm
        if algorithm in ("SOURCE_IP", "SOURCE_IP_PORT"):
            key = client[0] if algorithm == "SOURCE_IP" else f"{client[0]}:{client[1]}"
            return max(candidates, key=lambda m: _rendezvous(key, m.config.id, m.config.weight))
        if algorithm == "LEAST_CONNECTIONS":
            chosen = min(candidates, key=lambda m: (m.flows / m.config.weight, self.picks.get(m.config.id, 0)))
            self.picks[chosen.config.id] = self.picks.get(chosen.config.id, 0) + 1
            return chosen
        # ROUND_ROBIN, weighted (nginx's smooth weighted round robin: weights 3:1 give a a b a, not a a a b).
        total = 0
        for m in candidates:
            self.credit[m.config.id] = self.credit.get(m.config.id, 0) + m.config.weight
            total += m.config.weight
        chosen = max(candidates, key=lambda m: self.credit[m.config.id])
        self.credit[chosen.config.id] -= total
        return chosen


def _endpoint(m: UdpMember) -> tuple[str, int, str, int]:
    return (m.address, m.port, m.check_address, m.check_port)


def _same_checks(previous: Pool | None, config: UdpPool) -> bool:
    return previous is not None and previous.config.monitor == config.monitor


def _health(monitor: UdpMonitor | None) -> Health | None:
    return None if monitor is None else Health(rise=monitor.rise, fall=monitor.fall)


def _client_key(address: str, prefix: int | None) -> str:
    """The persistence key of a client: its address, or its network when a granularity groups clients."""
    if prefix is None:
        return address
    ip = ipaddress.ip_address(address)
    bits = min(prefix, ip.max_prefixlen)
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def _rendezvous(key: str, member_id: str, weight: int) -> float:
    """Weighted rendezvous hashing: the member with the highest score takes the key, so a member that leaves
    moves only its own clients."""
    digest = hashlib.sha256(f"{key}|{member_id}".encode()).digest()
    h = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 2)  # in (0, 1)
    return -weight / math.log(h)
