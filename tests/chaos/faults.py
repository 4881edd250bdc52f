"""The faults the chaos suite injects into a running quadriga: SIGKILL of `serve` (the controller and its
in-process agent die together), SIGKILL of an engine's HAProxy master or workers, and deletion of an engine's
network namespace. Every target is found from the state directory, so faults work while `serve` is down too,
and only processes of this quadriga (their command line names its engine directory) are ever signalled."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

from quadriga.network.drivers.netns import NetnsDriver, instance_for
from tests.support.dataplane import haproxy_pids


def engines_of(state_dir: Path) -> dict[str, list[str]]:
    """Engine ids on disk by the load balancer id their served spec names."""
    found: dict[str, list[str]] = {}
    root = state_dir / "agent" / "engines"
    for spec in sorted(root.glob("*/spec.json")) if root.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, KeyError):
            found.setdefault(json.loads(spec.read_text())["loadbalancer_id"], []).append(spec.parent.name)
    return found


def engine_dirs(state_dir: Path) -> set[str]:
    root = state_dir / "agent" / "engines"
    return {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


def master_pid(engine_dir: Path) -> int | None:
    try:
        text = (engine_dir / "haproxy.pid").read_text().split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def kill_haproxy(state_dir: Path, engine_id: str, which: str) -> list[int]:
    """SIGKILL the engine's HAProxy `master`, its `workers` or `all` of them; returns the pids killed."""
    directory = state_dir / "agent" / "engines" / engine_id
    pids = haproxy_pids(directory)
    master = master_pid(directory)
    if which == "master":
        targets = [p for p in pids if p == master]
    elif which == "workers":
        targets = [p for p in pids if p != master]
    else:
        targets = pids
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return targets


def delete_namespace(state_dir: Path, engine_id: str) -> str | None:
    """`ip netns del` the engine's namespace (as an operator or a clean-up script might); returns its name,
    or None when it did not exist."""
    namespace = NetnsDriver(instance_for(state_dir / "agent")).namespace(engine_id)
    result = subprocess.run(["ip", "netns", "del", namespace], capture_output=True, text=True, timeout=10)
    return namespace if result.returncode == 0 else None
