"""Start and stop the real Octavia API (scripts/octavia_peer.py) from tests and benchmarks.

    with OctaviaPeer() as peer:
        httpx.get(peer.lb_url + "/v2/lbaas/loadbalancers", headers={"X-Project-Id": "p"})

The first use installs octavia into the cached virtualenv .cache/octavia-venv (about a minute); a failed
install or start raises PeerStartupError with the reason (callers fail with it, they do not skip).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from types import ModuleType

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "octavia_peer.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("octavia_peer_script", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()
PeerStartupError = script.PeerError
_running: set[OctaviaPeer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for peer in list(_running):
        with contextlib.suppress(Exception):
            peer.stop()


class OctaviaPeer:
    """One Octavia API (gunicorn, 2 workers) + driver agent + activator, in a temp directory of its own."""

    def __init__(self, *, activator: bool = True, keep_dir: bool = False) -> None:
        self.activator = activator
        self.keep_dir = keep_dir
        self.dir: Path | None = None
        self.lb_url = ""

    def start(self) -> OctaviaPeer:
        self.dir = Path(tempfile.mkdtemp(prefix="octavia-peer-"))
        _running.add(self)
        try:
            self.lb_url = script.start(self.dir, activator=self.activator)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pids(self) -> dict[str, int]:
        """The process-group leaders: gunicorn (master), driver-agent, activator."""
        assert self.dir is not None
        return json.loads((self.dir / "pids").read_text())

    def worker_pids(self) -> list[int]:
        """gunicorn's workers (children of its master), for CPU accounting."""
        master = self.pids["gunicorn"]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
            return [int(p) for p in children]
        return []

    def pause_activator(self, paused: bool = True) -> None:
        """Stop (or resume) reporting statuses: objects then stay PENDING_* as with the bare noop provider."""
        assert self.dir is not None
        flag = self.dir / "activator.paused"
        if paused:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        if self.dir is None:
            return "<not started>"
        return script._tail(self.dir / "log" / "octavia.log", lines)

    def stop(self) -> None:
        """Kill what `start` started (by process group) and remove the directory. Idempotent."""
        if self.dir is not None:
            script.stop(self.dir)
            if not self.keep_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        _running.discard(self)

    def __enter__(self) -> OctaviaPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
