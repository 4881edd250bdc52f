"""What a benchmark ran on, read from /proc: shared by the bench scripts so every result names its machine
the same way."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def memory_kib() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0


def basics() -> dict[str, Any]:
    """CPUs, memory, kernel and Python: the first lines of every benchmark's machine description."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(memory_kib() / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
