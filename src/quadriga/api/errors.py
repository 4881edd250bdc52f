"""API errors and Octavia's fault body.

Every error a client sees is `{"faultcode": "Client"|"Server", "faultstring": ..., "debuginfo": null}`
with the status code Octavia uses; the exception classes carry Octavia's exact message templates because
clients and tempest match on them."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("quadriga.api")


class ApiError(Exception):
    """An error with an HTTP status and a message for the client."""

    status = 500

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers


class BadRequest(ApiError):
    status = 400


class Validation(BadRequest):
    """Octavia's "Validation failure: ..." 400."""

    def __init__(self, detail: str):
        super().__init__(f"Validation failure: {detail}")


class InvalidInput(BadRequest):
    """WSME's per-field type error, which clients parse: `Invalid input for field/attribute ...`."""

    def __init__(self, field: str, value: Any, reason: str):
        super().__init__(f"Invalid input for field/attribute {field}. Value: '{value}'. {reason}")


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class PolicyForbidden(Forbidden):
    def __init__(self) -> None:
        super().__init__("Policy does not allow this request to be performed.")


class NotFound(ApiError):
    status = 404

    def __init__(self, resource: str, ident: str):
        super().__init__(f"{resource} {ident} not found.")


class Conflict(ApiError):
    status = 409


class Immutable(Conflict):
    def __init__(self, resource: str, ident: str):
        super().__init__(f"{resource} {ident} is immutable and cannot be updated.")


class QuotaExceeded(Forbidden):
    def __init__(self, resource: str):
        super().__init__(f"Quota has been met for resources: {resource}")


class NotImplementedByProvider(ApiError):
    status = 501


class ServiceUnavailable(ApiError):
    status = 503


def fault(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"faultcode": "Client" if status < 500 else "Server", "faultstring": message, "debuginfo": None}
    return JSONResponse(body, status_code=status, headers=headers)


# The names Octavia's controllers give their body arguments, which its "Unknown attribute" faults quote.
OCTAVIA_ARGUMENT = {
    "loadbalancer": "load_balancer",
    "listener": "listener_",
    "pool": "pool_",
    "member": "member_",
    "members": "members_",
    "healthmonitor": "health_monitor_",
    "l7policy": "l7policy_",
    "rule": "rule_",
    "flavor": "flavor_",
    "flavorprofile": "flavor_profile_",
    "availability_zone": "availability_zone_",
    "availability_zone_profile": "availability_zone_profile_",
    "quota": "quotas",
}


def unknown_attribute(owner: list[str] | str, names: str) -> str:
    """Octavia's (WSME's) fault for keys it does not know: beside the root key (`owner` the root) the argument's
    name, inside the body (`owner` the path to the object) "argument.root[.path]"."""
    path = [owner] if isinstance(owner, str) else list(owner)
    if path and path[0] in OCTAVIA_ARGUMENT:
        path = [OCTAVIA_ARGUMENT[path[0]], *path] if isinstance(owner, list) else [OCTAVIA_ARGUMENT[path[0]]]
    return f"Unknown attribute for argument {'.'.join(path) or 'body'}: {names}"


def validation_message(errors: list[Any]) -> str:
    """Octavia's (WSME's) wording for the first error pydantic found."""
    if not errors:
        return "Invalid input."
    err = errors[0]
    # List indexes are not attribute names: an error in `allowed_cidrs[0]` is about `allowed_cidrs`.
    path = [p for p in err.get("loc", ()) if isinstance(p, str) and p not in ("body", "query", "path")]
    field = path[-1] if path else "body"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return unknown_attribute(path[:-1], field)
    if kind == "missing":
        return f"Invalid input for field/attribute {field}. Value: 'None'. Mandatory field missing."
    if kind == "json_invalid":
        return f"Invalid JSON body: {err.get('ctx', {}).get('error', err.get('msg', ''))}"
    ctx = err.get("ctx", {})
    if kind == "literal_error":
        expected = ctx.get("expected", "").replace(" or ", ", ").replace("'", "")
        reason = f"Value should be one of: {expected}"
    elif kind in ("less_than_equal", "greater_than_equal"):
        bound = ctx.get("le", ctx.get("ge"))
        reason = f"Value should be {'lower' if kind == 'less_than_equal' else 'greater'} or equal to {bound}"
    else:
        reason = err.get("msg", "")
    value = err.get("input")
    if isinstance(value, dict | list):
        value = json.dumps(value)[:200]
    return f"Invalid input for field/attribute {field}. Value: '{value}'. {reason}"


def install_handlers(app: FastAPI) -> None:
    """Make every error path, including the framework's own, answer with the fault body."""

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return fault(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return fault(400, validation_message(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _model_validation(_req: Request, exc: ValidationError) -> JSONResponse:
        return fault(400, validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = "The resource could not be found."
        return fault(exc.status_code, message)

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", req.method, req.url.path)
        return fault(500, "An unknown exception occurred; the server log has the details.")
