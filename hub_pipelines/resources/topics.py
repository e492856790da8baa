"""The Topics port: partition logs in a folder locally, Kafka in production.

Both follow Kafka's semantics: a topic has a fixed number of partitions; offsets in a partition start
at 0 and are contiguous; a keyed message goes to the partition Kafka's default partitioner picks
(murmur2 of the key, the same in both implementations, so a key lands on the same partition number
locally and on the broker); an unkeyed message without a partition goes to a random one. Consumer
group positions are the next offset to read, per partition; `committed` lists only the partitions a
group has committed (the others start at 0).

The local log's on-disk format is described in `hub_pipelines.core.partition_log`; KafkaTopics lives
in `hub_pipelines.resources.kafka_topics`, and its calls in `kafka_cluster`, which a process imports on
its first use of a topic: no code location imports confluent-kafka to define itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import dagster as dg

from hub_pipelines.core.partition_log import NewRecord, PartitionLog, murmur2_partition
from hub_pipelines.core.ports import OutgoingMessage, PartitionSpan, TopicMessage, UnknownTopic

__all__ = ["LocalTopicLog", "UnknownTopic", "choose_partition"]


def choose_partition(message: OutgoingMessage, partitions: int) -> int:
    if message.partition is not None:
        if not 0 <= message.partition < partitions:
            raise ValueError(f"partition {message.partition} does not exist: the topic has {partitions}")
        return message.partition
    if message.key is not None:
        return murmur2_partition(message.key, partitions)
    return random.randrange(partitions)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class LocalTopicLog(dg.ConfigurableResource):
    """Topics as append-only partition logs under `root`, shared safely by several processes."""

    root: str

    def _topic_folder(self, topic: str) -> Path:
        if not topic or "/" in topic or topic.startswith("."):
            raise ValueError(f"topic name {topic!r} is not a plain name")
        return Path(self.root) / topic

    def partitions(self, topic: str) -> int:
        meta = self._topic_folder(topic) / "topic.json"
        try:
            return int(json.loads(meta.read_bytes())["partitions"])
        except FileNotFoundError:
            raise UnknownTopic(f"topic {topic!r} does not exist under {self.root}") from None

    def create_topic(self, topic: str, partitions: int) -> None:
        if partitions < 1:
            raise ValueError(f"topic {topic!r} needs at least one partition, got {partitions}")
        folder = self._topic_folder(topic)
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "topic.json"
        if meta.exists():
            return
        temporary = folder / f".topic.json.{os.getpid()}.{threading.get_ident()}"
        temporary.write_bytes(json.dumps({"partitions": partitions}).encode())
        try:
            # link() fails when another process created the topic first: the first creation wins.
            os.link(temporary, meta)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()

    def _log(self, topic: str, partition: int) -> PartitionLog:
        return PartitionLog(self._topic_folder(topic) / str(partition))

    def produce(self, topic: str, messages: Iterable[OutgoingMessage]) -> list[tuple[int, int]]:
        partitions = self.partitions(topic)
        now_ms = time.time_ns() // 1_000_000
        batches: dict[int, list[NewRecord]] = defaultdict(list)
        chosen: list[int] = []
        for message in messages:
            partition = choose_partition(message, partitions)
            batches[partition].append(NewRecord(message.value, message.key, message.headers, now_ms))
            chosen.append(partition)
        next_offset = {
            partition: self._log(topic, partition).append(records) for partition, records in batches.items()
        }
        placed = []
        for partition in chosen:
            placed.append((partition, next_offset[partition]))
            next_offset[partition] += 1
        return placed

    def end_offsets(self, topic: str) -> dict[int, int]:
        return {
            partition: self._log(topic, partition).end_offset() for partition in range(self.partitions(topic))
        }

    def read_range(self, topic: str, partition: int, start: int, end: int) -> list[TopicMessage]:
        if not 0 <= partition < self.partitions(topic):
            raise ValueError(f"topic {topic!r} has no partition {partition}")
        return [
            TopicMessage(topic, partition, r.offset, r.value, r.key, r.headers, r.timestamp_ms)
            for r in self._log(topic, partition).read(start, end)
        ]

    def read_span(self, topic: str, partition: int, start: int, end: int) -> PartitionSpan:
        """A local log keeps every record and has no transactions: it starts at 0 and has no gaps."""
        messages = self.read_range(topic, partition, start, end)
        return PartitionSpan(messages, 0, min(end, self._log(topic, partition).end_offset()))

    def commit(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        folder = self._topic_folder(topic) / "groups"
        folder.mkdir(parents=True, exist_ok=True)
        lock_path = folder / f"{group}.lock"
        with lock_path.open("ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = self.committed(group, topic)
            merged.update({int(partition): int(offset) for partition, offset in positions.items()})
            _write_atomically(
                folder / f"{group}.json", json.dumps({str(p): o for p, o in merged.items()}).encode()
            )

    def committed(self, group: str, topic: str) -> dict[int, int]:
        if not group or "/" in group or group.startswith("."):
            raise ValueError(f"consumer group name {group!r} is not a plain name")
        try:
            raw = json.loads((self._topic_folder(topic) / "groups" / f"{group}.json").read_bytes())
        except FileNotFoundError:
            return {}
        return {int(partition): int(offset) for partition, offset in raw.items()}
