"""ACTIVE_STANDBY rendering: keepalived's config (checked by the real `keepalived -t` in a namespace with the
device it names), its two scripts (run for real), and HAProxy's peers section (checked by `haproxy -c`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest

from quadriga.engine import spec as s
from quadriga.engine.vrrp import KeepalivedPaths, check_script, notify_script, render_keepalived
from tests.engine.conftest import render_checked

KEEPALIVED = shutil.which("keepalived") or ("/usr/sbin/keepalived" if Path("/usr/sbin/keepalived").exists() else None)
SUBNET = s.SubnetSpec(id="sn", network_id="net", cidr="10.9.0.0/24", gateway_ip="10.9.0.1")
SUBNET6 = s.SubnetSpec(id="sn6", network_id="net", cidr="fd00:9::/64", gateway_ip="fd00:9::1")


def ha(**kw: object) -> s.HASpec:
    fields: dict = dict(
        role="MASTER", priority=100, vrid=1, name="e1", address="10.9.0.5", peer_name="e2", peer_address="10.9.0.6"
    )
    return s.HASpec(**(fields | kw))


def spec(**kw: object) -> s.EngineSpec:
    pool = s.PoolSpec(
        id="p",
        protocol="HTTP",
        lb_algorithm="ROUND_ROBIN",
        session_persistence=s.SessionPersistenceSpec(type="SOURCE_IP"),
        members=(s.MemberSpec(id="m", address="10.9.0.1", protocol_port=8080),),
    )
    listener = s.ListenerSpec(id="l", protocol="HTTP", protocol_port=80, default_pool_id="p")
    fields: dict = dict(
        revision=3, loadbalancer_id="lb", vips=("10.9.0.4",), subnets=(SUBNET,), listeners=(listener,), pools=(pool,)
    )
    return s.EngineSpec(**(fields | {"ha": ha()} | kw))


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace with an eth0 (a veth whose peer stays inside) for `keepalived -t`, which checks devices."""
    if os.geteuid() != 0 or KEEPALIVED is None:
        pytest.skip("keepalived -t in a namespace needs root and keepalived (scripts/install.sh installs it)")
    name = f"qgtest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def keepalived_check(config: str, directory: Path, namespace: str) -> None:
    """Assert that keepalived accepts `config` (with the scripts it names in place, as the agent writes them)."""
    paths = KeepalivedPaths.under(directory)
    for script, text in ((paths.check_script, check_script(directory / "pid")), (paths.notify_script, "")):
        script.write_text(text)
        script.chmod(0o700)
    path = directory / "keepalived.conf"
    path.write_text(config)
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, KEEPALIVED or "keepalived", "-t", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, f"keepalived -t rejected:\n{result.stdout}{result.stderr}\n{config}"


def test_keepalived_config_is_unicast_vrrp3_nopreempt_with_the_vips(tmp_path: Path, namespace: str):
    paths = KeepalivedPaths.under(tmp_path)
    config = render_keepalived(spec(), paths, "eth0")
    keepalived_check(config, tmp_path, namespace)
    lines = [line.strip() for line in config.splitlines()]
    for expected in (
        "vrrp_version 3",
        "state BACKUP",
        "nopreempt",
        "interface eth0",
        "virtual_router_id 1",
        "priority 100",
        "advert_int 0.25",
        "unicast_src_ip 10.9.0.5",
        "10.9.0.6",
        "10.9.0.4/24 dev eth0",
        f'script "{paths.check_script}"',
        f'notify "{paths.notify_script}"',
    ):
        assert expected in lines, f"{expected!r} missing from\n{config}"
    assert render_keepalived(spec(revision=4), paths, "eth0") == config, "a new revision alone must not reload it"


def test_vips_of_the_other_family_move_unannounced(tmp_path: Path, namespace: str):
    paths = KeepalivedPaths.under(tmp_path)
    config = render_keepalived(spec(vips=("10.9.0.4", "fd00:9::4"), subnets=(SUBNET, SUBNET6)), paths, "eth0")
    keepalived_check(config, tmp_path, namespace)
    excluded = config.split("virtual_ipaddress_excluded {")[1].split("}")[0]
    assert "fd00:9::4/64 dev eth0" in excluded and "10.9.0.4" not in excluded


def test_a_path_keepalived_cannot_quote_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="keepalived"):
        render_keepalived(spec(), KeepalivedPaths.under(tmp_path / 'a"b'), "eth0")


def test_check_script_follows_the_haproxy_master(tmp_path: Path):
    script = tmp_path / "check"
    script.write_text(check_script(tmp_path / "haproxy.pid"))
    script.chmod(0o700)
    assert subprocess.run([str(script)]).returncode != 0, "no pid file: HAProxy is not serving"
    (tmp_path / "haproxy.pid").write_text(f"{os.getpid()}\n")
    assert subprocess.run([str(script)]).returncode == 0
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "haproxy.pid").write_text(f"{dead.pid}\n")
    assert subprocess.run([str(script)]).returncode != 0


def test_notify_script_records_the_state(tmp_path: Path):
    paths = KeepalivedPaths.under(tmp_path)
    paths.notify_script.write_text(notify_script(paths))
    paths.notify_script.chmod(0o700)
    subprocess.run([str(paths.notify_script), "INSTANCE", "lb", "MASTER", "100"], check=True)
    assert paths.state_file.read_text() == "MASTER\n"


def test_haproxy_shares_stick_tables_with_the_peer(tmp_path: Path):
    config = render_checked(spec(), tmp_path)
    assert "localpeer e1" in config
    peers = config.split("peers quadriga")[1].split("\n\n")[0]
    assert "peer e1 10.9.0.5:1025" in peers and "peer e2 10.9.0.6:1025" in peers
    assert "stick-table type ipv6 size 10240 peers quadriga" in config
    single = render_checked(spec(ha=None), tmp_path)
    assert "peers" not in single and "localpeer" not in single


@pytest.mark.parametrize(
    "spec_fields, ha_fields, why",
    [
        ({}, {"address": "10.9.0.4"}, "is one of the VIPs"),
        ({}, {"peer_address": "10.7.0.6"}, "not on the subnet"),
        ({}, {"peer_name": "e1"}, "its own peer"),
        ({}, {"peer_address": "fd00:9::6"}, "one IP version"),
        ({}, {"advert_ms": 255}, "multiple of 10"),
        ({}, {"priority": 255}, "less than or equal to 254"),
        ({"vips": (), "listeners": (), "pools": ()}, {}, "needs VIPs"),
    ],
)
def test_bad_ha_specs_are_refused(spec_fields: dict, ha_fields: dict, why: str):
    with pytest.raises(pydantic.ValidationError, match=why):
        spec(**spec_fields, ha=s.HASpec.model_validate(ha().model_dump() | ha_fields))
