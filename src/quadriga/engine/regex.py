"""Does HAProxy accept this regular expression? HAProxy compiles L7 REGEX values with PCRE2, whose dialect
differs from Python's `re`, so the only faithful judge is HAProxy itself: a tiny config holding the pattern
goes through `haproxy -c` (about 10 ms). Used by the API, so a pattern HAProxy cannot compile is a 400 there
and never reaches an engine."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from quadriga.engine.render import quote

_CONFIG = """global
    httpclient.ssl.verify none
defaults
    mode http
    timeout client 1s
    timeout server 1s
    timeout connect 1s
frontend check
    bind 127.0.0.1:1
    acl pattern path -m reg -- {pattern}
    http-request deny if pattern
"""


@functools.cache
def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )


@functools.lru_cache(maxsize=1024)
def regex_error(pattern: str) -> str | None:
    """None when HAProxy compiles `pattern`, else HAProxy's complaint. None too when no HAProxy is installed
    on this host (the agent's own `haproxy -c` then stops a bad pattern before it replaces a config)."""
    binary = haproxy_binary()
    if binary is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", prefix="quadriga-regex-") as cfg:
        cfg.write(_CONFIG.format(pattern=quote(pattern)))
        cfg.flush()
        result = subprocess.run([binary, "-c", "-f", cfg.name], capture_output=True, text=True, timeout=30)
    if result.returncode == 0:
        return None
    found = re.search(r"regex .* is invalid \((error=.*)\)", result.stdout + result.stderr)
    return found.group(1) if found else "HAProxy cannot compile this regular expression"
