"""Analytics benchmark: ingestion against the bare floor, dashboard query latency, detector cost per point.

    uv run python bench/analytics.py [--events 1000000] [--query-events 10000000]

`--query-events 0` skips the query part (bench/analytics_queries.py runs it on its own).
`--landing-alone` adds the landing path on messages already in memory (diagnostic).
`--scattered` stamps the events at random over six hours instead of in stream order (see below).

Ingestion: the events are produced once to librdkafka's mock broker (in this process, 4 partitions),
then read again in the same run: a bare confluent-kafka consumer loop (the broker's own limit), the
floor that consumes every message through KafkaTopics.read_range and inserts the raw bytes into a
plain MergeTree table, and the pipeline that lands the same ranges as the raw_events asset does:
decode, duplicate lookup, the raw_events insert (with its materialized views) beside the chunk's
Redis counters, and the range book; then the realtime_counters asset's pass, which finds every chunk
counted (it re-reads only chunks the landing could not count). Each rate
is given in wall time and in CPU time of this process (all its threads: chdb's, librdkafka's and the
mock broker's), since the machine is shared and wall time moves with its load.
The events are stamped as a live topic carries them: in order at 20,000 events per second of event
time, 1% of them up to six hours late. A chunk then covers a few seconds of event time plus its late
stragglers, as in production, where the older `--scattered` stamping (a shuffled six-hour backlog) made
every chunk span all 360 minutes: it is kept as the harder case for the duplicate lookup and the views.
Freshness: events stamped and produced now, landed and looked up in the minute rollup, in process.
Queries: the named dashboard queries over `--query-events` synthetic events (generated inside
ClickHouse, through the same views), p50/p95 uncached and cached. Detector: one metric's detector fed
100,000 points.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from analytics_queries import percentile, print_query_latency
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from hub_pipelines.analytics.anomaly import AnomalyDetector
from hub_pipelines.analytics.counters import count_uncounted_chunks
from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.demo.feeder import analytics_event
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.topic_landing import land_ranges, split_into_chunks
from hub_pipelines.landing.warehouse_events import EVENTS_CHUNK_MESSAGES, WarehouseEventsSink
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from hub_pipelines.resources.cache import RedisCache
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.settings import SENSOR_INTERVAL_SECONDS

TOPIC = "bench-events"
PARTITIONS = 4
# librdkafka's mock broker keeps at most 100,000 messages (and about 5 MB) per partition and drops older
# ones, so the events go through in waves that fit: each wave is produced (untimed), then read by the
# floor and the pipeline. The producer compresses its batches with zstd (KafkaTopics' default), so
# 96,000 events of a partition take about 4 MB.
WAVE_EVENTS = 384_000
STREAM_EVENTS_PER_SECOND = 20_000
LATE_SHARE = 0.01
LATE_WINDOW = timedelta(hours=6)


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    cache = RedisCache(url=f"redis://127.0.0.1:{port}/0")
    for _ in range(100):
        try:
            cache.client().ping()
            break
        except Exception:
            time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


class Clock:
    """Wall and process CPU seconds accumulated over the timed sections."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Clock:
        self._began = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._began[0]
        self.cpu += time.process_time() - self._began[1]

    def rates(self, events: int) -> str:
        return f"{events / self.wall:>10,.0f} events/s  ({self.cpu / events * 1e6:5.1f} CPU us/event)"


def start_mock_broker() -> tuple[AdminClient, KafkaTopics]:
    """librdkafka's mock cluster, served while the returned owner lives, and our client for it."""
    owner = AdminClient({"test.mock.num.brokers": 1, "log_level": 3})
    broker = next(iter(owner.list_topics(timeout=10).brokers.values()))
    return owner, KafkaTopics(bootstrap_servers=f"{broker.host}:{broker.port}", timeout_seconds=30)


