"""The netns driver's rules that need no root: names, VIP checks, and how `make_driver` chooses."""

from __future__ import annotations

import logging
import re

import pytest

from quadriga.network.drivers import make_driver, netns
from quadriga.network.drivers.base import NetworkError
from quadriga.network.drivers.loopback import LoopbackDriver
from quadriga.network.drivers.netns import NetnsDriver, instance_for

IFNAMSIZ = 15  # usable characters of a Linux interface name


def test_instance_is_four_hex_chars_of_the_state_dir(tmp_path):
    instance = instance_for(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{4}", instance)
    assert instance_for(tmp_path / ".") == instance  # the resolved path counts, not its spelling
    assert len({instance_for(tmp_path / str(n)) for n in range(20)}) > 15
    with pytest.raises(ValueError, match="4 lowercase hex"):
        NetnsDriver("not-hex")


def test_names_fit_linux_limits_and_carry_the_instance():
    driver = NetnsDriver("0a1b")
    long_id = "e" * 64
    assert driver.namespace(long_id) == f"qg-0a1b-{long_id}"  # the whole id: engines never share a namespace
    for name in (driver.bridge(long_id), driver.veth(long_id, long_id)):
        assert len(name) <= IFNAMSIZ and name[2:6] == "0a1b"
    # Ids sharing a long prefix still get different names.
    assert driver.bridge("network-0001") != driver.bridge("network-0002")
    assert driver.veth("engine", "net-a") != driver.veth("engine", "net-b") != driver.veth("engine2", "net-a")
    assert NetnsDriver("0a1c").bridge("net") != driver.bridge("net")
    assert driver.command_prefix("e1") == ["ip", "netns", "exec", "qg-0a1b-e1"]
    with pytest.raises(NetworkError, match="not a plain id"):
        driver.namespace("../etc")


@pytest.mark.parametrize(
    ("address", "cidr", "reason"),
    [
        ("127.0.0.5", None, "loopback"),
        ("::1", None, "loopback"),
        ("0.0.0.0", None, "unspecified"),
        ("224.0.0.9", None, "multicast"),
        ("169.254.3.4", None, "link-local"),
        ("fe80::1", None, "link-local"),
        ("240.0.0.1", None, "reserved"),
        ("10.231.1.5", "10.231.2.0/24", "not inside"),
        ("10.231.1.0", "10.231.1.0/24", "network or broadcast"),
        ("10.231.1.255", "10.231.1.0/24", "network or broadcast"),
    ],
)
def test_check_vip_refuses_unusable_addresses(address, cidr, reason):
    assert reason in NetnsDriver("0a1b").check_vip(address, cidr)


@pytest.mark.parametrize(
    ("address", "cidr"), [("10.231.1.5", "10.231.1.0/24"), ("192.0.2.7", None), ("fd00:231::5", "fd00:231::/64")]
)
def test_check_vip_accepts_ordinary_addresses(address, cidr):
    assert NetnsDriver("0a1b").check_vip(address, cidr) is None


def test_make_driver_falls_back_to_loopback_where_netns_cannot_run(monkeypatch, caplog):
    monkeypatch.setattr(netns, "unavailable", lambda: "it needs root")
    caplog.set_level(logging.INFO, logger="quadriga.network")
    assert isinstance(make_driver("auto", "0a1b"), LoopbackDriver)
    assert "loopback (auto), because the netns driver cannot run here: it needs root" in caplog.text
    with pytest.raises(NetworkError, match="cannot run here: it needs root"):
        make_driver("netns", "0a1b")


def test_make_driver_names():
    assert isinstance(make_driver("loopback", "0a1b"), LoopbackDriver)
    with pytest.raises(ValueError, match="unknown network driver 'neutron'"):
        make_driver("neutron", "0a1b")
