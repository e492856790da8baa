"""Landing from a Kafka-protocol broker, a broker lost mid-batch, and the assets and sensors end to end."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from hub_pipelines import settings
from hub_pipelines.assets.analytics.downstream import anomaly_scores, realtime_counters
from hub_pipelines.assets.analytics.raw_events import raw_events
from hub_pipelines.core.ports import OutgoingMessage, PartitionSpan, TopicUnavailable
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.landing.warehouse_events import WarehouseEventsSink
from hub_pipelines.resources.cache import InProcessCache
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.notifier import LogNotifier
from hub_pipelines.resources.topics import LocalTopicLog
from hub_pipelines.sensors.analytics import analytics_late_days_sensor, build_stream_observer

NOW = datetime.now(UTC).replace(microsecond=0)


def event(n: int, ts: datetime = NOW) -> bytes:
    body = {
        "event_id": f"e-{n}",
        "type": "page_view",
        "user_id": f"u-{n % 50}",
        "session_id": "s",
        "ts": ts.isoformat(),
    }
    return json.dumps({**body, "properties": {"path": "/"}}).encode()


class BrokerLostAfter:
    """Kafka topics whose broker stops answering after `reads` range reads, as a lost broker does."""

    def __init__(self, topics: KafkaTopics, reads: int) -> None:
        self.topics, self.reads = topics, reads

    def read_span(self, topic: str, partition: int, start: int, end: int) -> PartitionSpan:
        if self.reads == 0:
            raise TopicUnavailable(f"{topic} partition {partition}: broker not reachable")
        self.reads -= 1
        return self.topics.read_span(topic, partition, start, end)

    def __getattr__(self, name: str):
        return getattr(self.topics, name)


@pytest.fixture
def kafka_topics(kafka_broker) -> KafkaTopics:
    return KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers, timeout_seconds=15)


@pytest.mark.parametrize("read_ahead", [False, True], ids=["sequential", "read_ahead"])
def test_broker_lost_mid_batch_then_rerun_lands_everything_once(
    kafka_broker, kafka_topics, warehouse, tables, read_ahead
):
    topic = f"events-{uuid.uuid4().hex[:8]}"
    kafka_broker.ensure_topic(topic, 4)
    kafka_topics.produce(topic, [OutgoingMessage(event(n), partition=0) for n in range(120)])
    kafka_topics.produce(topic, [OutgoingMessage(event(5), partition=0)])
    the_range = [OffsetRange(0, 0, 121)]
    with pytest.raises(TopicUnavailable):
        land_ranges(
            BrokerLostAfter(kafka_topics, reads=2),
            WarehouseEventsSink(warehouse, tables),
            topic,
            the_range,
            "r1",
            chunk_messages=50,
            read_ahead=read_ahead,
        )  # type: ignore[arg-type]
    rerun = land_ranges(
        kafka_topics,
        WarehouseEventsSink(warehouse, tables),
        topic,
        the_range,
        "r2",
        chunk_messages=50,
        read_ahead=read_ahead,
    )
    replay = land_ranges(
        kafka_topics, WarehouseEventsSink(warehouse, tables), topic, the_range, "r3", chunk_messages=50
    )
    assert (rerun.read, rerun.landed, rerun.duplicates) == (121, 20, 101)
    assert (replay.landed, replay.duplicates) == (0, 121)
    assert int(warehouse.query_df(f"SELECT count() FROM {tables.raw_events}").iloc[0, 0]) == 120
    assert int(warehouse.query_df(f"SELECT sum(events) FROM {tables.rollup_minute}").iloc[0, 0]) == 120
    book = WarehouseEventsSink(warehouse, tables).landed_ranges(topic)
    assert [r.label() for r, _ in book] == ["0:0-50", "0:50-100", "0:100-121"]
    assert all(counts.reconciles for _, counts in book)


def test_landing_run_reports_late_days_and_the_sensors_request_and_observe(
    tmp_path, monkeypatch, warehouse, tables
):
    monkeypatch.setenv("HUB_ANALYTICS_DATABASE", tables.database)
    topics = LocalTopicLog(root=str(tmp_path / "topics"))
    topics.create_topic(settings.EVENTS_TOPIC, 1)
    closed_day = NOW - timedelta(days=2)
    # The current events stay on today's date even just after midnight, so only the closed day is late.
    start_of_today = NOW.replace(hour=0, minute=0, second=0)
    values = [event(n, max(NOW - timedelta(minutes=n % 90), start_of_today)) for n in range(400)]
    values.append(event(999, closed_day))
    topics.produce(settings.EVENTS_TOPIC, [OutgoingMessage(v, partition=0) for v in [*values, b"junk"]])
    instance = dg.DagsterInstance.ephemeral()
    resources = {
        "topics": topics,
        "warehouse": warehouse,
        "cache": InProcessCache(),
        "pager": LogNotifier(),
    }
    result = dg.materialize(
        [raw_events, realtime_counters, anomaly_scores], resources=resources, instance=instance
    )
    assert result.success
    landed = result.asset_materializations_for_node("analytics__raw_events")[0].metadata
    assert (landed["read"].value, landed["landed"].value, landed["dead_lettered"].value) == (402, 401, 1)
    assert landed["late_days"].value == closed_day.date().isoformat()
    # The WARN check times produce -> landed, which a loaded machine may trip; the others prove the book.
    assert all(
        check.passed
        for check in result.get_asset_check_evaluations()
        if check.severity == dg.AssetCheckSeverity.ERROR
    )
    counted = result.asset_materializations_for_node("analytics__realtime_counters")[0].metadata
    assert counted["events_counted"].value == 401

    requested = analytics_late_days_sensor(
        dg.build_sensor_context(instance=instance, sensor_name="analytics_late_days_sensor")
    )
    assert isinstance(requested, dg.SensorResult)
    assert closed_day.date().isoformat() in {r.partition_key for r in requested.run_requests}

    topics.produce(settings.EVENTS_TOPIC, [OutgoingMessage(event(5000), partition=0)] * 3)
    observer = build_stream_observer(settings.EVENTS_TOPIC, 30)
    observed = observer(
        dg.build_sensor_context(
            instance=instance, resources={"topics": topics}, sensor_name="analytics_stream_observer"
        )
    )
    assert isinstance(observed, dg.SensorResult)
    observation = observed.asset_events[0]
    assert observation.metadata["consumer_lag.partition_0"].value == 3
