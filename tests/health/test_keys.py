"""Heartbeat key files: created 0600 on first start, named by fingerprint, refused when too short or
missing; a rotation with key files end to end (receiver accepts old and new, agents move one by one)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from quadriga.agent.heartbeat import HeartbeatSender
from quadriga.config import load
from quadriga.health.keys import KeyFileError, ensure_key_file, key_id, load_keys
from quadriga.health.receiver import HeartbeatReceiver
from quadriga.health.service import heartbeat_keys
from tests.health.helpers import Collector, FakeAgent, engine_report, wait_for


def test_the_default_key_is_created_once_private_and_kept(tmp_path: Path):
    settings = load(None, {"state_dir": tmp_path})
    first = heartbeat_keys(settings)
    path = tmp_path / "heartbeat.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert heartbeat_keys(settings) == first  # the second start reads the same key
    (only,) = first.values()
    assert len(only) >= 32 and next(iter(first)) == key_id(only)


def test_key_files_are_refused_with_the_reason(tmp_path: Path):
    short = tmp_path / "short.key"
    short.write_text("tooshort\n")
    with pytest.raises(KeyFileError, match="at least 16"):
        load_keys([short])
    with pytest.raises(KeyFileError, match="missing.key"):
        load_keys([tmp_path / "missing.key"])
    settings = load(None, {"state_dir": tmp_path, "heartbeat_key_files": [str(tmp_path / "missing.key")]})
    with pytest.raises(KeyFileError):
        heartbeat_keys(settings)  # a configured file is never created behind the operator's back
    assert not (tmp_path / "missing.key").exists()


def test_a_rotation_with_key_files_loses_no_heartbeat(tmp_path: Path):
    old, new = ensure_key_file(tmp_path / "old.key"), ensure_key_file(tmp_path / "new.key")
    keys = load_keys([new, old])  # the receivers first: they accept both, the new one listed first
    new_id, old_id = list(keys)
    collector = Collector()
    with HeartbeatReceiver(("127.0.0.1", 0), keys, collector, flush_interval=0.02) as receiver:
        agents = [FakeAgent(engine_report(f"engine-{i}")) for i in range(2)]
        senders = [HeartbeatSender(a, [receiver.address], old_id, keys[old_id]) for a in agents]
        for sender in senders:
            sender.send_once()
        senders[0].set_key(new_id, keys[new_id])  # agents move to the new key one at a time
        for sender in senders:
            sender.send_once()
        assert wait_for(lambda: receiver.counters().get("delivered") == 4)
        assert receiver.counters()[f"key.{old_id}"] == 3 and receiver.counters()[f"key.{new_id}"] == 1
        assert receiver.drops() == {}
        for sender in senders:
            sender.stop()
