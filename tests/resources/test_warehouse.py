"""One behavioural suite for the Warehouse port, run against ChdbWarehouse and ClickHouseWarehouse.

No ClickHouse server runs here (Debian ships 18.16, which clickhouse-connect cannot talk to, and no
package installs a newer one), so ClickHouseWarehouse runs its real code, clickhouse-connect's client
calls with their parameter binding and insert settings, against the same ClickHouse 26.9 engine
through clickhouse-connect's chdb interface. What that leaves untested is the HTTP transport: the
connection settings (host, port, secure, credentials), TLS, compression and server-side sessions.

chdb runs one data folder per process, so both implementations share the session's `chdb_path`;
each test works in tables of its own.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pandas as pd
import pyarrow as pa
import pytest
from clickhouse_connect.driver.external import ExternalData

from hub_pipelines.core.ports import Warehouse
from hub_pipelines.resources.analytics.warehouse import (
    ChdbWarehouse,
    ClickHouseWarehouse,
    WarehouseError,
    WarehouseLocked,
)

EVENTS_DDL = """
CREATE TABLE {table} (
    event_id UInt64,
    user_id String,
    amount Decimal(18, 2),
    country LowCardinality(String),
    coupon Nullable(String),
    tags Array(String),
    happened_at DateTime64(3, 'UTC')
) ENGINE = MergeTree ORDER BY event_id
SETTINGS non_replicated_deduplication_window = 1000
"""


@pytest.fixture(scope="module")
def chdb_warehouse(chdb_path: str) -> ChdbWarehouse:
    return ChdbWarehouse(path=chdb_path)


@pytest.fixture(scope="module")
def clickhouse_warehouse(chdb_path: str) -> Iterator[ClickHouseWarehouse]:
    warehouse = ClickHouseWarehouse(host="clickhouse.invalid")
    warehouse._client = clickhouse_connect.get_client(interface="chdb", path=chdb_path)
    yield warehouse
    warehouse.close()


@pytest.fixture(params=["chdb", "clickhouse"])
def warehouse(request: pytest.FixtureRequest) -> Warehouse:
    return request.getfixturevalue(f"{request.param}_warehouse")


@pytest.fixture
def events_table(warehouse: Warehouse) -> str:
    table = f"events_{uuid.uuid4().hex[:12]}"
    warehouse.execute(EVENTS_DDL.format(table=table))
    return table


def _events(first_id: int, count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": pd.array(range(first_id, first_id + count), dtype="uint64"),
            "user_id": [f"user-{n % 3}" for n in range(count)],
            "amount": [f"{n}.25" for n in range(count)],
            "country": ["DE" if n % 2 else "FR" for n in range(count)],
            "coupon": [None if n % 2 else f"SAVE{n}" for n in range(count)],
            "tags": [[f"t{n}"] * (n % 3) for n in range(count)],
            "happened_at": pd.to_datetime([1_700_000_000_000 + n for n in range(count)], unit="ms", utc=True),
        }
    ).astype({"amount": "float64"})


def _count(warehouse: Warehouse, table: str) -> int:
    return int(warehouse.query_df(f"SELECT count() AS n FROM {table}")["n"].iloc[0])


def test_create_table_ddl_makes_a_table_with_the_declared_columns(
    warehouse: Warehouse, events_table: str
) -> None:
    columns = warehouse.query_df(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {table:String} "
        "ORDER BY position",
        {"table": events_table},
    )

    assert list(columns.itertuples(index=False, name=None)) == [
        ("event_id", "UInt64"),
        ("user_id", "String"),
        ("amount", "Decimal(18, 2)"),
        ("country", "LowCardinality(String)"),
        ("coupon", "Nullable(String)"),
        ("tags", "Array(String)"),
        ("happened_at", "DateTime64(3, 'UTC')"),
    ]


def test_inserted_dataframe_reads_back_value_for_value(warehouse: Warehouse, events_table: str) -> None:
    frame = _events(1, 6)

    sent = warehouse.insert_df(events_table, frame)
    back = warehouse.query_df(f"SELECT * FROM {events_table} ORDER BY event_id")

    assert sent == 6
    assert back["event_id"].tolist() == list(range(1, 7))
    assert back["user_id"].tolist() == frame["user_id"].tolist()
    assert [float(a) for a in back["amount"]] == frame["amount"].tolist()
    assert back["country"].tolist() == frame["country"].tolist()
    assert [None if pd.isna(c) else c for c in back["coupon"]] == [
        None if pd.isna(c) else c for c in frame["coupon"]
    ]
    assert [list(t) for t in back["tags"]] == frame["tags"].tolist()
    assert back["happened_at"].tolist() == frame["happened_at"].tolist()


def test_inserted_arrow_table_reads_back_by_column_name(warehouse: Warehouse, events_table: str) -> None:
    batch = pa.table(
        {
            "happened_at": pa.array(
                [dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)] * 2, pa.timestamp("ms", "UTC")
            ),
            "user_id": ["u1", "u2"],
            "event_id": pa.array([10, 11], pa.uint64()),
            "amount": [1.5, 2.5],
            "country": ["NL", "BE"],
            "coupon": [None, "X"],
            "tags": [["a", "b"], []],
        }
    )

    sent = warehouse.insert_arrow(events_table, batch)
    back = warehouse.query_df(f"SELECT event_id, user_id, coupon, tags FROM {events_table} ORDER BY event_id")

    assert sent == 2
    assert back["event_id"].tolist() == [10, 11]
    assert back["user_id"].tolist() == ["u1", "u2"]
    assert pd.isna(back["coupon"].iloc[0]) and back["coupon"].iloc[1] == "X"
    assert [list(t) for t in back["tags"]] == [["a", "b"], []]


@pytest.mark.parametrize("as_arrow", [False, True], ids=["dataframe", "arrow"])
def test_replayed_dedup_token_inserts_nothing_the_second_time(
    warehouse: Warehouse, events_table: str, as_arrow: bool
) -> None:
    frame = _events(1, 500)

    def insert(token: str) -> int:
        if as_arrow:
            return warehouse.insert_arrow(
                events_table, pa.Table.from_pandas(frame, preserve_index=False), token
            )
        return warehouse.insert_df(events_table, frame, token)

    insert("batch-2024-05-01")
    after_first = _count(warehouse, events_table)
    insert("batch-2024-05-01")
    after_replay = _count(warehouse, events_table)
    insert("batch-2024-05-02")

    assert (after_first, after_replay, _count(warehouse, events_table)) == (500, 500, 1000)


def test_identical_inserts_without_a_token_both_write(warehouse: Warehouse, events_table: str) -> None:
    frame = _events(1, 3)

    warehouse.insert_df(events_table, frame)
    warehouse.insert_df(events_table, frame)

    assert _count(warehouse, events_table) == 6


def test_query_parameters_bind_strings_times_and_arrays(warehouse: Warehouse, events_table: str) -> None:
    warehouse.insert_df(events_table, _events(1, 6))
    awkward = "it's a \\ 'quoted'\tname"
    warehouse.execute(
        f"INSERT INTO {events_table} (event_id, user_id, happened_at) "
        "VALUES (100, {user:String}, {at:DateTime64(3, 'UTC')})",
        {"user": awkward, "at": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)},
    )

    matched = warehouse.query_df(
        f"SELECT event_id, happened_at FROM {events_table} "
        "WHERE has({users:Array(String)}, user_id) AND happened_at >= {since:DateTime64(3, 'UTC')} "
        "ORDER BY event_id",
        {"users": [awkward, "user-1"], "since": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)},
    )

    assert matched["event_id"].tolist() == [2, 5, 100]
    assert matched["happened_at"].iloc[-1] == pd.Timestamp("2024-01-02 03:04:05", tz="UTC")


def _sent_ids() -> pa.Table:
    return pa.table(
        {
            "event_id": pa.array([2, 5, 7], pa.uint64()),
            "since": pa.array([dt.datetime(2020, 1, 1, tzinfo=dt.UTC)] * 3, pa.timestamp("ms", "UTC")),
        }
    )


def test_a_query_reads_the_rows_sent_with_it(chdb_warehouse: ChdbWarehouse) -> None:
    table = f"events_{uuid.uuid4().hex[:12]}"
    chdb_warehouse.execute(EVENTS_DDL.format(table=table))
    chdb_warehouse.insert_df(table, _events(1, 6))

    matched = chdb_warehouse.query_arrow_with_rows(
        f"SELECT event_id FROM {table} WHERE event_id IN (SELECT event_id FROM {{sent_rows}} "
        "WHERE since < {until:DateTime('UTC')}) ORDER BY event_id",
        _sent_ids(),
        {"until": dt.datetime(2021, 1, 1)},
    )

    assert matched.column("event_id").to_pylist() == [2, 5]


def test_clickhouse_sends_the_rows_as_external_data_with_their_structure() -> None:
    """clickhouse-connect's chdb interface has no external data, so the request itself is checked."""
    sent: dict[str, object] = {}

    class RecordingClient:
        def query_arrow(self, query: str, parameters: dict, external_data: ExternalData) -> pa.Table:
            sent.update(query=query, parameters=parameters, external_data=external_data)
            return pa.table({"event_id": pa.array([2], pa.uint64())})

    server = ClickHouseWarehouse(host="clickhouse.invalid")
    server._client = RecordingClient()  # type: ignore[assignment]

    server.query_arrow_with_rows("SELECT event_id FROM {sent_rows}", _sent_ids(), {"n": 1})

    external = sent["external_data"]
    assert isinstance(external, ExternalData)
    [file] = external.files
    assert sent["query"] == "SELECT event_id FROM sent_rows"
    assert sent["parameters"] == {"n": 1}
    assert (file.name, file.fmt) == ("sent_rows", "ArrowStream")
    assert file.structure == "`event_id` UInt64, `since` DateTime64(3, 'UTC')"
    assert pa.ipc.open_stream(file.data).read_all().equals(_sent_ids())


