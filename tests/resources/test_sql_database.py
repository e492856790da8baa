"""The SQL database resources, one suite run against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hub_pipelines.core import platform_tables
from hub_pipelines.core.platform_tables import dead_letters, landed_ranges, media_uploads, topic_inbox
from hub_pipelines.core.schema import applied_revisions, schema_heads, upgrade_schema
from hub_pipelines.core.sql import (
    UnknownIsolationLevel,
    insert_ignoring_duplicates,
    is_serialization_failure,
    serializable_retrying,
)
from hub_pipelines.resources.sql_database import PostgresDatabase, SqliteDatabase
from tests.services.postgres import PostgresServer

Database = SqliteDatabase | PostgresDatabase
EVENT_TIMEOUT_S = 30
PLATFORM_TABLES = {"media_uploads", "topic_inbox", "dead_letters", "landed_ranges"}


def postgres_resource(server: PostgresServer, **settings: object) -> PostgresDatabase:
    return PostgresDatabase(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        database=server.database,
        **settings,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    db: Database
    if request.param == "sqlite":
        db = SqliteDatabase(path=str(tmp_path / "nested" / "hub.db"))
    else:
        db = postgres_resource(request.getfixturevalue("postgres_database"), application_name="hub-tests")
    yield db
    db.dispose()


@pytest.fixture
def impatient_database(database: Database) -> Iterator[Database]:
    """A second client of the same database that gives up on SQLite's write lock after 100 ms."""
    if isinstance(database, SqliteDatabase):
        impatient = SqliteDatabase(path=database.path, busy_timeout_ms=100)
        yield impatient
        impatient.dispose()
    else:
        yield database


@pytest.fixture
def counter(database: Database) -> str:
    with database.transaction() as connection:
        connection.execute(sa.text("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"))
        connection.execute(sa.text("INSERT INTO counters VALUES ('hits', 0)"))
    return "hits"


@pytest.fixture
def migrated(database: Database) -> Database:
    upgrade_schema(database.engine)
    return database


def read_counter(connection: sa.Connection, name: str) -> int:
    return connection.execute(sa.text("SELECT value FROM counters WHERE name = :n"), {"n": name}).scalar_one()


def add_to_counter(connection: sa.Connection, name: str, amount: int) -> None:
    connection.execute(
        sa.text("UPDATE counters SET value = value + :a WHERE name = :n"), {"a": amount, "n": name}
    )


def run_in_threads(*targets: Callable[[], None]) -> None:
    """Run each target in its own thread and wait for all; fail if any is still running."""
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(EVENT_TIMEOUT_S)
    assert not [thread.name for thread in threads if thread.is_alive()], "threads did not finish"


def counter_value(database: Database, name: str) -> int:
    with database.transaction() as connection:
        return read_counter(connection, name)


def test_transaction_commits_on_success(database: Database, counter: str) -> None:
    with database.transaction() as connection:
        add_to_counter(connection, counter, 5)

    assert counter_value(database, counter) == 5


def test_transaction_rolls_back_on_error(database: Database, counter: str) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort), database.transaction() as connection:
        add_to_counter(connection, counter, 5)
        raise Abort

    assert counter_value(database, counter) == 0


def test_unknown_isolation_level_is_rejected_naming_it(database: Database) -> None:
    with pytest.raises(UnknownIsolationLevel, match="'SNAPSHOT'"), database.transaction("SNAPSHOT"):
        pass


def test_sqlite_file_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    db = SqliteDatabase(path=str(tmp_path / "new" / "folder" / "hub.db"), busy_timeout_ms=1234)
    try:
        with db.transaction() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
    finally:
        db.dispose()

    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 1234}


def test_sqlite_transaction_takes_the_write_lock_at_begin(tmp_path: Path) -> None:
    db = SqliteDatabase(path=str(tmp_path / "hub.db"))
    other = sqlite3.connect(tmp_path / "hub.db", timeout=0, isolation_level=None)
    try:
        with db.transaction("SERIALIZABLE") as connection:
            connection.exec_driver_sql("SELECT 1")
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
        db.dispose()


