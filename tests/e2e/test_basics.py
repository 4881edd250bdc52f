"""The data plane's first promise: an API call becomes traffic through a VIP, and statuses come from HAProxy."""

from __future__ import annotations

import time

from tests.support.dataplane import Cloud


def http_lb(cloud: Cloud, backends, **pool) -> dict:
    return {
        "listeners": [
            {
                "name": "http",
                "protocol": "HTTP",
                "protocol_port": 80,
                "default_pool": {
                    "name": "web",
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                    "members": [cloud.member(b) for b in backends],
                    **pool,
                },
            }
        ]
    }


def test_full_graph_serves_round_robin_through_the_vip(cloud: Cloud, lbs: list[str]):
    backends = [cloud.backend(f"rr-{n}") for n in range(3)]
    started = time.monotonic()
    lb = cloud.create_lb(name="rr", **http_lb(cloud, backends))
    lbs.append(lb["id"])
    answers = cloud.answers(lb["vip_address"], 6)
    elapsed = time.monotonic() - started
    assert sorted(answers) == sorted([b.name for b in backends] * 2)
    assert elapsed < 10, f"first answers took {elapsed:.1f}s"


def test_members_go_error_when_their_backend_stops_and_online_again(cloud: Cloud, lbs: list[str]):
    backends = [cloud.backend(f"hm-{n}") for n in range(2)]
    monitor = {"type": "HTTP", "delay": 1, "timeout": 1, "max_retries": 1, "max_retries_down": 1, "url_path": "/"}
    lb = cloud.create_lb(name="hm", **http_lb(cloud, backends, healthmonitor=monitor))
    lbs.append(lb["id"])
    cloud.wait_member_status(lb["id"], {"hm-0": "ONLINE", "hm-1": "ONLINE"})
    port = backends[1].port
    backends[1].stop()
    started = time.monotonic()
    limit = monitor["delay"] * monitor["max_retries_down"] + 2  # the bound
    cloud.wait_member_status(lb["id"], {"hm-0": "ONLINE", "hm-1": "ERROR"}, timeout=limit)
    assert time.monotonic() - started <= limit
    tree = cloud.statuses(lb["id"])
    assert tree["operating_status"] == "DEGRADED"
    assert set(cloud.answers(lb["vip_address"], 4)) == {"hm-0"}
    cloud.backend("hm-1", port=port)
    cloud.wait_member_status(lb["id"], {"hm-0": "ONLINE", "hm-1": "ONLINE"}, timeout=5)
    assert set(cloud.answers(lb["vip_address"], 4)) == {"hm-0", "hm-1"}
