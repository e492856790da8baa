"""The Warehouse port: chdb (ClickHouse's engine in process) locally, a ClickHouse server in production.

Both run the same SQL. Query parameters are ClickHouse's own `{name:Type}` placeholders; their values
are formatted by clickhouse-connect's server-side binding in both implementations, so a value means the
same thing everywhere. Results come back through Arrow (`to_pandas()` on the Arrow table), so both give
the same pandas dtypes; an empty result keeps its columns. A query can read an Arrow table sent along
with it (`query_arrow_with_rows`, written `{sent_rows}` in the SQL): ClickHouse's external data on a
server, chdb's Python() table function in process; thousands of values as a bound parameter would be
formatted character by character in Python.

Inserts are idempotent per `dedup_token` through ClickHouse's insert deduplication
(`insert_deduplication_token`), which only acts on MergeTree tables created with a deduplication window:

    CREATE TABLE ... ENGINE = MergeTree ORDER BY ... SETTINGS non_replicated_deduplication_window = 1000

(Replicated tables deduplicate by default.) The token covers the insert's blocks: replaying the same
insert with the same token writes nothing; a different batch needs a different token. An insert
without a token always writes, identical data or not. Inserts are synchronous (`async_insert = 0`):
the rows are in a part when the call returns. An insert is stored as sent (`optimize_on_insert = 0`):
rows of one insert that share a sorting key in a Replacing/Aggregating/Summing MergeTree are collapsed
by background merges and `FINAL` reads, exactly like rows from separate inserts, not at insert time
(collapsing at insert time cost a third of a 50,000-row insert, and readers must allow for uncollapsed
rows from separate inserts anyway).

chdb runs one data folder per process: a second process cannot open a folder another one holds, and one
process cannot switch folders while it has one open. `ChdbWarehouse` detects both and raises
`WarehouseLocked` naming the folder. A process held elsewhere is waited for up to `lock_wait_seconds`
(the kernel releases the folder's lock when its holder exits, killed or not): locally the runs that
touch the warehouse take turns at the folder itself, not only at the `warehouse` pool. The turns are
first come first served (`waiting_line.py`): a process waiting to open the folder stands in its line,
and a long holder (an events follower) lends the folder between its micro-batches to those waiting
(`lend_to_waiting_processes`), then stands in line for it again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import re
import threading
import time
from collections.abc import Collection, Mapping
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

from hub_pipelines.core.ports import WarehouseLoan, WarehouseRowsRefused
from hub_pipelines.resources.analytics.waiting_line import Waiter, WaitingLine

# clickhouse-connect's binding is imported where a statement is formatted, pyarrow where a table is
# built, and pandas only for types: every process loads this module, most of them never query.
if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from chdb.session import Session
    from clickhouse_connect.driver.client import Client

LOCK_POLL_SECONDS = 0.1
_OTHER_FOLDER = re.compile(r"initialized with path '([^']*)'")
_STATUS_PID = re.compile(r"^PID: (\d+)", re.MULTILINE)
_ENGINE_CODE = re.compile(r"\bCode: (\d+)\.")
# ClickHouse's error codes for an insert refused for its rows' values: CANNOT_PARSE_TEXT,
# CANNOT_PARSE_INPUT_ASSERTION_FAILED, CANNOT_PARSE_DATE, CANNOT_PARSE_DATETIME, TYPE_MISMATCH,
# ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA, TOO_LARGE_STRING_SIZE,
# VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE, CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN,
# FUNCTION_THROW_IF_VALUE_IS_NON_ZERO (a view's throwIf), VIOLATED_CONSTRAINT. Any other failure (the
# server unreachable, too many parts, memory) may pass on a retry and fails the statement as it is.
_ROWS_REFUSED_CODES = frozenset({6, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349, 395, 469})


class WarehouseError(RuntimeError):
    """A warehouse statement failed; the message names the statement and the engine's reason."""


class WarehouseLocked(WarehouseError):
    """chdb could not open its data folder: another process holds it, or this one holds another folder."""


def table_reference(table: str) -> str:
    """A table name for SQL: a plain name is quoted, a dotted `database.table` is taken as written."""
    from clickhouse_connect.driver.binding import quote_identifier

    return table if "." in table else quote_identifier(table)


def column_list(names: list[str]) -> str:
    from clickhouse_connect.driver.binding import quote_identifier

    return ", ".join(quote_identifier(name) for name in names)


