"""The Barbican v1 request rules quadriga's store enforces: what a new secret, a payload and a container may
hold, with Barbican's messages (clients and operators match on them). Any violation is a BarbicanError with
the status Barbican answers; payloads never appear in a message."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any

from quadriga.keymanager.refs import parse_ref
from quadriga.keymanager.store import NewSecret

MAX_PAYLOAD = 64 * 1024  # bytes of a decoded payload
MAX_REQUEST = 1024 * 1024  # bytes of a request body
MAX_SMALLINT = 32767
SECRET_TYPES = ("symmetric", "passphrase", "private", "public", "certificate", "opaque")
PLAIN_TEXT = ("text/plain", "text/plain;charset=utf-8", "text/plain; charset=utf-8")
BINARY = ("application/octet-stream", "application/pkcs8")
SUPPORTED = PLAIN_TEXT + BINARY
CONTAINER_NAMES = {
    "certificate": ({"certificate"}, {"private_key", "private_key_passphrase", "intermediates"}),
    "rsa": ({"public_key", "private_key"}, {"private_key_passphrase"}),
}
TOO_LARGE = "Provided information too large to process"


class BarbicanError(Exception):
    """An error answered with Barbican's body, {"code", "title", "description"}."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def normalize_content_type(value: str) -> str | None:
    """Barbican's internal form of a payload content type ("text/plain", ...), None when unsupported."""
    parts = [p.strip() for p in value.split(";")]
    mime = parts[0].lower()
    if len(parts) > 1:
        key, _, charset = parts[1].partition("=")
        if key.strip().lower() != "charset" or charset.strip().lower() != "utf-8":
            return None
    return mime if mime in SUPPORTED else None


def _invalid(reason: str, prop: str | None, schema: str = "Secret") -> BarbicanError:
    return BarbicanError(400, f"Provided object does not match schema '{schema}': {reason}. Invalid property: '{prop}'")


def _string(body: dict[str, Any], key: str, limit: int = 255, nullable: bool = True, schema: str = "Secret") -> Any:
    value = body.get(key)
    if value is None:
        if key in body and not nullable:
            raise _invalid("None is not of type 'string'", key, schema)
        return None
    if not isinstance(value, str):
        raise _invalid(f"{value!r:.40} is not of type 'string'", key, schema)
    if len(value) > limit:
        raise _invalid(f"'{key}' is too long", key, schema)
    if "\x00" in value:  # PostgreSQL cannot store it
        raise _invalid(f"'{key}' contains a NUL character", key, schema)
    return value.strip()


def _expiration(raw: str | None) -> dt.datetime | None:
    if not raw:
        return None
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid("Invalid date for 'expiration'", "expiration") from None
    if when.tzinfo is not None:
        try:
            when = when.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:  # past year 9999 in UTC
            raise _invalid("Invalid date for 'expiration'", "expiration") from None
    if when <= dt.datetime.now(dt.UTC).replace(tzinfo=None):
        raise _invalid("'expiration' is before current time", "expiration")
    return when


def decode_payload(payload: str | bytes, content_type: str, encoding: str | None) -> bytes:
    """The bytes to store; 400 for an encoding the type does not take or bad base64, 413 when too large."""
    text = content_type in PLAIN_TEXT
    if encoding is not None and (text or encoding.lower() != "base64"):
        supported = "None" if text else "['base64', 'binary']"
        raise _invalid(f"payload_content_encoding is not one of {supported}", "payload_content_encoding")
    if not text and encoding is None and isinstance(payload, str):
        raise _invalid("payload_content_encoding is not one of ['base64', 'binary']", "payload_content_encoding")
    raw = payload.encode() if isinstance(payload, str) else payload
    if encoding is not None:
        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("Invalid payload for payload_content_encoding", "payload") from None
    if len(raw) > MAX_PAYLOAD:
        raise BarbicanError(413, TOO_LARGE)
    return raw


