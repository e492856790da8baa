"""A row the warehouse itself refuses (a CHECK constraint on `raw_events`, enforced by chdb's engine) is
dead-lettered with its position; its neighbours land once and the chunk's booking still reconciles."""

from __future__ import annotations

import pytest

from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.landing.warehouse_events import WarehouseEventsSink
from hub_pipelines.resources.analytics.warehouse import WarehouseError
from tests.analytics.test_landing_events import count, event, topic_with


def refuse_event(warehouse, tables, event_id: str) -> None:
    warehouse.execute(
        f"ALTER TABLE {tables.raw_events} ADD CONSTRAINT refused_by_test CHECK event_id != '{event_id}'"
    )


def test_row_the_warehouse_refuses_is_dead_lettered_and_its_neighbours_land_once(tmp_path, warehouse, tables):
    ids = ["e-0", "e-1", "refused", "e-3", "e-4", "e-5", "e-6"]
    topics = topic_with(tmp_path, [event(event_id) for event_id in ids])
    sink = WarehouseEventsSink(warehouse, tables)
    refuse_event(warehouse, tables, "refused")

    first = land_ranges(topics, sink, "events", [OffsetRange(0, 0, 7)], "r1", chunk_messages=4)

    assert (first.read, first.landed, first.duplicates, first.dead_lettered) == (7, 6, 0, 1)
    stored = warehouse.query_df(f"SELECT event_id, offset FROM {tables.raw_events} ORDER BY offset")
    assert stored["event_id"].tolist() == [i for i in ids if i != "refused"]
    letters = warehouse.query_df(f"SELECT offset, event_id, reason FROM {tables.dead_letters}")
    assert letters["offset"].tolist() == [2]
    assert letters["event_id"].tolist() == ["refused"]
    reason = letters["reason"][0]
    assert reason.startswith("events partition 0 offset 2 (event refused): the warehouse refused the row: ")
    assert "refused_by_test" in reason and "\n" not in reason
    booked = warehouse.query_df(
        f"SELECT start_offset, read, landed, duplicates, dead_lettered FROM {tables.landed_ranges} FINAL "
        "ORDER BY start_offset"
    )
    assert booked.values.tolist() == [[0, 4, 3, 0, 1], [4, 3, 3, 0, 0]]
    assert count(warehouse, f"SELECT sum(events) FROM {tables.rollup_minute}") == 6

    replay = land_ranges(
        topics,
        WarehouseEventsSink(warehouse, tables),
        "events",
        [OffsetRange(0, 0, 7)],
        "r2",
        chunk_messages=4,
    )

    assert (replay.read, replay.landed, replay.duplicates, replay.dead_lettered) == (7, 0, 6, 1)
    assert count(warehouse, f"SELECT count() FROM {tables.raw_events}") == 6
    assert count(warehouse, f"SELECT count() FROM {tables.dead_letters}") == 1
    assert count(warehouse, f"SELECT sum(events) FROM {tables.rollup_minute}") == 6


def test_refused_row_of_a_chunk_stored_but_not_booked_is_dead_lettered_once_on_rerun(
    tmp_path, warehouse, tables
):
    ids = ["e-0", "refused", "e-2", "e-3"]
    topics = topic_with(tmp_path, [event(event_id) for event_id in ids])
    sink = WarehouseEventsSink(warehouse, tables)
    refuse_event(warehouse, tables, "refused")
    land_ranges(topics, sink, "events", [OffsetRange(0, 0, 4)], "r1")
    warehouse.execute(f"TRUNCATE TABLE {tables.landed_ranges}")

    rerun = land_ranges(
        topics, WarehouseEventsSink(warehouse, tables), "events", [OffsetRange(0, 0, 4)], "r2"
    )

    assert (rerun.read, rerun.landed, rerun.duplicates, rerun.dead_lettered) == (4, 3, 0, 1)
    assert count(warehouse, f"SELECT count() FROM {tables.raw_events}") == 3
    assert count(warehouse, f"SELECT count() FROM {tables.dead_letters} FINAL") == 1


def test_insert_failure_that_is_not_about_the_rows_fails_the_run_and_dead_letters_nothing(
    tmp_path, warehouse, tables
):
    topics = topic_with(tmp_path, [event("e-0"), event("e-1")])
    land_ranges(topics, WarehouseEventsSink(warehouse, tables), "events", [OffsetRange(0, 0, 1)], "r1")
    # Any new part now exceeds the partition's limit: ClickHouse's TOO_MANY_PARTS, which a later retry may pass.
    warehouse.execute(f"ALTER TABLE {tables.raw_events} MODIFY SETTING parts_to_throw_insert = 1")

    with pytest.raises(WarehouseError, match="TOO_MANY_PARTS"):
        land_ranges(topics, WarehouseEventsSink(warehouse, tables), "events", [OffsetRange(0, 1, 2)], "r2")

    assert count(warehouse, f"SELECT count() FROM {tables.dead_letters}") == 0
    assert count(warehouse, f"SELECT count() FROM {tables.landed_ranges} WHERE start_offset = 1") == 0
