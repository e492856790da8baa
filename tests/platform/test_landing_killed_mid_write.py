"""Landing processes SIGKILLed inside a chunk's write, then rerun as the topic sensor plans it after a
failed run (its unlanded ranges, past what earlier runs landed): every offset lands exactly once.

Orders: the process is killed while its INSERT into `topic_inbox` waits on a row the test holds
uncommitted (the statement is in flight inside the chunk's transaction). Events: it is killed after
a chunk's rows are stored in ClickHouse but before they are counted in Redis or booked, and after they
are stored and counted but before they are booked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from hub_pipelines.core.platform_tables import topic_inbox
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.landing.batches import (
    PendingRun,
    RequestLanding,
    RunOutcome,
    TopicCursor,
    next_landing_step,
)
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import OffsetRange, describe_ranges
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.platform.test_topic_landing import _analytics_event, _order

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "tests.platform.landing_worker"]
BLOCKED_WITHIN_S = 120.0


def sensor_plan(
    topic: str, cursor: TopicCursor, ends: dict[int, int], pending: PendingRun | None
) -> RequestLanding:
    """The topic sensor's next request, past the retry backoff when the run in flight failed."""
    now = time.time()
    step = next_landing_step(topic, cursor, ends, pending, 1000, now)
    if not isinstance(step, RequestLanding) and step.cursor.retry_at is not None:
        step = next_landing_step(topic, step.cursor, ends, pending, 1000, step.cursor.retry_at)
    assert isinstance(step, RequestLanding), step
    return step


def run_worker(*args: str) -> dict:
    done = subprocess.run([*WORKER, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def produce(topics: KafkaTopics, topic: str, values: list[tuple[int, bytes]]) -> dict[int, int]:
    topics.produce(topic, [OutgoingMessage(value=value, partition=partition) for partition, value in values])
    return {p: end for p, end in topics.end_offsets(topic).items() if end > 0}


def first_batch_landed(topic: str, ends: dict[int, int], worker_args: list[str]) -> RequestLanding:
    """The sensor's first batch, landed by a run that succeeded."""
    first = sensor_plan(topic, TopicCursor(), ends, None)
    run_worker(*worker_args, "--ranges", describe_ranges(first.ranges))
    return first


def assert_retry_starts_past_the_first_batch(retry: RequestLanding, killed: RequestLanding) -> None:
    assert retry.ranges == killed.ranges
    assert all(r.start == 20 for r in retry.ranges)


def test_orders_landing_killed_inside_its_insert_is_rerun_as_planned_and_lands_every_offset_once(
    kafka_broker, postgres_database
):
    topic = kafka_broker.new_topic("orders-midwrite")
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers)
    common = ["--kind", "orders", "--bootstrap", kafka_broker.bootstrap_servers, "--topic", topic]
    common += ["--db-url", postgres_database.url, "--chunk", "10"]
    ends = produce(topics, topic, [(i % 2, _order(f"o-{i}")) for i in range(40)])
    first = first_batch_landed(topic, ends, common)
    ends = produce(topics, topic, [(i % 2, _order(f"o-{i}")) for i in range(40, 100)])
    second = sensor_plan(topic, first.cursor, ends, PendingRun(RunOutcome.SUCCEEDED))
    assert second.ranges == (OffsetRange(0, 20, 50), OffsetRange(1, 20, 50))

    database = PostgresDatabase(url=postgres_database.url)
    with database.engine.connect() as holder, database.engine.connect() as watcher:
        holder.begin()
        holder_pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        # Offset 35 of partition 0, uncommitted: the chunk 30-40 INSERT waits on it inside its transaction.
        holder.execute(
            sa.insert(topic_inbox).values(
                topic=topic, partition=0, offset=35, event_id="held-by-the-test", payload=b"{}", headers={}
            )
        )
        killed = subprocess.Popen(
            [*WORKER, *common, "--ranges", describe_ranges(second.ranges)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until_insert_blocked_by(watcher, holder_pid, killed)
        finally:
            killed.kill()
        assert killed.wait(timeout=60) == -9
        holder.rollback()

    retry = sensor_plan(topic, second.cursor, ends, PendingRun(RunOutcome.FAILED, "SIGKILL"))
    assert_retry_starts_past_the_first_batch(retry, second)
    report = run_worker(*common, "--ranges", describe_ranges(retry.ranges))

    # Only chunk 20-30 of partition 0 had committed; the chunk killed mid-INSERT left nothing.
    assert LandingCounts(**report["counts"]) == LandingCounts(read=60, landed=50, duplicates=10)
    assert report["gaps"] == [] and report["unreconciled"] == []
    assert report["booked_landed"] == 100
    with database.engine.connect() as connection:
        offsets = connection.execute(sa.select(topic_inbox.c.partition, topic_inbox.c.offset)).all()
    assert sorted(offsets) == [(p, o) for p in (0, 1) for o in range(50)]


def wait_until_insert_blocked_by(watcher: sa.Connection, holder_pid: int, worker: subprocess.Popen) -> None:
    """Until a backend's INSERT INTO topic_inbox waits on the holder's row (a condition, not a delay)."""
    blocked = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid)) "
        "AND query LIKE 'INSERT INTO topic_inbox%'"
    )
    deadline = time.monotonic() + BLOCKED_WITHIN_S
    while watcher.execute(blocked, {"holder": holder_pid}).scalar_one() == 0:
        watcher.rollback()
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else worker.returncode
        assert time.monotonic() < deadline, "the landing never reached the held row"
    watcher.rollback()


