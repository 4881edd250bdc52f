"""`quadriga health` alone: a receiver and recorder against the controller's database, signing key from
the state directory; heartbeats sent to it end up as statistics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from quadriga.health.codec import Heartbeat, encode
from quadriga.health.keys import ensure_key_file, key_id, read_key
from tests.health.helpers import wait_for
from tests.health.served import serve_lb, statistics
from tests.support.api_harness import Api


def test_quadriga_health_records_heartbeats_into_the_database(api: Api, tmp_path: Path):
    served = serve_lb(api)
    key = read_key(ensure_key_file(tmp_path / "heartbeat.key"))
    cmd = [sys.executable, "-m", "quadriga", "health", "--state-dir", str(tmp_path)]
    cmd += ["--database-url", api.db.url, "--health-listen", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "listening on HOST:PORT"
        host, port = line.split()[-1].rsplit(":", 1)
        beat = served.beat(1)
        signed = Heartbeat(key_id(key), beat.engine_id, beat.boot, beat.seq, beat.timestamp, beat.payload)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(encode(signed, key), (host, int(port)))
        assert wait_for(lambda: statistics(api, served).get("bytes_in") == 100, timeout=15)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "'applied': 1" in err  # the counters, logged at the stop
