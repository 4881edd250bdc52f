"""Neutron's error body, `{"NeutronError": {"type", "message", "detail"}}`: the networking API's exception
handlers and the error constructors its modules share. Clients read the `type` (Neutron's exception name),
so every failure, a framework one or an unexpected one included, is answered in this shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from quadriga.api.errors import ApiError
from quadriga.network.embedded import NetError

log = logging.getLogger("quadriga.network")

_TYPES = {
    400: "HTTPBadRequest",
    401: "HTTPUnauthorized",
    403: "HTTPForbidden",
    404: "HTTPNotFound",
    405: "HTTPMethodNotAllowed",
    409: "HTTPConflict",
    413: "HTTPRequestEntityTooLarge",
}


def neutron_fault(status: int, type_: str | None, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"NeutronError": {"type": type_ or _TYPES.get(status, "HTTPError"), "message": message, "detail": ""}}
    return JSONResponse(body, status_code=status, headers=headers)


def bad_request(message: str) -> NetError:
    return NetError(400, "HTTPBadRequest", message)


def forbidden(rule: str) -> NetError:
    return NetError(403, "PolicyNotAuthorized", f"rule:{rule} is disallowed by policy")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return neutron_fault(exc.status, getattr(exc, "type", None), exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return neutron_fault(400, None, f"Invalid input: {exc.errors()[0].get('msg', '') if exc.errors() else ''}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "The resource could not be found." if exc.status_code == 404 else str(exc.detail)
        return neutron_fault(exc.status_code, None, message)

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", req.method, req.url.path)
        return neutron_fault(
            500, "HTTPInternalServerError", "Request Failed: internal server error while processing your request."
        )