def test_arrow_rows_carry_datetime64_as_utc_timestamps_and_datetime_as_epoch_seconds(
    warehouse: Warehouse,
) -> None:
    rows = warehouse.query_arrow(
        "SELECT toDateTime64({at:DateTime('UTC')}, 0, 'UTC') AS stamped, {at:DateTime('UTC')} AS bare, "
        "toUInt64(3) AS count",
        {"at": dt.datetime(2024, 5, 1, 12)},
    ).to_pylist()

    assert rows == [{"stamped": dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC), "bare": 1714564800, "count": 3}]
    assert rows[0]["stamped"].utcoffset() == dt.timedelta(0)


def test_an_empty_result_keeps_its_columns(warehouse: Warehouse, events_table: str) -> None:
    empty = warehouse.query_df(f"SELECT event_id, user_id FROM {events_table} WHERE event_id > 10")

    assert (len(empty), list(empty.columns)) == (0, ["event_id", "user_id"])


def test_a_failing_statement_raises_warehouse_error_naming_it(warehouse: Warehouse) -> None:
    with pytest.raises(WarehouseError, match="SELECT \\* FROM no_such_table"):
        warehouse.query_df("SELECT * FROM no_such_table")


def test_a_second_process_opening_the_same_folder_gets_warehouse_locked(
    chdb_warehouse: ChdbWarehouse, chdb_path: str
) -> None:
    chdb_warehouse.execute("SELECT 1")
    script = textwrap.dedent(
        f"""
        from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse, WarehouseLocked
        try:
            ChdbWarehouse(path={chdb_path!r}).execute("SELECT 1")
        except WarehouseLocked as exc:
            print("WarehouseLocked:", exc)
        else:
            print("opened")
        """
    )

    second = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("WarehouseLocked:")
    assert repr(str(Path(chdb_path).resolve())) in second.stdout
    assert "one process per data folder" in second.stdout


