"""The Topics port on a Kafka cluster, through confluent-kafka (librdkafka).

Semantics shared with the local log are described in `hub_pipelines.resources.topics`. The resource
holds settings only; the clients and every call live in `kafka_cluster`, which imports confluent-kafka
when a process first uses a topic, so defining the code location does not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

if TYPE_CHECKING:
    from hub_pipelines.core.ports import OutgoingMessage, PartitionSpan, TopicMessage
    from hub_pipelines.resources.kafka_cluster import KafkaCluster


class KafkaTopics(dg.ConfigurableResource):
    """Topics on a Kafka cluster through confluent-kafka (librdkafka).

    Produces with the idempotent producer and acks=all, and keys partitioned by murmur2 like Java
    clients. Reads are read_committed: records of aborted transactions are never returned, and end
    offsets are last-stable offsets, so a planned range never waits on a transaction still open.
    Reads assign the partition at the start offset and never join or commit as a group;
    group positions are written and read with the admin API, so a group must have no live members
    subscribed to the topic while positions are committed here.
    """

    bootstrap_servers: str
    client_id: str = "hub-pipelines"
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    replication_factor: int = -1
    timeout_seconds: float = 30.0
    # Batches are compressed by the producer and stay compressed on the broker's disk and on the wire;
    # JSON events shrink about fourfold with zstd, and consumers decompress them in librdkafka's threads.
    compression_type: str = "zstd"

    # Any: the annotation is read when the class is made, and KafkaCluster is imported on first use only.
    _cluster: Any = PrivateAttr(default=None)
    _cluster_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def _connected(self) -> KafkaCluster:
        with self._cluster_lock:
            if self._cluster is None:
                from hub_pipelines.resources.kafka_cluster import KafkaCluster

                self._cluster = KafkaCluster(self)
            return self._cluster

    def close(self) -> None:
        with self._cluster_lock:
            cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def create_topic(self, topic: str, partitions: int) -> None:
        self._connected().create_topic(topic, partitions)

    def partitions(self, topic: str) -> list[int]:
        return self._connected().partitions(topic)

    def produce(self, topic: str, messages: Iterable[OutgoingMessage]) -> list[tuple[int, int]]:
        return self._connected().produce(topic, messages)

    def end_offsets(self, topic: str) -> dict[int, int]:
        return self._connected().end_offsets(topic)

    def read_range(self, topic: str, partition: int, start: int, end: int) -> list[TopicMessage]:
        return self._connected().read_range(topic, partition, start, end)

    def read_span(self, topic: str, partition: int, start: int, end: int) -> PartitionSpan:
        return self._connected().read_span(topic, partition, start, end)

    def commit(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        self._connected().commit(group, topic, positions)

    def committed(self, group: str, topic: str) -> dict[int, int]:
        return self._connected().committed(group, topic)
