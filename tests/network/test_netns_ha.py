"""The netns driver for ACTIVE_STANDBY engines (root): the namespace gets the engine's own address, not the
VIPs; HAProxy can bind a VIP the namespace does not hold yet; a VIP that keepalived added survives a re-plug."""

from __future__ import annotations

import os
import subprocess

import pytest

from quadriga.engine.spec import EngineSpec, HASpec
from tests.network.test_netns_driver import (  # noqa: F401 - the fixtures are used by name
    addresses,
    free_test_ranges,
    greeting_from,
    netns,
    server_in,
    subnet,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the netns driver needs root (CI runs these as root)")

VIP, OWN, PEER = "10.231.201.10", "10.231.201.11", "10.231.201.12"


def ha_spec() -> EngineSpec:
    ha = HASpec(role="MASTER", priority=100, vrid=1, name="engine-a", address=OWN, peer_name="b", peer_address=PEER)
    return EngineSpec(revision=1, loadbalancer_id="lb-1", vips=(VIP,), subnets=(subnet(1),), ha=ha)


def test_an_active_standby_engine_gets_its_own_address_and_keeps_the_vip_keepalived_adds(netns):  # noqa: F811
    driver = netns()
    plugged = driver.plug("engine-a", ha_spec())
    ns = driver.namespace("engine-a")
    assert (plugged.lb_network_ip, plugged.device) == (OWN, "eth0")
    assert addresses(ns, "eth0") == {f"{OWN}/24"}, "the VIP is keepalived's to add"
    nonlocal_bind = subprocess.run(
        [*driver.command_prefix("engine-a"), "sysctl", "-n", "net.ipv4.ip_nonlocal_bind"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert nonlocal_bind.stdout.strip() == "1"
    with server_in(driver, "engine-a", VIP, "bound before the VIP arrived") as port:
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{VIP}/24", "dev", "eth0"], check=True)  # as keepalived
        driver.plug("engine-a", ha_spec())
        assert addresses(ns, "eth0") == {f"{OWN}/24", f"{VIP}/24"}, "a re-plug leaves keepalived's VIP alone"
        assert greeting_from(VIP, port, driver.bridge("net-1")) == "bound before the VIP arrived"