def test_opening_another_folder_in_a_process_holding_one_gets_warehouse_locked(
    chdb_warehouse: ChdbWarehouse, chdb_path: str, tmp_path: Path
) -> None:
    chdb_warehouse.execute("SELECT 1")
    other = ChdbWarehouse(path=str(tmp_path / "other"))

    with pytest.raises(WarehouseLocked, match="already has chdb open") as raised:
        other.execute("SELECT 1")

    assert str(tmp_path / "other") in str(raised.value)
    assert chdb_warehouse.query_df("SELECT 41 + 1 AS answer")["answer"].tolist() == [42]


def test_a_process_waiting_for_the_folder_opens_it_once_its_holder_is_killed(tmp_path: Path) -> None:
    folder = str(tmp_path / "held")
    holder_script = textwrap.dedent(
        f"""
        import sys
        from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
        warehouse = ChdbWarehouse(path={folder!r})
        warehouse.execute("CREATE TABLE written (n UInt8) ENGINE = MergeTree ORDER BY n")
        warehouse.execute("INSERT INTO written VALUES (1)")
        print("held", flush=True)
        sys.stdin.readline()
        """
    )
    waiter_script = textwrap.dedent(
        f"""
        from hub_pipelines.resources.analytics import warehouse as module
        seen = module._holder_of

        def holder_of(folder):
            holder = seen(folder)
            if holder is not None:
                print("waiting for", holder, flush=True)
            return holder

        module._holder_of = holder_of
        waiter = module.ChdbWarehouse(path={folder!r}, lock_wait_seconds=300)
        print("read", waiter.query_df("SELECT count() AS n FROM written")["n"].tolist(), flush=True)
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    waiter: subprocess.Popen[str] | None = None
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        waiter = subprocess.Popen([sys.executable, "-c", waiter_script], stdout=subprocess.PIPE, text=True)
        assert waiter.stdout is not None
        assert waiter.stdout.readline() == f"waiting for pid {holder.pid}\n"
        holder.kill()
        assert holder.wait(timeout=60) == -9
        out, _ = waiter.communicate(timeout=300)
    finally:
        for process in (holder, waiter):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    assert waiter.returncode == 0
    assert out.splitlines()[-1] == "read [1]"
