"""Topics as real producers write them, landed on the mock cluster the suite starts and PostgreSQL.

librdkafka's mock cluster runs transactions (init, commit, abort; markers take offsets), but it does
not filter aborted records for read_committed consumers, does not hold back an open transaction's
records, reports the high watermark as the last stable offset and refuses DeleteRecords. Aborted
records, a deleted head and compaction are therefore played by a broker double over the real broker:
it withholds offsets or raises the low watermark as a real broker would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import dagster as dg
import pytest
import sqlalchemy as sa
from confluent_kafka import Producer

from hub_pipelines import settings
from hub_pipelines.assets.landing import land_topic_asset
from hub_pipelines.assets.topic_config import TopicRangeConfig
from hub_pipelines.core.platform_tables import topic_inbox
from hub_pipelines.core.ports import OutgoingMessage, PartitionSpan
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import find_gaps, plan_next_ranges
from hub_pipelines.landing.sql_inbox import SqlInboxSink
from hub_pipelines.landing.topic_landing import IncompleteRead, land_ranges
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.notifier import LogNotifier
from hub_pipelines.resources.sql_database import PostgresDatabase


@dataclass
class BrokerDouble:
    """The real broker, but partitions start later (head deleted) and some offsets are withheld
    (compacted away, or an aborted transaction's records under read_committed)."""

    inner: KafkaTopics
    first_available: dict[int, int] = field(default_factory=dict)
    withheld: set[tuple[int, int]] = field(default_factory=set)

    def read_span(self, topic: str, partition: int, start: int, end: int) -> PartitionSpan:
        span = self.inner.read_span(topic, partition, start, end)
        low = max(span.first_available, self.first_available.get(partition, 0))
        kept = [m for m in span.messages if m.offset >= low and (partition, m.offset) not in self.withheld]
        return PartitionSpan(kept, low, span.read_through)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@pytest.fixture
def topics(kafka_broker) -> Iterator[KafkaTopics]:
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers, timeout_seconds=15)
    yield topics
    topics.close()


@pytest.fixture
def inbox(postgres_database) -> SqlInboxSink:
    return SqlInboxSink(PostgresDatabase(url=postgres_database.url, migrate_schema=True))


def _order(event_id: str) -> bytes:
    return json.dumps({"event_id": event_id, "type": "order.placed"}).encode()


def _stored_ids(sink: SqlInboxSink, topic: str) -> list[str]:
    with sink.database.transaction() as connection:
        return list(
            connection.execute(
                sa.select(topic_inbox.c.event_id).where(topic_inbox.c.topic == topic)
            ).scalars()
        )


def _land_everything(topics, sink: SqlInboxSink, topic: str, run_id: str, **options) -> LandingCounts:
    ranges = plan_next_ranges({}, topics.end_offsets(topic), 1_000_000)
    return land_ranges(topics, sink, topic, ranges, run_id, chunk_messages=4, **options)


def _book_totals(sink: SqlInboxSink, topic: str) -> LandingCounts:
    book = sink.landed_ranges(topic)
    assert find_gaps(r for r, _ in book) == []
    assert all(c.reconciles and c.offsets == r.size for r, c in book), book
    return sum((c for _, c in book), LandingCounts())


def _produce_transactions(kafka_broker, topic: str, outcomes: str) -> tuple[set[str], set[str]]:
    """Transactions spanning every partition, committed ('C') or aborted ('A') as `outcomes` says, with
    plain producers writing while each is open; returns the ids committed (plain ones included) and
    the ids aborted."""
    transactional = Producer(
        {"bootstrap.servers": kafka_broker.bootstrap_servers, "transactional.id": f"tx-{topic}"}
    )
    plain = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    transactional.init_transactions(15)
    committed, aborted = set(), set()
    for batch, outcome in enumerate(outcomes):
        commit = outcome == "C"
        transactional.begin_transaction()
        for partition in range(4):
            for i in range(3):
                event_id = f"tx-{batch}-{partition}-{i}"
                transactional.produce(topic, _order(event_id), partition=partition)
                (committed if commit else aborted).add(event_id)
        transactional.flush(15)
        for partition in range(0, 4, 2):
            plain.produce(topic, _order(f"plain-{batch}-{partition}"), partition=partition)
            committed.add(f"plain-{batch}-{partition}")
        plain.flush(15)
        if commit:
            transactional.commit_transaction(15)
        else:
            transactional.abort_transaction(15)
    return committed, aborted


