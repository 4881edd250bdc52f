"""The loopback driver: VIPs in 127/8 only, nothing created."""

from __future__ import annotations

import pytest

from quadriga.engine.spec import EngineSpec
from quadriga.network.drivers.base import NetworkError, Plugged
from quadriga.network.drivers.loopback import LoopbackDriver


def test_check_vip_accepts_loopback_and_refuses_the_rest():
    driver = LoopbackDriver()
    assert driver.check_vip("127.0.0.1", None) is None
    assert driver.check_vip("127.31.4.9", "127.31.4.0/24") is None
    for address in ("10.0.0.5", "192.0.2.1", "::1"):
        reason = driver.check_vip(address, None)
        assert reason and address in reason and "127.0.0.0/8" in reason and "netns" in reason


def test_plug_creates_nothing_and_refuses_other_vips():
    driver = LoopbackDriver()
    spec = EngineSpec(revision=1, loadbalancer_id="lb-1", vips=("127.31.4.9",))
    assert driver.plug("engine-1", spec) == Plugged(namespace=None, lb_network_ip="127.31.4.9")
    assert driver.command_prefix("engine-1") == [] and driver.leftovers() == []
    with pytest.raises(NetworkError, match="10.0.0.5"):
        driver.plug("engine-1", EngineSpec(revision=1, loadbalancer_id="lb-1", vips=("10.0.0.5",)))
    driver.unplug("engine-1")
    driver.cleanup()
    assert driver.leftovers() == []
