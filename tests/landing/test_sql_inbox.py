"""The orders inbox sink against SQLite and a real PostgreSQL: any message ends landed or dead-lettered."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg.sql
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub_pipelines.core.platform_tables import dead_letters, topic_inbox
from hub_pipelines.core.ports import TopicMessage
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.sql_inbox import SqlInboxSink
from hub_pipelines.landing.topic_landing import split_into_chunks
from hub_pipelines.orders.authenticity import SIGNATURE_HEADER, hmac_signature
from hub_pipelines.orders.dead_letters import read_dead_letters
from hub_pipelines.resources.sql_database import PostgresDatabase, SqliteDatabase
from tests.services.postgres import PostgresServer

Database = SqliteDatabase | PostgresDatabase


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def inbox_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """One migrated database per dialect for the whole module (examples use topics of their own)."""
    database: Database
    if request.param == "sqlite":
        database = SqliteDatabase(path=str(tmp_path_factory.mktemp("inbox") / "hub.db"), migrate_schema=True)
        yield database
        database.dispose()
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"inbox_{uuid.uuid4().hex[:12]}"
    with server.connect(autocommit=True) as connection:
        connection.execute(
            psycopg.sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(psycopg.sql.Identifier(name))
        )
    database = PostgresDatabase(url=server.with_database(name).url, migrate_schema=True)
    yield database
    database.dispose()


def _rows(database: Database, table: sa.Table, topic: str) -> list[sa.Row]:
    with database.transaction() as connection:
        return list(connection.execute(sa.select(table).where(table.c.topic == topic)))


def _order(event_id: str) -> bytes:
    return json.dumps({"event_id": event_id}).encode()


event_ids = st.one_of(st.text(max_size=12), st.sampled_from(["order-1", "order-2"]), st.text(min_size=600))
values = st.one_of(st.binary(max_size=64), event_ids.map(_order))
headers = st.dictionaries(st.text(max_size=6), st.binary(max_size=12), max_size=3)
messages_at = st.lists(
    st.tuples(values, st.one_of(st.none(), st.binary(max_size=8)), headers, st.booleans()),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated=messages_at)
def test_any_message_bytes_and_headers_end_landed_or_dead_lettered_naming_their_position(
    inbox_database: Database, generated: list[tuple[bytes, bytes | None, dict[str, bytes], bool]]
) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    messages, offset = [], 0
    for value, key, message_headers, gap_before in generated:
        offset += 1 if gap_before else 0
        messages.append(TopicMessage(topic, 0, offset, value, key, message_headers, None))
        offset += 1
    chunk = OffsetRange(0, 0, offset)
    sink = SqlInboxSink(inbox_database)

    counts = sink.land_chunk(topic, chunk, messages, "run-1")

    landed = {row.offset for row in _rows(inbox_database, topic_inbox, topic)}
    lettered = {row.offset: row.reason for row in _rows(inbox_database, dead_letters, topic)}
    assert counts.reconciles and counts.read + counts.gaps == chunk.size
    assert (counts.landed, counts.dead_lettered) == (len(landed), len(lettered))
    assert not landed & lettered.keys()
    for position, reason in lettered.items():
        assert f"{topic} partition 0 offset {position}: " in reason
    stored_ids = {row.event_id for row in _rows(inbox_database, topic_inbox, topic)}
    for message in messages:
        if message.offset not in landed and message.offset not in lettered:
            assert json.loads(message.value)["event_id"] in stored_ids, message
    book = sink.landed_ranges(topic)
    assert [r for r, _ in book] == [chunk] and book[0][1] == counts


def test_a_row_the_database_refuses_is_dead_lettered_and_its_neighbours_land(
    inbox_database: Database,
) -> None:
    topic = f"orders-refusing-{uuid.uuid4().hex[:8]}"
    refusal = {
        "sqlite": f"CREATE TRIGGER refuse_poison BEFORE INSERT ON topic_inbox "
        f"WHEN NEW.event_id = 'poison' AND NEW.topic = '{topic}' BEGIN SELECT RAISE(ABORT, 'poison refused'); END",
        "postgresql": f"ALTER TABLE topic_inbox ADD CONSTRAINT refuse_poison CHECK (topic <> '{topic}' OR event_id <> 'poison')",
    }[inbox_database.dialect]
    undo = {
        "sqlite": "DROP TRIGGER refuse_poison",
        "postgresql": "ALTER TABLE topic_inbox DROP CONSTRAINT refuse_poison",
    }[inbox_database.dialect]
    with inbox_database.transaction() as connection:
        connection.exec_driver_sql(refusal)
    try:
        ids = [f"order-{i}" for i in range(5)] + ["poison"] + [f"order-{i}" for i in range(5, 10)]
        messages = [
            TopicMessage(topic, 1, i, _order(event_id), None, {}, None) for i, event_id in enumerate(ids)
        ]
        counts = SqlInboxSink(inbox_database).land_chunk(topic, OffsetRange(1, 0, 11), messages, "run-1")
    finally:
        with inbox_database.transaction() as connection:
            connection.exec_driver_sql(undo)

    assert (counts.landed, counts.dead_lettered, counts.duplicates) == (10, 1, 0)
    assert len(_rows(inbox_database, topic_inbox, topic)) == 10
    (letter,) = _rows(inbox_database, dead_letters, topic)
    assert letter.offset == 5
    assert letter.reason.startswith(f"{topic} partition 1 offset 5: the database refused the row: ")
    assert "refuse" in letter.reason


def test_a_nul_byte_in_a_header_or_event_id_is_dead_lettered_with_the_reason(
    inbox_database: Database,
) -> None:
    topic = f"orders-nul-{uuid.uuid4().hex[:8]}"
    messages = [
        TopicMessage(topic, 0, 0, _order("fine"), None, {"x-signature": b"sha256=\xc3\xa9"}, None),
        TopicMessage(topic, 0, 1, _order("fine-too"), None, {"x-signature": b"ab\x00cd"}, None),
        TopicMessage(topic, 0, 2, _order("nul\x00id"), None, {}, None),
        TopicMessage(topic, 0, 3, b'{"event_id": "\xff\xfe"}', None, {}, None),
    ]
    counts = SqlInboxSink(inbox_database).land_chunk(topic, OffsetRange(0, 0, 4), messages, "run-1")

    assert (counts.landed, counts.dead_lettered) == (1, 3)
    reasons = {row.offset: row.reason for row in _rows(inbox_database, dead_letters, topic)}
    assert reasons[1] == f"{topic} partition 0 offset 1: header 'x-signature' holds a NUL byte"
    assert reasons[2] == f"{topic} partition 0 offset 2: event_id holds a NUL character"
    assert reasons[3].startswith(f"{topic} partition 0 offset 3: undecodable event: ")
    (landed,) = _rows(inbox_database, topic_inbox, topic)
    assert landed.headers == {"x-signature": "sha256=é"}


def test_json_nested_too_deeply_is_dead_lettered_and_its_neighbour_lands(inbox_database: Database) -> None:
    topic = f"orders-deep-{uuid.uuid4().hex[:8]}"
    deep = b'{"event_id": "deep", "items": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    messages = [
        TopicMessage(topic, 0, 0, deep, None, {}, None),
        TopicMessage(topic, 0, 1, _order("after-the-deep-one"), None, {}, None),
    ]
    counts = SqlInboxSink(inbox_database).land_chunk(topic, OffsetRange(0, 0, 2), messages, "run-1")

    assert (counts.landed, counts.dead_lettered) == (1, 1)
    (reason,) = [row.reason for row in _rows(inbox_database, dead_letters, topic)]
    assert reason == f"{topic} partition 0 offset 0: JSON nested too deeply to decode"


landings = st.lists(
    st.tuples(st.integers(0, 40), st.integers(1, 25), st.integers(1, 12)), min_size=1, max_size=5
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=landings)
def test_overlapping_landings_book_every_offset_once_with_exact_totals(
    inbox_database: Database, runs: list[tuple[int, int, int]]
) -> None:
    topic = f"orders-overlap-{uuid.uuid4().hex[:8]}"
    withheld = {7, 8, 30}
    stream = [
        TopicMessage(topic, 0, offset, _order(f"o-{offset % 50}"), None, {}, None)
        for offset in range(70)
        if offset not in withheld
    ]
    sink = SqlInboxSink(inbox_database)
    landed = 0
    for run, (start, size, chunk_messages) in enumerate(runs):
        for chunk in split_into_chunks(OffsetRange(0, start, start + size), chunk_messages):
            messages = [m for m in stream if chunk.start <= m.offset < chunk.end]
            counts = sink.land_chunk(topic, chunk, messages, f"run-{run}")
            assert counts.reconciles and counts.read + counts.gaps == chunk.size
            landed += counts.landed

    book = sink.landed_ranges(topic)
    booked = [offset for r, _ in book for offset in range(r.start, r.end)]
    wanted = {offset for start, size, _ in runs for offset in range(start, start + size)}
    assert sorted(booked) == sorted(wanted)
    totals = sum((c for _, c in book), LandingCounts())
    in_book = [m for m in stream if m.offset in wanted]
    assert totals.read == len(in_book) and totals.gaps == len(wanted & withheld)
    assert totals.landed == landed == len(_rows(inbox_database, topic_inbox, topic))
    assert totals.landed == len({m.value for m in in_book})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=landings)
def test_the_landed_position_stops_at_the_first_gap_in_the_book(
    inbox_database: Database, runs: list[tuple[int, int, int]]
) -> None:
    # Landings given explicit ranges (a CLI run ahead of the sensor) leave gaps; a landing planned from
    # the position lands the first one, and what was booked past it counts as duplicates.
    topic = f"orders-gaps-{uuid.uuid4().hex[:8]}"
    sink = SqlInboxSink(inbox_database)
    for run, (start, size, _) in enumerate(runs):
        sink.book_lost(topic, OffsetRange(0, start, start + size), f"run-{run}")
    booked = {offset for start, size, _ in runs for offset in range(start, start + size)}
    position = min(booked)
    while position in booked:
        position += 1
    assert sink.landed_positions(topic) == {0: position}


def test_another_message_under_a_landed_event_id_is_dead_lettered_naming_where_it_landed_not_dropped(
    inbox_database: Database,
) -> None:
    """A forged copy of an order (its payload, a bogus signature) landed first from another partition
    must not make the real one vanish as its 'duplicate'; a producer's retry still is one."""
    topic = f"orders-impostor-{uuid.uuid4().hex[:8]}"
    real = _order("order-x")
    signed = {SIGNATURE_HEADER: hmac_signature(real, "secret").encode()}
    forged = {SIGNATURE_HEADER: b"sha256=" + b"0" * 64}
    sink = SqlInboxSink(inbox_database)
    first = [
        TopicMessage(topic, 0, 0, real, None, forged, None),
        TopicMessage(topic, 0, 1, real + b" ", None, forged, None),
    ]
    then = [
        TopicMessage(topic, 1, 0, real, None, signed, None),
        TopicMessage(topic, 1, 1, real, None, forged, None),
        TopicMessage(topic, 1, 2, real, None, {"X-Hub-Signature-256": forged[SIGNATURE_HEADER]}, None),
    ]

    assert sink.land_chunk(topic, OffsetRange(0, 0, 2), first, "run-1") == LandingCounts(
        read=2, landed=1, dead_lettered=1
    )
    assert sink.land_chunk(topic, OffsetRange(1, 0, 3), then, "run-1") == LandingCounts(
        read=3, landed=0, duplicates=2, dead_lettered=1
    )
    letters = {(row.partition, row.offset): row for row in _rows(inbox_database, dead_letters, topic)}
    assert set(letters) == {(0, 1), (1, 0)}
    assert letters[(1, 0)].reason == (
        f"{topic} partition 1 offset 0: event_id 'order-x' already landed at partition 0 offset 0 with "
        "another payload or signature; this message is not its duplicate"
    )
    (shown,) = [
        letter
        for letter in read_dead_letters(inbox_database, source="orders-landing")
        if letter.partition == 1 and letter.offset == 0 and letter.topic == topic
    ]
    assert shown.payload == real
