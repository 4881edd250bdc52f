"""`quadriga demo`, as the README's first command runs it: six answers from three backends, then Ctrl-C
leaves nothing behind."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.dataplane import haproxy_pids, network_driver, network_objects
from tests.support.server import free_port, scrubbed_env

READY = "quadriga demo runs until Ctrl-C."


def test_demo_shows_three_backends_and_cleans_up_on_ctrl_c():
    cidr = "127.233.0.0/24" if network_driver() == "loopback" else "10.233.0.0/24"
    cmd = [sys.executable, "-m", "quadriga", "demo", "--port", str(free_port()), "--network-port", str(free_port())]
    cmd += ["--keymanager-port", "0"]
    cmd += ["--agent-port", str(free_port()), "--private-cidr", cidr, "--network-driver", network_driver()]
    cmd += ["--health-listen", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=scrubbed_env())
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if READY in line:
                break
        output = "".join(lines)
        assert READY in output, output
        answers = re.findall(r"request \d: (backend-\d)", output)
        assert len(answers) == 6 and set(answers) == {"backend-1", "backend-2", "backend-3"}, output
        assert "clouds:" in output and "load_balancer_endpoint_override" in output
        state_dir = Path(re.search(r"clouds.yaml \(also in (\S+)/clouds.yaml\)", output).group(1))
        assert haproxy_pids(state_dir)
        if network_driver() == "netns":
            assert network_objects(state_dir)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output + rest
        assert "state directory are removed" in rest
        assert haproxy_pids(state_dir) == []
        assert network_objects(state_dir) == []
        assert not state_dir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
