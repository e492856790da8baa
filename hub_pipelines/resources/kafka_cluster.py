"""The Kafka calls behind `KafkaTopics`: one process's producer, admin client and range reader.

Imported when a process first uses a topic (see `kafka_topics`), never to define the code location.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from hub_pipelines.core.gc_pause import collector_paused
from hub_pipelines.core.ports import (
    OutgoingMessage,
    PartitionSpan,
    TopicMessage,
    TopicUnavailable,
    UnknownTopic,
)

if TYPE_CHECKING:
    from hub_pipelines.resources.kafka_topics import KafkaTopics

logger = logging.getLogger(__name__)


class TopicWriteRejected(RuntimeError):
    """The broker refused a message for a reason a retry will not fix (too large, not authorised...)."""


_UNASSIGNED = -1
# How often a read asks again for a partition whose leader is away (a broker restarting).
_LEADER_RETRY_S = 0.25
_NO_HEADERS: Mapping[str, bytes] = MappingProxyType({})

# The reader only fetches ranges known to exist (below the high watermark), so a broker never has to hold
# a fetch open waiting for data: librdkafka's default 500 ms wait made every range read stall on it
# (11k messages/s against the mock cluster, 190k/s+ with 10 ms). Larger partition fetches let one
# request carry a whole 50,000-message chunk.
_RANGE_READER_FETCH: dict[str, Any] = {
    "fetch.wait.max.ms": 10,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "fetch.max.bytes": 64 * 1024 * 1024,
}


# confluent-kafka decodes header names as UTF-8 and, for other bytes, returns with the decode error
# left pending instead of raising it (the bytes themselves are not given). A direct `message.headers()`
# in this hot loop is specialised by the interpreter into a call that does not look for that error, so
# it surfaces later, anywhere; through `methodcaller` the call is checked and raises SystemError here.
_read_headers = operator.methodcaller("headers")


def _header_map(headers: Mapping[str, Any] | list[tuple[str, Any]] | None) -> dict[str, bytes]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers or []
    return {name: value if isinstance(value, bytes) else (value or "").encode() for name, value in pairs}


def _unavailable(what: str, exc: BaseException | None = None) -> TopicUnavailable:
    reason = f": {exc}" if exc is not None else ""
    return TopicUnavailable(f"{what}{reason}")


def _is_transient(error: KafkaError) -> bool:
    return bool(error.retriable()) or error.code() in (
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
    )


def _client_config(settings: KafkaTopics) -> dict[str, Any]:
    """The settings every client of the cluster shares: servers, identity, security."""
    optional = {
        "security.protocol": settings.security_protocol,
        "sasl.mechanism": settings.sasl_mechanism,
        "sasl.username": settings.sasl_username,
        "sasl.password": settings.sasl_password,
        "ssl.ca.location": settings.ssl_ca_location,
        "ssl.certificate.location": settings.ssl_certificate_location,
        "ssl.key.location": settings.ssl_key_location,
    }
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "logger": logger,
        **{name: value for name, value in optional.items() if value is not None},
    }


class KafkaCluster:
    """The cluster a `KafkaTopics` names, as one process talks to it: clients made on first use."""

    def __init__(self, settings: KafkaTopics) -> None:
        self.bootstrap_servers = settings.bootstrap_servers
        self.client_id = settings.client_id
        self.replication_factor = settings.replication_factor
        self.timeout_seconds = settings.timeout_seconds
        self.compression_type = settings.compression_type
        self._common_config = _client_config(settings)
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._reader: Consumer | None = None
        self._clients_lock = threading.Lock()
        self._read_lock = threading.Lock()

    def _clients(self) -> tuple[Producer, AdminClient, Consumer]:
        with self._clients_lock:
            if self._producer is None or self._admin is None or self._reader is None:
                timeout_ms = int(self.timeout_seconds * 1000)
                self._producer = Producer(
                    {
                        **self._common_config,
                        "enable.idempotence": True,
                        "acks": "all",
                        "partitioner": "murmur2_random",
                        "delivery.timeout.ms": timeout_ms,
                        "linger.ms": 5,
                        "compression.type": self.compression_type,
                    }
                )
                self._admin = AdminClient(dict(self._common_config))
                self._reader = Consumer(
                    {
                        **self._common_config,
                        "group.id": f"{self.client_id}-reader",
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                        "enable.partition.eof": True,
                        "auto.offset.reset": "error",
                        "isolation.level": "read_committed",
                        "allow.auto.create.topics": False,
                        **_RANGE_READER_FETCH,
                    }
                )
            return self._producer, self._admin, self._reader

    def close(self) -> None:
        with self._clients_lock:
            producer, reader = self._producer, self._reader
            self._producer = self._admin = self._reader = None
        if producer is not None:
            producer.flush(self.timeout_seconds)
        if reader is not None:
            reader.close()

    def create_topic(self, topic: str, partitions: int) -> None:
        _, admin, _ = self._clients()
        future = admin.create_topics(
            [NewTopic(topic, partitions, self.replication_factor)], request_timeout=self.timeout_seconds
        )[topic]
        try:
            future.result(timeout=self.timeout_seconds)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return
            if _is_transient(error):
                raise _unavailable(f"creating topic {topic!r} on {self.bootstrap_servers}", exc) from exc
            raise
        except TimeoutError as exc:
            waited = f"{self.timeout_seconds:.0f} s"
            raise _unavailable(
                f"creating topic {topic!r}: no answer from {self.bootstrap_servers} in {waited}"
            ) from exc

    def partitions(self, topic: str) -> list[int]:
        _, _, reader = self._clients()
        try:
            metadata = reader.list_topics(topic, timeout=self.timeout_seconds).topics.get(topic)
        except KafkaException as exc:
            raise _unavailable(
                f"reading metadata of topic {topic!r} from {self.bootstrap_servers}", exc
            ) from exc
        if metadata is None or (
            metadata.error is not None
            and metadata.error.code()
            in (
                KafkaError.UNKNOWN_TOPIC_OR_PART,
                KafkaError._UNKNOWN_TOPIC,
            )
        ):
            raise UnknownTopic(f"topic {topic!r} does not exist on {self.bootstrap_servers}")
        if metadata.error is not None:
            raise _unavailable(f"reading metadata of topic {topic!r}", KafkaException(metadata.error))
        return sorted(metadata.partitions)

    def produce(self, topic: str, messages: Iterable[OutgoingMessage]) -> list[tuple[int, int]]:
        producer, _, _ = self._clients()
        placed: list[tuple[int, int] | None] = []
        failures: list[KafkaError] = []

        def delivered(position: int):
            def report(error: KafkaError | None, message: Any) -> None:
                if error is not None:
                    failures.append(error)
                else:
                    placed[position] = (message.partition(), message.offset())

            return report

        for position, message in enumerate(messages):
            placed.append(None)
            while True:
                try:
                    producer.produce(
                        topic,
                        value=message.value,
                        key=message.key,
                        headers=list(message.headers.items()),
                        partition=_UNASSIGNED if message.partition is None else message.partition,
                        on_delivery=delivered(position),
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
        remaining = producer.flush(self.timeout_seconds)
        if failures:
            first = failures[0]
            what = f"{len(failures)} of {len(placed)} messages to topic {topic!r} were not written: {first}"
            if _is_transient(first):
                raise TopicUnavailable(what)
            raise TopicWriteRejected(what)
        if remaining or any(entry is None for entry in placed):
            raise TopicUnavailable(
                f"{remaining} of {len(placed)} messages to topic {topic!r} were not acknowledged by "
                f"{self.bootstrap_servers} within {self.timeout_seconds:.0f} s"
            )
        return [entry for entry in placed if entry is not None]

    def end_offsets(self, topic: str) -> dict[int, int]:
        _, admin, _ = self._clients()
        requests = {
            TopicPartition(topic, partition): OffsetSpec.latest() for partition in self.partitions(topic)
        }
        futures = admin.list_offsets(
            requests, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=self.timeout_seconds
        )
        try:
            return {
                tp.partition: future.result(timeout=self.timeout_seconds).offset
                for tp, future in futures.items()
            }
        except (KafkaException, TimeoutError) as exc:
            raise _unavailable(
                f"listing end offsets of topic {topic!r} on {self.bootstrap_servers}", exc
            ) from exc

    def read_range(self, topic: str, partition: int, start: int, end: int) -> list[TopicMessage]:
        return self.read_span(topic, partition, start, end).messages

    def read_span(self, topic: str, partition: int, start: int, end: int) -> PartitionSpan:
        _, _, reader = self._clients()
        where = f"topic {topic!r} partition {partition} offsets {start}..{end}"
        with self._read_lock:
            low, high = self._watermarks(reader, topic, partition, where)
            first = max(start, low)
            if first >= min(end, high):
                return PartitionSpan([], low, max(low, min(end, high)))
            reader.assign([TopicPartition(topic, partition, first)])
            try:
                with collector_paused():
                    found, read_through = self._consume(
                        reader, topic, partition, first, min(end, high), where
                    )
            finally:
                reader.unassign()
            return PartitionSpan(found, low, read_through)

    def _watermarks(self, reader: Consumer, topic: str, partition: int, where: str) -> tuple[int, int]:
        """The partition's watermarks, asked again while the broker is briefly away: with its leader
        lost, librdkafka answers at once with an unknown partition or a transport error instead of
        waiting, and a broker restart would fail the whole landing step."""
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            try:
                return reader.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self.timeout_seconds, cached=False
                )
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                leader_lost = error is not None and (
                    _is_transient(error) or error.code() == KafkaError._UNKNOWN_PARTITION
                )
                if not leader_lost or time.monotonic() >= deadline:
                    raise _unavailable(f"reading {where} from {self.bootstrap_servers}", exc) from exc
            time.sleep(_LEADER_RETRY_S)

    def _consume(
        self, reader: Consumer, topic: str, partition: int, start: int, end: int, where: str
    ) -> tuple[list[TopicMessage], int]:
        """The committed records from start towards end, and the offset the reader got past: a record
        at or past end, or the end of what the partition holds (the partition-EOF event's offset)."""
        found: list[TopicMessage] = []
        append = found.append
        next_offset = start
        last_progress = time.monotonic()
        while next_offset < end:
            # Asking for exactly what is left lets consume() return as soon as the range is in, instead of
            # waiting out its timeout for messages the range does not need.
            batch = reader.consume(num_messages=end - next_offset, timeout=1.0)
            if batch:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self.timeout_seconds:
                raise TopicUnavailable(
                    f"reading {where}: {self.bootstrap_servers} sent nothing past offset {next_offset} "
                    f"for {self.timeout_seconds:.0f} s"
                )
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return found, max(next_offset, message.offset() or 0)
                    if _is_transient(error):
                        continue
                    raise _unavailable(f"reading {where}", KafkaException(error))
                offset = message.offset()
                if offset is None:
                    return found, next_offset
                if offset >= end:
                    return found, offset
                timestamp_type, timestamp_ms = message.timestamp()
                unreadable = None
                try:
                    headers = _read_headers(message)
                except (SystemError, UnicodeDecodeError):
                    headers, unreadable = None, "a header name is not UTF-8, so no header of it can be read"
                append(
                    TopicMessage(
                        topic,
                        partition,
                        offset,
                        message.value() or b"",
                        message.key(),
                        _header_map(headers) if headers else _NO_HEADERS,
                        # -1 is Kafka's "no timestamp"; a producer may write any other negative too.
                        timestamp_ms if timestamp_type and timestamp_ms >= 0 else None,
                        unreadable,
                    )
                )
                next_offset = offset + 1
        return found, next_offset

    def commit(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        if not positions:
            return
        _, admin, _ = self._clients()
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, partition, offset) for partition, offset in positions.items()]
        )
        future = admin.alter_consumer_group_offsets([request], request_timeout=self.timeout_seconds)[group]
        try:
            result = future.result(timeout=self.timeout_seconds)
        except (KafkaException, TimeoutError) as exc:
            raise _unavailable(f"committing group {group!r} positions on topic {topic!r}", exc) from exc
        for tp in result.topic_partitions:
            if tp.error is not None:
                raise _unavailable(
                    f"committing group {group!r} topic {topic!r} partition {tp.partition}", tp.error
                )

    def committed(self, group: str, topic: str) -> dict[int, int]:
        _, admin, _ = self._clients()
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p) for p in self.partitions(topic)]
        )
        future = admin.list_consumer_group_offsets([request], request_timeout=self.timeout_seconds)[group]
        try:
            result = future.result(timeout=self.timeout_seconds)
        except (KafkaException, TimeoutError) as exc:
            raise _unavailable(f"reading group {group!r} positions on topic {topic!r}", exc) from exc
        return {tp.partition: tp.offset for tp in result.topic_partitions if tp.offset >= 0}
