"""One behavioural suite for the Topics port, run against LocalTopicLog and against KafkaTopics.

KafkaTopics runs on librdkafka's mock cluster (tests/services/kafka.py), which cannot create topics
on request: the suite's topics come from `KafkaBroker.ensure_topic` and have 4 partitions. The
`create_topic` tests run KafkaTopics against a broker that answers CreateTopics (Tansu).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Producer

from hub_pipelines.core.partition_log import murmur2_partition
from hub_pipelines.core.ports import OutgoingMessage, Topics, TopicUnavailable
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.topics import LocalTopicLog, UnknownTopic
from tests.services import free_port
from tests.services.kafka import KafkaBroker

PARTITIONS = 4


@dataclass
class TopicsUnderTest:
    topics: Topics
    new_topic: Callable[[], str]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _local(root: Path) -> TopicsUnderTest:
    topics = LocalTopicLog(root=str(root))

    def new_topic() -> str:
        name = _unique("t")
        topics.create_topic(name, PARTITIONS)
        return name

    return TopicsUnderTest(topics, new_topic)


def _kafka(broker: KafkaBroker) -> TopicsUnderTest:
    topics = KafkaTopics(bootstrap_servers=broker.bootstrap_servers, timeout_seconds=15)

    def new_topic() -> str:
        name = _unique("t")
        broker.ensure_topic(name, PARTITIONS)
        return name

    return TopicsUnderTest(topics, new_topic)


@pytest.fixture(params=["local", "kafka"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TopicsUnderTest]:
    if request.param == "local":
        yield _local(tmp_path / "topics")
        return
    under_test = _kafka(request.getfixturevalue("kafka_broker"))
    yield under_test
    assert isinstance(under_test.topics, KafkaTopics)
    under_test.topics.close()


@pytest.fixture(params=["local", "kafka"])
def creating_topics(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Topics]:
    if request.param == "local":
        yield LocalTopicLog(root=str(tmp_path / "topics"))
        return
    broker: KafkaBroker = request.getfixturevalue("kafka_topic_admin_broker")
    topics = KafkaTopics(bootstrap_servers=broker.bootstrap_servers, timeout_seconds=15)
    yield topics
    topics.close()


def test_produced_messages_read_back_with_offsets_keys_and_headers(subject: TopicsUnderTest) -> None:
    topic = subject.new_topic()
    outgoing = [
        OutgoingMessage(
            value=f"order {n}".encode(),
            key=f"order-{n}".encode(),
            headers={"trace-id": f"trace-{n}".encode(), "schema": b"v1"},
            partition=2,
        )
        for n in range(5)
    ]

    placed = subject.topics.produce(topic, outgoing)
    read = subject.topics.read_range(topic, 2, 0, 5)

    assert placed == [(2, n) for n in range(5)]
    assert [(m.topic, m.partition, m.offset) for m in read] == [(topic, 2, n) for n in range(5)]
    assert [(m.value, m.key, dict(m.headers)) for m in read] == [
        (o.value, o.key, dict(o.headers)) for o in outgoing
    ]
    assert all(m.timestamp_ms is not None and m.timestamp_ms > 0 for m in read)


def test_messages_with_one_key_land_on_one_partition_in_order(subject: TopicsUnderTest) -> None:
    topic = subject.new_topic()
    outgoing = [
        OutgoingMessage(value=f"{n}".encode(), key=b"customer-42" if n % 2 == 0 else f"other-{n}".encode())
        for n in range(40)
    ]

    placed = subject.topics.produce(topic, outgoing)

    same_key = [
        place for place, message in zip(placed, outgoing, strict=True) if message.key == b"customer-42"
    ]
    partitions = {partition for partition, _ in same_key}
    assert len(partitions) == 1
    offsets = [offset for _, offset in same_key]
    assert offsets == sorted(offsets)


def test_keys_land_on_the_partition_kafkas_murmur2_partitioner_picks(subject: TopicsUnderTest) -> None:
    topic = subject.new_topic()
    keys = [f"key-{n}".encode() for n in range(30)] + [b"", b"a", b"ab", b"abc", "zürich".encode()]

    placed = subject.topics.produce(topic, [OutgoingMessage(value=b"x", key=key) for key in keys])

    assert [partition for partition, _ in placed] == [murmur2_partition(key, PARTITIONS) for key in keys]


def test_end_offsets_are_the_next_offset_of_every_partition(subject: TopicsUnderTest) -> None:
    topic = subject.new_topic()
    assert subject.topics.end_offsets(topic) == dict.fromkeys(range(PARTITIONS), 0)

    subject.topics.produce(topic, [OutgoingMessage(value=b"a", partition=0)] * 3)
    subject.topics.produce(topic, [OutgoingMessage(value=b"b", partition=3)])
    subject.topics.produce(topic, [OutgoingMessage(value=b"c", partition=0)] * 2)

    assert subject.topics.end_offsets(topic) == {0: 5, 1: 0, 2: 0, 3: 1}


def test_read_range_of_a_sub_range_returns_exactly_those_offsets(subject: TopicsUnderTest) -> None:
    topic = subject.new_topic()
    subject.topics.produce(topic, [OutgoingMessage(value=f"{n}".encode(), partition=1) for n in range(10)])

    read = subject.topics.read_range(topic, 1, 3, 7)

    assert [(m.offset, m.value) for m in read] == [(n, f"{n}".encode()) for n in range(3, 7)]


def test_reading_past_the_end_returns_only_what_exists(subject: TopicsUnderTest) -> None:
    topic = subject.new_topic()
    subject.topics.produce(topic, [OutgoingMessage(value=f"{n}".encode(), partition=0) for n in range(10)])

    assert [m.offset for m in subject.topics.read_range(topic, 0, 8, 100)] == [8, 9]
    assert subject.topics.read_range(topic, 0, 10, 20) == []
    assert subject.topics.read_range(topic, 1, 0, 5) == []


def test_read_span_says_how_far_it_read_and_where_the_partition_starts(subject: TopicsUnderTest) -> None:
    topic = subject.new_topic()
    subject.topics.produce(topic, [OutgoingMessage(value=f"{n}".encode(), partition=3) for n in range(6)])

    inside = subject.topics.read_span(topic, 3, 2, 4)
    past_the_end = subject.topics.read_span(topic, 3, 4, 9)

    assert [m.offset for m in inside.messages] == [2, 3]
    assert inside.first_available == 0 and inside.read_through >= 4
    assert [m.offset for m in past_the_end.messages] == [4, 5]
    assert past_the_end.read_through == 6


def test_a_transactions_markers_are_read_past_and_counted_in_the_committed_end(
    kafka_broker: KafkaBroker,
) -> None:
    topic = _unique("tx")
    kafka_broker.ensure_topic(topic, PARTITIONS)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "transactional.id": topic})
    producer.init_transactions(15)
    for batch in range(2):
        producer.begin_transaction()
        producer.produce(topic, f"{batch}".encode(), partition=0)
        producer.commit_transaction(15)
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers, timeout_seconds=15)

    try:
        ends = topics.end_offsets(topic)
        span = topics.read_span(topic, 0, 0, ends[0])
    finally:
        topics.close()

    assert ends[0] == 4, "two records and two commit markers"
    assert [(m.offset, m.value) for m in span.messages] == [(0, b"0"), (2, b"1")]
    assert span.read_through == 4


def test_committed_positions_read_back_per_group(subject: TopicsUnderTest) -> None:
    topic = subject.new_topic()
    group, other_group = _unique("g"), _unique("g")

    subject.topics.commit(group, topic, {0: 3, 2: 1})
    subject.topics.commit(group, topic, {2: 5})

    assert subject.topics.committed(group, topic) == {0: 3, 2: 5}
    assert subject.topics.committed(other_group, topic) == {}


def test_end_offsets_of_a_missing_topic_raise_unknown_topic(subject: TopicsUnderTest) -> None:
    with pytest.raises(UnknownTopic, match="never-created"):
        subject.topics.end_offsets(_unique("never-created"))


def test_create_topic_is_idempotent(creating_topics: Topics) -> None:
    topic = _unique("created")

    creating_topics.create_topic(topic, 3)
    creating_topics.create_topic(topic, 3)

    assert creating_topics.end_offsets(topic) == {0: 0, 1: 0, 2: 0}
    assert creating_topics.produce(topic, [OutgoingMessage(value=b"first", partition=2)]) == [(2, 0)]


_APPENDER = textwrap.dedent(
    """
    import sys
    from hub_pipelines.core.ports import OutgoingMessage
    from hub_pipelines.resources.topics import LocalTopicLog

    root, topic, writer = sys.argv[1], sys.argv[2], sys.argv[3]
    topics = LocalTopicLog(root=root)
    print("ready", flush=True)
    sys.stdin.readline()
    for batch in range(100):
        topics.produce(
            topic,
            [
                OutgoingMessage(value=f"{writer}:{batch * 50 + n}".encode(), key=f"{writer}-{n % 7}".encode())
                for n in range(50)
            ],
        )
    """
)


def test_two_processes_appending_at_once_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    root = tmp_path / "topics"
    topics = LocalTopicLog(root=str(root))
    topics.create_topic("orders", 2)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(root), "orders", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for writer in writers:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]

    ends = topics.end_offsets("orders")
    read = [m for partition, end in ends.items() for m in topics.read_range("orders", partition, 0, end)]

    assert sum(ends.values()) == 10_000
    values = sorted(m.value.decode() for m in read)
    assert values == sorted(f"{w}:{n}" for w in ("a", "b") for n in range(5000))
    for partition in ends:
        offsets = [m.offset for m in read if m.partition == partition]
        assert offsets == list(range(ends[partition]))
        for w in ("a", "b"):
            sequence = [
                int(m.value.decode().split(":")[1])
                for m in read
                if m.partition == partition and m.key.decode().startswith(w)
            ]
            assert sequence == sorted(sequence)


def test_a_million_messages_keep_end_offsets_and_range_reads_exact(tmp_path: Path) -> None:
    topics = LocalTopicLog(root=str(tmp_path / "topics"))
    topics.create_topic("clicks", 1)
    filler = OutgoingMessage(value=b"filler", key=b"k", headers={"h": b"v"}, partition=0)
    for _ in range(9):
        topics.produce("clicks", [filler] * 100_000)
    topics.produce(
        "clicks", [OutgoingMessage(value=b"%d" % n, partition=0) for n in range(900_000, 1_000_000)]
    )

    tail = topics.read_range("clicks", 0, 999_995, 1_000_005)
    straddling = topics.read_range("clicks", 0, 899_998, 900_002)

    assert topics.end_offsets("clicks") == {0: 1_000_000}
    assert [(m.offset, m.value) for m in tail] == [(n, b"%d" % n) for n in range(999_995, 1_000_000)]
    assert [(m.offset, m.value) for m in straddling] == [
        (899_998, b"filler"),
        (899_999, b"filler"),
        (900_000, b"900000"),
        (900_001, b"900001"),
    ]


def test_bytes_left_by_a_crashed_append_are_cut_off_by_the_next_append(tmp_path: Path) -> None:
    topics = LocalTopicLog(root=str(tmp_path / "topics"))
    topics.create_topic("events", 1)
    topics.produce("events", [OutgoingMessage(value=b"kept-%d" % n, partition=0) for n in range(3)])
    partition = tmp_path / "topics" / "events" / "0"
    with (partition / "log").open("ab") as log:
        log.write(b"\x00\x00\x01\x00half-written record")
    with (partition / "index").open("ab") as index:
        index.write(b"\x00\x00\x00")

    placed = topics.produce("events", [OutgoingMessage(value=b"after-crash", partition=0)])

    assert placed == [(0, 3)]
    assert [m.value for m in topics.read_range("events", 0, 0, 10)] == [
        b"kept-0",
        b"kept-1",
        b"kept-2",
        b"after-crash",
    ]


def test_reading_from_an_unreachable_broker_raises_topic_unavailable_naming_the_range() -> None:
    topics = KafkaTopics(bootstrap_servers=f"127.0.0.1:{free_port()}", timeout_seconds=1)
    try:
        with pytest.raises(TopicUnavailable, match=r"topic 'orders' partition 2 offsets 10\.\.20"):
            topics.read_range("orders", 2, 10, 20)
    finally:
        topics.close()
