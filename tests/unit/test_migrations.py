"""Schema migrations that move data: an existing database upgrades in place."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text

from quadriga.db.migrate import alembic_config, upgrade


def test_amphora_agent_moves_out_of_compute_id(tmp_path: Path):
    # Before 0005 compute_id held the agent's name; now the agent has a column and compute_id is the engine's id.
    engine = create_engine(f"sqlite:///{tmp_path / 'q.sqlite'}")
    command.upgrade(alembic_config(engine), "0004")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO amphorae (id, compute_id, status, cert_busy, created_at) "
                "VALUES ('a1', 'local', 'ALLOCATED', 0, CURRENT_TIMESTAMP)"
            )
        )
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, compute_id, agent FROM amphorae")).all() == [("a1", "a1", "local")]
    engine.dispose()
