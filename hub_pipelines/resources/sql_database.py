"""The SQL database: SQLite in a local file, PostgreSQL (through psycopg 3) in production.

Both implement `hub_pipelines.core.ports.SqlDatabase`: an `engine`, a `dialect` name and
`transaction(isolation_level)`. The engine is created on first use and cached on the instance.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, PrivateAttr

from hub_pipelines.core.schema import upgrade_schema
from hub_pipelines.core.sql import SQLITE_BEGIN_OPTION, normalise_isolation_level, sqlite_engine

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

# Engines are created at most once per resource instance even when several threads ask at once.
# One lock for all instances: engine creation is rare, and a lock in a PrivateAttr would stop
# Dagster from deep-copying the resource.
_ENGINE_CREATION = threading.Lock()


def _migrate_schema_field() -> Any:
    return Field(
        default=False,
        description="Bring the schema to the newest migration when the engine is first created "
        "(locally; production runs `hub-pipelines migrate` as a deploy step).",
    )


class _CachedEngineDatabase(dg.ConfigurableResource):
    """What both databases share: the engine made once per instance (migrated first when asked), and
    closed when the step ends."""

    echo: bool = False
    migrate_schema: bool = _migrate_schema_field()

    _engine: Engine | None = PrivateAttr(default=None)

    @property
    def engine(self) -> Engine:
        # Read without the lock once the engine exists: every order's transaction asks for it.
        if self._engine is not None:
            return self._engine
        with _ENGINE_CREATION:
            if self._engine is None:
                engine = self._create_engine()
                if self.migrate_schema:
                    upgrade_schema(engine)
                self._engine = engine
            return self._engine

    def _create_engine(self) -> Engine:
        raise NotImplementedError

    def dispose(self) -> None:
        """Close the pooled connections; the next use opens new ones."""
        with _ENGINE_CREATION:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.dispose()


class SqliteDatabase(_CachedEngineDatabase):
    """A SQLite database file (created with its folder when missing), in WAL mode with foreign keys on."""

    path: str
    busy_timeout_ms: int = 30_000

    @property
    def dialect(self) -> str:
        return "sqlite"

    def _create_engine(self) -> Engine:
        return sqlite_engine(self.path, busy_timeout_ms=self.busy_timeout_ms, echo=self.echo)

    @contextlib.contextmanager
    def transaction(self, isolation_level: str | None = None) -> Iterator[Connection]:
        """A connection inside one transaction: committed on success, rolled back on error.

        SQLite transactions are always serializable, so every level but AUTOCOMMIT maps to one
        `BEGIN IMMEDIATE`. A plain (deferred) BEGIN takes the write lock only at the first write;
        in WAL mode, if another writer committed since this transaction's first read, that upgrade
        fails at once with SQLITE_BUSY and busy_timeout never applies. IMMEDIATE takes the write lock
        at BEGIN, where busy_timeout does apply, so concurrent writers queue instead of failing.
        """
        level = normalise_isolation_level(isolation_level)
        begin = None if level == "AUTOCOMMIT" else "IMMEDIATE"
        with self.engine.connect() as connection:
            connection.execution_options(**{SQLITE_BEGIN_OPTION: begin})
            with connection.begin():
                yield connection


class PostgresDatabase(_CachedEngineDatabase):
    """A PostgreSQL database reached through psycopg 3 with a pre-pinged connection pool.

    Either the separate connection fields or `url` (any `postgresql://` URL; its driver is
    replaced by psycopg 3) say where the database is; `url` wins when set.
    """

    host: str = "localhost"
    port: int = 5432
    user: str = "postgres"
    password: str = ""
    database: str = "postgres"
    url: str | None = None
    sslmode: str | None = None
    application_name: str = "hub_pipelines"
    statement_timeout_ms: int = 0
    connect_timeout_s: int = 10
    # An order ledger batch holds 9 connections for its whole run (8 reserving, 1 recording PAID):
    # the pool keeps room for them and for the rest of the step.
    pool_size: int = 12
    max_overflow: int = 10
    pool_recycle_s: int = 1800

    @property
    def dialect(self) -> str:
        return "postgresql"

    @property
    def sqlalchemy_url(self) -> sa.URL:
        if self.url:
            return sa.make_url(self.url).set(drivername="postgresql+psycopg")
        return sa.URL.create(
            "postgresql+psycopg",
            username=self.user,
            password=self.password or None,
            host=self.host,
            port=self.port,
            database=self.database,
        )

    def _create_engine(self) -> Engine:
        return sa.create_engine(
            self.sqlalchemy_url,
            connect_args=self._connect_args(),
            pool_size=self.pool_size,
            max_overflow=self.max_overflow,
            pool_recycle=self.pool_recycle_s,
            pool_pre_ping=True,
            echo=self.echo,
        )

    def _connect_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "application_name": self.application_name,
            "connect_timeout": self.connect_timeout_s,
        }
        if self.statement_timeout_ms:
            args["options"] = f"-c statement_timeout={int(self.statement_timeout_ms)}"
        if self.sslmode:
            args["sslmode"] = self.sslmode
        return args

    @contextlib.contextmanager
    def transaction(self, isolation_level: str | None = None) -> Iterator[Connection]:
        """A connection inside one transaction at `isolation_level` (the server default when None):
        committed on success, rolled back on error. The pool resets the level when the connection returns.
        """
        level = normalise_isolation_level(isolation_level)
        with self.engine.connect() as connection:
            if level is not None:
                connection.execution_options(isolation_level=level)
            with connection.begin():
                yield connection
