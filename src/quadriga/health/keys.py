"""Heartbeat keys: files holding a shared secret each, named by a fingerprint of their content.

The key id in every heartbeat is `k` plus the first 12 hex digits of the key's SHA-256, so an operator
never names keys: rotating is writing a new file and listing it first. During a rotation receivers accept
every listed key and agents sign with the first one, so no heartbeat is lost and nothing fails over:

1. receivers (`serve`, `health`): key_files = [new, old], restart them one at a time;
2. agents: key file = new, restart them;
3. receivers: key_files = [new].

A missing default key file is created on first start (0600, 32 random bytes as hex); the operator may
replace it with any secret of at least `MIN_KEY` bytes."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from pathlib import Path

from quadriga.health.codec import MIN_KEY, check_key
from quadriga.keyfiles import KeyFileError, create_private_file, read_key_file

__all__ = ["KeyFileError", "ensure_key_file", "key_id", "load_keys", "read_key"]

log = logging.getLogger("quadriga.health")

DEFAULT_NAME = "heartbeat.key"


def key_id(key: bytes) -> str:
    """The id heartbeats carry for `key`: a fingerprint that tells nothing about the key."""
    return "k" + hashlib.sha256(key).hexdigest()[:12]


def ensure_key_file(path: Path) -> Path:
    """Create `path` with a fresh random key unless it exists; returns it."""
    if create_private_file(path, (secrets.token_hex(32) + "\n").encode()):
        log.info("created heartbeat key %s (id %s)", path, key_id(read_key(path)))
    return path


def read_key(path: Path) -> bytes:
    """The key in `path`: its content without surrounding whitespace."""
    key = read_key_file(path, "heartbeat")
    if len(key) < MIN_KEY:
        raise KeyFileError(f"heartbeat key file {path} holds {len(key)} bytes; at least {MIN_KEY} are needed")
    return key


def load_keys(paths: Sequence[Path]) -> dict[str, bytes]:
    """Key id -> key for every file, in order (the first one signs)."""
    if not paths:
        raise KeyFileError("no heartbeat key file is configured")
    keys: dict[str, bytes] = {}
    for path in paths:
        key = read_key(path)
        check_key(key_id(key), key)
        keys[key_id(key)] = key
    return keys
