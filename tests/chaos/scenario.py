"""A seeded chaos scenario: a mixed stream of load-balancer creates, member and listener updates and deletes
against a real `quadriga serve`, interleaved with faults (see `faults`), keeping a model of what the API
acknowledged (see `model`).

Each write's outcome is one of:
* acknowledged (2xx): the model takes the change;
* rejected (4xx, e.g. 409 while the load balancer is PENDING_*): nothing changes;
* lost (the connection was refused: serve was down): nothing changes;
* ambiguous (serve died after the request was sent): the change may or may not have been committed, so once
  serve is back the object is read back and the model takes what the database holds, provided it is either
  the old or the new value.
A 5xx answer is recorded as a failure of its own: the API must never answer 500."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.chaos import faults
from tests.chaos.model import LoadBalancerModel, MemberModel, Model
from tests.support import ServerStartupError
from tests.support.dataplane import Cloud, network_driver

MAX_BALANCERS = 6  # created over a run
MAX_LIVE = 4  # at the same time
MAX_MEMBERS = 4
SETTLE_WAIT = 8.0  # how long a step waits for its load balancer to leave PENDING_* before writing anyway
KILL_DELAY = 0.6  # serve is killed at a random moment within this many seconds of the next write


@dataclass(frozen=True)
class Outcome:
    kind: str  # "ack", "rejected", "lost", "ambiguous"
    status: int | None = None
    body: dict[str, Any] | None = None


class Scenario:
    """One seeded run. `run(steps)` plays the stream; the caller then checks convergence (see test_chaos)."""

    def __init__(self, cloud: Cloud, seed: int) -> None:
        self.cloud = cloud
        self.server = cloud.server
        assert self.server.state_dir is not None
        self.state_dir: Path = self.server.state_dir
        self.seed = seed
        self.rng = random.Random(seed)
        self.model = Model()
        self.created = 0
        self.members_made = 0
        self.journal: list[str] = []  # what happened, step by step, for the failure message
        self.server_errors: list[str] = []
        self.ambiguous: list[Callable[[], None]] = []  # read-backs to run once serve answers again
        self.api = self._client()

    def _client(self) -> httpx.Client:
        # No keep-alive: a pooled connection to a killed server would make the next write look ambiguous.
        return httpx.Client(
            base_url=self.server.lb_url,
            timeout=30,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def note(self, text: str) -> None:
        self.journal.append(f"[{len(self.journal):03d}] {text}")

    # --- the stream ------------------------------------------------------------------------------------

    def run(self, steps: int, budget: float) -> None:
        """Play up to `steps` steps, stopping early once `budget` seconds have passed."""
        deadline = time.monotonic() + budget
        for step in range(steps):
            if time.monotonic() > deadline:
                self.note(f"time budget of {budget:.0f} s used up after {step} steps")
                break
            roll = self.rng.random()
            if roll < 0.15:
                self.kill_serve()
            elif roll < 0.27:
                self.engine_fault()
            elif roll < 0.35:
                self.engine_fault_during_write()
            else:
                self.operation()
        self.note("faults stop")

    def operation(self) -> None:
        live = self.model.live()
        choices: list[tuple[float, Callable[[], None]]] = []
        if self.created < MAX_BALANCERS and len(live) < MAX_LIVE:
            choices.append((4.0 if len(live) < 2 else 1.5, self.create_lb))
        for lb in live:
            if len(lb.members) < MAX_MEMBERS:
                choices.append((1.0, lambda lb=lb: self.add_member(lb)))
            if lb.members:
                choices.append((1.6, lambda lb=lb: self.update_member(lb)))
                choices.append((0.6, lambda lb=lb: self.delete_member(lb)))
            choices.append((0.6, lambda lb=lb: self.update_listener(lb)))
            if len(live) >= 2 or self.created >= MAX_BALANCERS:
                choices.append((0.35, lambda lb=lb: self.delete_lb(lb)))
        if not choices:
            return
        weights, actions = zip(*choices, strict=True)
        self.rng.choices(actions, weights)[0]()

    # --- writes ----------------------------------------------------------------------------------------

    def write(self, method: str, path: str, body: Any = None, what: str = "") -> Outcome:
        try:
            response = self.api.request(method, path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self.note(f"{what}: lost ({type(exc).__name__})")
            return Outcome("lost")
        except httpx.TransportError as exc:
            self.note(f"{what}: ambiguous ({type(exc).__name__})")
            return Outcome("ambiguous")
        if response.status_code >= 500:
            self.server_errors.append(f"{what}: {response.status_code} {response.text}")
        kind = "ack" if response.status_code < 300 else "rejected"
        self.note(f"{what}: {response.status_code}{'' if kind == 'ack' else ' ' + response.text[:160]}")
        return Outcome(kind, response.status_code, response.json() if response.content else None)

    def settle(self, lb: LoadBalancerModel) -> None:
        """Wait (bounded) until `lb` is no longer PENDING_*, as a client with `--wait` would."""
        deadline = time.monotonic() + SETTLE_WAIT
        while time.monotonic() < deadline:
            try:
                got = self.api.get(f"/v2/lbaas/loadbalancers/{lb.id}")
            except httpx.TransportError:
                return
            if got.status_code != 200 or not got.json()["loadbalancer"]["provisioning_status"].startswith("PENDING"):
                return
            time.sleep(0.1)

    def backend_member(self, weight: int = 1) -> dict[str, Any]:
        self.members_made += 1
        backend = self.cloud.backend(f"s{self.seed}-m{self.members_made}")
        return self.cloud.member(backend, weight=weight)

    def create_lb(self) -> None:
        self.created += 1
        name = f"chaos-{self.seed}-lb{self.created}"
        members = [self.backend_member(self.rng.choice([1, 1, 2])) for _ in range(self.rng.randint(1, 3))]
        pool = {"name": f"{name}-pool", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "members": members}
        listener = {"name": f"{name}-http", "protocol": "HTTP", "protocol_port": 80, "default_pool": pool}
        body = {"loadbalancer": {"name": name, "vip_subnet_id": self.cloud.subnet["id"], "listeners": [listener]}}
        out = self.write("POST", "/v2/lbaas/loadbalancers", body, f"create {name} with {len(members)} members")
        if out.kind == "ack":
            assert out.body is not None
            self.model.balancers[name] = model_from_graph(out.body["loadbalancer"])
        elif out.kind == "ambiguous":
            self.ambiguous.append(lambda: self._resolve_create(name))

    def _resolve_create(self, name: str) -> None:
        found = self.read("/v2/lbaas/loadbalancers", params={"name": name})["loadbalancers"]
        found = [lb for lb in found if lb["provisioning_status"] != "DELETED"]
        assert len(found) <= 1, f"{len(found)} load balancers named {name}"
        if found:
            self.model.balancers[name] = self.load(found[0]["id"])
        self.note(f"read back create {name}: {'committed' if found else 'not committed'}")

    def add_member(self, lb: LoadBalancerModel) -> None:
        self.settle(lb)
        body = {"member": self.backend_member(self.rng.choice([0, 1, 2]))}
        name = body["member"]["name"]
        path = f"/v2/lbaas/pools/{lb.pool_id}/members"
        out = self.write("POST", path, body, f"add member {name} (w={body['member']['weight']}) to {lb.name}")
        if out.kind == "ack":
            assert out.body is not None
            member = out.body["member"]
            lb.members[name] = MemberModel(name, member["id"], member["weight"], member["admin_state_up"])
        elif out.kind == "ambiguous":
            self.ambiguous.append(lambda: self._resolve_member(lb, name))

    def _resolve_member(self, lb: LoadBalancerModel, name: str) -> None:
        """Take the member's state from the database (after an ambiguous add, update or delete)."""
        found = self.read(f"/v2/lbaas/pools/{lb.pool_id}/members", params={"name": name}, missing_ok=True)
        rows = [m for m in (found or {}).get("members", []) if m["provisioning_status"] != "PENDING_DELETE"]
        old = lb.members.pop(name, None)
        if rows:
            row = rows[0]
            lb.members[name] = MemberModel(name, row["id"], row["weight"], row["admin_state_up"])
        self.note(f"read back member {name} of {lb.name}: was {old}, now {lb.members.get(name)}")

    def update_member(self, lb: LoadBalancerModel) -> None:
        self.settle(lb)
        member = lb.members[self.rng.choice(sorted(lb.members))]
        change: dict[str, Any] = {}
        if self.rng.random() < 0.6:
            change["weight"] = self.rng.choice([0, 1, 2, 3])
        if not change or self.rng.random() < 0.5:
            change["admin_state_up"] = self.rng.random() < 0.6
        path = f"/v2/lbaas/pools/{lb.pool_id}/members/{member.id}"
        out = self.write("PUT", path, {"member": change}, f"update member {member.name} of {lb.name}: {change}")
        if out.kind == "ack":
            member.weight = change.get("weight", member.weight)
            member.admin_state_up = change.get("admin_state_up", member.admin_state_up)
        elif out.kind == "ambiguous":
            before = (member.weight, member.admin_state_up)
            after = (change.get("weight", member.weight), change.get("admin_state_up", member.admin_state_up))
            self.ambiguous.append(lambda: self._resolve_update(lb, member.name, before, after))

    def _resolve_update(
        self, lb: LoadBalancerModel, name: str, before: tuple[int, bool], after: tuple[int, bool]
    ) -> None:
        self._resolve_member(lb, name)
        got = lb.members[name]
        assert (got.weight, got.admin_state_up) in (before, after), f"member {name}: {got}, not {before} or {after}"

    def delete_member(self, lb: LoadBalancerModel) -> None:
        self.settle(lb)
        member = lb.members[self.rng.choice(sorted(lb.members))]
        path = f"/v2/lbaas/pools/{lb.pool_id}/members/{member.id}"
        out = self.write("DELETE", path, None, f"delete member {member.name} of {lb.name}")
        if out.kind == "ack":
            del lb.members[member.name]
        elif out.kind == "ambiguous":
            self.ambiguous.append(lambda: self._resolve_member(lb, member.name))

    def update_listener(self, lb: LoadBalancerModel) -> None:
        self.settle(lb)
        change = {
            "admin_state_up": self.rng.random() < 0.75,
            "connection_limit": self.rng.choice([-1, 500, 1000]),
        }
        path = f"/v2/lbaas/listeners/{lb.listener_id}"
        before = (lb.listener_admin_state_up, lb.connection_limit)
        out = self.write("PUT", path, {"listener": change}, f"update listener of {lb.name}: {change}")
        if out.kind == "ack":
            lb.listener_admin_state_up, lb.connection_limit = change["admin_state_up"], change["connection_limit"]
        elif out.kind == "ambiguous":
            after = (change["admin_state_up"], change["connection_limit"])
            self.ambiguous.append(lambda: self._resolve_listener(lb, before, after))

    def _resolve_listener(self, lb: LoadBalancerModel, before: tuple[bool, int], after: tuple[bool, int]) -> None:
        row = self.read(f"/v2/lbaas/listeners/{lb.listener_id}")["listener"]
        got = (row["admin_state_up"], row["connection_limit"])
        assert got in (before, after), f"listener of {lb.name}: {got}, not {before} or {after}"
        lb.listener_admin_state_up, lb.connection_limit = got
        self.note(f"read back listener of {lb.name}: {got}")

    def delete_lb(self, lb: LoadBalancerModel) -> None:
        self.settle(lb)
        out = self.write("DELETE", f"/v2/lbaas/loadbalancers/{lb.id}?cascade=true", None, f"delete {lb.name}")
        if out.kind == "ack":
            lb.deleted = True
        elif out.kind == "ambiguous":
            self.ambiguous.append(lambda: self._resolve_delete(lb))

    def _resolve_delete(self, lb: LoadBalancerModel) -> None:
        row = self.read(f"/v2/lbaas/loadbalancers/{lb.id}", missing_ok=True)
        lb.deleted = row is None or row["loadbalancer"]["provisioning_status"] in ("PENDING_DELETE", "DELETED")
        self.note(f"read back delete {lb.name}: {'committed' if lb.deleted else 'not committed'}")

    # --- faults ----------------------------------------------------------------------------------------

    def kill_serve(self) -> None:
        """SIGKILL serve at a random moment of the next write (or of the work that write starts), maybe hit
        an engine while serve is down, then restart serve on the same state, database and ports."""
        delay = self.rng.uniform(0, KILL_DELAY)
        self.note(f"SIGKILL serve in {delay:.2f} s")
        timer = threading.Timer(delay, self.server.kill)
        timer.start()
        self.operation()
        timer.join()
        self.server.kill()  # reaps it (a no-op when the timer did)
        if self.rng.random() < 0.3:
            self.engine_fault()
        if self.rng.random() < 0.25:
            self.kill_serve_while_it_starts()
        started = time.monotonic()
        self.server.restart()
        self.note(f"serve restarted in {time.monotonic() - started:.1f} s")
        pending, self.ambiguous = self.ambiguous, []
        for resolve in pending:
            resolve()

    def kill_serve_while_it_starts(self) -> None:
        """Restart serve and SIGKILL it again at a random moment of its start (adopting and restarting
        engines, migrating the database) or just after."""
        delay = self.rng.uniform(0.2, 3.0)
        self.note(f"restart serve, SIGKILL it {delay:.2f} s into its start")
        timer = threading.Timer(delay, self._sigkill_serve_pid)
        timer.start()
        with contextlib.suppress(ServerStartupError):
            self.server.restart()
        timer.join()
        self.server.kill()  # reaps it, whether it died starting or after

    def _sigkill_serve_pid(self) -> None:
        # Only the signal: the main thread, inside restart(), sees the process exit and reaps it.
        pid = self.server.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def engine_fault_during_write(self) -> None:
        """An engine fault at a random moment of the next write (which may be reloading that engine)."""
        delay = self.rng.uniform(0, KILL_DELAY)
        self.note(f"engine fault in {delay:.2f} s")
        rng = random.Random(self.rng.random())  # the timer's own draws: the stream's stay in order
        timer = threading.Timer(delay, self.engine_fault, kwargs={"rng": rng})
        timer.start()
        self.operation()
        timer.join()

    def engine_fault(self, rng: random.Random | None = None) -> None:
        rng = rng or self.rng
        engines = faults.engines_of(self.state_dir)
        targets = sorted(
            (lb.name, engine) for lb in self.model.balancers.copy().values() for engine in engines.get(lb.id, [])
        )
        if not targets:
            return
        name, engine = rng.choice(targets)
        kinds = ["master", "workers", "all"] + (["namespace", "namespace"] if network_driver() == "netns" else [])
        kind = rng.choice(kinds)
        if kind == "namespace":
            self.note(f"ip netns del of engine {engine} of {name}: {faults.delete_namespace(self.state_dir, engine)}")
        else:
            killed = faults.kill_haproxy(self.state_dir, engine, kind)
            self.note(f"SIGKILL haproxy {kind} of engine {engine} of {name}: pids {killed}")

    # --- reading ---------------------------------------------------------------------------------------

    def read(self, path: str, params: dict[str, str] | None = None, missing_ok: bool = False) -> Any:
        response = self.api.get(path, params=params)
        if missing_ok and response.status_code == 404:
            return None
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def load(self, lb_id: str) -> LoadBalancerModel:
        """What the database holds for a load balancer, in the model's terms."""
        lb = self.read(f"/v2/lbaas/loadbalancers/{lb_id}")["loadbalancer"]
        (listener,) = self.read("/v2/lbaas/listeners", params={"loadbalancer_id": lb_id})["listeners"]
        (pool,) = self.read("/v2/lbaas/pools", params={"loadbalancer_id": lb_id})["pools"]
        members = self.read(f"/v2/lbaas/pools/{pool['id']}/members")["members"]
        return LoadBalancerModel(
            name=lb["name"],
            id=lb_id,
            vip=lb["vip_address"],
            listener_id=listener["id"],
            pool_id=pool["id"],
            members={m["name"]: MemberModel(m["name"], m["id"], m["weight"], m["admin_state_up"]) for m in members},
            listener_admin_state_up=listener["admin_state_up"],
            connection_limit=listener["connection_limit"],
        )


def model_from_graph(lb: dict[str, Any]) -> LoadBalancerModel:
    """The model of a load balancer from its graph-create response."""
    (listener,) = lb["listeners"]
    (pool,) = lb["pools"]
    return LoadBalancerModel(
        name=lb["name"],
        id=lb["id"],
        vip=lb["vip_address"],
        listener_id=listener["id"],
        pool_id=pool["id"],
        members={m["name"]: MemberModel(m["name"], m["id"], m["weight"], m["admin_state_up"]) for m in pool["members"]},
        listener_admin_state_up=listener["admin_state_up"],
        connection_limit=listener["connection_limit"],
    )
