"""Offset ranges of a topic: planning the next batch, and proving the landed ranges have no gaps."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class OffsetRange:
    """Messages of one partition with start <= offset < end."""

    partition: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(
                f"invalid offset range for partition {self.partition}: [{self.start}, {self.end})"
            )

    @property
    def size(self) -> int:
        return self.end - self.start

    def label(self) -> str:
        return f"{self.partition}:{self.start}-{self.end}"


def describe_ranges(ranges: Iterable[OffsetRange]) -> str:
    """A short, stable text for tags and run keys: 'p:start-end,...' in partition order."""
    return ",".join(r.label() for r in sorted(ranges))


def parse_ranges(text: str) -> list[OffsetRange]:
    """The inverse of describe_ranges."""
    ranges = []
    for part in filter(None, text.split(",")):
        partition, span = part.split(":")
        start, end = span.split("-")
        ranges.append(OffsetRange(int(partition), int(start), int(end)))
    return ranges


def plan_next_ranges(
    landed: Mapping[int, int],
    end_offsets: Mapping[int, int],
    max_messages: int,
) -> list[OffsetRange]:
    """The next batch: from each partition's landed offset towards its end, at most max_messages in all.

    The budget is shared fairly: every partition with pending messages gets an equal share first, and
    what a short partition leaves unused goes to the others, so one busy partition cannot starve the rest.
    """
    pending = {
        partition: end - landed.get(partition, 0)
        for partition, end in sorted(end_offsets.items())
        if end > landed.get(partition, 0)
    }
    budget = max_messages
    take: dict[int, int] = dict.fromkeys(pending, 0)
    while budget > 0 and any(take[p] < pending[p] for p in pending):
        hungry = [p for p in pending if take[p] < pending[p]]
        share = max(1, budget // len(hungry))
        for partition in hungry:
            extra = min(share, pending[partition] - take[partition], budget)
            take[partition] += extra
            budget -= extra
            if budget == 0:
                break
    return [
        OffsetRange(partition, landed.get(partition, 0), landed.get(partition, 0) + count)
        for partition, count in take.items()
        if count > 0
    ]


@dataclass(frozen=True)
class RewoundPartition:
    """A partition whose end fell below the offset landed from it: its topic was deleted and made
    again, or the partition truncated. Its new messages take offsets already landed from the old one
    (and the inbox holds rows under those positions), so landing on from the landed offset would
    skip them without a trace; once the partition has grown past that offset nothing tells them apart."""

    topic: str
    partition: int
    landed: int
    end: int

    @property
    def dedup_key(self) -> str:
        return f"topic-rewound/{self.topic}/{self.partition}/{self.landed}"

    def describe(self) -> str:
        return (
            f"{self.topic} partition {self.partition} ends at offset {self.end}, below offset "
            f"{self.landed} already landed (the topic was deleted and made again, or the partition "
            "truncated): nothing more of it is landed until an operator releases it"
        )


def rewound_partitions(
    topic: str, landed: Mapping[int, int], end_offsets: Mapping[int, int]
) -> list[RewoundPartition]:
    """The partitions whose end offset is below their landed offset."""
    return [
        RewoundPartition(topic, partition, landed[partition], end)
        for partition, end in sorted(end_offsets.items())
        if end < landed.get(partition, 0)
    ]


@dataclass(frozen=True)
class RangeGap:
    """Offsets of a partition that no landed range covers."""

    partition: int
    first_missing: int
    next_landed: int

    def describe(self) -> str:
        return f"partition {self.partition}: offsets {self.first_missing}..{self.next_landed - 1} were never landed"


def uncovered_parts(offset_range: OffsetRange, covered: Iterable[OffsetRange]) -> list[OffsetRange]:
    """The parts of offset_range that none of the covered ranges (of its partition) holds, in order."""
    parts = []
    start = offset_range.start
    overlapping = (
        c
        for c in covered
        if c.partition == offset_range.partition and c.size and c.end > start and c.start < offset_range.end
    )
    for r in sorted(overlapping):
        if r.start > start:
            parts.append(OffsetRange(offset_range.partition, start, r.start))
        start = max(start, r.end)
    if start < offset_range.end:
        parts.append(OffsetRange(offset_range.partition, start, offset_range.end))
    return parts


def find_gaps(ranges: Iterable[OffsetRange], first_offset: int = 0) -> list[RangeGap]:
    """Every run of offsets, from first_offset to the last landed one, that no landed range covers.

    Overlapping ranges are fine: a replayed range lands nothing new.
    """
    by_partition: dict[int, list[OffsetRange]] = {}
    for r in ranges:
        by_partition.setdefault(r.partition, []).append(r)
    gaps = []
    for partition, partition_ranges in sorted(by_partition.items()):
        expected = first_offset
        for r in sorted(partition_ranges):
            if r.start > expected:
                gaps.append(RangeGap(partition, expected, r.start))
            expected = max(expected, r.end)
    return gaps