def test_committed_transactions_beside_plain_producers_land_once_and_markers_are_booked_as_gaps(
    kafka_broker, topics, inbox
):
    topic = kafka_broker.new_topic("orders-tx")
    committed, _ = _produce_transactions(kafka_broker, topic, "CCCC")
    ends = topics.end_offsets(topic)
    markers = sum(ends.values()) - len(committed)
    assert markers == 4 * 4, "each committed transaction leaves one marker on each of its 4 partitions"

    first = _land_everything(topics, inbox, topic, "run-1")
    replay = _land_everything(topics, inbox, topic, "run-2")

    assert first == LandingCounts(read=len(committed), landed=len(committed), gaps=markers)
    assert replay == LandingCounts(read=len(committed), duplicates=len(committed), gaps=markers)
    assert sorted(_stored_ids(inbox, topic)) == sorted(committed)
    assert _book_totals(inbox, topic) == first
    assert inbox.landed_positions(topic) == ends


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_of_an_idempotent_producer_land_once_each(kafka_broker, topics, inbox, codec):
    """Producers in production batch (linger), compress and run idempotent: each stored batch holds many
    records under one compressed payload, and every record of it lands once with its own offset."""
    topic = kafka_broker.new_topic(f"orders-{codec}")
    producer = Producer(
        {
            "bootstrap.servers": kafka_broker.bootstrap_servers,
            "compression.type": codec,
            "enable.idempotence": True,
            "linger.ms": 50,
            "batch.num.messages": 500,
        }
    )
    sent = [f"{codec}-{i}" for i in range(400)]
    for i, event_id in enumerate(sent):
        producer.produce(topic, _order(event_id) + b" " * 200, key=str(i % 7).encode(), partition=i % 4)
    assert producer.flush(15) == 0

    first = _land_everything(topics, inbox, topic, "run-1")
    replay = _land_everything(topics, inbox, topic, "run-2")

    assert first == LandingCounts(read=len(sent), landed=len(sent))
    assert replay == LandingCounts(read=len(sent), duplicates=len(sent))
    assert sorted(_stored_ids(inbox, topic)) == sorted(sent)
    assert _book_totals(inbox, topic) == first


def test_records_a_read_committed_broker_withholds_never_land_and_are_booked_as_gaps(
    kafka_broker, topics, inbox
):
    topic = kafka_broker.new_topic("orders-aborted")
    committed, aborted = _produce_transactions(kafka_broker, topic, "CACAC")
    withheld = set()
    for partition, end in topics.end_offsets(topic).items():
        for message in topics.read_range(topic, partition, 0, end):
            if json.loads(message.value)["event_id"] in aborted:
                withheld.add((partition, message.offset))
    broker = BrokerDouble(topics, withheld=withheld)
    offsets = sum(topics.end_offsets(topic).values())

    first = _land_everything(broker, inbox, topic, "run-1")
    replay = _land_everything(broker, inbox, topic, "run-2")

    assert first == LandingCounts(read=len(committed), landed=len(committed), gaps=offsets - len(committed))
    assert (replay.landed, replay.duplicates) == (0, len(committed))
    assert sorted(_stored_ids(inbox, topic)) == sorted(committed)
    assert _book_totals(inbox, topic) == first


