"""admin_state_up at every level, and changes that go live without a reload, proven with real traffic
through a VIP: a disabled load balancer stops answering on its VIP, a disabled listener closes its port, a
disabled pool answers 503, a disabled member gets no requests (OFFLINE); a member added, set to weight 0 or
disabled takes effect at once (the agent applies member changes through HAProxy's runtime API)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from quadriga.backends import Backend
from tests.support import traffic
from tests.support.dataplane import Cloud
from tests.support.graph import find, find_member, listener, pool, wait_statuses


@dataclass
class Site:
    lb: dict
    vip: str
    web: list[Backend]
    pool_id: str  # the pool of the first listener (members ad-0, ad-1)


@pytest.fixture(scope="module")
def site(cloud: Cloud) -> Iterator[Site]:
    with contextlib.ExitStack() as stack:
        web = [cloud.backend(f"ad-{n}") for n in range(4)]
        listeners = [
            listener("ad-listener-1", "HTTP", 80, pool("ad-first", "HTTP", [cloud.member(b) for b in web[:2]])),
            listener("ad-listener-2", "HTTP", 81, pool("ad-second", "HTTP", [cloud.member(web[2])])),
        ]
        lb = cloud.create_lb(name="admin", listeners=listeners)
        stack.callback(cloud.delete_lb, lb["id"])
        yield Site(lb, lb["vip_address"], web, find(cloud, "pools", "ad-first")["id"])


def both(cloud: Cloud, site: Site) -> list[str]:
    return sorted(cloud.answers(site.vip, 4))


def put(cloud: Cloud, site: Site, path: str, key: str, **fields: object) -> None:
    cloud.change("PUT", path, site.lb["id"], {key: fields})


def on_one_connection(client: traffic.KeepAlive, count: int) -> list[str]:
    return sorted(client.get().text for _ in range(count))


# Member changes go live through HAProxy's runtime API, without a reload: a client's keep-alive connection
# opened before the change keeps working and its very next requests already follow the change (after a
# reload the old worker would answer one more request with the old config and then close the connection).


def test_disabled_member_gets_no_requests_and_is_offline(cloud: Cloud, site: Site) -> None:
    member = find_member(cloud, site.pool_id, "ad-1")
    path = f"/v2/lbaas/pools/{site.pool_id}/members/{member['id']}"
    with traffic.keep_alive(site.vip, 80) as client:
        assert on_one_connection(client, 2) == ["ad-0", "ad-1"]
        put(cloud, site, path, "member", admin_state_up=False)
        assert on_one_connection(client, 4) == ["ad-0"] * 4
        wait_statuses(cloud, site.lb["id"], {"ad-1": "OFFLINE", "ad-0": "NO_MONITOR", "ad-first": "ONLINE"})
        put(cloud, site, path, "member", admin_state_up=True)
        assert on_one_connection(client, 4) == ["ad-0", "ad-0", "ad-1", "ad-1"]
    wait_statuses(cloud, site.lb["id"], {"ad-1": "NO_MONITOR"})


def test_member_weight_0_takes_no_new_requests_and_is_draining(cloud: Cloud, site: Site) -> None:
    member = find_member(cloud, site.pool_id, "ad-0")
    path = f"/v2/lbaas/pools/{site.pool_id}/members/{member['id']}"
    with traffic.keep_alive(site.vip, 80) as client:
        put(cloud, site, path, "member", weight=0)
        assert on_one_connection(client, 4) == ["ad-1"] * 4
        wait_statuses(cloud, site.lb["id"], {"ad-0": "DRAINING", "ad-1": "NO_MONITOR"})
        put(cloud, site, path, "member", weight=1)
        assert on_one_connection(client, 4) == ["ad-0", "ad-0", "ad-1", "ad-1"]
    wait_statuses(cloud, site.lb["id"], {"ad-0": "NO_MONITOR"})


def test_added_member_is_served_and_deleted_member_is_not(cloud: Cloud, site: Site) -> None:
    with traffic.keep_alive(site.vip, 80) as client:
        body = {"member": cloud.member(site.web[3])}
        added = cloud.change("POST", f"/v2/lbaas/pools/{site.pool_id}/members", site.lb["id"], body, 201)["member"]
        assert on_one_connection(client, 6) == ["ad-0", "ad-0", "ad-1", "ad-1", "ad-3", "ad-3"]
        wait_statuses(cloud, site.lb["id"], {"ad-3": "NO_MONITOR"})
        cloud.change("DELETE", f"/v2/lbaas/pools/{site.pool_id}/members/{added['id']}", site.lb["id"], status=204)
        assert on_one_connection(client, 4) == ["ad-0", "ad-0", "ad-1", "ad-1"]


def test_disabled_pool_answers_503_and_is_offline(cloud: Cloud, site: Site) -> None:
    second = find(cloud, "pools", "ad-second")
    put(cloud, site, f"/v2/lbaas/pools/{second['id']}", "pool", admin_state_up=False)
    assert cloud.get(site.vip, 81).status_code == 503
    assert both(cloud, site) == ["ad-0", "ad-0", "ad-1", "ad-1"]  # the other listener is untouched
    wait_statuses(cloud, site.lb["id"], {"ad-second": "OFFLINE", "ad-first": "ONLINE"})
    put(cloud, site, f"/v2/lbaas/pools/{second['id']}", "pool", admin_state_up=True)
    assert cloud.answers(site.vip, 1, port=81) == ["ad-2"]
    wait_statuses(cloud, site.lb["id"], {"ad-second": "ONLINE"})


def test_disabled_listener_closes_its_port_and_is_offline(cloud: Cloud, site: Site) -> None:
    second = find(cloud, "listeners", "ad-listener-2")
    put(cloud, site, f"/v2/lbaas/listeners/{second['id']}", "listener", admin_state_up=False)
    with pytest.raises(httpx.ConnectError):
        cloud.get(site.vip, 81)
    assert both(cloud, site) == ["ad-0", "ad-0", "ad-1", "ad-1"]
    wait_statuses(cloud, site.lb["id"], {"ad-listener-2": "OFFLINE", "ad-listener-1": "ONLINE"})
    put(cloud, site, f"/v2/lbaas/listeners/{second['id']}", "listener", admin_state_up=True)
    assert cloud.answers(site.vip, 1, port=81) == ["ad-2"]
    wait_statuses(cloud, site.lb["id"], {"ad-listener-2": "ONLINE"})


def test_disabled_load_balancer_stops_answering_on_its_vip(cloud: Cloud, site: Site) -> None:
    put(cloud, site, f"/v2/lbaas/loadbalancers/{site.lb['id']}", "loadbalancer", admin_state_up=False)
    for port in (80, 81):
        with pytest.raises(httpx.ConnectError):
            cloud.get(site.vip, port)
    wait_statuses(cloud, site.lb["id"], {"loadbalancer": "OFFLINE"})
    put(cloud, site, f"/v2/lbaas/loadbalancers/{site.lb['id']}", "loadbalancer", admin_state_up=True)
    assert both(cloud, site) == ["ad-0", "ad-0", "ad-1", "ad-1"]
    assert cloud.answers(site.vip, 1, port=81) == ["ad-2"]
    wait_statuses(cloud, site.lb["id"], {"loadbalancer": "ONLINE"})
