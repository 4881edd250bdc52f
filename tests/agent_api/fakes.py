"""Test doubles and helpers of the agent API suite: a fake `Agent`, specs, TLS client contexts."""

from __future__ import annotations

import re
import ssl
import threading
from pathlib import Path
from typing import Any

from quadriga.agent.engine import EngineRejected, StaleRevision
from quadriga.certs import pki
from quadriga.engine.report import EngineReport
from quadriga.engine.spec import ID_PATTERN, EngineSpec


class FakeAgent:
    """Keeps engines in a dict and records every call. `reject_with` makes the next applies fail as HAProxy
    would; `fail_with` makes applies and removals fail with that exception."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.engines: dict[str, EngineReport] = {}
        self.calls: list[tuple[str, str]] = []
        self.reject_with: str | None = None
        self.fail_with: Exception | None = None

    def _check(self, engine_id: str) -> None:
        if not re.match(ID_PATTERN, engine_id):
            raise ValueError(f"engine id {engine_id!r} is not valid")

    def apply(self, engine_id: str, spec: EngineSpec) -> EngineReport:
        with self.lock:
            self.calls.append(("apply", engine_id))
            self._check(engine_id)
            if self.fail_with is not None:
                raise self.fail_with
            running = self.engines.get(engine_id)
            if running is not None and spec.revision < running.revision:
                raise StaleRevision(f"engine {engine_id} runs revision {running.revision}, not older {spec.revision}")
            if self.reject_with is not None:
                raise EngineRejected(engine_id, self.reject_with)
            report = EngineReport(
                engine_id=engine_id, loadbalancer_id=spec.loadbalancer_id, revision=spec.revision, running=True
            )
            self.engines[engine_id] = report
            return report

    def remove(self, engine_id: str) -> None:
        with self.lock:
            self.calls.append(("remove", engine_id))
            self._check(engine_id)
            if self.fail_with is not None:
                raise self.fail_with
            self.engines.pop(engine_id, None)

    def report(self, engine_id: str) -> EngineReport | None:
        with self.lock:
            self.calls.append(("report", engine_id))
            self._check(engine_id)
            return self.engines.get(engine_id)

    def reports(self) -> list[EngineReport]:
        with self.lock:
            self.calls.append(("reports", ""))
            return list(self.engines.values())

    @property
    def mutations(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] in ("apply", "remove")]


def ssl_context(ca: Path, cert: pki.Bundle | None = None) -> ssl.SSLContext:
    """A client context that trusts `ca` and presents `cert` (or no certificate)."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


def spec_json(revision: int = 1, lb: str = "lb-1") -> dict[str, Any]:
    return {
        "revision": revision,
        "loadbalancer_id": lb,
        "vips": ["127.0.0.10"],
        "listeners": [{"id": "l1", "protocol": "HTTP", "protocol_port": 80, "default_pool_id": "p1"}],
        "pools": [
            {
                "id": "p1",
                "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN",
                "members": [{"id": "m1", "address": "127.0.0.20", "protocol_port": 8080}],
            }
        ],
    }


def spec(revision: int = 1, lb: str = "lb-1") -> EngineSpec:
    return EngineSpec.model_validate(spec_json(revision, lb))