def insert_settings(dedup_token: str | None, engine_settings: Collection[str]) -> dict[str, str]:
    """Settings for one insert: synchronous, deduplicated by the token, or never deduplicated without one.

    Without a token ClickHouse would still drop a block identical to a recent one on tables with a
    deduplication window (and chdb's INSERT ... SELECT would not), so it is turned off: both always
    write. Engines from 26.x decide through `deduplicate_insert`, which supersedes `insert_deduplicate`.
    """
    settings = {"async_insert": "0", "optimize_on_insert": "0"}
    if dedup_token is not None:
        settings["insert_deduplication_token"] = dedup_token
    elif "deduplicate_insert" in engine_settings:
        settings["deduplicate_insert"] = "disable"
    else:
        settings["insert_deduplicate"] = "0"
    return settings


# A query's sent rows (`query_arrow_with_rows`) are a table of this name for the statement's lifetime.
SENT_ROWS = "sent_rows"
_SENT_ROWS_MARKER = "{" + SENT_ROWS + "}"


@functools.cache
def _plain_types() -> dict[pa.DataType, str]:
    import pyarrow as pa

    return {
        pa.string(): "String",
        pa.large_string(): "String",
        pa.binary(): "String",
        pa.int32(): "Int32",
        pa.int64(): "Int64",
        pa.uint32(): "UInt32",
        pa.uint64(): "UInt64",
        pa.float64(): "Float64",
    }


def sent_rows_structure(schema: pa.Schema) -> str:
    """The `name Type, ...` structure ClickHouse needs for rows sent as external data."""
    import pyarrow as pa
    from clickhouse_connect.driver.binding import format_str, quote_identifier

    plain_types = _plain_types()
    columns = []
    for column in schema:
        if isinstance(column.type, pa.TimestampType) and column.type.tz is not None:
            digits = {"s": 0, "ms": 3, "us": 6, "ns": 9}[column.type.unit]
            clickhouse_type = f"DateTime64({digits}, {format_str(column.type.tz)})"
        elif column.type in plain_types:
            clickhouse_type = plain_types[column.type]
        else:
            raise WarehouseError(
                f"sent rows: column {column.name!r} has Arrow type {column.type}, not one sent"
            )
        columns.append(f"{quote_identifier(column.name)} {clickhouse_type}")
    return ", ".join(columns)


def bind_values(parameters: Mapping[str, object] | None) -> dict[str, str]:
    """Parameter values as clickhouse-connect's server-side binding sends them (`param_<name>`)."""
    from clickhouse_connect.driver.binding import format_bind_value

    return {name: format_bind_value(value, UTC) for name, value in (parameters or {}).items()}


def frame_to_arrow(frame: pd.DataFrame) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False)


def _rows_refused(statement: str, error: BaseException, code: int | None) -> WarehouseRowsRefused | None:
    """The insert's failure as a refusal of its rows, when the engine's error code says so."""
    if code is None:
        found = _ENGINE_CODE.search(str(error))
        code = int(found.group(1)) if found else None
    if code not in _ROWS_REFUSED_CODES:
        return None
    text = str(error).strip()
    return WarehouseRowsRefused(f"{statement} refused its rows: {text}", text.splitlines()[0])


def _statement_head(sql: str) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= 160 else flat[:157] + "..."


def _holder_of(folder: Path) -> str | None:
    """Which other process holds the folder's `status` lock (ClickHouse's one-server-per-folder lock)."""
    status = folder / "status"
    try:
        handle = status.open("rb")
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = _STATUS_PID.search(handle.read().decode(errors="replace"))
            if holder is None:
                return "an unknown process"
            # Sessions of one process share its engine, so the lock held by this very process is no obstacle.
            return None if int(holder.group(1)) == os.getpid() else f"pid {holder.group(1)}"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _first_in_line(ahead: list[Waiter]) -> str:
    return f"{ahead[0].describe()}, waiting for its turn before this one"


def _locked_by_other_process(folder: Path, holder: str) -> WarehouseLocked:
    return WarehouseLocked(
        f"chdb data folder {str(folder)!r} is in use by another process ({holder}): chdb allows one "
        "process per data folder, so runs that touch the local warehouse must run one at a time"
    )


