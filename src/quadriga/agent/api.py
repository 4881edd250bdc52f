"""The agent's HTTPS API: how the controller applies, removes and reads engines on this host.

It listens with mutual TLS only (`AgentServer`): a peer without a client certificate from our CA never gets
past the handshake, so every request that reaches a handler comes from the controller. Bodies are still
untrusted input (they carry tenants' values), so they are size-limited and validated as an `EngineSpec`,
and every error answers with Octavia's fault body and a 4xx, never a 500.

    PUT    /v1/engines/{id}   EngineSpec -> EngineReport   (400 bad spec, 409 stale, 413 too big, 422 rejected,
                                                          503 the network driver or HAProxy failed: retry)
    GET    /v1/engines        {"engines": [EngineReport, ...]}
    GET    /v1/engines/{id}   EngineReport (404 unknown)
    DELETE /v1/engines/{id}   204, also for an unknown engine (503 the network driver or HAProxy failed: retry)
    GET    /v1/info           AgentInfo
    POST   /v1/orphans/collect  {"collected": [...]}: remove what no engine owns (see Agent.collect_orphans)
    POST   /v1/certificate/request  {"csr": PEM}: a new key waits for its certificate (see agent.certificate)
    PUT    /v1/certificate    {"certificate": PEM} -> AgentInfo   (400 unusable, 409 no pending request)
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from quadriga.agent.certificate import AgentCertificate, CertificateRefused, NoPendingRequest
from quadriga.agent.engine import EngineRejected, StaleRevision
from quadriga.agent.haproxy import HaproxyError
from quadriga.api.errors import fault
from quadriga.certs.pki import Bundle
from quadriga.engine.report import EngineReport
from quadriga.engine.spec import EngineSpec
from quadriga.network.drivers.base import NetworkError

log = logging.getLogger("quadriga.agent")

# An engine spec carries its TLS files (certificates with their chains, CA bundles, CRLs, which can be large).
MAX_BODY = 16 * 1024 * 1024
# TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are not affected by this list).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class AgentLike(Protocol):
    """The part of `quadriga.agent.agent.Agent` the API uses."""

    def apply(self, engine_id: str, spec: EngineSpec) -> EngineReport: ...
    def remove(self, engine_id: str) -> None: ...
    def report(self, engine_id: str) -> EngineReport | None: ...
    def reports(self) -> list[EngineReport]: ...
    def collect_orphans(self) -> list[str]: ...


class AgentInfo(BaseModel):
    """What `GET /v1/info` answers: enough for an operator to tell which agent this is and when it needs a
    new certificate."""

    name: str
    network_driver: str
    haproxy_version: str | None = None
    certificate_not_after: dt.datetime | None = None
    certificate_serial: str | None = None  # hex, as `openssl x509 -serial` shows it


@dataclass(frozen=True)
class Identity:
    """The agent's facts for `GET /v1/info`; the certificate ones are those it presents now (it is renewed
    while the agent runs)."""

    name: str
    network_driver: str
    haproxy_version: str | None = None
    certificate: AgentCertificate | None = None

    def info(self) -> AgentInfo:
        cert = self.certificate.current if self.certificate else None
        return AgentInfo(
            name=self.name,
            network_driver=self.network_driver,
            haproxy_version=self.haproxy_version,
            certificate_not_after=cert.not_valid_after_utc if cert else None,
            certificate_serial=f"{cert.serial_number:X}" if cert else None,
        )


class Collected(BaseModel):
    """What `POST /v1/orphans/collect` answers: what was removed."""

    collected: list[str]


class CertificateRequest(BaseModel):
    """What `POST /v1/certificate/request` answers."""

    csr: str


class SignedCertificate(BaseModel):
    """What `PUT /v1/certificate` takes."""

    certificate: str


class EngineList(BaseModel):
    """What `GET /v1/engines` answers."""

    engines: list[EngineReport]


class BodyTooLarge(Exception):
    pass


def create_app(agent: AgentLike, identity: Identity, *, max_body: int = MAX_BODY) -> FastAPI:
    """The API over `agent`. Agent calls block (HAProxy checks and reloads), so they run in the thread pool."""
    app = FastAPI(title="quadriga agent", openapi_url=None, docs_url=None, redoc_url=None)
    _install_handlers(app)

    @app.put("/v1/engines/{engine_id}")
    async def apply(engine_id: str, request: Request) -> Response:
        try:
            spec = EngineSpec.model_validate_json(await _read_body(request, max_body))
        except BodyTooLarge:
            log.warning("apply engine=%s refused: body over %d bytes", engine_id, max_body)
            return fault(413, f"Request body is larger than the limit of {max_body} bytes.")
        except ValidationError as exc:
            message = f"Invalid engine spec: {_describe(exc)}"
            log.warning("apply engine=%s refused: %s", engine_id, message)
            return fault(400, message)
        started = time.monotonic()
        outcome = "error"  # an unexpected exception: answered with a 500 by the handler below
        try:
            report = await run_in_threadpool(agent.apply, engine_id, spec)
            outcome = "applied"
            return _json(report)
        except StaleRevision as exc:
            outcome = "stale"
            return fault(409, str(exc) or f"revision {spec.revision} is older than the running one")
        except EngineRejected as exc:
            outcome = "rejected"
            return fault(422, exc.reason)
        except NetworkError as exc:  # plugging failed; the engine serves what it did, and a retry may work
            outcome = "network-error"
            return fault(503, f"The network driver failed: {exc}")
        except HaproxyError as exc:  # HAProxy failed without judging the spec (a killed check): a retry may work
            outcome = "haproxy-error"
            return fault(503, f"HAProxy failed: {exc}")
        except ValueError as exc:  # the agent's word for a bad engine id
            outcome = "invalid"
            return fault(400, str(exc))
        finally:
            elapsed_ms = (time.monotonic() - started) * 1000
            log.info(
                "apply engine=%s revision=%d outcome=%s duration_ms=%.1f", engine_id, spec.revision, outcome, elapsed_ms
            )

    @app.get("/v1/engines")
    def list_engines() -> Response:
        return _json(EngineList(engines=agent.reports()))

    @app.get("/v1/engines/{engine_id}")
    def get_engine(engine_id: str) -> Response:
        try:
            report = agent.report(engine_id)
        except ValueError as exc:
            return fault(400, str(exc))
        if report is None:
            return fault(404, f"Engine {engine_id} not found.")
        return _json(report)

    @app.delete("/v1/engines/{engine_id}", status_code=204)
    def delete_engine(engine_id: str) -> Response:
        try:
            agent.remove(engine_id)
        except ValueError as exc:
            return fault(400, str(exc))
        except (NetworkError, HaproxyError) as exc:  # nothing is half-removed for good: a retry finishes it
            log.warning("remove engine=%s failed: %s", engine_id, exc)
            return fault(503, f"The engine could not be removed yet: {exc}")
        log.info("remove engine=%s", engine_id)
        return Response(status_code=204)

    @app.post("/v1/orphans/collect")
    def collect_orphans() -> Response:
        return _json(Collected(collected=agent.collect_orphans()))

    @app.get("/v1/info")
    def info() -> Response:
        return _json(identity.info())

    @app.post("/v1/certificate/request")
    async def certificate_request() -> Response:
        # On the event loop's thread, as the handshakes that read the TLS context are.
        if identity.certificate is None:
            return fault(404, "This agent does not renew its certificate.")
        return _json(CertificateRequest(csr=identity.certificate.request().decode()))

    @app.put("/v1/certificate")
    async def install_certificate(request: Request) -> Response:
        if identity.certificate is None:
            return fault(404, "This agent does not renew its certificate.")
        try:
            body = SignedCertificate.model_validate_json(await _read_body(request, max_body))
            identity.certificate.install(body.certificate.encode())
        except BodyTooLarge:
            return fault(413, f"Request body is larger than the limit of {max_body} bytes.")
        except ValidationError as exc:
            return fault(400, f"Invalid certificate body: {_describe(exc)}")
        except NoPendingRequest as exc:
            log.warning("certificate refused: %s", exc)
            return fault(409, str(exc))
        except CertificateRefused as exc:
            log.warning("certificate refused, the current one stays: %s", exc)
            return fault(400, str(exc))
        return _json(identity.info())

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused past `limit` bytes: by Content-Length before reading anything, and by what
    actually arrives (a chunked body declares no length)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(exc: ValidationError) -> str:
    """The first errors pydantic found, each with where it is (`listeners.0.protocol_port: ...`)."""
    parts = []
    errors = exc.errors(include_url=False)
    for err in errors[:3]:
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    more = f" (and {len(errors) - 3} more errors)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _install_handlers(app: FastAPI) -> None:
    """The framework's own errors (unknown path, wrong method) answer with the fault body too."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "Request refused."
        return fault(exc.status_code, message)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> Response:
        # Not bad input (that is answered above): the agent failed, and the controller retries a 5xx. Starlette
        # re-raises the exception after this answer, and uvicorn logs it with its traceback.
        return fault(500, f"The agent failed: {type(exc).__name__}: {exc}")