def test_postgres_transaction_runs_at_the_requested_isolation_level(
    postgres_database: PostgresServer,
) -> None:
    db = postgres_resource(postgres_database, pool_size=1, max_overflow=0)
    show = sa.text("SHOW transaction_isolation")
    try:
        with db.transaction("SERIALIZABLE") as connection:
            inside = connection.execute(show).scalar_one()
        with db.transaction("repeatable_read") as connection:
            repeatable = connection.execute(show).scalar_one()
        with db.transaction() as connection:
            default_after = connection.execute(show).scalar_one()
    finally:
        db.dispose()

    assert (inside, repeatable, default_after) == ("serializable", "repeatable read", "read committed")


def test_postgres_sessions_carry_application_name_and_statement_timeout(
    postgres_database: PostgresServer,
) -> None:
    db = postgres_resource(postgres_database, application_name="hub-ledger", statement_timeout_ms=1500)
    try:
        with db.transaction() as connection:
            name = connection.execute(sa.text("SHOW application_name")).scalar_one()
            timeout = connection.execute(sa.text("SHOW statement_timeout")).scalar_one()
    finally:
        db.dispose()

    assert (name, timeout) == ("hub-ledger", "1500ms")


def test_postgres_database_from_url_reaches_the_database(postgres_database: PostgresServer) -> None:
    db = PostgresDatabase(url=postgres_database.psycopg2_url)
    try:
        with db.transaction() as connection:
            current = connection.execute(sa.text("SELECT current_database()")).scalar_one()
    finally:
        db.dispose()

    assert db.engine.url.drivername == "postgresql+psycopg"
    assert current == postgres_database.database


def test_conflicting_serializable_transactions_fail_one_with_a_retryable_error(
    database: Database, impatient_database: Database, counter: str
) -> None:
    """First reads; second reads too (PostgreSQL) or waits for the write lock (SQLite); first writes
    and commits; then second writes.

    PostgreSQL aborts the second writer with 40001, its snapshot being stale; SQLite's second writer
    cannot get the write lock within its busy_timeout. Either way the error must count as retryable.
    """
    first_has_read = threading.Event()
    second_done_reading = threading.Event()
    first_finished = threading.Event()
    outcomes: dict[str, BaseException | None] = {}

    def first() -> None:
        try:
            with database.transaction("SERIALIZABLE") as connection:
                read_counter(connection, counter)
                first_has_read.set()
                assert second_done_reading.wait(EVENT_TIMEOUT_S)
                add_to_counter(connection, counter, 1)
            outcomes["first"] = None
        except BaseException as error:
            outcomes["first"] = error
        finally:
            first_finished.set()

    def second() -> None:
        try:
            assert first_has_read.wait(EVENT_TIMEOUT_S)
            with impatient_database.transaction("SERIALIZABLE") as connection:
                read_counter(connection, counter)
                second_done_reading.set()
                assert first_finished.wait(EVENT_TIMEOUT_S)
                add_to_counter(connection, counter, 10)
            outcomes["second"] = None
        except BaseException as error:
            outcomes["second"] = error
        finally:
            second_done_reading.set()

    run_in_threads(first, second)

    assert outcomes["first"] is None
    assert outcomes["second"] is not None and is_serialization_failure(outcomes["second"]), outcomes["second"]
    assert counter_value(database, counter) == 1