class ChdbWarehouse(dg.ConfigurableResource):
    """The warehouse as chdb in this process, its tables stored under `path`."""

    path: str
    # Runs that touch the local warehouse wait this long for their turn at the folder (the processes
    # before them in its waiting line, then its holder letting go); 0 fails at once.
    lock_wait_seconds: float = 0.0

    _session: Session | None = PrivateAttr(default=None)
    _opening: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _engine_settings: frozenset[str] | None = PrivateAttr(default=None)
    # Who this process is to the others in the folder's waiting line besides its pid: its run, if any.
    _name: str = PrivateAttr(default="")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.run is not None:
            self._name = f"run {context.run.run_id}"

    def _connection(self) -> Session:
        if self._session is not None:
            return self._session
        with self._opening:
            if self._session is None:
                self._session, _ = self._open()
            return self._session

    def _open(self) -> tuple[Session, list[Waiter]]:
        """A session on the folder, once the processes that joined its waiting line before this one have
        had their turn and its holder let go; with those processes."""
        folder = Path(self.path).resolve()
        line = WaitingLine.of(folder)
        deadline = time.monotonic() + self.lock_wait_seconds
        went_first: dict[str, Waiter] = {}
        with line.joined(self._name) as marker:
            while True:
                ahead = line.ahead_of(marker)
                went_first.update((waiter.marker, waiter) for waiter in ahead)
                holder = _first_in_line(ahead) if ahead else _holder_of(folder)
                if holder is None:
                    session = self._open_unless_taken(folder)
                    if session is not None:
                        return session, list(went_first.values())
                    holder = _holder_of(folder) or "an unknown process"
                if time.monotonic() >= deadline:
                    raise _locked_by_other_process(folder, holder)
                time.sleep(LOCK_POLL_SECONDS)

    def lend_to_waiting_processes(self) -> WarehouseLoan | None:
        """When other processes wait in the folder's line, close this session, let them take their turns
        and open the folder again at this process's own turn (behind them, before anyone who came later).
        What the session held is on disk; nothing in it outlives a statement."""
        if self._session is None:
            return None
        line = WaitingLine.of(Path(self.path).resolve())
        waiting = [waiter for waiter in line.waiting() if waiter.pid != os.getpid()]
        if not waiting:
            return None
        started = time.monotonic()
        with self._opening:
            session, self._session = self._session, None
            if session is not None:
                session.close()
            self._session, went_first = self._open()
        borrowers = {waiter.marker: waiter for waiter in [*waiting, *went_first]}
        return WarehouseLoan(
            tuple(borrowers[marker].describe() for marker in sorted(borrowers)), time.monotonic() - started
        )

    def _open_unless_taken(self, folder: Path) -> Session | None:
        """A session on the folder; None when another process took the folder first."""
        from chdb.session import Session

        folder.mkdir(parents=True, exist_ok=True)
        try:
            return Session(str(folder))
        except RuntimeError as exc:
            other = _OTHER_FOLDER.search(str(exc))
            if other:
                raise WarehouseLocked(
                    f"chdb data folder {str(folder)!r} cannot be opened: this process already has chdb open "
                    f"on {other.group(1)!r}, and chdb runs one data folder per process"
                ) from exc
            if _holder_of(folder) is not None:
                return None
            raise WarehouseError(f"chdb data folder {str(folder)!r} could not be opened: {exc}") from exc

    def close(self) -> None:
        """Release the data folder so another process (or another folder in this one) can open it."""
        with self._opening:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def _run(self, sql: str, parameters: Mapping[str, object] | None, fmt: str) -> Any:
        session = self._connection()
        try:
            return session.query(sql, fmt, params=bind_values(parameters))
        except RuntimeError as exc:
            raise WarehouseError(f"chdb statement failed: {_statement_head(sql)}: {exc}") from exc

    def execute(self, sql: str, parameters: Mapping[str, object] | None = None) -> None:
        self._run(sql, parameters, "Null")

    def query_arrow(self, sql: str, parameters: Mapping[str, object] | None = None) -> pa.Table:
        table: pa.Table = self._run(sql, parameters, "ArrowTable")
        return table

    def query_df(self, sql: str, parameters: Mapping[str, object] | None = None) -> pd.DataFrame:
        return self.query_arrow(sql, parameters).to_pandas()

    def query_arrow_with_rows(
        self, sql: str, rows: pa.Table, parameters: Mapping[str, object] | None = None
    ) -> pa.Table:
        # chdb reads the Arrow buffers in place through its Python() table function, which finds the
        # table by this local's name.
        sent_rows = rows  # noqa: F841 - read by name from the SQL below
        table: pa.Table = self._run(
            sql.replace(_SENT_ROWS_MARKER, f"Python({SENT_ROWS})"), parameters, "ArrowTable"
        )
        return table

    def _known_settings(self) -> frozenset[str]:
        if self._engine_settings is None:
            names = self.query_arrow("SELECT name FROM system.settings WHERE name = 'deduplicate_insert'")
            self._engine_settings = frozenset(names.column("name").to_pylist())
        return self._engine_settings

    def insert_df(self, table: str, frame: pd.DataFrame, dedup_token: str | None = None) -> int:
        return self.insert_arrow(table, frame_to_arrow(frame), dedup_token)

    def insert_arrow(self, table: str, batch: pa.Table, dedup_token: str | None = None) -> int:
        from clickhouse_connect.driver.binding import format_str

        if batch.num_rows == 0:
            return 0
        # chdb's Python() table function finds this local by the name in the SQL and reads the Arrow
        # buffers in place: faster than Arrow/ArrowStream bytes on 1M rows, and unlike Python(DataFrame)
        # it handles list columns (Array).
        warehouse_rows = batch  # noqa: F841 - read by name from the SQL below
        columns = column_list(batch.column_names)
        chosen = insert_settings(dedup_token, self._known_settings())
        settings = ", ".join(f"{name} = {format_str(value)}" for name, value in chosen.items())
        try:
            self._run(
                f"INSERT INTO {table_reference(table)} ({columns}) SELECT {columns} FROM Python(warehouse_rows) "
                f"SETTINGS {settings}",
                None,
                "Null",
            )
        except WarehouseError as exc:
            refused = _rows_refused(f"chdb insert into {table}", exc.__cause__ or exc, None)
            if refused is None:
                raise
            raise refused from exc.__cause__
        return batch.num_rows


