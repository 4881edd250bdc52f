"""Encryption at rest of the secret store's payloads: Fernet (AES-128-CBC + HMAC-SHA256) keys in files.

The default key file is `secrets.key` in the state directory, created (0600) at the first start. An operator
may list their own files instead (`[keymanager] key_files`): the first one encrypts, all of them decrypt, so
rotating is listing a new key first, re-saving the payloads if wanted, then dropping the old key. A payload
that no listed key opens is a `KeyFileError` naming the files, never a traceback; payloads never appear in
messages."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger("quadriga.keymanager")

DEFAULT_NAME = "secrets.key"


class KeyFileError(ValueError):
    """A key file that cannot be used, or a payload no configured key opens; the message says which file."""


def ensure_key_file(path: Path) -> Path:
    """Create `path` with a fresh Fernet key unless it exists; returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "wb") as out:
        out.write(Fernet.generate_key() + b"\n")
    log.info("created the secret store's encryption key %s", path)
    return path


def _read_key(path: Path) -> Fernet:
    try:
        raw = path.read_bytes().strip()
    except OSError as exc:
        raise KeyFileError(f"secret store key file {path}: {exc.strerror or exc}") from None
    try:
        key = Fernet(raw)
    except ValueError:
        raise KeyFileError(
            f"secret store key file {path} does not hold a Fernet key (32 url-safe base64-encoded bytes; "
            "make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        ) from None
    if path.stat().st_mode & 0o077:
        log.warning("secret store key file %s is readable by other users: chmod 600 it", path)
    return key


class PayloadCipher:
    """Encrypts with the first key, decrypts with any of them."""

    def __init__(self, paths: Sequence[Path]) -> None:
        if not paths:
            raise KeyFileError("no secret store key file is configured")
        self.paths = list(paths)
        self._fernet = MultiFernet([_read_key(p) for p in self.paths])

    def encrypt(self, payload: bytes) -> bytes:
        return self._fernet.encrypt(payload)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            names = ", ".join(str(p) for p in self.paths)
            raise KeyFileError(
                f"a stored secret cannot be decrypted with the key file(s) {names}: the key that encrypted it "
                "is not among them (was the key file replaced? list the old key too to rotate)"
            ) from None


def cipher_for(state_dir: Path, key_files: Sequence[str]) -> PayloadCipher:
    """The store's cipher: the operator's key files, else `secrets.key` in the state directory (created)."""
    if key_files:
        return PayloadCipher([Path(p).expanduser() for p in key_files])
    return PayloadCipher([ensure_key_file(state_dir / DEFAULT_NAME)])