def test_a_compacted_gap_lands_the_rest_and_books_the_gap(kafka_broker, topics, inbox):
    topic = kafka_broker.new_topic("orders-compacted")
    topics.produce(topic, [OutgoingMessage(_order(f"o-{i}"), partition=1) for i in range(20)])
    broker = BrokerDouble(topics, withheld={(1, offset) for offset in (3, 4, 5, 11, 19)})

    first = _land_everything(broker, inbox, topic, "run-1")
    replay = _land_everything(broker, inbox, topic, "run-2")

    assert first == LandingCounts(read=15, landed=15, gaps=5)
    assert replay == LandingCounts(read=15, duplicates=15, gaps=5)
    assert _book_totals(inbox, topic) == first


def test_a_range_past_the_committed_end_stops_without_booking_it(kafka_broker, topics, inbox):
    topic = kafka_broker.new_topic("orders-short")
    topics.produce(topic, [OutgoingMessage(_order(f"o-{i}"), partition=2) for i in range(6)])

    with pytest.raises(
        IncompleteRead,
        match=r"partition 2: asked for offsets 4\.\.7, the broker holds committed offsets up to 5 only",
    ):
        land_ranges(topics, inbox, topic, plan_next_ranges({}, {2: 10}, 100), "run-1", chunk_messages=4)

    assert [r.label() for r, _ in inbox.landed_ranges(topic)] == ["2:0-4"]


def _land_asset(broker, inbox: SqlInboxSink, topic: str, pager: LogNotifier) -> dg.MaterializeResult:
    context = dg.build_asset_context()
    return land_topic_asset(context, TopicRangeConfig(), broker, inbox, topic, pager)


def test_a_deleted_head_is_booked_as_lost_paged_shown_and_landing_goes_on(kafka_broker, topics, inbox):
    topic = kafka_broker.new_topic("orders-retention")
    topics.produce(topic, [OutgoingMessage(_order(f"o-{i}"), partition=3) for i in range(30)])
    broker = BrokerDouble(topics, first_available={3: 12})
    pager = LogNotifier()

    result = _land_asset(broker, inbox, topic, pager)
    replay = land_ranges(broker, inbox, topic, plan_next_ranges({}, {3: 30}, 100), "run-2", chunk_messages=5)

    assert result.metadata is not None
    assert (result.metadata["lost"], result.metadata["landed"], result.metadata["read"]) == (12, 18, 18)
    assert result.metadata["upstream_loss"] == (
        f"{topic} partition 3: offsets 0..11 (12 messages) were deleted upstream before they were landed; "
        "the partition now starts at offset 12"
    )
    (alert,) = pager.sent
    assert alert.summary.endswith("booked as lost, landing goes on from there")
    assert all(
        check.passed for check in result.check_results or [] if check.severity == dg.AssetCheckSeverity.ERROR
    )
    assert (replay.lost, replay.landed, replay.duplicates) == (0, 0, 18)
    assert _book_totals(inbox, topic) == LandingCounts(read=18, landed=18, lost=12)
    assert sorted(_stored_ids(inbox, topic)) == sorted(f"o-{i}" for i in range(12, 30))


def test_a_deleted_head_on_a_halting_topic_stops_the_run_with_the_reason_and_pages(
    kafka_broker, topics, inbox, monkeypatch
):
    topic = kafka_broker.new_topic("orders-halting")
    topics.produce(topic, [OutgoingMessage(_order(f"o-{i}"), partition=0) for i in range(10)])
    monkeypatch.setattr(settings, "HALT_ON_UPSTREAM_LOSS", frozenset({topic}))
    pager = LogNotifier()

    with pytest.raises(
        dg.Failure, match=r"offsets 0\.\.3 \(4 messages\) were deleted upstream.*the landing stops here"
    ):
        _land_asset(BrokerDouble(topics, first_available={0: 4}), inbox, topic, pager)

    (alert,) = pager.sent
    assert "the landing stops here" in alert.summary
    assert inbox.landed_ranges(topic) == []
    assert _stored_ids(inbox, topic) == []
