"""The controller's side of the agent API: a client that speaks mutual TLS with our CA and nothing else.

Errors come back as three exceptions the controller can act on without looking at HTTP:
`AgentRejected` (permanent: the spec is invalid or HAProxy refused it; retrying the same spec is pointless),
`AgentStale` (the agent runs a newer revision) and `AgentUnavailable` (no answer, a timeout or a server
error; worth retrying). Each carries the agent's own message."""

from __future__ import annotations

import socket
import ssl
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from cryptography import x509
from pydantic import BaseModel, ValidationError

from quadriga.agent.api import AgentInfo, CertificateRequest, Collected, EngineList, SignedCertificate
from quadriga.certs.pki import Bundle
from quadriga.engine.report import EngineReport
from quadriga.engine.spec import EngineSpec

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 10.0
APPLY_TIMEOUT = 30.0  # an apply checks and reloads HAProxy and may plug a network

M = TypeVar("M", bound=BaseModel)


class AgentError(Exception):
    """A call to an agent failed; `message` is the agent's fault string (or the transport's error)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


class AgentRejected(AgentError):
    """Permanent: the agent refused this request (invalid spec, HAProxy rejected the config, too large)."""


class AgentStale(AgentError):
    """The agent already runs a newer revision of this engine."""


class AgentUnavailable(AgentError):
    """Retryable: the agent could not be reached, timed out or failed internally."""


def client_ssl_context(bundle: Bundle) -> ssl.SSLContext:
    """Trust only our CA (never the system's), present the controller's certificate, check the agent's name."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(bundle.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(bundle.cert), str(bundle.key))
    return context


class AgentClient:
    """One agent's API. Thread-safe (httpx.Client is); close it, or use it as a context manager."""

    def __init__(self, base_url: str, bundle: Bundle):
        self.base_url = base_url.rstrip("/")
        self._ssl = client_ssl_context(bundle)
        self._http = httpx.Client(
            base_url=self.base_url,
            verify=self._ssl,
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            trust_env=False,  # a proxy from the environment must never sit between controller and agent
        )

    def apply(self, engine_id: str, spec: EngineSpec) -> EngineReport:
        response = self._request(
            "PUT",
            _engine_path(engine_id),
            content=spec.model_dump_json(),
            headers={"Content-Type": "application/json"},
            timeout=httpx.Timeout(APPLY_TIMEOUT, connect=CONNECT_TIMEOUT),
        )
        return self._parse(response, EngineReport)

    def remove(self, engine_id: str) -> None:
        self._request("DELETE", _engine_path(engine_id))

    def report(self, engine_id: str) -> EngineReport | None:
        """The engine's report, or None when the agent has no such engine."""
        try:
            response = self._request("GET", _engine_path(engine_id))
        except AgentRejected as exc:
            if exc.status == 404:
                return None
            raise
        return self._parse(response, EngineReport)

    def reports(self) -> list[EngineReport]:
        return self._parse(self._request("GET", "/v1/engines"), EngineList).engines

    def collect_orphans(self) -> list[str]:
        """Have the agent remove what no engine owns; what it removed."""
        response = self._request("POST", "/v1/orphans/collect", timeout=httpx.Timeout(APPLY_TIMEOUT))
        return self._parse(response, Collected).collected

    def info(self) -> AgentInfo:
        return self._parse(self._request("GET", "/v1/info"), AgentInfo)

    def request_certificate(self) -> bytes:
        """A signing request for a new key the agent made (PEM)."""
        return self._parse(self._request("POST", "/v1/certificate/request"), CertificateRequest).csr.encode()

    def install_certificate(self, cert_pem: bytes) -> AgentInfo:
        """Make the agent present `cert_pem` (signed for its pending request) from its next handshake on."""
        body = SignedCertificate(certificate=cert_pem.decode()).model_dump_json()
        response = self._request("PUT", "/v1/certificate", content=body, headers={"Content-Type": "application/json"})
        return self._parse(response, AgentInfo)

    def presented_certificate(self) -> x509.Certificate:
        """The certificate the agent presents in a new TLS handshake (the pooled connections are older)."""
        url = urlsplit(self.base_url)
        host, port = url.hostname or "", url.port or 443
        try:
            with (
                socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as sock,
                self._ssl.wrap_socket(sock, server_hostname=host) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
        except OSError as exc:  # ssl.SSLError is one
            raise AgentUnavailable(f"agent {self.base_url}: TLS handshake failed: {exc}") from exc
        if der is None:
            raise AgentUnavailable(f"agent {self.base_url}: presented no certificate")
        return x509.load_der_x509_certificate(der)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise AgentUnavailable(f"agent {self.base_url}: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return response
        message = _fault_string(response)
        if response.status_code == 409:
            raise AgentStale(message, response.status_code)
        if response.status_code >= 500:
            raise AgentUnavailable(message, response.status_code)
        raise AgentRejected(message, response.status_code)

    def _parse(self, response: httpx.Response, model: type[M]) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            # An agent of another version, or not an agent at all: not something retrying the request fixes,
            # but not the spec's fault either.
            raise AgentUnavailable(f"agent {self.base_url}: unexpected response: {exc}", response.status_code) from exc


def _engine_path(engine_id: str) -> str:
    return f"/v1/engines/{quote(engine_id, safe='')}"


def _fault_string(response: httpx.Response) -> str:
    try:
        return str(response.json()["faultstring"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
