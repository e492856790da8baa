"""SQL building blocks shared by the database resources and the workflows (SQLAlchemy 2, no Dagster).

SQLite and PostgreSQL disagree on transactions in ways the workflows should not see: this module
maps isolation levels onto both, builds SQLite engines whose transactions really are transactions,
and recognises the errors after which a whole transaction is worth running again.
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
import tenacity
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine


T = TypeVar("T")

ISOLATION_LEVELS = frozenset(
    {"SERIALIZABLE", "REPEATABLE READ", "READ COMMITTED", "READ UNCOMMITTED", "AUTOCOMMIT"}
)

# The connection execution option our SQLite `begin` hook reads: the BEGIN variant to emit, or None
# for no transaction at all (autocommit).
SQLITE_BEGIN_OPTION = "hub_sqlite_begin"

# 40001 serialization_failure, 40P01 deadlock_detected: PostgreSQL aborted the transaction and
# running it again from the start is the documented remedy.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
_RETRYABLE_SQLITE_ERRORS = frozenset({"SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT", "SQLITE_LOCKED"})


class UnknownIsolationLevel(ValueError):
    """An isolation level neither PostgreSQL nor SQLite knows."""


class UnsupportedDialect(ValueError):
    """A database other than PostgreSQL or SQLite."""


class UnconfiguredSqliteEngine(ValueError):
    """A SQLite engine built without `sqlite_engine`, so its transactions are not real transactions."""


def normalise_isolation_level(level: str | None) -> str | None:
    """'serializable', 'repeatable_read', 'READ COMMITTED' ... in SQLAlchemy's spelling; None stays None."""
    if level is None:
        return None
    normalised = " ".join(level.replace("_", " ").split()).upper()
    if normalised not in ISOLATION_LEVELS:
        raise UnknownIsolationLevel(
            f"isolation level {level!r} is unknown: expected one of {', '.join(sorted(ISOLATION_LEVELS))}"
        )
    return normalised


def is_serialization_failure(exc: BaseException) -> bool:
    """Whether the transaction that raised `exc` lost a race and can be run again from the start.

    PostgreSQL: serialization failure (40001) or deadlock (40P01). SQLite: the database stayed locked
    by another writer for longer than busy_timeout ('database is locked').
    """
    original: object = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return True
    if isinstance(original, sqlite3.OperationalError):
        name = getattr(original, "sqlite_errorname", "")
        return name in _RETRYABLE_SQLITE_ERRORS or "database is locked" in str(original)
    return False


@functools.cache
def serializable_retrying(attempts: int = 30) -> tenacity.Retrying:
    """Retries a whole transaction (a callable that opens, runs and commits it) from the start while it
    loses serialization races, with short jittered waits; anything else propagates at once. The callable
    must be safe to repeat: everything a failed attempt did was rolled back. One object per number of
    attempts serves every thread (tenacity keeps a call's state in the call, its statistics per
    thread): the ledger runs several such transactions per order."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_serialization_failure),
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_random_exponential(multiplier=0.005, max=0.25),
        reraise=True,
    )


def sqlite_engine(path: str | Path, *, busy_timeout_ms: int = 30_000, echo: bool = False) -> Engine:
    """An engine for the SQLite file at `path` (parent folder created) with WAL, busy_timeout and
    foreign keys on every connection, and transactions that begin when SQLAlchemy says so.

    The sqlite3 driver's legacy mode only emits BEGIN before INSERT/UPDATE/DELETE, which leaves
    SELECTs outside the transaction and DDL autocommitted (so migrations could half-apply). The
    driver's own transaction control is therefore switched off and the `begin` hook emits BEGIN
    itself, in the variant the connection's SQLITE_BEGIN_OPTION asks for (DEFERRED by default).
    """
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(sa.URL.create("sqlite+pysqlite", database=str(file)), echo=echo)

    @event.listens_for(engine, "connect")
    def configure_connection(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching an existing file to WAL needs a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _begin_sqlite_transaction(connection: Connection) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
    if mode is not None:
        connection.exec_driver_sql(f"BEGIN {mode}")


def require_hub_sqlite_engine(engine: Engine) -> None:
    """Raise UnconfiguredSqliteEngine unless `engine` came from `sqlite_engine`."""
    if not event.contains(engine, "begin", _begin_sqlite_transaction):
        raise UnconfiguredSqliteEngine(
            f"SQLite engine for {engine.url.database!r} was not built by"
            " hub_pipelines.core.sql.sqlite_engine: its driver autocommits DDL and would not take"
            " the write lock at BEGIN"
        )


def insert_ignoring_duplicates(table: sa.Table, dialect: str) -> sa.Insert:
    """INSERT into `table` that silently skips rows violating any unique key (ON CONFLICT DO NOTHING)."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise UnsupportedDialect(
        f"insert_ignoring_duplicates: dialect {dialect!r} is neither 'postgresql' nor 'sqlite'"
    )
