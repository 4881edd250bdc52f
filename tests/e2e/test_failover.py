"""Failover on demand: a new engine with the same VIP and config takes over, then the old one is removed."""

from __future__ import annotations

from tests.support.dataplane import Cloud, engines, graph


def test_amphora_failover_replaces_the_engine_and_traffic_follows(cloud: Cloud, lbs: list[str]):
    lb = cloud.create_lb(**graph(cloud, "fo-amp"))
    lbs.append(lb["id"])
    (old,) = engines(cloud, lb["id"])
    assert cloud.api.put(f"/v2/octavia/amphorae/{old}/failover").status_code == 202
    cloud.wait_active(lb["id"])
    now = engines(cloud, lb["id"])  # the replaced engine is no longer listed (as in Octavia)
    live = [amp for amp, status in now.items() if status == "ALLOCATED"]
    assert len(now) == 1 and len(live) == 1 and live[0] != old
    assert cloud.answers(lb["vip_address"], 3) == ["fo-amp"] * 3


def test_amphora_config_pushes_the_same_revision_again(cloud: Cloud, lbs: list[str]):
    lb = cloud.create_lb(**graph(cloud, "fo-cfg"))
    lbs.append(lb["id"])
    (amp,) = engines(cloud, lb["id"])
    assert cloud.api.put(f"/v2/octavia/amphorae/{amp}/config").status_code == 202
    assert cloud.wait_active(lb["id"])["provisioning_status"] == "ACTIVE"
    assert engines(cloud, lb["id"]) == {amp: "ALLOCATED"}
    assert cloud.answers(lb["vip_address"], 2) == ["fo-cfg"] * 2
