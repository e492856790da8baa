"""Landing against the real broker (librdkafka's mock cluster), PostgreSQL and chdb."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters, topic_inbox
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import find_gaps, plan_next_ranges
from hub_pipelines.landing.sql_inbox import SqlInboxSink
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.sql_database import PostgresDatabase

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _topic(kafka_broker, prefix: str) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kafka_broker.ensure_topic(topic, 4)
    return topic


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
    topic = _topic(kafka_broker, "orders")
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
    with database.engine.connect() as connection:
        reasons = connection.execute(sa.select(dead_letters.c.reason, dead_letters.c.payload)).all()
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
    topic = _topic(kafka_broker, "orders-crash")
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
    assert report["counts"] == {"read": 60, "landed": 40, "duplicates": 20, "dead_lettered": 0}
    assert report["gaps"] == [] and report["unreconciled"] == []
    assert _count(database, topic_inbox) == 60
    assert report["booked_landed"] == 60


def test_events_landing_killed_mid_range_and_rerun_counts_each_event_once(kafka_broker, tmp_path):
    topic = _topic(kafka_broker, "events-crash")
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


def test_landed_ranges_of_a_real_topic_are_contiguous_after_batches(kafka_broker, postgres_database):
    topic = _topic(kafka_broker, "orders-batches")
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
