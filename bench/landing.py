"""Landing benchmark: events/s landed from the broker into the warehouse, beside the bare floor.

    uv run python bench/landing.py [--events 500000]

Both sides read the same offset ranges from librdkafka's mock broker in the same run. The floor
consumes each chunk and inserts the raw bytes into a plain MergeTree table; the landing path is
`analytics/raw_events`'s: `land_ranges` with the warehouse sink and read-ahead (decode, duplicate lookup,
insert into raw_events with its materialized views, book the chunk). The events topic's producer, waves and clock
come from bench/analytics.py, which also adds Redis counters and dashboard queries.
"""

from __future__ import annotations

import random

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

from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.landing.warehouse_events import EVENTS_CHUNK_MESSAGES, WarehouseEventsSink


def main() -> None:
    args = events_arguments(__doc__, 500_000).parse_args()
    _owner, topics, warehouse, _folder = start_broker_and_warehouse("landing")
    sink = WarehouseEventsSink(warehouse, AnalyticsTables("bench_landing"))
    floor, consuming, landing = Clock(), Clock(), Clock()
    rng = random.Random(1)
    produced = landed = 0
    try:
        for wave, ranges in produced_waves(topics, rng, args.events):
            produced += wave
            with floor:
                bare_floor(topics, warehouse, ranges, consuming)
            drop_floor_table(warehouse)
            with landing:
                counts = land_ranges(
                    topics, sink, TOPIC, ranges, "bench", EVENTS_CHUNK_MESSAGES, read_ahead=True
                )
            assert counts.reconciles and counts.landed == sum(r.size for r in ranges), counts
            landed += counts.landed
    finally:
        warehouse.close()
    print(f"{produced:,} events from the broker over {PARTITIONS} partitions, in waves of {WAVE_EVENTS:,}")
    print(f"bare floor (consume + insert raw bytes): {floor.rates(produced)}")
    print(f"landing (decode, dedup, insert, book):   {landing.rates(landed)}")
    print(f"landing / floor: {floor.wall / landing.wall * landed / produced:.2f}x")


if __name__ == "__main__":
    main()
