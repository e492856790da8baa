"""A landing run in its own process, for tests that kill one mid-range and rerun it.

`--die-at-chunk N` makes the process SIGKILL itself when it asks the broker for its Nth chunk: a hard
crash after N-1 chunks were landed, with no chance to clean up. Inside a chunk's write (events):
`--die-after-events-insert N` SIGKILLs it right after its Nth insert into `raw_events` returned (the
rows stored, neither counted nor booked), `--die-before-booking N` right before its Nth booking insert,
once the counters of the chunks landed so far are in Redis (stored and counted, not booked). Without
them the run lands everything and prints its counts and what the sink then holds, as JSON. `--ranges`
lands those ranges instead of everything; `--wait-for-go` reads one line from stdin first, so a test
can start several at once. `--redis-url` (with `--redis-prefix`) counts landed events in Redis.
`--follow-seconds S` keeps landing what arrives for S seconds after the ranges, as a following landing
run does, and prints one JSON line per landed micro-batch as it lands.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

from hub_pipelines.core.ports import LandingSink, PartitionSpan, Topics
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.following import LandedBatch, MicroBatch, follow_topic
from hub_pipelines.landing.offsets import (
    OffsetRange,
    describe_ranges,
    find_gaps,
    parse_ranges,
    plan_next_ranges,
)
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.resources.kafka_topics import KafkaTopics


@dataclass
class DyingTopics:
    """Topics that kill the process on the Nth read."""

    inner: Topics
    die_at_read: int
    reads: int = 0

    def read_span(self, topic: str, partition: int, start: int, end: int) -> PartitionSpan:
        self.reads += 1
        if self.reads == self.die_at_read:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.read_span(topic, partition, start, end)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@dataclass
class DyingWarehouse:
    """A warehouse that kills the process inside the write of a chunk (see the flags above)."""

    inner: Any
    after_events_insert: int
    before_booking: int
    sink: Any = None
    events_inserts: int = 0
    bookings: int = 0

    def insert_arrow(self, table: str, batch: Any, dedup_token: str | None = None) -> int:
        if table.endswith("landed_ranges"):
            self.bookings += 1
            if self.bookings == self.before_booking:
                self.sink.finish_counting()
                os.kill(os.getpid(), signal.SIGKILL)
        inserted = self.inner.insert_arrow(table, batch, dedup_token)
        if table.endswith("raw_events"):
            self.events_inserts += 1
            if self.events_inserts == self.after_events_insert:
                os.kill(os.getpid(), signal.SIGKILL)
        return inserted

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _sink(args: argparse.Namespace) -> LandingSink:
    if args.kind == "orders":
        from hub_pipelines.landing.sql_inbox import SqlInboxSink
        from hub_pipelines.resources.sql_database import PostgresDatabase

        return SqlInboxSink(PostgresDatabase(url=args.db_url, migrate_schema=True))
    from hub_pipelines.landing.warehouse_events import WarehouseEventsSink
    from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
    from hub_pipelines.resources.cache import RedisCache

    warehouse = DyingWarehouse(
        ChdbWarehouse(path=args.chdb_path), args.die_after_events_insert, args.die_before_booking
    )
    counters = RedisCache(url=args.redis_url, key_prefix=args.redis_prefix) if args.redis_url else None
    sink = WarehouseEventsSink(warehouse, counters=counters)  # type: ignore[arg-type]
    warehouse.sink = sink
    return sink


def _stored_events(sink: LandingSink) -> tuple[int, int]:
    from hub_pipelines.landing.warehouse_events import WarehouseEventsSink

    assert isinstance(sink, WarehouseEventsSink)
    frame = sink.warehouse.query_df(
        f"SELECT count() AS rows, uniqExact(event_id) AS ids FROM {sink.tables.raw_events} FINAL"
    )
    return int(frame["rows"][0]), int(frame["ids"][0])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["orders", "events"], required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--db-url")
    parser.add_argument("--chdb-path")
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--die-at-chunk", type=int, default=0)
    parser.add_argument("--die-after-events-insert", type=int, default=0)
    parser.add_argument("--die-before-booking", type=int, default=0)
    parser.add_argument("--redis-url")
    parser.add_argument("--redis-prefix", default="")
    parser.add_argument("--ranges")
    parser.add_argument("--wait-for-go", action="store_true")
    parser.add_argument("--follow-seconds", type=float, default=0.0)
    args = parser.parse_args()
    kafka = KafkaTopics(bootstrap_servers=args.bootstrap)
    topics: Topics = DyingTopics(kafka, args.die_at_chunk) if args.die_at_chunk else kafka  # type: ignore[assignment]
    sink = _sink(args)
    ranges = (
        parse_ranges(args.ranges)
        if args.ranges
        else plan_next_ranges({}, kafka.end_offsets(args.topic), 1_000_000)
    )
    if args.wait_for_go:
        sys.stdin.readline()
    run_id = f"worker-{os.getpid()}"

    def land(batch: tuple[OffsetRange, ...]) -> LandedBatch:
        return LandedBatch(land_ranges(topics, sink, args.topic, batch, run_id, args.chunk))

    landed = LandingCounts()

    def report(batch: MicroBatch) -> None:
        nonlocal landed
        landed += batch.landed.counts
        print(json.dumps({"batch": describe_ranges(batch.ranges), "landed": batch.landed.counts.landed}))
        sys.stdout.flush()

    positions = sink.landed_positions(args.topic)
    last = follow_topic(
        kafka, args.topic, ranges, positions, land, report, args.follow_seconds, 0.2, 1_000_000
    )
    counts = landed + last.landed.counts
    if args.kind == "events":
        sink.finish_counting()  # type: ignore[attr-defined]
    book = sink.landed_ranges(args.topic)
    report = {
        "counts": counts.as_metadata(),
        "gaps": [gap.describe() for gap in find_gaps(r for r, _ in book)],
        "unreconciled": [r.label() for r, c in book if not c.reconciles],
        "booked_landed": sum(c.landed for _, c in book),
        "book": [[r.partition, r.start, r.end, c.read, c.landed, c.gaps] for r, c in book],
    }
    if args.kind == "events":
        report["stored_rows"], report["stored_ids"] = _stored_events(sink)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
