"""Landing analytics events in chdb: replays, duplicates, crashes between insert and booking, late events."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hub_pipelines.analytics.events import decode_batch, events_to_arrow
from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.core.ports import OutgoingMessage, PartitionSpan
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.landing.warehouse_events import WarehouseEventsSink
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from hub_pipelines.resources.topics import LocalTopicLog

NOW = datetime.now(UTC).replace(microsecond=0)


def event(event_id: str, ts: datetime = NOW, kind: str = "page_view", **properties: object) -> bytes:
    body = {"event_id": event_id, "type": kind, "user_id": "u-1", "session_id": "s-1", "ts": ts.isoformat()}
    return json.dumps({**body, "properties": properties}).encode()


def topic_with(tmp_path: Path, values: list[bytes]) -> LocalTopicLog:
    topics = LocalTopicLog(root=str(tmp_path / "topics"))
    topics.create_topic("events", 1)
    topics.produce("events", [OutgoingMessage(value, partition=0) for value in values])
    return topics


def count(warehouse: ChdbWarehouse, sql: str) -> int:
    return int(warehouse.query_df(sql).iloc[0, 0])


def land(topics: LocalTopicLog, warehouse: ChdbWarehouse, tables: AnalyticsTables, end: int, run: str = "r1"):
    sink = WarehouseEventsSink(warehouse, tables)
    return land_ranges(topics, sink, "events", [OffsetRange(0, 0, end)], run, chunk_messages=4)


def test_replayed_range_lands_nothing_twice(tmp_path, warehouse, tables):
    topics = topic_with(tmp_path, [event(f"e-{i}") for i in range(10)])
    first = land(topics, warehouse, tables, 10)
    replay = land(topics, warehouse, tables, 10, run="r2")
    assert (first.landed, first.duplicates) == (10, 0)
    assert (replay.read, replay.landed, replay.duplicates) == (10, 0, 10)
    assert count(warehouse, f"SELECT count() FROM {tables.raw_events}") == 10
    assert count(warehouse, f"SELECT sum(events) FROM {tables.rollup_minute}") == 10


def test_same_event_id_in_a_later_batch_is_a_duplicate(tmp_path, warehouse, tables):
    topics = topic_with(tmp_path, [event("e-1"), event("e-2"), event("e-1"), event("e-3"), event("e-3")])
    first = land_ranges(
        topics, WarehouseEventsSink(warehouse, tables), "events", [OffsetRange(0, 0, 2)], "r1"
    )
    second = land_ranges(
        topics, WarehouseEventsSink(warehouse, tables), "events", [OffsetRange(0, 2, 5)], "r2"
    )
    assert (first.landed, first.duplicates) == (2, 0)
    assert (second.read, second.landed, second.duplicates) == (3, 1, 2)
    assert count(warehouse, f"SELECT count() FROM {tables.raw_events} FINAL") == 3
    assert count(warehouse, f"SELECT count() FROM {tables.raw_events}") == 3


def test_chunk_inserted_but_not_booked_counts_as_landed_on_rerun_without_doubling(
    tmp_path, warehouse, tables
):
    topics = topic_with(tmp_path, [event(f"e-{i}") for i in range(8)])
    land(topics, warehouse, tables, 8)
    warehouse.execute(f"TRUNCATE TABLE {tables.landed_ranges}")
    rerun = land(topics, warehouse, tables, 8, run="r2")
    assert (rerun.read, rerun.landed, rerun.duplicates) == (8, 8, 0)
    assert count(warehouse, f"SELECT count() FROM {tables.raw_events}") == 8
    assert count(warehouse, f"SELECT sum(events) FROM {tables.series_1s}") == 8


def test_late_event_lands_in_the_partition_of_its_own_day(tmp_path, warehouse, tables):
    three_days_ago = NOW - timedelta(days=3)
    topics = topic_with(tmp_path, [event("today"), event("late", ts=three_days_ago)])
    sink = WarehouseEventsSink(warehouse, tables)
    land_ranges(topics, sink, "events", [OffsetRange(0, 0, 2)], "r1")
    partitions = warehouse.query_df(
        f"SELECT event_id, _partition_id AS p FROM {tables.raw_events} ORDER BY event_id"
    )
    assert dict(partitions.itertuples(index=False)) == {
        "late": three_days_ago.strftime("%Y%m%d"),
        "today": NOW.strftime("%Y%m%d"),
    }
    assert {day for outcome in sink.outcomes for day in outcome.event_days} == {
        NOW.date(),
        three_days_ago.date(),
    }


def test_malformed_and_oversized_events_are_dead_lettered_with_reason_and_raw_bytes(
    tmp_path, warehouse, tables
):
    oversized = event("big", path="/" + "x" * 20_000)
    not_json = b"{not json \xff\x00"
    topics = topic_with(tmp_path, [event("ok"), not_json, oversized])
    counts = land(topics, warehouse, tables, 3)
    assert (counts.read, counts.landed, counts.dead_lettered) == (3, 1, 2)
    letters = warehouse.query_df(
        f"SELECT offset, reason, lower(hex(payload)) AS payload FROM {tables.dead_letters} ORDER BY offset"
    )
    assert letters["offset"].tolist() == [1, 2]
    assert "offset 1" in letters["reason"][0] and "malformed" in letters["reason"][0]
    assert "byte limit" in letters["reason"][1]
    assert bytes.fromhex(letters["payload"][0]) == not_json
    replay = land(topics, warehouse, tables, 3, run="r2")
    assert (replay.duplicates, replay.dead_lettered) == (1, 2)
    assert count(warehouse, f"SELECT count() FROM {tables.dead_letters}") == 2


def test_duplicates_are_found_among_rows_stored_before_the_id_hash_column_existed(
    tmp_path, warehouse, tables
):
    warehouse.execute(f"ALTER TABLE {tables.raw_events} DROP COLUMN id_hash")
    topics = topic_with(tmp_path, [event("e-1"), event("e-2"), event("e-2"), event("e-3")])
    older = decode_batch(topics.read_range("events", 0, 0, 2))
    warehouse.insert_arrow(tables.raw_events, events_to_arrow(older.events, older.messages))
    later = land_ranges(
        topics, WarehouseEventsSink(warehouse, tables), "events", [OffsetRange(0, 2, 4)], "r2"
    )
    assert (later.landed, later.duplicates) == (1, 1)
    assert count(warehouse, f"SELECT count() FROM {tables.raw_events}") == 3


def test_small_chunks_of_several_partitions_land_together_and_are_booked_each_as_itself(
    tmp_path, warehouse, tables
):
    topics = LocalTopicLog(root=str(tmp_path / "topics"))
    topics.create_topic("events", 2)
    topics.produce("events", [OutgoingMessage(event(f"a-{i}"), partition=0) for i in range(3)])
    topics.produce(
        "events",
        [OutgoingMessage(v, partition=1) for v in (event("a-1"), b"{not json", event("b-1"))],
    )
    ranges = [OffsetRange(0, 0, 3), OffsetRange(1, 0, 3)]
    sink = WarehouseEventsSink(warehouse, tables)
    first = land_ranges(topics, sink, "events", ranges, "r1", chunk_messages=10)
    replay = land_ranges(
        topics, WarehouseEventsSink(warehouse, tables), "events", ranges, "r2", chunk_messages=10
    )
    assert (first.read, first.landed, first.duplicates, first.dead_lettered) == (6, 4, 1, 1)
    assert {(r.partition, r.start, r.end): c.as_metadata() for r, c in sink.landed_ranges("events")} == {
        (0, 0, 3): LandingCounts(read=3, landed=3).as_metadata(),
        (1, 0, 3): LandingCounts(read=3, landed=1, duplicates=1, dead_lettered=1).as_metadata(),
    }
    assert (replay.landed, replay.duplicates, replay.dead_lettered) == (0, 5, 1)
    assert count(warehouse, f"SELECT count() FROM {tables.raw_events}") == 4
    assert count(warehouse, f"SELECT count() FROM {tables.dead_letters}") == 1


def test_a_replayed_late_event_among_current_ones_is_a_duplicate(tmp_path, warehouse, tables):
    hours_ago = NOW - timedelta(hours=5)
    topics = topic_with(
        tmp_path,
        [
            event("late-1", hours_ago),
            event("now-1"),
            event("now-2"),
            event("late-1", hours_ago),
            event("now-3"),
        ],
    )
    first = land_ranges(
        topics, WarehouseEventsSink(warehouse, tables), "events", [OffsetRange(0, 0, 2)], "r1"
    )
    later = land_ranges(
        topics, WarehouseEventsSink(warehouse, tables), "events", [OffsetRange(0, 2, 5)], "r2"
    )

    assert (first.landed, later.landed, later.duplicates) == (2, 2, 1)
    assert count(warehouse, f"SELECT count() FROM {tables.raw_events} WHERE event_id = 'late-1'") == 1


def test_the_probe_table_of_older_warehouses_is_dropped(warehouse, tables):
    warehouse.execute(
        f"CREATE TABLE {tables.database}.event_id_probes (probe String) ENGINE = MergeTree ORDER BY probe"
    )

    tables.ensure(warehouse)

    assert (
        count(
            warehouse,
            f"SELECT count() FROM system.tables WHERE database = '{tables.database}'"
            " AND name = 'event_id_probes'",
        )
        == 0
    )


def test_overlapping_runs_with_other_bounds_book_each_offset_once(tmp_path, warehouse, tables):
    topics = topic_with(tmp_path, [event(f"e-{i}") for i in range(30)] + [b"{broken"])
    runs = [
        ([OffsetRange(0, 0, 20)], 8),
        ([OffsetRange(0, 5, 31)], 7),
        ([OffsetRange(0, 0, 31)], 10),
        ([OffsetRange(0, 3, 9), OffsetRange(0, 12, 26)], 5),
    ]
    results = [
        land_ranges(
            topics, WarehouseEventsSink(warehouse, tables), "events", ranges, f"r{i}", chunk_messages=size
        )
        for i, (ranges, size) in enumerate(runs)
    ]

    assert all(counts.reconciles and counts.gaps == 0 for counts in results)
    assert sum(counts.landed for counts in results) == 30
    book = WarehouseEventsSink(warehouse, tables).landed_ranges("events")
    for (earlier, _), (later, _) in itertools.pairwise(book):
        assert earlier.end == later.start, book
    assert (book[0][0].start, book[-1][0].end) == (0, 31)
    totals = sum((counts for _, counts in book), LandingCounts())
    assert totals == LandingCounts(read=31, landed=30, dead_lettered=1)
    assert count(warehouse, f"SELECT count() FROM {tables.raw_events}") == 30


def test_the_landed_position_stops_at_the_first_gap_in_the_book(warehouse, tables):
    # A landing given explicit ranges (a CLI run ahead of the sensor) leaves a gap; a landing planned from
    # the position lands it, and what was booked past it counts as duplicates.
    sink = WarehouseEventsSink(warehouse, tables)
    for booked in (OffsetRange(0, 0, 10), OffsetRange(0, 20, 30), OffsetRange(1, 5, 8)):
        sink.book_lost("events", booked, "ahead")
    assert sink.landed_positions("events") == {0: 10, 1: 8}

    sink.book_lost("events", OffsetRange(0, 8, 22), "gap")
    assert sink.landed_positions("events") == {0: 30, 1: 8}


@dataclass
class RetainingBroker:
    """A local log played as a broker whose partition 0 now starts at `first_available` and that holds
    no message at the `withheld` offsets (transaction markers, aborted or compacted records)."""

    inner: LocalTopicLog
    first_available: int
    withheld: frozenset[int]

    def read_span(self, topic: str, partition: int, start: int, end: int) -> PartitionSpan:
        span = self.inner.read_span(topic, partition, start, end)
        kept = [
            m for m in span.messages if m.offset >= self.first_available and m.offset not in self.withheld
        ]
        return PartitionSpan(kept, self.first_available, span.read_through)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_lost_head_and_gaps_are_booked_and_the_rest_lands_once_on_replay(tmp_path, warehouse, tables):
    broker = RetainingBroker(
        topic_with(tmp_path, [event(f"e-{i}") for i in range(20)]),
        first_available=6,
        withheld=frozenset({9, 10, 17}),
    )
    heard = []

    def land_all(run: str):
        sink = WarehouseEventsSink(warehouse, tables)
        return land_ranges(
            broker, sink, "events", [OffsetRange(0, 0, 20)], run, 4, on_upstream_loss=heard.append
        )

    first, replay = land_all("r1"), land_all("r2")

    assert first == LandingCounts(read=11, landed=11, gaps=3, lost=6)
    assert replay == LandingCounts(read=11, duplicates=11, gaps=3)
    assert [loss.lost for loss in heard] == [OffsetRange(0, 0, 4), OffsetRange(0, 4, 6)] * 2
    book = WarehouseEventsSink(warehouse, tables).landed_ranges("events")
    assert all(c.reconciles and c.offsets == r.size for r, c in book)
    assert sum((c for _, c in book), LandingCounts()) == first
    assert count(warehouse, f"SELECT count() FROM {tables.raw_events}") == 11