def new_secret(body: Any, creator_id: str | None) -> tuple[NewSecret, bytes | None]:
    """A POST /v1/secrets body -> the secret's metadata and payload (None: metadata only, filled by PUT)."""
    if not isinstance(body, dict):
        raise _invalid(f"{type(body).__name__} is not of type 'object'", None)
    name = _string(body, "name")
    secret_type = _string(body, "secret_type", 80, nullable=False) or "opaque"
    if secret_type not in SECRET_TYPES:
        raise _invalid(f"'{secret_type}' is not one of {list(SECRET_TYPES)}", "secret_type")
    bit_length = body.get("bit_length")
    if bit_length is not None and (
        not isinstance(bit_length, int) or isinstance(bit_length, bool) or not 1 <= bit_length <= MAX_SMALLINT
    ):
        raise _invalid(f"bit_length must be an integer from 1 to {MAX_SMALLINT}", "bit_length")
    if body.get("transport_key_needed", "false") != "false" or body.get("transport_key_id"):
        raise BarbicanError(400, "Transport keys are not supported by this key manager.")
    content_type_raw = _string(body, "payload_content_type")
    encoding = _string(body, "payload_content_encoding", nullable=False)
    if encoding is not None and encoding != "base64":
        raise _invalid(f"'{encoding}' is not one of ['base64']", "payload_content_encoding")
    payload: bytes | None = None
    content_type = None
    if "payload" in body:
        raw = body["payload"]
        if not isinstance(raw, str):
            raise _invalid("payload is not of type 'string'", "payload")
        if content_type_raw is None:
            raise _invalid(
                "If 'payload' is supplied, 'payload_content_type' must also be supplied.", "payload_content_type"
            )
        content_type = _content_type(content_type_raw)
        if not raw.strip():
            raise _invalid("If 'payload' specified, must be non empty", "payload")
        payload = decode_payload(raw.strip(), content_type, encoding)
    elif content_type_raw is not None:
        raise _invalid("payload must be provided when payload_content_type is specified", "payload")
    meta = NewSecret(
        name=name,
        secret_type=secret_type,
        payload_content_type=content_type,
        algorithm=_string(body, "algorithm", nullable=False),
        bit_length=bit_length,
        mode=_string(body, "mode", nullable=False),
        expiration=_expiration(_string(body, "expiration", nullable=False)),
        creator_id=creator_id,
    )
    return meta, payload


def _content_type(raw: str) -> str:
    normalized = normalize_content_type(raw)
    if normalized is None:
        raise _invalid(f"payload_content_type is not one of {list(SUPPORTED)}", "payload_content_type")
    return "text/plain" if normalized in PLAIN_TEXT else normalized


def new_container(body: Any) -> tuple[str | None, str, list[tuple[str | None, str]]]:
    """A POST /v1/containers body -> (name, type, [(name in the container, secret id)])."""
    schema = "Container"
    if not isinstance(body, dict):
        raise _invalid(f"{type(body).__name__} is not of type 'object'", None, schema)
    name = _string(body, "name", schema=schema)
    type_ = body.get("type")
    if type_ not in ("generic", "rsa", "certificate"):
        reason = "'type' is a required property" if "type" not in body else f"{type_!r:.40} is not one of "
        raise _invalid(reason + ("" if "type" not in body else "['generic', 'rsa', 'certificate']"), "type", schema)
    refs_raw = body.get("secret_refs") or []
    if not isinstance(refs_raw, list) or not all(isinstance(r, dict) for r in refs_raw):
        raise _invalid("secret_refs is not an array of objects", "secret_refs", schema)
    refs: list[tuple[str | None, str]] = []
    for item in refs_raw:
        ref = item.get("secret_ref")
        if not isinstance(ref, str) or not ref.strip():
            raise _invalid("'secret_ref' is a required property", "secret_refs", schema)
        ref_name = _string(item, "name", schema=schema)
        try:
            kind, secret_id = parse_ref(ref.strip())
        except LookupError:
            kind, secret_id = "", ""
        if kind != "secrets":
            raise BarbicanError(404, f"Secret provided for '{ref_name}' doesn't exist.")
        refs.append((ref_name, secret_id))
    names = [n for n, _ in refs]
    if len(set(names)) != len(names):
        raise _invalid("Duplicate reference names are not allowed", "secret_refs", schema)
    if len({i for _, i in refs}) != len(refs):
        raise _invalid("Duplicate secret ids are not allowed", "secret_refs", schema)
    if type_ in CONTAINER_NAMES:
        required, optional = CONTAINER_NAMES[type_]
        given = set(names)
        if given - required - optional:
            allowed = ", ".join(f"'{n}'" for n in sorted(required | optional))
            raise _invalid(f"only {allowed} reference names are allowed for {type_} type", "secret_refs", schema)
        if not required <= given:
            wanted = " and ".join(f"'{n}'" for n in sorted(required))
            raise _invalid(f"The minimum required reference names are {wanted} for {type_} type", "secret_refs", schema)
    return name, type_, refs


MAX_ACL_USERS = 100


def acl_read(body: Any) -> tuple[list[str] | None, bool | None]:
    """A PUT/PATCH /v1/{secrets,containers}/{id}/acl body, {"read": {"users": [...], "project-access": bool}}
    -> (users, project-access), None for what it leaves out (Barbican's ACL has only the read operation)."""
    schema = "ACL"
    if not isinstance(body, dict) or set(body) - {"read"}:
        raise _invalid("only the 'read' operation has an ACL", None, schema)
    read = body.get("read") or {}
    if not isinstance(read, dict) or set(read) - {"users", "project-access"}:
        raise _invalid("'read' takes only 'users' and 'project-access'", "read", schema)
    users, project_access = read.get("users"), read.get("project-access")
    if users is not None and (
        not isinstance(users, list)
        or len(users) > MAX_ACL_USERS
        or not all(isinstance(u, str) and 0 < len(u) <= 255 for u in users)
    ):
        raise _invalid(f"'users' is a list of at most {MAX_ACL_USERS} user ids", "users", schema)
    if project_access is not None and not isinstance(project_access, bool):
        raise _invalid(f"{project_access!r:.40} is not of type 'boolean'", "project-access", schema)
    return users, project_access