def test_postgres_deadlock_fails_one_transaction_with_a_retryable_error(
    postgres_database: PostgresServer,
) -> None:
    db = postgres_resource(postgres_database)
    with db.transaction() as connection:
        connection.execute(sa.text("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"))
        connection.execute(sa.text("INSERT INTO counters VALUES ('a', 0), ('b', 0)"))
    both_hold_a_row = threading.Barrier(2, timeout=EVENT_TIMEOUT_S)
    outcomes: dict[str, BaseException | None] = {}

    def lock_in_order(first: str, then: str) -> None:
        try:
            with db.transaction() as connection:
                add_to_counter(connection, first, 1)
                both_hold_a_row.wait()
                add_to_counter(connection, then, 1)
            outcomes[first] = None
        except BaseException as error:
            outcomes[first] = error

    try:
        run_in_threads(lambda: lock_in_order("a", "b"), lambda: lock_in_order("b", "a"))
    finally:
        db.dispose()

    failures = [error for error in outcomes.values() if error is not None]
    assert len(outcomes) == 2 and len(failures) == 1
    assert is_serialization_failure(failures[0]), failures[0]


def test_concurrent_increments_all_land_when_retried_on_serialization_failure(
    database: Database, counter: str
) -> None:
    workers = 4
    start = threading.Barrier(workers, timeout=EVENT_TIMEOUT_S)
    errors: list[BaseException] = []

    def increment(connection: sa.Connection) -> None:
        value = read_counter(connection, counter)
        connection.execute(
            sa.text("UPDATE counters SET value = :v WHERE name = :n"), {"v": value + 1, "n": counter}
        )

    def transaction(work: Callable[[sa.Connection], None]) -> None:
        with database.transaction("SERIALIZABLE") as connection:
            work(connection)

    def worker() -> None:
        try:
            start.wait()
            serializable_retrying(2 * workers)(transaction, increment)
        except BaseException as error:
            errors.append(error)

    run_in_threads(*[worker] * workers)

    assert errors == []
    assert counter_value(database, counter) == workers


def test_unique_violation_is_not_a_serialization_failure(database: Database, counter: str) -> None:
    with pytest.raises(sa.exc.IntegrityError) as raised, database.transaction() as connection:
        connection.execute(sa.text("INSERT INTO counters VALUES (:n, 1)"), {"n": counter})

    assert not is_serialization_failure(raised.value)


def test_upgrade_schema_creates_the_platform_tables(database: Database) -> None:
    upgrade_schema(database.engine)

    assert set(sa.inspect(database.engine).get_table_names()) >= PLATFORM_TABLES
    assert applied_revisions(database.engine) == schema_heads()


def test_upgrade_schema_twice_keeps_schema_and_rows(migrated: Database) -> None:
    with migrated.transaction() as connection:
        connection.execute(sa.insert(media_uploads).values(**upload_row("uploads/1")))

    upgrade_schema(migrated.engine)

    with migrated.transaction() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(media_uploads)).scalar_one() == 1
    assert applied_revisions(migrated.engine) == schema_heads()


def test_upgrade_schema_from_two_threads_at_once_migrates_once(database: Database) -> None:
    start = threading.Barrier(2, timeout=EVENT_TIMEOUT_S)
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            start.wait()
            upgrade_schema(database.engine)
        except BaseException as error:
            errors.append(error)

    run_in_threads(upgrade, upgrade)

    assert errors == []
    with database.transaction() as connection:
        versions = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    assert sorted(versions) == sorted(schema_heads())


def test_platform_tables_module_matches_the_migrated_schema(migrated: Database) -> None:
    def only_platform_tables(name: str | None, type_: str, parent_names: object) -> bool:
        # Later migrations add the workflows' own tables; they are not this module's business.
        return type_ != "table" or name in platform_tables.metadata.tables

    with migrated.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": only_platform_tables})
        differences = compare_metadata(context, platform_tables.metadata)

    assert differences == []


def upload_row(partition_key: str) -> dict[str, object]:
    return {
        "partition_key": partition_key,
        "object_key": f"incoming/{partition_key}",
        "size": 5_000_000_000,
        "etag": "e1",
        "sha256": "ab" * 32,
        "content_type_claimed": "image/jpeg",
        "status": "landed",
    }