class ClickHouseWarehouse(dg.ConfigurableResource):
    """The warehouse as a ClickHouse server, reached over HTTP(S) with clickhouse-connect."""

    host: str
    port: int = 8123
    username: str = "default"
    password: str = ""
    database: str = "default"
    secure: bool = False
    connect_timeout_seconds: float = 10.0
    query_timeout_seconds: float = 300.0

    _client: Client | None = PrivateAttr(default=None)
    _opening: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def _connection(self) -> Client:
        if self._client is not None:
            return self._client
        with self._opening:
            if self._client is None:
                import clickhouse_connect

                self._client = clickhouse_connect.get_client(
                    host=self.host,
                    port=self.port,
                    username=self.username,
                    password=self.password,
                    database=self.database,
                    secure=self.secure,
                    connect_timeout=self.connect_timeout_seconds,
                    send_receive_timeout=self.query_timeout_seconds,
                )
            return self._client

    def lend_to_waiting_processes(self) -> WarehouseLoan | None:
        return None

    def close(self) -> None:
        with self._opening:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    @contextlib.contextmanager
    def _failures_named(self, sql: str):
        from clickhouse_connect.driver.exceptions import ClickHouseError

        try:
            yield
        except ClickHouseError as exc:
            raise WarehouseError(
                f"ClickHouse statement failed on {self.host}:{self.port}: {_statement_head(sql)}: {exc}"
            ) from exc

    def execute(self, sql: str, parameters: Mapping[str, object] | None = None) -> None:
        with self._failures_named(sql):
            self._connection().command(sql, parameters=dict(parameters) if parameters else None)

    def query_arrow(self, sql: str, parameters: Mapping[str, object] | None = None) -> pa.Table:
        with self._failures_named(sql):
            return self._connection().query_arrow(sql, parameters=dict(parameters) if parameters else None)

    def query_df(self, sql: str, parameters: Mapping[str, object] | None = None) -> pd.DataFrame:
        return self.query_arrow(sql, parameters).to_pandas()

    def query_arrow_with_rows(
        self, sql: str, rows: pa.Table, parameters: Mapping[str, object] | None = None
    ) -> pa.Table:
        import pyarrow as pa
        from clickhouse_connect.driver.external import ExternalData

        stream = pa.BufferOutputStream()
        with pa.ipc.new_stream(stream, rows.schema) as writer:
            writer.write_table(rows)
        sent = ExternalData(
            file_name=SENT_ROWS,
            data=stream.getvalue().to_pybytes(),
            fmt="ArrowStream",
            structure=sent_rows_structure(rows.schema),
        )
        with self._failures_named(sql):
            return self._connection().query_arrow(
                sql.replace(_SENT_ROWS_MARKER, SENT_ROWS),
                parameters=dict(parameters) if parameters else None,
                external_data=sent,
            )

    def insert_df(self, table: str, frame: pd.DataFrame, dedup_token: str | None = None) -> int:
        return self.insert_arrow(table, frame_to_arrow(frame), dedup_token)

    def insert_arrow(self, table: str, batch: pa.Table, dedup_token: str | None = None) -> int:
        if batch.num_rows == 0:
            return 0
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        with self._failures_named(f"INSERT INTO {table}"):
            client = self._connection()
            settings = insert_settings(dedup_token, client.server_settings.keys())
            try:
                client.insert_arrow(table_reference(table), batch, settings=dict(settings))
            except DatabaseError as exc:
                statement = f"ClickHouse insert into {table} on {self.host}:{self.port}"
                refused = (
                    None if isinstance(exc, OperationalError) else _rows_refused(statement, exc, exc.code)
                )
                if refused is None:
                    raise
                raise refused from exc
        return batch.num_rows
