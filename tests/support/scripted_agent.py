"""An agent that answers from a script, for the controller's tests without HAProxy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from quadriga.engine.report import EngineReport
from quadriga.engine.spec import EngineSpec
from quadriga.providers.engine import EngineProvider
from tests.support.api_harness import Api, make_api


class ScriptedAgent:
    """Answers apply() from a script of outcomes (None = accept); records what it was sent."""

    def __init__(self) -> None:
        self.script: list[Exception | None] = []
        self.applied: list[tuple[str, EngineSpec]] = []
        self.removed: list[str] = []

    def apply(self, engine_id: str, spec: EngineSpec) -> EngineReport:
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        self.applied.append((engine_id, spec))
        return EngineReport(
            engine_id=engine_id, loadbalancer_id=spec.loadbalancer_id, revision=spec.revision, running=True
        )

    def remove(self, engine_id: str) -> None:
        self.removed.append(engine_id)

    def reports(self) -> list[EngineReport]:
        return []

    def collect_orphans(self) -> list[str]:
        return []


def scripted_agent() -> ScriptedAgent:
    """A fresh scripted agent (use as a fixture)."""
    return ScriptedAgent()


def engine_api(tmp_path: Path, agent: ScriptedAgent) -> Iterator[Api]:
    """The real API and reconciler on a real database, with engines on `agent` (use as a fixture)."""
    yield from make_api(tmp_path, extra_providers=lambda db: {"amphora": EngineProvider(db, {"agent-1": agent})})
