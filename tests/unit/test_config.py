"""Settings: file then flags, and clear refusals for bad config."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from quadriga import config


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text('[api]\nport = 7000\nauth_strategy = "header"\n[quotas]\nloadbalancer = 5\n')
    settings = config.load(path, {"port": 7100, "state_dir": tmp_path, "spare_engines": 2})
    assert settings.port == 7100 and settings.auth_strategy == "header" and settings.spare_engines == 2
    assert (settings.agent_cert_validity_days, settings.agent_cert_renew_days) == (365, 30)
    assert settings.quota_defaults["loadbalancer"] == 5 and settings.quota_defaults["listener"] == -1
    assert settings.db_url == f"sqlite:///{tmp_path / 'quadriga.sqlite'}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[api]\nbogus = 1\n", "unknown setting [api] bogus"),
        ("[quotas]\nwidgets = 1\n", "unknown quota(s) ['widgets']"),
        ("[api\n", "cannot read config file"),
        ('[api]\nauth_strategy = "keystone-ish"\n', "auth_strategy must be noauth, header or keystone"),
        ('[health]\nlisten = "localhost:5555"\n', "[health] listen and receivers take IP:port"),
        ('[health]\nlisten = "127.0.0.1"\n', "is not host:port"),
        ('[health]\nreceivers = ["127.0.0.1:0"]\n', "is not host:port"),
        ("[health]\ntimeout = 0.5\n", "0 < interval < timeout"),
        ("[health]\nbreaker_share = 1.5\n", "breaker_share must be in (0, 1]"),
        ("[health]\nbreaker_min = 0\n", "breaker_min at least 1"),
        ("[agent]\ncert_validity_days = 10\ncert_renew_days = 10\n", "cert_renew_days (10) must be above 0"),
        ("[agent]\ncert_renew_days = 0\n", "cert_renew_days (0) must be above 0"),
        ("[agent]\nspare_engines = -1\n", "spare_engines must be a whole number from 0 to 100, not -1"),
        ('[agent]\nspare_engines = "2"\n', "spare_engines must be a whole number"),
        ("[controller]\nhousekeeping_interval = 0\n", "housekeeping_interval must be above 0"),
    ],
)
def test_bad_config_is_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "q.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load(path, {})


def test_serve_refuses_a_bad_config_file_and_exits_2(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text("[nonsense]\nx = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "quadriga", "serve", "--config", str(path), "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown setting [nonsense] x" in proc.stderr


def test_clouds_yaml_points_both_overrides_at_this_server(tmp_path):
    settings = config.load(None, {"port": 7001, "network_port": 7002, "state_dir": tmp_path})
    text = config.clouds_yaml(settings)
    assert "load_balancer_endpoint_override: http://127.0.0.1:7001" in text
    assert "network_endpoint_override: http://127.0.0.1:7002/" in text
    assert "auth_type: none" in text


def test_health_settings_come_from_the_file(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text(
        '[health]\nlisten = "0.0.0.0:0"\nkey_files = ["/k/new", "/k/old"]\ntimeout = 5.0\nbreaker = false\n'
        'breaker_share = 0.3\nbreaker_min = 2\nreceivers = ["10.0.0.2:5555"]\n'
    )
    settings = config.load(path, {"state_dir": tmp_path})
    assert settings.health_listen == "0.0.0.0:0" and settings.health_receivers == ["10.0.0.2:5555"]
    assert [str(p) for p in settings.key_files] == ["/k/new", "/k/old"]
    assert (settings.heartbeat_timeout, settings.failover_breaker, settings.breaker_share, settings.breaker_min) == (
        5.0,
        False,
        0.3,
        2,
    )
    assert config.load(None, {"state_dir": tmp_path}).key_files == [tmp_path / "heartbeat.key"]


def test_quadriga_health_refuses_a_missing_key_file_and_exits_2(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text(f'[health]\nkey_files = ["{tmp_path / "nope.key"}"]\n')
    cmd = [sys.executable, "-m", "quadriga", "health", "--config", str(path), "--state-dir", str(tmp_path)]
    result = subprocess.run(cmd + ["--health-listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "nope.key" in result.stderr


def test_keymanager_settings_and_clouds_yaml(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text('[keymanager]\nport = 9400\nkey_files = ["/k/new.key", "/k/old.key"]\n')
    settings = config.load(path, {"state_dir": tmp_path})
    assert settings.keymanager_port == 9400 and settings.keymanager_key_files == ["/k/new.key", "/k/old.key"]
    text = config.clouds_yaml(settings)
    # python-barbicanclient takes the auth endpoint, openstacksdk the override.
    assert "endpoint: http://127.0.0.1:9400/v1\n" in text
    assert "key_manager_endpoint_override: http://127.0.0.1:9400/v1\n" in text
    remote = config.load(None, {"state_dir": tmp_path, "keymanager_url": "http://barbican.test:9311/v1/"})
    assert "key_manager_endpoint_override: http://barbican.test:9311/v1\n" in config.clouds_yaml(remote)
    with pytest.raises(config.ConfigError, match="port"):
        config.load(None, {"state_dir": tmp_path, "keymanager_port": 70000})
    with pytest.raises(config.ConfigError, match="url"):
        config.load(None, {"state_dir": tmp_path, "keymanager_url": "barbican:9311"})


def test_keystone_settings_come_from_the_file_and_are_checked(tmp_path):
    path = tmp_path / "q.toml"
    good = '[api]\nauth_strategy = "keystone"\n[keystone]\nauth_url = "http://127.0.0.1:5000/v3"\nusername = "q"\n'
    path.write_text(good + 'password = "pw"\ncache_seconds = 5\n')
    settings = config.load(path, {"state_dir": tmp_path})
    assert (settings.keystone.username, settings.keystone.cache_seconds, settings.keystone.timeout) == ("q", 5, 3.0)
    assert "pw" not in repr(settings)
    assert "auth_type: password\n" in config.clouds_yaml(settings) and "override" not in config.clouds_yaml(settings)
    for extra, message in [
        ("", "password is needed"),
        ('password = "pw"\ntimeout = 0\n', "timeout must be a number from 0.1 to 60"),
        ('password = "pw"\ncache_size = -1\n', "cache_size must be a whole number"),
        ('password = "pw"\ntoken = "x"\n', "unknown setting [keystone] token"),
    ]:
        path.write_text(good + extra)
        with pytest.raises(config.ConfigError, match=re.escape(message)):
            config.load(path, {"state_dir": tmp_path})
    path.write_text(good.replace("http://127.0.0.1:5000/v3", "keystone:5000") + 'password = "pw"\n')
    with pytest.raises(config.ConfigError, match="auth_url must be"):
        config.load(path, {"state_dir": tmp_path})
