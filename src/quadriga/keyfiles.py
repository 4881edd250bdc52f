"""Key files (heartbeat keys, the secret store's keys): created once by quadriga, readable by the owner only
and never overwritten; read back with errors that name the file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("quadriga.keyfiles")


class KeyFileError(ValueError):
    """A key file that cannot be used; the message says which and why."""


def create_private_file(path: Path, content: bytes) -> bool:
    """Write `content` to a new file `path` (mode 0600, parents created); False when it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    return True


def read_key_file(path: Path, what: str) -> bytes:
    """The content of `what` key file `path` without surrounding whitespace; warns when others may read it."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise KeyFileError(f"{what} key file {path}: {exc.strerror or exc}") from None
    if path.stat().st_mode & 0o077:
        log.warning("%s key file %s is readable by other users: chmod 600 it", what, path)
    return key