def inbox_row(offset: int, event_id: str, topic: str = "orders") -> dict[str, object]:
    return {
        "topic": topic,
        "partition": 0,
        "offset": offset,
        "event_id": event_id,
        "key": b"\x00customer-7",
        "payload": b'{"event_id": "' + event_id.encode() + b'"}',
        "headers": {"trace": "abc"},
    }


def dead_letter_row(
    offset: int | None, event_id: str | None, topic: str | None = "orders"
) -> dict[str, object]:
    return {
        "source": "orders_landing",
        "topic": topic,
        "partition": None if topic is None else 0,
        "offset": offset,
        "event_id": event_id,
        "reason": "undecodable event",
        "payload": b"\xff\xfe",
    }


def landed_row(start: int, run_id: str) -> dict[str, object]:
    return {
        "topic": "orders",
        "partition": 0,
        "start_offset": start,
        "end_offset": start + 100,
        "run_id": run_id,
        "read": 100,
        "landed": 98,
        "duplicates": 1,
        "dead_lettered": 1,
    }


def insert_each_ignoring_duplicates(
    database: Database, table: sa.Table, rows: list[dict[str, object]]
) -> None:
    with database.transaction() as connection:
        for row in rows:
            connection.execute(insert_ignoring_duplicates(table, database.dialect), row)


def row_count(database: Database, table: sa.Table) -> int:
    with database.transaction() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


@pytest.mark.parametrize(
    ("table", "first", "duplicate"),
    [
        (media_uploads, upload_row("uploads/1"), upload_row("uploads/1")),
        (topic_inbox, inbox_row(7, "evt-1"), inbox_row(7, "evt-2")),
        (topic_inbox, inbox_row(7, "evt-1"), inbox_row(8, "evt-1")),
        (dead_letters, dead_letter_row(7, None), dead_letter_row(7, "evt-9")),
        (
            dead_letters,
            dead_letter_row(None, "upload-3", topic=None),
            dead_letter_row(None, "upload-3", topic=None),
        ),
        (landed_ranges, landed_row(0, "run-a"), landed_row(0, "run-b")),
    ],
    ids=[
        "media_upload_same_partition_key",
        "inbox_same_position",
        "inbox_same_event_id",
        "dead_letter_same_position",
        "dead_letter_without_topic_same_event_id",
        "landed_range_same_start",
    ],
)
def test_landing_tables_reject_a_duplicate_key(
    migrated: Database, table: sa.Table, first: dict[str, object], duplicate: dict[str, object]
) -> None:
    with migrated.transaction() as connection:
        connection.execute(sa.insert(table).values(**first))

    with pytest.raises(sa.exc.IntegrityError), migrated.transaction() as connection:
        connection.execute(sa.insert(table).values(**duplicate))
    insert_each_ignoring_duplicates(migrated, table, [duplicate])
    assert row_count(migrated, table) == 1


def test_landing_tables_keep_rows_with_distinct_keys(migrated: Database) -> None:
    insert_each_ignoring_duplicates(
        migrated,
        topic_inbox,
        [inbox_row(7, "evt-1"), inbox_row(8, "evt-2"), inbox_row(7, "evt-1", topic="refunds")],
    )
    insert_each_ignoring_duplicates(
        migrated,
        dead_letters,
        [dead_letter_row(7, None), dead_letter_row(8, None), dead_letter_row(None, "upload-3", topic=None)],
    )

    assert (row_count(migrated, topic_inbox), row_count(migrated, dead_letters)) == (3, 3)
    with migrated.transaction() as connection:
        ids = connection.execute(sa.select(dead_letters.c.id).order_by(dead_letters.c.id)).scalars().all()
        stored = connection.execute(
            sa.select(topic_inbox.c.key, topic_inbox.c.payload, topic_inbox.c.headers).where(
                topic_inbox.c.offset == 8
            )
        ).one()
    assert len(set(ids)) == 3
    assert tuple(stored) == (b"\x00customer-7", b'{"event_id": "evt-2"}', {"trace": "abc"})
