"""Hostile input on the events topic: the decoder never raises, and the events sink lands or dead-letters
every message, with a reason naming its position, and completes."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub_pipelines.analytics.counters import count_uncounted_chunks, counter_update
from hub_pipelines.analytics.events import decode_batch, events_to_arrow
from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.core.ports import OutgoingMessage, TopicMessage
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.landing.warehouse_events import WarehouseEventsSink
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from hub_pipelines.resources.cache import RedisCache
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.topics import LocalTopicLog
from tests.analytics.hostile_events import HostileMessage, hostile_messages, nested_too_deeply, plain_event
from tests.services.kafka import KafkaBroker
from tests.services.raw_kafka_records import RawRecord, hostile_records, produce_raw

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
# The sink accepts events from two years before its clock (the real one) to a day after.
LANDING_NOW = datetime.now(UTC)


@settings(max_examples=100, deadline=None)
@example([nested_too_deeply(NOW, "event_id"), nested_too_deeply(NOW, "unknown"), plain_event(NOW, "ok-1")])
@given(st.lists(hostile_messages(NOW), max_size=8))
def test_decoder_never_raises_and_every_message_is_decoded_or_rejected_naming_its_position(
    sent: list[HostileMessage],
) -> None:
    messages = [
        TopicMessage("events", 3, 100 + index, m.value, m.key, m.headers or {})
        for index, m in enumerate(sent)
    ]
    batch = decode_batch(
        messages, accept_from=NOW - timedelta(days=730), accept_until=NOW + timedelta(days=1)
    )

    decoded = [message.offset for message in batch.messages]
    rejected = [r.message.offset for r in batch.rejected]
    assert sorted(decoded + rejected) == [message.offset for message in messages]
    for r in batch.rejected:
        assert f"events partition 3 offset {r.message.offset}" in r.reason
    assert {100 + index for index, m in enumerate(sent) if m.valid} <= set(decoded)
    counter_update(events_to_arrow(batch.events, batch.messages))


def _positions(warehouse: ChdbWarehouse, sql: str, topic: str) -> list[tuple]:
    return [tuple(row) for row in warehouse.query_df(sql, {"topic": topic}).itertuples(index=False)]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(sent=[nested_too_deeply(LANDING_NOW, "ts"), plain_event(LANDING_NOW, "ok-1")])
@given(sent=st.lists(hostile_messages(LANDING_NOW), min_size=1, max_size=14))
def test_events_sink_lands_or_dead_letters_every_hostile_message_naming_its_position(
    sent: list[HostileMessage],
    warehouse: ChdbWarehouse,
    tables: AnalyticsTables,
    redis_server: str,
    redis_key_prefix: str,
) -> None:
    """Each example lands its own topic (two partitions, chunks of four, read ahead as the asset does)
    into the test's tables, with the Redis counters written beside the insert."""
    topic = f"events_{uuid.uuid4().hex[:10]}"
    cache = RedisCache(url=redis_server, key_prefix=redis_key_prefix)
    with tempfile.TemporaryDirectory() as root:
        topics = LocalTopicLog(root=root)
        topics.create_topic(topic, 2)
        positions = topics.produce(
            topic,
            [
                OutgoingMessage(m.value, m.key, m.headers or {}, partition=index % 2)
                for index, m in enumerate(sent)
            ],
        )
        ends = Counter(partition for partition, _ in positions)
        sink = WarehouseEventsSink(warehouse, tables, counters=cache)
        counts = land_ranges(
            topics,
            sink,
            topic,
            [OffsetRange(partition, 0, end) for partition, end in sorted(ends.items())],
            topic,
            chunk_messages=4,
            read_ahead=True,
        )
        sink.finish_counting()

    assert counts.read == len(sent) == counts.landed + counts.duplicates + counts.dead_lettered
    landed = _positions(
        warehouse, f"SELECT partition, offset FROM {tables.raw_events} WHERE topic = {{topic:String}}", topic
    )
    dead = _positions(
        warehouse,
        f"SELECT partition, offset, reason FROM {tables.dead_letters} WHERE topic = {{topic:String}}",
        topic,
    )
    assert len(landed) == len(set(landed)) == counts.landed
    assert len(dead) == counts.dead_lettered
    for partition, offset, reason in dead:
        assert f"{topic} partition {partition} offset {offset}" in reason
    dead_positions = {(partition, offset) for partition, offset, _ in dead}
    assert not dead_positions & set(landed)
    stored_ids = set(warehouse.query_df(f"SELECT DISTINCT event_id FROM {tables.raw_events}")["event_id"])
    for message, position in zip(sent, positions, strict=True):
        if message.valid:
            assert position not in dead_positions
        if position not in dead_positions and position not in landed:
            assert json.loads(message.value)["event_id"] in stored_ids
    booked = sum(counts.read for _, counts in sink.landed_ranges(topic))
    assert booked == len(sent)
    caught_up = count_uncounted_chunks(warehouse, tables, cache, topic)
    chunks_landing_rows = sum(1 for _, counts in sink.landed_ranges(topic) if counts.landed > 0)
    assert caught_up.counted_at_landing + caught_up.counted_now == chunks_landing_rows
    assert caught_up.events_counted == counts.landed


