"""Connections held for a batch's hot transactions, and how many of those run at once.

A transaction takes a slot; there are `size` slots, so at most that many run at once (for the
reserve transactions: more would only queue inside PostgreSQL and collide on the same rows). On
PostgreSQL each slot keeps one psycopg connection from the engine's pool, at the slots' isolation
level, for the whole batch: a transaction then costs its own statements only, not a pool checkout
and its liveness ping, its prepared statements stay prepared, and pipeline mode can send BEGIN, the
statement (and COMMIT) together; slots in autocommit run a single statement as its own transaction,
with no BEGIN or COMMIT at all. A connection that broke is handed back to the pool as invalid and
the slot takes a fresh one at its next use. `close()` returns every connection at its former level.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from hub_pipelines.core.ports import SqlDatabase

# psycopg (the PostgreSQL driver) loads when held connections are made, in a run, not with the code location.
if TYPE_CHECKING:
    import psycopg


class _Slot:
    def __init__(self) -> None:
        self.pooled: Any = None
        self.isolation_level: psycopg.IsolationLevel | None = None
        self.autocommit = False

    def connect(self, database: SqlDatabase, level: psycopg.IsolationLevel, *, autocommit: bool) -> None:
        self.pooled = database.engine.raw_connection()
        connection = self.pooled.driver_connection
        # Set on the connection, not per transaction: psycopg sends it with each BEGIN. Put back on
        # release, so the pool's next user gets the level (and the autocommit) the pool gave out.
        self.isolation_level, self.autocommit = connection.isolation_level, connection.autocommit
        connection.isolation_level = level
        connection.autocommit = autocommit

    @property
    def connection(self) -> psycopg.Connection[Any] | None:
        return None if self.pooled is None else self.pooled.driver_connection

    def release(self, *, broken: bool = False) -> None:
        if self.pooled is None:
            return
        import psycopg

        if not broken:
            try:
                self.pooled.driver_connection.rollback()
                self.pooled.driver_connection.isolation_level = self.isolation_level
                self.pooled.driver_connection.autocommit = self.autocommit
            except psycopg.Error:
                broken = True
        if broken:
            self.pooled.invalidate()
        self.pooled.close()
        self.pooled = None


class HeldConnections:
    """`size` slots for transactions at `isolation_level`; `slot()` blocks until one is free."""

    def __init__(
        self,
        database: SqlDatabase,
        size: int,
        isolation_level: psycopg.IsolationLevel | None = None,
        *,
        autocommit: bool = False,
    ) -> None:
        """`isolation_level` defaults to SERIALIZABLE; with `autocommit`, each statement is a
        transaction of its own, at the server's default isolation level (`isolation_level` then
        applies only to transactions the caller opens explicitly)."""
        import psycopg

        self.database = database
        self.size = max(1, size)
        self.autocommit = autocommit
        self.isolation_level = (
            psycopg.IsolationLevel.SERIALIZABLE if isolation_level is None else isolation_level
        )
        self._free: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        self._slots = [_Slot() for _ in range(self.size)]
        for slot in self._slots:
            self._free.put(slot)

    @contextlib.contextmanager
    def slot(self) -> Iterator[psycopg.Connection[Any] | None]:
        """A free slot's connection (None on SQLite, where the caller opens its own transaction)."""
        slot = self._free.get()
        try:
            if self.database.dialect == "postgresql" and slot.pooled is None:
                slot.connect(self.database, self.isolation_level, autocommit=self.autocommit)
            yield slot.connection
        finally:
            connection = slot.connection
            if connection is not None and connection.closed:
                slot.release(broken=True)
            self._free.put(slot)

    def close(self) -> None:
        """Give every held connection back to the pool; slots connect again when next used."""
        for slot in self._slots:
            slot.release()