# --- the server ------------------------------------------------------------------------------------


class AgentServer:
    """uvicorn serving the agent API over mutual TLS, in a thread of its own.

    The peer must present a certificate from `bundle.ca`; anything else fails the TLS handshake. The
    listening socket is bound in `start()`, so a port in use fails there and `port` is known at once (pass
    port 0 for an ephemeral one). Used inside `quadriga serve` and by the standalone `quadriga agent`."""

    def __init__(
        self,
        app: FastAPI,
        bundle: Bundle,
        host: str = "127.0.0.1",
        port: int = 9443,
        *,
        certificate: AgentCertificate | None = None,
    ):
        self.host = host
        self._certificate = certificate
        self._requested_port = port
        self._config = uvicorn.Config(
            app,
            ssl_certfile=str(bundle.cert),
            ssl_keyfile=str(bundle.key),
            ssl_ca_certs=str(bundle.ca),
            ssl_cert_reqs=ssl.CERT_REQUIRED,
            ssl_ciphers=CIPHERS,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._server = uvicorn.Server(self._config)
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the agent server is not started")
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> None:
        """Bind, start serving and return once the server accepts connections. Certificate problems raise
        here, not in the thread."""
        if self._thread is not None:
            raise RuntimeError("the agent server was already started")
        self._config.load()  # builds the TLS context: a bad certificate or key fails now
        if self._certificate is not None and self._config.ssl is not None:
            self._certificate.serve(self._config.ssl)
        self._socket = _bind(self.host, self._requested_port)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="agent-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the agent API did not start on {self.host}:{self._requested_port}")
            time.sleep(0.01)
        log.info("agent API listening on %s", self.url)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to `timeout`), close the socket. Idempotent."""
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> AgentServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock
