"""From an HTTP request to validated input: the caller's context, the JSON body (read with a size cap),
the `{"<resource>": {...}}` envelope and the body model, each failure worded as Neutron words it."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import ValidationError

from quadriga import constants as c
from quadriga.api.auth import RequestContext
from quadriga.network.api.errors import bad_request
from quadriga.network.api.schemas import Body
from quadriga.network.embedded import NetError


def _context(request: Request) -> RequestContext:
    return request.app.state.authenticator.authenticate(request)


async def _json_body(request: Request) -> Any:
    """The request's JSON document, read with a size cap (413 beyond 1 MiB)."""
    too_large = NetError(413, "HTTPRequestEntityTooLarge", "Request is too large.")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > c.MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > c.MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise bad_request("Resource body required")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad_request("Malformed request body") from None


Ctx = Annotated[RequestContext, Depends(_context)]
JsonBody = Annotated[Any, Depends(_json_body)]


def unwrap(singular: str, data: Any) -> Any:
    """The object inside `{"<singular>": {...}}`, which must be the envelope's only key."""
    if not isinstance(data, dict) or singular not in data:
        raise bad_request(f"Unable to find '{singular}' in request body")
    if len(data) != 1:
        raise bad_request(f"Unrecognized attribute(s) '{', '.join(k for k in data if k != singular)}'")
    return data[singular]


def validate(model: type[Body], data: Any, readonly: frozenset[str] | set[str] = frozenset()) -> Any:
    """`data` as an instance of `model`; naming a `readonly` attribute is its own 400."""
    if not isinstance(data, dict):
        raise bad_request("Body contains invalid data")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _body_error(exc, readonly) from None


def _body_error(exc: ValidationError, readonly: frozenset[str] | set[str]) -> NetError:
    errors = exc.errors(include_url=False)
    extra = [str(err["loc"][0]) for err in errors if err["type"] == "extra_forbidden" and len(err["loc"]) == 1]
    if ro := [name for name in extra if name in readonly]:
        return bad_request(f"Cannot update read-only attribute {ro[0]}")
    if extra:
        return bad_request(f"Unrecognized attribute(s) '{', '.join(extra)}'")
    err = errors[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "missing":
        return bad_request(f"Failed to parse request. Required attribute '{loc}' not specified")
    return bad_request(f"Invalid input for {loc}. Reason: {err['msg']} (value: {err.get('input')!r}).")
