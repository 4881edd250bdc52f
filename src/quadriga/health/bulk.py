"""The recorder's bulk statements. The two per-heartbeat writes, one statement per batch whatever its
size: the engines' last (boot, seq) and the listener statistics' counter deltas. They run for every
heartbeat (5,000 a second for 5,000 engines), so they skip the ORM and SQLAlchemy's per-row parameter
handling: on PostgreSQL one statement over arrays (unnest), on SQLite the driver's executemany (in C)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, DateTime, String, any_, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

COUNTERS = ("bytes_in", "bytes_out", "total_connections", "request_errors")


# What to add to one (listener, engine) statistics row, a plain tuple (thousands a second): listener id,
# amphora id, load balancer id, then the COUNTERS' deltas, then active_connections (it replaces the gauge).
StatisticsDelta = tuple[str, str, str, int, int, int, int, int]


_SET_HEARTBEATS_PG = """
UPDATE amphorae SET heartbeat_boot = v.boot, heartbeat_seq = v.seq, heartbeat_at = :now
FROM unnest(CAST(:ids AS varchar[]), CAST(:boots AS bigint[]), CAST(:seqs AS bigint[])) AS v(id, boot, seq)
WHERE amphorae.id = v.id
"""
_SET_HEARTBEATS_SQLITE = """
UPDATE amphorae SET heartbeat_boot = ?, heartbeat_seq = ?, heartbeat_at = ? WHERE id = ?
"""
_COLUMNS = ("listener_id", "amphora_id", "load_balancer_id", *COUNTERS, "active_connections", "updated_at")
_ON_CONFLICT = (
    "ON CONFLICT (listener_id, amphora_id) DO UPDATE SET "
    + ", ".join(f"{n} = listener_statistics.{n} + excluded.{n}" for n in COUNTERS)
    + ", active_connections = excluded.active_connections, updated_at = excluded.updated_at"
)
_ADD_STATISTICS_PG = f"""
INSERT INTO listener_statistics ({", ".join(_COLUMNS)})
SELECT v.*, CAST(:now AS timestamp) FROM unnest(
    CAST(:listener_id AS varchar[]), CAST(:amphora_id AS varchar[]), CAST(:load_balancer_id AS varchar[]),
    {", ".join(f"CAST(:{n} AS bigint[])" for n in (*COUNTERS, "active_connections"))}
) AS v
{_ON_CONFLICT}
"""
_ADD_STATISTICS_SQLITE = f"""
INSERT INTO listener_statistics ({", ".join(_COLUMNS)}) VALUES ({", ".join("?" * len(_COLUMNS))})
{_ON_CONFLICT}
"""


def set_heartbeats(session: Session, last: Sequence[tuple[str, int, int]], now: dt.datetime) -> None:
    """Store each engine's last applied (boot, seq): `last` holds (engine id, boot, seq). A heartbeat is no
    change of the amphora: its updated_at stays (as in Octavia, whose heartbeats go to amphora_health)."""
    if not last:
        return
    if is_sqlite(session):
        stamp = _sqlite_datetime(session, now)
        rows = [(boot, seq, stamp, engine_id) for engine_id, boot, seq in last]
        session.connection().exec_driver_sql(_SET_HEARTBEATS_SQLITE, rows)
        return
    ids, boots, seqs = zip(*last, strict=True)
    session.execute(
        text(_SET_HEARTBEATS_PG), {"ids": _array(ids), "boots": _array(boots), "seqs": _array(seqs), "now": now}
    )


def add_statistics(session: Session, deltas: Sequence[StatisticsDelta], now: dt.datetime) -> None:
    """Add the deltas to the statistics rows, creating the rows that do not exist yet."""
    if not deltas:
        return
    if is_sqlite(session):
        stamp = _sqlite_datetime(session, now)
        rows = [(*d, stamp) for d in deltas]
        session.connection().exec_driver_sql(_ADD_STATISTICS_SQLITE, rows)
        return
    columns = (_array(column) for column in zip(*deltas, strict=True))
    params: dict[str, object] = dict(zip(_COLUMNS[:-1], columns, strict=True))
    session.execute(text(_ADD_STATISTICS_PG), params | {"now": now})


def among(session: Session, column: ColumnElement[str], values: Iterable[object]) -> ColumnElement[bool]:
    """`column IN values`; on PostgreSQL as `= ANY(one array parameter)`: a batch's hundreds of ids then
    cost one parameter instead of hundreds to render, cast and send."""
    if is_sqlite(session):
        return column.in_(list(values))
    return column == any_(bindparam(None, list(values), type_=ARRAY(String)))


def _array(values: Sequence[object]) -> str:
    """A PostgreSQL array literal of ints or of strings, not empty (the statements cast it), built here at C speed:
    psycopg's array adapter handles each element in Python, the largest cost of a batch on PostgreSQL.
    Strings are quoted (so that "NULL" stays a string), with backslashes and quotes escaped."""
    if isinstance(values[0], int):  # a column: all ints or all strings
        return "{" + ",".join(map(str, values)) + "}"
    joined = '","'.join(values)  # type: ignore[arg-type]  # strings: a TypeError otherwise
    if "\\" in joined or '"' in joined:
        joined = '","'.join(v.replace("\\", "\\\\").replace('"', '\\"') for v in values)  # type: ignore[union-attr]
    return '{"' + joined + '"}'


def is_sqlite(session: Session) -> bool:
    """Whether the session runs on SQLite (the statements differ)."""
    return session.get_bind().dialect.name == "sqlite"


def _sqlite_datetime(session: Session, value: dt.datetime) -> object:
    """`value` as SQLAlchemy stores a DateTime on SQLite (so the ORM reads it back), converted once here
    rather than by the driver for every row."""
    process = DateTime().bind_processor(session.get_bind().dialect)
    return process(value) if process is not None else value.isoformat(" ")
