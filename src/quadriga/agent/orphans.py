"""Finding HAProxy processes that an engine directory of this agent started but no engine owns any more
(the directory was deleted under them, e.g. by hand or by a restore of the state directory).

A process belongs to this agent when its command line runs `haproxy ... -f <engines dir>/<id>/haproxy.cfg`:
the engines directory is this agent's own (its state directory), so HAProxy processes of other agents or
anything else on the host never match."""

from __future__ import annotations

import os
from pathlib import Path

from quadriga.agent.haproxy import CONFIG


def haproxy_engines(engines_dir: Path) -> dict[str, list[int]]:
    """Engine id -> pids of the live HAProxy processes running a config in `engines_dir/<id>/`."""
    found: dict[str, list[int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = [a.decode(errors="replace") for a in Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if not argv or not Path(argv[0]).name.startswith("haproxy"):
            continue
        for flag, value in zip(argv, argv[1:], strict=False):
            config = Path(value)
            if flag == "-f" and config.name == CONFIG and config.parent.parent == engines_dir:
                found.setdefault(config.parent.name, []).append(int(name))
    return found
