"""Landing against the real broker (librdkafka's mock cluster), PostgreSQL and chdb."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters, topic_inbox
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import find_gaps, plan_next_ranges
from hub_pipelines.landing.sql_inbox import SqlInboxSink
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.orders.dead_letters import read_dead_letters
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.sql_database import PostgresDatabase

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _order(event_id: str) -> bytes:
    return json.dumps({"event_id": event_id, "type": "order.placed"}).encode()


def _analytics_event(event_id: str, at: datetime) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "type": "page_view",
            "user_id": "u-1",
            "session_id": "s-1",
            "ts": at.isoformat(),
            "properties": {"path": "/"},
        }
    ).encode()


def _count(database: PostgresDatabase, table: sa.Table) -> int:
    with database.engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_orders_landing_counts_duplicates_and_dead_letters_and_replays_idempotently(
    kafka_broker, postgres_database
):
    topic = kafka_broker.new_topic("orders")
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers)
    values = [_order(f"order-{i}") for i in range(10)]
    values += [_order("order-3"), _order("order-7")]
    values += [b"not json at all", b'{"no_event_id": true}']
    topics.produce(topic, [OutgoingMessage(value=v, partition=0) for v in values])
    database = PostgresDatabase(url=postgres_database.url, migrate_schema=True)
    sink = SqlInboxSink(database)
    ranges = plan_next_ranges({}, topics.end_offsets(topic), 1000)

    first = land_ranges(topics, sink, topic, ranges, "run-1", chunk_messages=5)
    replay = land_ranges(topics, sink, topic, ranges, "run-2", chunk_messages=5)

    assert first == LandingCounts(read=14, landed=10, duplicates=2, dead_lettered=2)
    assert replay == LandingCounts(read=14, landed=0, duplicates=12, dead_lettered=2)
    assert _count(database, topic_inbox) == 10
    assert _count(database, dead_letters) == 2
    reasons = [(letter.reason, letter.payload) for letter in read_dead_letters(database)]
    assert all(f"{topic} partition 0 offset" in reason for reason, _ in reasons)
    assert {payload for _, payload in reasons} == {b"not json at all", b'{"no_event_id": true}'}
    assert all(counts.reconciles for _, counts in sink.landed_ranges(topic))


def _worker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.platform.landing_worker", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_orders_landing_killed_mid_range_and_rerun_leaves_no_gap_and_no_duplicate(
    kafka_broker, postgres_database
):
    topic = kafka_broker.new_topic("orders-crash")
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers)
    topics.produce(topic, [OutgoingMessage(value=_order(f"o-{i}"), partition=i % 2) for i in range(60)])
    common = ["--kind", "orders", "--bootstrap", kafka_broker.bootstrap_servers, "--topic", topic]
    common += ["--db-url", postgres_database.url, "--chunk", "10"]

    killed = _worker(*common, "--die-at-chunk", "3")
    assert killed.returncode == -9, killed.stderr
    database = PostgresDatabase(url=postgres_database.url)
    assert _count(database, topic_inbox) == 20

    rerun = _worker(*common)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert LandingCounts(**report["counts"]) == LandingCounts(read=60, landed=40, duplicates=20)
    assert report["gaps"] == [] and report["unreconciled"] == []
    assert _count(database, topic_inbox) == 60
    assert report["booked_landed"] == 60


def _overlap_free_cover(book: list[list[int]]) -> dict[int, list[tuple[int, int]]]:
    """Per partition, the booked ranges merged where they touch; overlapping ranges fail the test."""
    merged: dict[int, list[tuple[int, int]]] = {}
    for partition, start, end, *_ in sorted(book):
        spans = merged.setdefault(partition, [])
        if spans and spans[-1][1] > start:
            raise AssertionError(f"partition {partition}: {start}-{end} overlaps {spans[-1]}")
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return merged


def test_two_processes_landing_overlapping_ranges_at_once_book_every_offset_once(
    kafka_broker, postgres_database
):
    topic = kafka_broker.new_topic("orders-overlap")
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers)
    topics.produce(topic, [OutgoingMessage(value=_order(f"o-{i}"), partition=i % 4) for i in range(400)])
    SqlInboxSink(PostgresDatabase(url=postgres_database.url, migrate_schema=True)).landed_ranges(topic)
    common = ["--kind", "orders", "--bootstrap", kafka_broker.bootstrap_servers, "--topic", topic]
    common += ["--db-url", postgres_database.url, "--wait-for-go"]
    sensor_like = [*common, "--chunk", "10", "--ranges", "0:0-100,1:0-100,2:0-60,3:0-100"]
    cli_like = [*common, "--chunk", "7", "--ranges", "0:0-100,1:35-100,2:20-100,3:0-100"]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.platform.landing_worker", *args],
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in (sensor_like, cli_like)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=300) for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0], [err for _, err in outputs]
    reports = [json.loads(out) for out, _ in outputs]
    assert all(LandingCounts(**r["counts"]).reconciles for r in reports)
    assert sum(r["counts"]["landed"] for r in reports) == 400
    book = reports[1]["book"] if len(reports[1]["book"]) >= len(reports[0]["book"]) else reports[0]["book"]
    assert _overlap_free_cover(book) == {p: [(0, 100)] for p in range(4)}
    assert sum(read for *_, read, _, _ in book) == 400
    assert sum(landed for *_, landed, _ in book) == 400
    assert _count(PostgresDatabase(url=postgres_database.url), topic_inbox) == 400


def test_events_landing_killed_mid_range_and_rerun_counts_each_event_once(kafka_broker, tmp_path):
    topic = kafka_broker.new_topic("events-crash")
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers)
    now = datetime.now(UTC)
    messages = [
        OutgoingMessage(value=_analytics_event(f"ev-{i}", now - timedelta(minutes=i)), partition=i % 2)
        for i in range(60)
    ]
    messages.append(OutgoingMessage(value=_analytics_event("ev-5", now - timedelta(minutes=5)), partition=0))
    messages.append(OutgoingMessage(value=b"\xff\xfe garbage", partition=1))
    topics.produce(topic, messages)
    common = ["--kind", "events", "--bootstrap", kafka_broker.bootstrap_servers, "--topic", topic]
    common += ["--chdb-path", str(tmp_path / "warehouse"), "--chunk", "10"]

    killed = _worker(*common, "--die-at-chunk", "4")
    assert killed.returncode == -9, killed.stderr
    rerun = _worker(*common)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)

    assert report["gaps"] == [] and report["unreconciled"] == []
    assert report["stored_rows"] == report["stored_ids"] == 60
    assert report["booked_landed"] == 60
    counts = report["counts"]
    assert counts["read"] == 62
    assert counts["read"] == counts["landed"] + counts["duplicates"] + counts["dead_lettered"]
    assert counts["dead_lettered"] == 1


def test_follower_killed_mid_micro_batch_then_rerun_lands_every_event_once(kafka_broker, tmp_path):
    topic = kafka_broker.new_topic("events-follow-crash")
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers)
    now = datetime.now(UTC)

    def produce(first: int) -> None:
        topics.produce(
            topic,
            [
                OutgoingMessage(
                    value=_analytics_event(f"ev-{i}", now - timedelta(seconds=i)), partition=i % 2
                )
                for i in range(first, first + 40)
            ],
        )

    produce(0)
    common = ["--kind", "events", "--bootstrap", kafka_broker.bootstrap_servers, "--topic", topic]
    common += ["--chdb-path", str(tmp_path / "warehouse"), "--chunk", "10"]
    # The first batch reads 4 chunks of 10; the 6th read is in a micro-batch of the events produced next.
    following = ["--follow-seconds", "300", "--die-at-chunk", "6"]
    follower = subprocess.Popen(
        [sys.executable, "-m", "tests.platform.landing_worker", *common, *following],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    first_batch = json.loads(follower.stdout.readline() or "{}")
    assert first_batch == {"batch": "0:0-20,1:0-20", "landed": 40}, follower.stderr and follower.stderr.read()
    produce(40)
    later_batches = [json.loads(line) for line in follower.stdout]
    assert follower.wait(timeout=300) == -9, follower.stderr and follower.stderr.read()

    rerun = _worker(*common)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)

    landed_by_follower = 40 + sum(batch["landed"] for batch in later_batches)
    assert report["counts"]["landed"] + report["counts"]["duplicates"] == 80
    assert report["counts"]["duplicates"] >= landed_by_follower
    assert report["gaps"] == [] and report["unreconciled"] == []
    assert report["booked_landed"] == 80
    assert report["stored_rows"] == report["stored_ids"] == 80


def test_events_landing_runs_overlapping_in_turn_count_each_event_once(kafka_broker, tmp_path):
    topic = kafka_broker.new_topic("events-overlap")
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers)
    now = datetime.now(UTC)
    topics.produce(
        topic,
        [
            OutgoingMessage(value=_analytics_event(f"ev-{i}", now - timedelta(minutes=i)), partition=i % 4)
            for i in range(120)
        ],
    )
    common = ["--kind", "events", "--bootstrap", kafka_broker.bootstrap_servers, "--topic", topic]
    common += ["--chdb-path", str(tmp_path / "warehouse")]
    runs = [
        ["--chunk", "10", "--ranges", "0:0-20,1:0-30,2:5-30"],
        ["--chunk", "7", "--ranges", "0:10-30,1:0-30,2:0-12,3:0-30"],
        ["--chunk", "25"],
    ]
    reports = []
    for run in runs:
        worker = _worker(*common, *run)
        assert worker.returncode == 0, worker.stderr
        reports.append(json.loads(worker.stdout))

    assert sum(r["counts"]["landed"] for r in reports) == 120
    final = reports[-1]
    assert _overlap_free_cover(final["book"]) == {p: [(0, 30)] for p in range(4)}
    assert final["booked_landed"] == 120 and final["gaps"] == [] and final["unreconciled"] == []
    assert final["stored_rows"] == final["stored_ids"] == 120


def test_landed_ranges_of_a_real_topic_are_contiguous_after_batches(kafka_broker, postgres_database):
    topic = kafka_broker.new_topic("orders-batches")
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers)
    sink = SqlInboxSink(PostgresDatabase(url=postgres_database.url, migrate_schema=True))
    for batch in range(3):
        topics.produce(
            topic, [OutgoingMessage(value=_order(f"b{batch}-{i}"), key=b"%d" % i) for i in range(15)]
        )
        ranges = plan_next_ranges(sink.landed_positions(topic), topics.end_offsets(topic), 1000)
        land_ranges(topics, sink, topic, ranges, f"run-{batch}", chunk_messages=7)
    book = sink.landed_ranges(topic)
    assert find_gaps(r for r, _ in book) == []
    assert sum(c.landed for _, c in book) == 45
    assert sink.landed_positions(topic) == {p: end for p, end in topics.end_offsets(topic).items() if end > 0}
