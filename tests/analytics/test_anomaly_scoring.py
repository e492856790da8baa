"""Anomaly scores over the minute rollups in chdb: a detector's saved state carries it across runs."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.analytics.scoring import METRICS, load_states, score_new_minutes
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.demo.feeder import analytics_event
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.landing.warehouse_events import WarehouseEventsSink
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from hub_pipelines.resources.topics import LocalTopicLog

HOURS = 7
FIRST_HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS + 1)


def land_hours(root: Path, warehouse: ChdbWarehouse, tables: AnalyticsTables, hours: range) -> None:
    """300 demo events in each of `hours` (counted from FIRST_HOUR), the same events for the same hours."""
    rng = random.Random(hours.start)
    start = FIRST_HOUR + timedelta(hours=hours.start)
    values = [
        json.dumps(analytics_event(rng, start + timedelta(seconds=rng.randrange(3600 * len(hours))))).encode()
        for _ in range(300 * len(hours))
    ]
    topic = f"events-{hours.start}"
    topics = LocalTopicLog(root=str(root))
    topics.create_topic(topic, 1)
    topics.produce(topic, [OutgoingMessage(v, partition=0) for v in values])
    land_ranges(topics, WarehouseEventsSink(warehouse, tables), topic, [OffsetRange(0, 0, len(values))], "r1")


def test_scores_continued_from_saved_states_match_one_uninterrupted_run(tmp_path, warehouse, tables):
    land_hours(tmp_path / "split", warehouse, tables, range(5))
    first = score_new_minutes(warehouse, tables)
    land_hours(tmp_path / "split", warehouse, tables, range(5, HOURS))
    second = score_new_minutes(warehouse, tables)

    whole_tables = AnalyticsTables(database=f"analytics_{uuid.uuid4().hex[:10]}")
    whole_tables.ensure(warehouse)
    try:
        land_hours(tmp_path / "whole", warehouse, whole_tables, range(5))
        land_hours(tmp_path / "whole", warehouse, whole_tables, range(5, HOURS))
        whole = score_new_minutes(warehouse, whole_tables)
        whole_states = load_states(warehouse, whole_tables)
    finally:
        warehouse.execute(f"DROP DATABASE IF EXISTS {whole_tables.database}")

    split_states = load_states(warehouse, tables)
    assert first.minutes_scored > 300 - 60
    assert first.minutes_scored + second.minutes_scored == whole.minutes_scored
    assert set(split_states) == set(METRICS)
    assert split_states == whole_states
    assert first.findings + second.findings == whole.findings
