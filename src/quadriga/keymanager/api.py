"""The key-manager API: the subset of Barbican's v1 API that python-barbicanclient (`openstack secret ...`)
and Octavia-style users need — version documents, secrets (store, list, show, payload, replace, delete),
containers (create, list, show, delete) and their read ACLs (show, set, change, delete: the users an ACL
names read the secret or container besides its project, as Octavia's barbican_acl auth needs) — over
LocalSecrets, answered as Barbican answers (refs built from the request's base URL, Barbican's error body).
Only the project changes an ACL; `project-access` is stored and shown, not enforced.

Extension: PUT /v1/secrets/{id} also replaces an existing payload (Barbican answers 409 there), so a tenant
renews a certificate behind the same ref. For a secret in use that is refused (400) when a listener or pool
could not use the new payload, and (409) while one of their load balancers applies a change; else the
controller is woken (`wake`) to roll the new payload out to their engines."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from quadriga.api.auth import Authenticator
from quadriga.api.errors import ApiError
from quadriga.certs.tls import CertificateError
from quadriga.db import models as m
from quadriga.keymanager import KeyManagerUnavailable, SecretNotFound
from quadriga.keymanager.refs import Kind
from quadriga.keymanager.store import LocalSecrets, SecretInUse
from quadriga.keymanager.validation import (
    BINARY,
    MAX_REQUEST,
    MAX_SMALLINT,
    PLAIN_TEXT,
    TOO_LARGE,
    BarbicanError,
    acl_read,
    decode_payload,
    new_container,
    new_secret,
    normalize_content_type,
)

log = logging.getLogger("quadriga.keymanager")

MICROVERSIONS = ("1.0", "1.1")  # 1.1: secrets show their consumers (always none here)
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
}
DEFAULT_LIMIT, MAX_LIMIT = 10, 100
MAX_OFFSET = 2**31 - 1  # beyond any list; larger numbers overflow the database's integers


def barbican_error(status: int, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"code": status, "title": TITLES.get(status, "Error"), "description": description}
    return JSONResponse(body, status_code=status, headers=headers)


class _Microversion:
    """Reads `OpenStack-API-Version: key-manager X.Y` (default 1.0), answers 406 to an unknown one, and
    names the version served on every response, as Barbican's microversion middleware does; also serves
    paths with a trailing slash as without one (barbicanclient POSTs to /v1/secrets/)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # PostgreSQL refuses NUL in text (a 500 at the lookup): a NUL in the path or the query is a 400.
        if "\x00" in scope["path"] or "\x00" in unquote(scope.get("query_string", b"").decode("latin-1")):
            await barbican_error(400, "NUL characters are not allowed in the request path or query.")(
                scope, receive, send
            )
            return
        # Clients add a trailing slash to collection paths (POST /v1/secrets/): serve them without redirects.
        if scope["path"] != "/" and scope["path"].endswith("/"):
            scope = dict(scope, path=scope["path"].rstrip("/") or "/")
        version = "1.0"
        for name, value in scope["headers"]:
            if name == b"openstack-api-version":
                for part in value.decode("latin-1").split(","):
                    service, _, wanted = part.strip().partition(" ")
                    if service.lower() == "key-manager":
                        version = MICROVERSIONS[-1] if wanted.strip() == "latest" else wanted.strip()
        if version not in MICROVERSIONS:
            response = barbican_error(
                406, f"Version {version} is not supported; this key manager serves {', '.join(MICROVERSIONS)}."
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["microversion"] = version

        async def send_with_version(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"openstack-api-version", f"key-manager {version}".encode()),
                    (b"vary", b"OpenStack-API-Version"),
                ]
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, send_with_version)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def secret_view(request: Request, secret: m.Secret) -> dict[str, Any]:
    view: dict[str, Any] = {
        "algorithm": secret.algorithm,
        "bit_length": secret.bit_length,
        "created": _iso(secret.created_at),
        "creator_id": secret.creator_id,
        "expiration": _iso(secret.expiration),
        "mode": secret.mode,
        "name": secret.name,
        "secret_ref": f"{_base(request)}/v1/secrets/{secret.id}",
        "secret_type": secret.secret_type,
        "status": "ACTIVE",
        "updated": _iso(secret.updated_at or secret.created_at),
    }
    if secret.encrypted_payload is not None and secret.payload_content_type:
        view["content_types"] = {"default": secret.payload_content_type}
    if request.state.microversion != "1.0":
        view["consumers"] = []
    return view


