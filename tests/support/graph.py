"""Builders for Octavia object graphs (the bodies of a single-call load balancer create) and look-ups of the
objects a graph created, for the e2e tests. Names are the handles: every test names what it creates
uniquely and finds ids by name."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from tests.support.dataplane import Cloud

T = TypeVar("T")


def monitor(kind: str = "HTTP", **fields: Any) -> dict[str, Any]:
    """A health monitor that decides fast: a check a second, one failure down, one success up."""
    return {"type": kind, "delay": 1, "timeout": 1, "max_retries": 1, "max_retries_down": 1, **fields}


def pool(
    name: str, protocol: str, members: Iterable[dict[str, Any]], algorithm: str = "ROUND_ROBIN", **fields: Any
) -> dict[str, Any]:
    return {"name": name, "protocol": protocol, "lb_algorithm": algorithm, "members": list(members), **fields}


def listener(name: str, protocol: str, port: int, default_pool: dict[str, Any] | None = None, **fields: Any) -> dict:
    body: dict[str, Any] = {"name": name, "protocol": protocol, "protocol_port": port, **fields}
    if default_pool is not None:
        body["default_pool"] = default_pool
    return body


def find(cloud: Cloud, kind: str, name: str, **filters: str) -> dict[str, Any]:
    """The one object of `kind` (listeners, pools, l7policies, ...) named `name`."""
    found = cloud.ok(cloud.api.get(f"/v2/lbaas/{kind}", params={"name": name, **filters}), 200)[kind]
    assert len(found) == 1, f"{len(found)} {kind} named {name!r}"
    return found[0]


def find_member(cloud: Cloud, pool_id: str, name: str) -> dict[str, Any]:
    found = cloud.ok(cloud.api.get(f"/v2/lbaas/pools/{pool_id}/members", params={"name": name}), 200)["members"]
    assert len(found) == 1, f"{len(found)} members named {name!r}"
    return found[0]


def eventually(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something other than None/False; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {what} (last: {last!r})")


def tree_statuses(cloud: Cloud, lb_id: str) -> dict[str, str]:
    """Operating status of every object in the load balancer's status tree, by name (the load balancer
    itself under "loadbalancer"). A name that two different objects carry maps to "AMBIGUOUS", so a test
    that asks for it fails instead of reading the wrong object."""
    tree = cloud.statuses(lb_id)
    found = {"loadbalancer": tree["operating_status"]}
    owners: dict[str, str] = {"loadbalancer": tree["id"]}

    def add(obj: dict[str, Any]) -> None:
        name = obj["name"]
        if owners.setdefault(name, obj["id"]) != obj["id"]:
            found[name] = "AMBIGUOUS"
        elif found.get(name) != "AMBIGUOUS":
            found[name] = obj["operating_status"]

    for li in tree["listeners"]:
        add(li)
        for p in li["pools"]:
            add(p)
            for mb in p["members"]:
                add(mb)
    return found


def wait_statuses(cloud: Cloud, lb_id: str, want: dict[str, str], timeout: float = 10.0) -> dict[str, str]:
    """Wait until the named objects of the status tree have the operating statuses in `want`."""
    deadline = time.monotonic() + timeout
    while True:
        got = tree_statuses(cloud, lb_id)
        if all(got.get(k) == v for k, v in want.items()):
            return got
        if time.monotonic() > deadline:
            wrong = {k: got.get(k) for k, v in want.items() if got.get(k) != v}
            raise AssertionError(f"after {timeout}s these statuses differ from {want}: {wrong}")
        time.sleep(0.1)
