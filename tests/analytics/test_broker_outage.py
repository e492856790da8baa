"""A broker outage window: the producer and the landing ride through it, nothing lost or duplicated.

The broker is librdkafka's mock cluster driven through its C API (`tests/services/kafka_mock_cluster.py`).
It is taken down for a few seconds under connected clients: before a produce, and between two chunks
of a landing, so the next call is made while it is down; each test checks that calls were made during
the window.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from hub_pipelines.core.ports import OutgoingMessage, PartitionSpan
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.landing.warehouse_events import WarehouseEventsSink
from hub_pipelines.resources.kafka_topics import KafkaTopics
from tests.analytics.test_landing_flow import event
from tests.services.kafka import KafkaBroker
from tests.services.kafka_mock_cluster import MockCluster

PARTITIONS = 4  # the mock cluster makes every topic with 4 partitions
# Well inside the clients' 30 s timeouts: the window is ridden through, not failed on.
OUTAGE_S = 3.0


class Outage:
    """The broker down for OUTAGE_S seconds from `begin`; `down` is true only while it is."""

    def __init__(self, cluster: MockCluster) -> None:
        self.cluster = cluster
        self.down = False
        self.began = False
        self.timer: threading.Timer | None = None

    def begin(self) -> None:
        self.began = True
        self.cluster.set_down()
        self.down = True
        self.timer = threading.Timer(OUTAGE_S, self.end)
        self.timer.start()

    def end(self) -> None:
        self.down = False
        self.cluster.set_up()

    def finish(self) -> None:
        if self.timer is not None:
            self.timer.join()


class ReadsDuringOutage:
    """Kafka topics that count the range reads started while the broker was down."""

    def __init__(self, topics: KafkaTopics, outage: Outage) -> None:
        self.topics, self.outage, self.reads_while_down = topics, outage, 0

    def read_span(self, topic: str, partition: int, start: int, end: int) -> PartitionSpan:
        if self.outage.down:
            self.reads_while_down += 1
        return self.topics.read_span(topic, partition, start, end)

    def __getattr__(self, name: str):
        return getattr(self.topics, name)


@pytest.fixture(scope="module")
def cluster() -> Iterator[MockCluster]:
    started = MockCluster.start()
    try:
        yield started
    finally:
        started.stop()


def new_topic(cluster: MockCluster, prefix: str) -> str:
    return KafkaBroker(cluster.bootstrap_servers, creates_topics=False).new_topic(prefix, PARTITIONS)


def read_all(topics: KafkaTopics, topic: str) -> list[bytes]:
    ends = topics.end_offsets(topic)
    return [m.value for p, end in ends.items() for m in topics.read_range(topic, p, 0, end)]


def test_producer_rides_through_a_broker_outage_and_writes_every_message_once(cluster):
    topic = new_topic(cluster, "outage-produce")
    topics = KafkaTopics(bootstrap_servers=cluster.bootstrap_servers, timeout_seconds=30)
    outage = Outage(cluster)
    try:
        before = [f"before-{n}".encode() for n in range(40)]
        topics.produce(topic, [OutgoingMessage(v, partition=n % PARTITIONS) for n, v in enumerate(before)])
        during = [f"during-{n}".encode() for n in range(200)]
        outage.begin()
        produced_while_down = outage.down
        placed = topics.produce(
            topic, [OutgoingMessage(v, partition=n % PARTITIONS) for n, v in enumerate(during)]
        )
        outage.finish()
        stored = read_all(topics, topic)
    finally:
        topics.close()
    assert produced_while_down
    assert len(placed) == len(during)
    assert sorted(stored) == sorted(before + during)


def test_landing_rides_through_a_broker_outage_and_lands_every_event_once(cluster, warehouse, tables):
    topic = new_topic(cluster, "outage-land")
    producer = KafkaTopics(bootstrap_servers=cluster.bootstrap_servers, timeout_seconds=30)
    values = [event(n) for n in range(400)]
    try:
        producer.produce(topic, [OutgoingMessage(v, partition=n % PARTITIONS) for n, v in enumerate(values)])
        ends = producer.end_offsets(topic)
    finally:
        producer.close()
    reader = KafkaTopics(bootstrap_servers=cluster.bootstrap_servers, timeout_seconds=30)
    outage = Outage(cluster)
    counted = ReadsDuringOutage(reader, outage)
    ranges = [OffsetRange(p, 0, end) for p, end in sorted(ends.items())]

    def broker_down_after_the_first_chunk(_messages: object) -> None:
        if not outage.began:
            outage.begin()

    try:
        counts = land_ranges(
            counted,  # type: ignore[arg-type]
            WarehouseEventsSink(warehouse, tables),
            topic,
            ranges,
            "outage",
            chunk_messages=50,
            on_read=broker_down_after_the_first_chunk,
        )
        outage.finish()
    finally:
        reader.close()
    assert counted.reads_while_down >= 1
    assert (counts.read, counts.landed, counts.duplicates, counts.lost) == (400, 400, 0, 0)
    stored = warehouse.query_df(f"SELECT event_id, count() AS n FROM {tables.raw_events} GROUP BY event_id")
    assert dict(zip(stored["event_id"], stored["n"], strict=True)) == {
        json.loads(v)["event_id"]: 1 for v in values
    }
    assert int(warehouse.query_df(f"SELECT sum(events) FROM {tables.rollup_minute}").iloc[0, 0]) == 400