def container_view(request: Request, container: m.SecretContainer) -> dict[str, Any]:
    return {
        "consumers": [],
        "container_ref": f"{_base(request)}/v1/containers/{container.id}",
        "created": _iso(container.created_at),
        "creator_id": container.creator_id,
        "name": container.name,
        "secret_refs": [
            {"name": link.name, "secret_ref": f"{_base(request)}/v1/secrets/{link.secret_id}"}
            for link in container.secret_refs
        ],
        "status": "ACTIVE",
        "type": container.type,
        "updated": _iso(container.updated_at or container.created_at),
    }


def _version_info(request: Request) -> dict[str, Any]:
    links = [
        {"rel": "self", "href": f"{_base(request)}/v1/"},
        {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
    ]
    if request.state.microversion == "1.0":
        media = [{"base": "application/json", "type": "application/vnd.openstack.key-manager-v1+json"}]
        return {"id": "v1", "status": "stable", "links": links, "media-types": media}
    return {
        "id": "v1",
        "status": "CURRENT",
        "min_version": MICROVERSIONS[0],
        "max_version": MICROVERSIONS[-1],
        "links": links,
    }


def _paging(request: Request) -> tuple[int, int]:
    """Barbican's paging: bad or missing values fall back to the defaults, limit at most 100."""

    def number(key: str, default: int) -> int:
        try:
            return min(max(0, int(request.query_params.get(key, default))), MAX_OFFSET)
        except ValueError:
            return default

    limit = number("limit", DEFAULT_LIMIT) or DEFAULT_LIMIT
    return number("offset", 0), min(limit, MAX_LIMIT)


def _page(request: Request, key: str, items: list[dict[str, Any]], offset: int, limit: int, total: int) -> dict:
    """A list answer with Barbican's `total` and `previous`/`next` links (keeping the other query values)."""
    kept = urlencode([(k, v) for k, v in request.query_params.multi_items() if k not in ("limit", "offset")])
    extra = f"&{kept}" if kept else ""
    link = f"{_base(request)}/v1/{key}?limit={limit}&offset={{}}{extra}"
    body: dict[str, Any] = {key: items, "total": total}
    if items and offset > 0:
        body["previous"] = link.format(max(0, offset - limit))
    if items and total > offset + limit:
        body["next"] = link.format(offset + limit)
    return body


async def _body(request: Request) -> bytes:
    """The request body, at most MAX_REQUEST bytes (413 beyond, without reading the rest into memory)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_REQUEST:
        raise BarbicanError(413, TOO_LARGE)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST:
            raise BarbicanError(413, TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request) -> Any:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BarbicanError(415, f"Content-Type of '{content_type}' is not supported for this request.")
    try:
        body = json.loads(await _body(request))
        json.dumps(body, ensure_ascii=False).encode()  # a lone surrogate ("\\ud800") is no text to store
    except (ValueError, UnicodeError, RecursionError):  # RecursionError: nested too deep
        raise BarbicanError(400, "Malformed JSON") from None
    return body


def _created(request: Request, kind: str, ident: str) -> JSONResponse:
    """201 with the new object's ref, in the body and in Location."""
    ref = f"{_base(request)}/v1/{kind}s/{ident}"
    return JSONResponse({f"{kind}_ref": ref}, status_code=201, headers={"Location": ref})


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "").strip()
    return accept in ("", "*/*", "application/json")


