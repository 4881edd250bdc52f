"""Database engines and transactions.

Writes that must test-and-set (a load balancer's status, a quota, an IP allocation) run in a *write
transaction*: on PostgreSQL the rows they read are locked with SELECT ... FOR UPDATE; on SQLite the
transaction starts with BEGIN IMMEDIATE, which serializes writers for the whole database. Reads use
ordinary transactions and never block behind a writer (SQLite runs in WAL mode)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, ScalarResult, Select, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

_IMMEDIATE = "quadriga_begin_immediate"


def make_engine(url: str) -> Engine:
    """An engine for `url` with the settings quadriga relies on (WAL and immediate writes on SQLite)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record) -> None:  # pragma: no cover - exercised by every test
            dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN itself
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn) -> None:
            if conn.get_execution_options().get(_IMMEDIATE):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def column_values(session: Session, stmt: Select[Any]) -> ScalarResult[Any]:
    """The first column of `stmt`'s rows, run on the session's connection: plain rows without the ORM's
    per-statement and per-row work (for hot queries of a few columns). Pending changes are flushed first,
    as an ORM query's autoflush would."""
    session.flush()
    return session.connection().execute(stmt).scalars()


TRANSIENT_SQLSTATES = {"40P01", "40001"}  # PostgreSQL: deadlock detected, serialization failure


def transient(exc: DBAPIError) -> bool:
    """The database gave the transaction up to resolve a conflict (a deadlock, a serialization failure, a
    busy SQLite): the same transaction may succeed when tried again."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(orig)


class Database:
    """One engine and two kinds of sessions: `read()` and `write()`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = url.startswith("sqlite")
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self.engine.execution_options(**{_IMMEDIATE: True}), expire_on_commit=False)
        # SQLite's busy handler lets waiting writers sleep up to 100 ms at a time, unfairly; writers of
        # this process queue on a lock instead (p99 of concurrent creates: ~1.2 s -> ~0.13 s).
        self._write_turn = threading.RLock() if self.is_sqlite else contextlib.nullcontext()

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any exception."""
        with self._write_turn, self._writer() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