@st.composite
def raw_event_record(draw: st.DrawFn) -> tuple[RawRecord, bool]:
    """A record as a misbehaving producer writes it on the wire around any message of the events
    topic, and whether its value is a valid event."""
    message = draw(hostile_messages(LANDING_NOW))
    values = st.one_of(st.just(message.value), st.none(), st.just(b""))
    record = draw(hostile_records(values))
    return record, record.value == message.value and message.valid


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(
    sent=[
        (RawRecord(plain_event(LANDING_NOW, "raw-1").value, b"\xff", [(b"\xff\xfe", b"v")]), True),
        (RawRecord(plain_event(LANDING_NOW, "raw-2").value, None, [], timestamp_ms=None), True),
        (
            RawRecord(plain_event(LANDING_NOW, "raw-3").value, None, [(b"a", None)] * 2, timestamp_ms=-42),
            True,
        ),
        (RawRecord(None, None), False),
    ]
)
@given(sent=st.lists(raw_event_record(), min_size=1, max_size=8))
def test_any_record_on_the_wire_of_the_events_topic_lands_or_is_dead_lettered_naming_its_position(
    sent: list[tuple[RawRecord, bool]],
    kafka_broker: KafkaBroker,
    warehouse: ChdbWarehouse,
    tables: AnalyticsTables,
) -> None:
    """Raw records (any key, header names and values of any bytes, no or negative timestamps, null and
    empty values) on a real broker, read by the Kafka reader and landed by the events sink: a valid event
    lands whatever its key, headers and timestamp (events need none of them)."""
    topic = kafka_broker.new_topic("events")
    produce_raw(kafka_broker.bootstrap_servers, topic, 1, [record for record, _ in sent])
    topics = KafkaTopics(bootstrap_servers=kafka_broker.bootstrap_servers, timeout_seconds=15)
    try:
        read = topics.read_range(topic, 1, 0, len(sent))
        sink = WarehouseEventsSink(warehouse, tables)
        counts = land_ranges(topics, sink, topic, [OffsetRange(1, 0, len(sent))], topic, chunk_messages=4)
    finally:
        topics.close()

    assert [message.offset for message in read] == list(range(len(sent)))
    assert all(message.timestamp_ms is None or message.timestamp_ms >= 0 for message in read)
    assert counts.read == len(sent) == counts.landed + counts.duplicates + counts.dead_lettered
    landed = {
        offset
        for _, offset in _positions(
            warehouse,
            f"SELECT partition, offset FROM {tables.raw_events} WHERE topic = {{topic:String}}",
            topic,
        )
    }
    dead = {
        offset: reason
        for _, offset, reason in _positions(
            warehouse,
            f"SELECT partition, offset, reason FROM {tables.dead_letters} WHERE topic = {{topic:String}}",
            topic,
        )
    }
    assert not landed & set(dead)
    for offset, reason in dead.items():
        assert f"{topic} partition 1 offset {offset}" in reason
    for offset, (_, valid) in enumerate(sent):
        if valid:
            assert offset not in dead
    assert sum(counts.read for _, counts in sink.landed_ranges(topic)) == len(sent)