def events_arguments(description: str | None, default_events: int) -> argparse.ArgumentParser:
    """The command line every events benchmark takes (`--events`); callers add their own options."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=default_events)
    return parser


def start_broker_and_warehouse(name: str) -> tuple[AdminClient, KafkaTopics, ChdbWarehouse, Path]:
    """The mock broker (served while the returned owner lives), our client for it, and a chdb warehouse
    in a fresh temporary folder (returned too, for anything else the benchmark keeps there)."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    owner, topics = start_mock_broker()
    return owner, topics, ChdbWarehouse(path=str(folder / "chdb")), folder


def bare_consumer(bootstrap: str, ranges: list[OffsetRange]) -> int:
    """A plain confluent-kafka loop over the ranges, values only: what the broker and client can give."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-bare",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
        }
    )
    read = 0
    try:
        for offset_range in ranges:
            consumer.assign([TopicPartition(TOPIC, offset_range.partition, offset_range.start)])
            got = 0
            while got < offset_range.size:
                for message in consumer.consume(num_messages=offset_range.size - got, timeout=1.0):
                    if message.error() is None:
                        message.value()
                        got += 1
            consumer.unassign()
            read += got
    finally:
        consumer.close()
    return read


def event_stamps(rng: random.Random, scattered: bool) -> Iterator[datetime]:
    """Event times as a live topic carries them: in order, STREAM_EVENTS_PER_SECOND per second of event
    time, LATE_SHARE of them stamped up to LATE_WINDOW earlier (clients that were offline). Scattered:
    every event at a random moment of the last LATE_WINDOW, as a shuffled backlog would be (each chunk
    then spans every minute of it)."""
    now = datetime.now(UTC)
    stream_time = now - timedelta(minutes=10)
    step = timedelta(seconds=1 / STREAM_EVENTS_PER_SECOND)
    window_seconds = int(LATE_WINDOW.total_seconds())
    while True:
        if scattered:
            yield now - timedelta(seconds=rng.randrange(window_seconds))
            continue
        stream_time += step
        late = rng.random() < LATE_SHARE
        yield stream_time - timedelta(seconds=rng.randrange(window_seconds)) if late else stream_time


def produce(topics: KafkaTopics, rng: random.Random, count: int, stamps: Iterator[datetime]) -> None:
    batch: list[OutgoingMessage] = []
    for n, stamp in zip(range(count), stamps, strict=False):
        event = analytics_event(rng, stamp)
        batch.append(OutgoingMessage(json.dumps(event).encode(), partition=n % PARTITIONS))
    topics.produce(TOPIC, batch)


def produced_waves(
    topics: KafkaTopics, rng: random.Random, total: int, scattered: bool = False
) -> Iterator[tuple[int, list[OffsetRange]]]:
    """Produce `total` events in waves the mock broker can hold; yield each wave's size and new ranges."""
    positions = dict.fromkeys(range(PARTITIONS), 0)
    produced = 0
    stamps = event_stamps(random.Random(rng.random()), scattered)
    while produced < total:
        wave = min(WAVE_EVENTS, total - produced)
        produce(topics, rng, wave, stamps)
        produced += wave
        ends = topics.end_offsets(TOPIC)
        ranges = [OffsetRange(p, positions[p], end) for p, end in sorted(ends.items()) if end > positions[p]]
        positions.update(ends)
        yield wave, ranges


