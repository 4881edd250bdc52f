"""Finding HAProxy processes and UDP proxies that an engine directory of this agent started but no engine owns
any more (the directory was deleted under them, e.g. by hand or by a restore of the state directory).

A process belongs to this agent when its command line runs `haproxy ... -f <engines dir>/<id>/haproxy.cfg` (or
`python -m quadriga.udp --config <engines dir>/<id>/udp.json`): the engines directory is this agent's own (its
state directory), so processes of other agents or anything else on the host never match."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from quadriga.agent.haproxy import CONFIG
from quadriga.agent.udp import CONFIG as UDP_CONFIG


def haproxy_engines(engines_dir: Path) -> dict[str, list[int]]:
    """Engine id -> pids of the live HAProxy processes running a config in `engines_dir/<id>/`."""
    return _engines(engines_dir, lambda argv: Path(argv[0]).name.startswith("haproxy"), "-f", CONFIG)


def udp_proxy_engines(engines_dir: Path) -> dict[str, list[int]]:
    """Engine id -> pids of the live UDP proxies running a config in `engines_dir/<id>/`."""
    return _engines(engines_dir, lambda argv: "quadriga.udp" in argv, "--config", UDP_CONFIG)


def _engines(engines_dir: Path, program: Callable[[list[str]], bool], option: str, name: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if not argv or not program(argv):
            continue
        for flag, value in zip(argv, argv[1:], strict=False):
            config = Path(value)
            if flag == option and config.name == name and config.parent.parent == engines_dir:
                found.setdefault(config.parent.name, []).append(int(pid))
    return found