def redis_counted(client: redis.Redis, prefix: str) -> tuple[int, int]:
    """Events counted in Redis (the per-hour type counters) and chunks marked counted."""
    counted = sum(
        int(score) for key in client.scan_iter(f"{prefix}rt:types:h:*") for _, score in client.zscan_iter(key)
    )
    return counted, sum(1 for _ in client.scan_iter(f"{prefix}rt:counted:*"))


@pytest.mark.parametrize(
    "kill",
    [["--die-after-events-insert", "2"], ["--die-before-booking", "2"]],
    ids=["stored-not-counted-not-booked", "stored-and-counted-not-booked"],
)
def test_events_landing_killed_inside_a_chunk_write_is_rerun_as_planned_and_counts_every_event_once(
    kafka_broker, tmp_path, redis_server, redis_key_prefix, kill
):
    topic = kafka_broker.new_topic("events-midwrite")
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers)
    now = datetime.now(UTC)
    common = ["--kind", "events", "--bootstrap", kafka_broker.bootstrap_servers, "--topic", topic]
    common += ["--chdb-path", str(tmp_path / "warehouse"), "--chunk", "10"]
    common += ["--redis-url", redis_server, "--redis-prefix", redis_key_prefix]
    events = [(i % 2, _analytics_event(f"ev-{i}", now - timedelta(minutes=i))) for i in range(100)]
    ends = produce(topics, topic, events[:40])
    first = first_batch_landed(topic, ends, common)
    ends = produce(topics, topic, events[40:])
    second = sensor_plan(topic, first.cursor, ends, PendingRun(RunOutcome.SUCCEEDED))

    killed = subprocess.run(
        [*WORKER, *common, *kill, "--ranges", describe_ranges(second.ranges)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr
    retry = sensor_plan(topic, second.cursor, ends, PendingRun(RunOutcome.FAILED, "SIGKILL"))
    assert_retry_starts_past_the_first_batch(retry, second)
    report = run_worker(*common, "--ranges", describe_ranges(retry.ranges))

    # Chunk 20-30 of partition 0 was booked; the killed chunk's stored rows are its own and count as landed.
    assert LandingCounts(**report["counts"]) == LandingCounts(read=60, landed=50, duplicates=10)
    assert report["gaps"] == [] and report["unreconciled"] == []
    assert report["booked_landed"] == 100
    assert report["stored_rows"] == report["stored_ids"] == 100
    assert redis_counted(redis.Redis.from_url(redis_server), redis_key_prefix) == (100, 10)