def bare_floor(
    topics: KafkaTopics,
    warehouse: ChdbWarehouse,
    ranges: list[OffsetRange],
    consuming: Clock,
    keep: bool = False,
) -> list[tuple[OffsetRange, list]]:
    """Read and insert the raw bytes; the messages are kept only for the landing-alone section (held
    through the pipeline's section, they would make its garbage collections walk them)."""
    warehouse.execute("CREATE DATABASE IF NOT EXISTS bench_floor")
    warehouse.execute(
        "CREATE TABLE IF NOT EXISTS bench_floor.raw (partition Int32, offset Int64, value String) "
        "ENGINE = MergeTree ORDER BY tuple()"
    )
    read = 0
    chunks = []
    for offset_range in ranges:
        for chunk in split_into_chunks(offset_range, EVENTS_CHUNK_MESSAGES):
            with consuming:
                messages = topics.read_range(TOPIC, chunk.partition, chunk.start, chunk.end)
            if keep:
                chunks.append((chunk, messages))
            read += len(messages)
            table = pa.table(
                {
                    "partition": pa.array([m.partition for m in messages], pa.int32()),
                    "offset": pa.array([m.offset for m in messages], pa.int64()),
                    "value": pa.array([m.value for m in messages], pa.binary()),
                }
            )
            warehouse.insert_arrow("bench_floor.raw", table)
    assert read == sum(r.size for r in ranges), f"floor read {read} of {sum(r.size for r in ranges)}"
    return chunks


def drop_floor_table(warehouse: ChdbWarehouse) -> None:
    """Dropped untimed after the floor's section: its parts would otherwise be merged during the
    pipeline's section and charged to it."""
    warehouse.execute("DROP TABLE bench_floor.raw SYNC")


def sink_only(warehouse: ChdbWarehouse, chunks: list[tuple[OffsetRange, list]]) -> None:
    """The landing path alone on messages already in memory: decode, lookup, insert with views, book."""
    sink = WarehouseEventsSink(warehouse, AnalyticsTables("bench_sink_only"))
    for chunk, messages in chunks:
        sink.land_chunk(TOPIC, chunk, messages, "bench")


def pipeline(
    topics: KafkaTopics,
    warehouse: ChdbWarehouse,
    cache: RedisCache,
    ranges: list[OffsetRange],
    landing: Clock,
    counting: Clock,
    run_id: str,
) -> int:
    tables = AnalyticsTables("bench_pipeline")
    sink = WarehouseEventsSink(warehouse, tables, counters=cache)
    with landing:
        counts = land_ranges(topics, sink, TOPIC, ranges, run_id, EVENTS_CHUNK_MESSAGES, read_ahead=True)
        sink.finish_counting()
    with counting:
        caught_up = count_uncounted_chunks(warehouse, tables, cache, run_id)
    assert caught_up.events_counted == counts.landed, (caught_up, counts)
    assert counts.reconciles and counts.landed == sum(r.size for r in ranges), counts
    return counts.landed


def freshness(topics: KafkaTopics, warehouse: ChdbWarehouse, rounds: int, per_round: int) -> list[float]:
    """Seconds from producing events stamped now to their count showing in the minute rollup, in process."""
    tables = AnalyticsTables("bench_freshness")
    sink = WarehouseEventsSink(warehouse, tables)
    rng = random.Random(5)
    samples = []
    positions = topics.end_offsets(TOPIC)
    for _ in range(rounds):
        produced_at = time.perf_counter()
        now = datetime.now(UTC)
        batch = [
            OutgoingMessage(json.dumps(analytics_event(rng, now)).encode(), partition=n % PARTITIONS)
            for n in range(per_round)
        ]
        topics.produce(TOPIC, batch)
        ends = topics.end_offsets(TOPIC)
        ranges = [OffsetRange(p, positions[p], end) for p, end in sorted(ends.items()) if end > positions[p]]
        positions.update(ends)
        land_ranges(topics, sink, TOPIC, ranges, "fresh", EVENTS_CHUNK_MESSAGES)
        seen = warehouse.query_df(
            f"SELECT sum(events) FROM {tables.rollup_minute} WHERE bucket >= {{minute:DateTime('UTC')}}",
            {"minute": now.replace(second=0, microsecond=0, tzinfo=None)},
        ).iloc[0, 0]
        samples.append(time.perf_counter() - produced_at)
        assert int(seen) >= per_round, f"only {seen} of {per_round} fresh events visible"
    return samples


