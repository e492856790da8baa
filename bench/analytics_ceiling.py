"""Ingestion ceiling: how fast can anything turn the broker's events into typed warehouse rows here?

    uv run python bench/analytics_ceiling.py [--events 512000]

The issue's ingestion goal (100,000 events/s with decode, ClickHouse insert and Redis counters) is
measured by bench/analytics.py. This script asks what the machine allows before any of the pipeline's
guarantees: in the same run, on the same offset ranges of librdkafka's mock broker, it times

- the bare floor: consume each chunk and insert the raw bytes into a plain MergeTree (analytics.py's);
- decode in Python: consume, decode with the pipeline's msgspec model into Arrow columns, insert the
  typed rows into a plain MergeTree with raw_events' columns and sort key (no materialized views, no
  duplicate lookup, no dead letters, no counters, no booking);
- parse in ClickHouse: consume, insert the raw bytes and let ClickHouse parse the JSON into the same
  typed columns in the INSERT itself (one JSONExtract per row, in C++, off the GIL), again with nothing
  else.

Both typed variants are upper bounds for any pipeline that parses and stores the events: the real one
does all of their work and more.
"""

from __future__ import annotations

import os
import random

import pyarrow as pa
from analytics import (
    PARTITIONS,
    TOPIC,
    WAVE_EVENTS,
    Clock,
    bare_floor,
    drop_floor_table,
    events_arguments,
    produced_waves,
    start_broker_and_warehouse,
)

from hub_pipelines.analytics.events import RAW_EVENT_SCHEMA, decode_batch, events_to_arrow
from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.topic_landing import split_into_chunks
from hub_pipelines.landing.warehouse_events import EVENTS_CHUNK_MESSAGES
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from hub_pipelines.resources.kafka_topics import KafkaTopics

# The typed tables copy raw_events' columns and sort key (from an AnalyticsTables database whose views
# feed only its own raw_events), on a plain MergeTree: no replacing, no deduplication window, no views.
_SOURCE = AnalyticsTables("bench_ceiling_schema")
_TYPED_TABLE = (
    "CREATE TABLE IF NOT EXISTS bench_ceiling.{name} AS " + _SOURCE.raw_events + " ENGINE = MergeTree "
    "PARTITION BY toDate(ts) ORDER BY (toStartOfMinute(ts), event_id)"
)
_EVENT_TUPLE = (
    "Tuple(event_id String, type String, user_id String, session_id String, ts String, "
    "properties Tuple(path Nullable(String), product_id Nullable(String), amount Nullable(String), "
    "code Nullable(String)))"
)
_PARSE_IN_CLICKHOUSE = f"""
INSERT INTO bench_ceiling.parsed_in_clickhouse ({", ".join(RAW_EVENT_SCHEMA.names)})
SELECT e.event_id, e.type, e.user_id, e.session_id, parseDateTime64BestEffort(e.ts, 3, 'UTC'),
       e.properties.path, e.properties.product_id, toDecimal64OrNull(e.properties.amount, 2),
       e.properties.code, '{TOPIC}', partition, offset
FROM (SELECT JSONExtract(value, '{_EVENT_TUPLE}') AS e, partition, offset FROM Python(raw_rows))
"""


def _chunks(ranges: list[OffsetRange]) -> list[OffsetRange]:
    return [chunk for r in ranges for chunk in split_into_chunks(r, EVENTS_CHUNK_MESSAGES)]


def decode_in_python(topics: KafkaTopics, warehouse: ChdbWarehouse, ranges: list[OffsetRange]) -> int:
    landed = 0
    for chunk in _chunks(ranges):
        messages = topics.read_range(TOPIC, chunk.partition, chunk.start, chunk.end)
        batch = decode_batch(messages)
        warehouse.insert_arrow(
            "bench_ceiling.decoded_in_python", events_to_arrow(batch.events, batch.messages)
        )
        landed += len(batch.events)
    return landed


def parse_in_clickhouse(topics: KafkaTopics, warehouse: ChdbWarehouse, ranges: list[OffsetRange]) -> int:
    landed = 0
    for chunk in _chunks(ranges):
        messages = topics.read_range(TOPIC, chunk.partition, chunk.start, chunk.end)
        raw_rows = pa.table(  # noqa: F841 - read by name from the SQL (chdb's Python() table function)
            {
                "partition": pa.array([m.partition for m in messages], pa.int32()),
                "offset": pa.array([m.offset for m in messages], pa.int64()),
                "value": pa.array([m.value for m in messages], pa.binary()),
            }
        )
        warehouse.execute(_PARSE_IN_CLICKHOUSE)
        landed += len(messages)
    return landed


def main() -> None:
    args = events_arguments(__doc__, 512_000).parse_args()
    _owner, topics, warehouse, _folder = start_broker_and_warehouse("ceiling")
    _SOURCE.ensure(warehouse)
    warehouse.execute("CREATE DATABASE IF NOT EXISTS bench_ceiling")
    for name in ("decoded_in_python", "parsed_in_clickhouse"):
        warehouse.execute(_TYPED_TABLE.format(name=name))
    floor, consuming, in_python, in_clickhouse = Clock(), Clock(), Clock(), Clock()
    produced = 0
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        for wave, ranges in produced_waves(topics, random.Random(1), args.events):
            produced += wave
            with floor:
                bare_floor(topics, warehouse, ranges, consuming)
            drop_floor_table(warehouse)
            with in_python:
                assert decode_in_python(topics, warehouse, ranges) == wave
            with in_clickhouse:
                assert parse_in_clickhouse(topics, warehouse, ranges) == wave
        typed = warehouse.query_df(
            "SELECT (SELECT count() FROM bench_ceiling.decoded_in_python) AS python, "
            "(SELECT count() FROM bench_ceiling.parsed_in_clickhouse) AS clickhouse, "
            "(SELECT count() FROM bench_ceiling.parsed_in_clickhouse WHERE ts > '2000-01-01') AS with_ts"
        )
        assert typed.iloc[0].tolist() == [produced] * 3, typed
    finally:
        warehouse.close()
    print(f"{produced:,} events from the broker over {PARTITIONS} partitions, in waves of {WAVE_EVENTS:,}")
    print(f"bare floor (consume + insert raw bytes):            {floor.rates(produced)}")
    print(
        f"ceiling, decode in Python + insert typed rows:       {in_python.rates(produced)} "
        f"= {floor.wall / in_python.wall:.2f}x the floor"
    )
    print(
        f"ceiling, parse in ClickHouse during the insert:      {in_clickhouse.rates(produced)} "
        f"= {floor.wall / in_clickhouse.wall:.2f}x the floor"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