def create_app(store: LocalSecrets, authenticator: Authenticator, wake: Callable[[], None] = lambda: None) -> FastAPI:
    """The Barbican-compatible API over `store`; serve it at the root of its own port (clients add /v1).
    `wake` wakes the controller once load balancers are marked for an update (a renewal to roll out)."""
    app = FastAPI(title="quadriga key manager", openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(_Microversion)
    _install_handlers(app)

    def project(request: Request) -> tuple[str, str | None]:
        ctx = authenticator.authenticate(request)
        if not ctx.project_id:
            raise BarbicanError(401, "A project is needed: send X-Project-Id.")
        return ctx.project_id, ctx.user_id

    @app.get("/")
    def versions(request: Request) -> JSONResponse:
        info = _version_info(request)
        body = {"versions": {"values": [info]}} if request.state.microversion == "1.0" else {"versions": [info]}
        return JSONResponse(body, status_code=300)

    @app.get("/v1")
    def version(request: Request) -> dict[str, Any]:
        return {"version": _version_info(request)}

    @app.get("/v1/projects", include_in_schema=False)
    @app.get("/v1/projects/{project}", include_in_schema=False)
    def no_identity_service() -> None:
        """The clouds.yaml's auth endpoint is this API (python-barbicanclient needs it), so the CLI asks it to
        resolve project names (`loadbalancer quota show NAME`). There is no identity service here: a 403 tells
        the client to use the name as the project id, as it does when Keystone forbids the lookup."""
        raise BarbicanError(403, "No identity service here: project names are used as project ids.")

    @app.post("/v1/secrets", status_code=201)
    async def create_secret(request: Request) -> JSONResponse:
        project_id, user_id = await run_in_threadpool(project, request)  # Keystone may be asked: not on the loop
        meta, payload = new_secret(await _json(request), user_id)
        secret = await run_in_threadpool(store.create_secret, project_id, meta, payload)
        return _created(request, "secret", secret.id)

    @app.get("/v1/secrets")
    def list_secrets(request: Request) -> dict[str, Any]:
        project_id, _ = project(request)
        offset, limit = _paging(request)
        q = request.query_params
        filters: dict[str, object] = {
            column: q[key]
            for key, column in (
                ("name", "name"),
                ("alg", "algorithm"),
                ("mode", "mode"),
                ("secret_type", "secret_type"),
            )
            if q.get(key)
        }
        if q.get("bits", "").isdigit() and int(q["bits"]) > 0:  # no secret has more bits than MAX_SMALLINT
            filters["bit_length"] = min(int(q["bits"]), MAX_SMALLINT + 1)
        rows, total = store.list_secrets(project_id, offset, limit, filters)
        return _page(request, "secrets", [secret_view(request, r) for r in rows], offset, limit, total)

    @app.get("/v1/secrets/{secret_id}")
    def get_secret(request: Request, secret_id: str) -> Response:
        project_id, user_id = project(request)
        if _wants_json(request):
            return JSONResponse(secret_view(request, store.get_secret(project_id, secret_id, user_id)))
        log.warning("secret %s: payload requested through the deprecated GET with Accept", secret_id)
        return _payload(request, project_id, user_id, secret_id)

    @app.get("/v1/secrets/{secret_id}/payload")
    def get_payload(request: Request, secret_id: str) -> Response:
        project_id, user_id = project(request)
        return _payload(request, project_id, user_id, secret_id)

    def _payload(request: Request, project_id: str, user_id: str | None, secret_id: str) -> Response:
        stored = store.payload(project_id, secret_id, user_id)
        accept = request.headers.get("accept", "").strip()
        wanted = stored.content_type if accept in ("", "*/*") else normalize_content_type(accept)
        if wanted is None:
            raise BarbicanError(406, "Wrong payload content-type")
        if wanted in PLAIN_TEXT:
            try:
                stored.payload.decode("utf-8")
            except UnicodeDecodeError:
                raise BarbicanError(406, "Wrong payload content-type") from None
            return Response(stored.payload, media_type="text/plain")
        return Response(stored.payload, media_type=wanted if wanted in BINARY else "application/octet-stream")

    @app.put("/v1/secrets/{secret_id}", status_code=204)
    async def put_secret(request: Request, secret_id: str) -> Response:
        project_id, _ = await run_in_threadpool(project, request)
        raw_type = request.headers.get("content-type", "")
        content_type = normalize_content_type(raw_type) if raw_type else None
        if content_type is None or content_type == "application/pkcs8":
            raise BarbicanError(415, f"Content-Type of '{raw_type}' is not supported for PUT.")
        content_type = "text/plain" if content_type in PLAIN_TEXT else content_type
        body = await _body(request)
        if not body:
            raise BarbicanError(400, "No data supplied to process.")
        encoding = request.headers.get("content-encoding")
        payload = decode_payload(body, content_type, encoding)
        if await run_in_threadpool(store.replace_payload, project_id, secret_id, payload, content_type):
            wake()
        return Response(status_code=204)

    @app.delete("/v1/secrets/{secret_id}", status_code=204)
    def delete_secret(request: Request, secret_id: str) -> Response:
        project_id, _ = project(request)
        store.delete_secret(project_id, secret_id)
        return Response(status_code=204)

    @app.post("/v1/containers", status_code=201)
    async def create_container(request: Request) -> JSONResponse:
        project_id, user_id = await run_in_threadpool(project, request)
        name, type_, refs = new_container(await _json(request))
        container = await run_in_threadpool(store.create_container, project_id, name, type_, refs, user_id)
        return _created(request, "container", container.id)

    @app.get("/v1/containers")
    def list_containers(request: Request) -> dict[str, Any]:
        project_id, _ = project(request)
        offset, limit = _paging(request)
        filters: dict[str, object] = {
            k: request.query_params[k] for k in ("name", "type") if request.query_params.get(k)
        }
        rows, total = store.list_containers(project_id, offset, limit, filters)
        return _page(request, "containers", [container_view(request, r) for r in rows], offset, limit, total)

    @app.get("/v1/containers/{container_id}")
    def get_container(request: Request, container_id: str) -> dict[str, Any]:
        project_id, user_id = project(request)
        return container_view(request, store.get_container(project_id, container_id, user_id))

    @app.get("/v1/{kind}/{ident}/acl")
    def get_acl(request: Request, kind: str, ident: str) -> dict[str, Any]:
        acl = store.get_acl(project(request)[0], _acl_kind(kind), ident)
        if acl is None:
            return {"read": {"project-access": True}}
        read = {"users": acl.users, "project-access": acl.project_access}
        return {"read": read | {"created": _iso(acl.created_at), "updated": _iso(acl.updated_at or acl.created_at)}}

    @app.put("/v1/{kind}/{ident}/acl")
    @app.patch("/v1/{kind}/{ident}/acl")
    async def set_acl(request: Request, kind: str, ident: str) -> dict[str, str]:
        """PUT replaces the read ACL (what is left out gets its default), PATCH changes what is given."""
        project_id, _ = await run_in_threadpool(project, request)
        users, project_access = acl_read(await _json(request))
        if request.method == "PUT":
            users, project_access = users or [], True if project_access is None else project_access
        await run_in_threadpool(store.set_acl, project_id, _acl_kind(kind), ident, users, project_access)
        return {"acl_ref": f"{_base(request)}/v1/{kind}/{ident}/acl"}

    @app.delete("/v1/{kind}/{ident}/acl")
    def delete_acl(request: Request, kind: str, ident: str) -> Response:
        store.delete_acl(project(request)[0], _acl_kind(kind), ident)
        return Response(status_code=200)

    @app.delete("/v1/containers/{container_id}", status_code=204)
    def delete_container(request: Request, container_id: str) -> Response:
        project_id, _ = project(request)
        store.delete_container(project_id, container_id)
        return Response(status_code=204)

    return app


def _acl_kind(kind: str) -> Kind:
    if kind not in ("secrets", "containers"):
        raise BarbicanError(404, "Not Found")
    return kind  # type: ignore[return-value]


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(BarbicanError)
    async def _barbican(_req: Request, exc: BarbicanError) -> JSONResponse:
        return barbican_error(exc.status, exc.description)

    @app.exception_handler(SecretNotFound)
    async def _not_found(_req: Request, exc: SecretNotFound) -> JSONResponse:
        return barbican_error(404, str(exc))

    @app.exception_handler(SecretInUse)
    async def _in_use(_req: Request, exc: SecretInUse) -> JSONResponse:
        return barbican_error(409, str(exc))

    @app.exception_handler(CertificateError)
    async def _unusable(_req: Request, exc: CertificateError) -> JSONResponse:
        log.info("secret replacement refused: %s", exc)
        return barbican_error(400, str(exc))

    @app.exception_handler(KeyManagerUnavailable)
    async def _unavailable(_req: Request, _exc: KeyManagerUnavailable) -> JSONResponse:
        return barbican_error(500, "Secret payload retrieval failure seen - please contact site administrator.")

    @app.exception_handler(ApiError)
    async def _auth(_req: Request, exc: ApiError) -> JSONResponse:
        return barbican_error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return barbican_error(exc.status_code, "Not Found" if exc.status_code == 404 else str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        # The exception's type, not its text: that could carry what was being stored.
        log.error("unhandled error on %s %s (%s)", req.method, req.url.path, type(exc).__name__)
        return barbican_error(500, "Request failed - please contact site administrator.")