def detector_cost(points: int = 100_000) -> float:
    rng = random.Random(3)
    detector = AnomalyDetector("bench")
    values = [100 + rng.gauss(0, 5) + (50 if n % 5000 == 0 else 0) for n in range(points)]
    began = time.perf_counter()
    for value in values:
        detector.update(value)
    return (time.perf_counter() - began) / points * 1e6


def main() -> None:
    parser = events_arguments(__doc__, 1_000_000)
    parser.add_argument("--query-events", type=int, default=10_000_000)
    parser.add_argument("--query-repeats", type=int, default=40)
    parser.add_argument(
        "--landing-alone",
        action="store_true",
        help="also land the messages already in memory into a third set of tables (its merges then "
        "run in the same process during the other sections and are charged to them)",
    )
    parser.add_argument(
        "--scattered",
        action="store_true",
        help="stamp every event at a random moment of the last six hours (a shuffled backlog) instead of "
        "in stream order with a late tail",
    )
    args = parser.parse_args()
    _owner, topics, warehouse, folder = start_broker_and_warehouse("analytics")
    redis_process, redis_url = start_redis(folder)
    cache = RedisCache(url=redis_url)
    try:
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        rng = random.Random(1)
        bare, consuming, floor, sink_alone, landing, counting = (Clock() for _ in range(6))
        landed = produced = 0
        for wave, ranges in produced_waves(topics, rng, args.events, args.scattered):
            produced += wave
            with bare:
                assert bare_consumer(topics.bootstrap_servers, ranges) == wave
            with floor:
                chunks = bare_floor(topics, warehouse, ranges, consuming, keep=args.landing_alone)
            drop_floor_table(warehouse)
            if args.landing_alone:
                with sink_alone:
                    sink_only(warehouse, chunks)
            landed += pipeline(topics, warehouse, cache, ranges, landing, counting, f"bench-{produced}")
        total = Clock()
        total.wall, total.cpu = landing.wall + counting.wall, landing.cpu + counting.cpu
        stamped = (
            f"stamped at random over the last {LATE_WINDOW}"
            if args.scattered
            else f"stamped in stream order at {STREAM_EVENTS_PER_SECOND:,}/s, {LATE_SHARE:.0%} up to {LATE_WINDOW} late"
        )
        print(
            f"{produced:,} events from the broker, in waves of {WAVE_EVENTS:,} over {PARTITIONS} partitions, "
            + stamped
        )
        print(f"bare confluent-kafka consumer loop (values only):  {bare.rates(produced)}")
        print(f"consume only (KafkaTopics.read_range):             {consuming.rates(produced)}")
        print(f"bare floor (read_range + insert raw bytes):        {floor.rates(produced)}")
        if args.landing_alone:
            print(f"landing path alone, messages in memory:            {sink_alone.rates(produced)}")
        print(f"pipeline landing (with counters beside insert):   {landing.rates(landed)}")
        print(
            f"pipeline landing + counters catch-up pass:         {total.rates(landed)} "
            f"= {floor.wall / total.wall:.2f}x the floor"
        )
        samples = freshness(topics, warehouse, rounds=20, per_round=1000)
        p50, p95 = percentile(samples, 0.5), percentile(samples, 0.95)
        print(
            f"freshness, produced -> in the minute rollup, in process (1,000-event batches): p50 {p50 * 1000:.0f} ms"
            f"  p95 {p95 * 1000:.0f} ms; a Dagster deployment adds the sensor wait (0..{SENSOR_INTERVAL_SECONDS} s, "
            f"{SENSOR_INTERVAL_SECONDS / 2:.1f} s on average) and the run launch"
        )
        if args.query_events > 0:
            print_query_latency(warehouse, cache, args.query_events, args.query_repeats)
        print(f"detector: {detector_cost():.1f} us per point")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        warehouse.close()
        redis_process.terminate()
        redis_process.wait(timeout=10)


if __name__ == "__main__":
    main()
