"""Encryption at rest of the secret store's payloads: Fernet (AES-128-CBC + HMAC-SHA256) keys in files.

The default key file is `secrets.key` in the state directory, created (0600) at the first start. An operator
may list their own files instead (`[keymanager] key_files`): the first one encrypts, all of them decrypt, so
rotating is listing a new key first, re-saving the payloads if wanted, then dropping the old key. A payload
that no listed key opens is a `KeyFileError` naming the files, never a traceback; payloads never appear in
messages."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from quadriga.keyfiles import KeyFileError, create_private_file, read_key_file

__all__ = ["KeyFileError", "PayloadCipher", "cipher_for", "ensure_key_file"]

log = logging.getLogger("quadriga.keymanager")

DEFAULT_NAME = "secrets.key"


def ensure_key_file(path: Path) -> Path:
    """Create `path` with a fresh Fernet key unless it exists; returns it."""
    if create_private_file(path, Fernet.generate_key() + b"\n"):
        log.info("created the secret store's encryption key %s", path)
    return path


def _read_key(path: Path) -> Fernet:
    try:
        return Fernet(read_key_file(path, "secret store"))
    except ValueError:
        raise KeyFileError(
            f"secret store key file {path} does not hold a Fernet key (32 url-safe base64-encoded bytes; "
            "make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        ) from None


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
