"""The client's model of what the API acknowledged, and what the data plane must therefore serve.

Every load balancer in the chaos scenario has one HTTP listener on port 80 with one ROUND_ROBIN pool; members
are backends on the private network's gateway address that answer with their own name. A write the API
answered 2xx changes the model; a write that got no answer (serve was killed under it) is ambiguous until the
harness reads the object back."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MemberModel:
    name: str
    id: str
    weight: int = 1
    admin_state_up: bool = True

    @property
    def serves(self) -> bool:
        """HAProxy sends it requests: enabled with a weight above 0."""
        return self.admin_state_up and self.weight > 0


@dataclass
class LoadBalancerModel:
    name: str
    id: str
    vip: str
    listener_id: str
    pool_id: str
    members: dict[str, MemberModel] = field(default_factory=dict)  # by name
    listener_admin_state_up: bool = True
    connection_limit: int = -1
    deleted: bool = False

    def serving(self) -> dict[str, int]:
        """The members a request through the VIP may reach, with their weights."""
        return {m.name: m.weight for m in self.members.values() if m.serves}

    def describe(self) -> str:
        members = ", ".join(f"{m.name}(w={m.weight},up={m.admin_state_up})" for m in self.members.values())
        listener = f"listener up={self.listener_admin_state_up} limit={self.connection_limit}"
        return f"{self.name} {self.id} vip={self.vip} {listener} members=[{members}]"


@dataclass
class Model:
    balancers: dict[str, LoadBalancerModel] = field(default_factory=dict)  # by name

    def live(self) -> list[LoadBalancerModel]:
        return [lb for lb in self.balancers.values() if not lb.deleted]

    def deleted(self) -> list[LoadBalancerModel]:
        return [lb for lb in self.balancers.values() if lb.deleted]
