"""Engine config tests validate every rendered config with the real `haproxy -c` (Debian's HAProxy 2.6).

HAProxy is required, not optional: CI installs it, and a missing binary fails these tests with a message
that says how to install it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from quadriga.engine import spec as s
from quadriga.engine.render import EnginePaths, RenderOptions, render, write_support_files

HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
)
# A fixed cap, so rendered configs do not depend on this machine's file descriptor limit.
OPTIONS = RenderOptions(max_connections=4000)


def haproxy_binary() -> str:
    if HAPROXY is None:
        pytest.fail(
            "HAProxy is not installed, and the engine tests validate every config with the real `haproxy -c`. "
            "Install Debian's package: `apt-get install -y haproxy` (scripts/install.sh --test installs it).",
            pytrace=False,
        )
    return HAPROXY


@pytest.fixture(scope="session")
def haproxy() -> str:
    return haproxy_binary()


def haproxy_check(config: str, directory: Path) -> None:
    """Assert that HAProxy accepts `config` without a warning."""
    cfg = directory / "haproxy.cfg"
    cfg.write_text(config)
    result = subprocess.run([haproxy_binary(), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    numbered = "\n".join(f"{n:4} {line}" for n, line in enumerate(config.splitlines(), 1))
    assert result.returncode == 0, f"haproxy -c rejected the config:\n{output}\n{numbered}"
    assert "[WARNING]" not in output and "[ALERT]" not in output, f"haproxy -c warned:\n{output}\n{numbered}"


def render_checked(spec: s.EngineSpec, directory: Path, options: RenderOptions = OPTIONS) -> str:
    """Render `spec` into `directory` (with its support files), check it with haproxy -c, return it."""
    paths = EnginePaths.under(directory)
    config = render(spec, paths, options)
    write_support_files(spec, paths)
    haproxy_check(config, directory)
    return config


@pytest.fixture(scope="session")
def checker(haproxy: str):
    """`render_checked` itself, for tests that bring their own directory (hypothesis tests)."""
    return render_checked


@pytest.fixture
def check(tmp_path: Path, haproxy: str):
    """Render a spec into this test's tmp_path, check it with haproxy -c, return the config."""

    def _check(spec: s.EngineSpec, options: RenderOptions = OPTIONS) -> str:
        return render_checked(spec, tmp_path, options)

    return _check
