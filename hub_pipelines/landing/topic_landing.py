"""Landing one offset range of a topic into a sink, chunk by chunk, exactly once per chunk.

Each chunk of a range is landed and recorded together by the sink, so a run killed mid-range leaves
whole chunks behind, never half of one; the rerun finds those chunks recorded and counts their
messages as duplicates instead of landing them twice. With `read_ahead`, the next chunks are read from
the broker and decoded (by a sink that decodes apart), each on a thread of its own, while the current
one lands (the broker client and the warehouse both work outside the GIL), two chunks ahead at most;
chunks still land one at a time, in order.

A sink that can land several chunks at once (`ChunkGroupSink`) is given consecutive chunks together
until they hold `chunk_messages`: ranges split over many partitions make small chunks, and each
landing costs the warehouse a few statements and parts whatever its size. Each chunk of a group is
still booked and counted as itself.

Offsets are not messages: a transactional producer's commit and abort markers take offsets, the
records of aborted transactions are never returned under read_committed, and compaction removes
records. A chunk is read whole when the reader has got past its end, however few messages it holds;
the offsets without a message are booked as gaps. When retention or a delete has moved a partition's
start past a chunk's, the missing offsets are booked as lost upstream (the caller is told first, and
may stop the landing instead) and the landing goes on from the earliest offset still there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hub_pipelines.core.ports import ChunkGroupSink, LandingSink, TopicMessage, Topics
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import OffsetRange

DEFAULT_CHUNK_MESSAGES = 5_000
READ_AHEAD_GROUPS = 2


def split_into_chunks(offset_range: OffsetRange, chunk_messages: int) -> Iterator[OffsetRange]:
    """Chunks aligned to multiples of chunk_messages, so a rerun of any range meets the same chunks."""
    start = offset_range.start
    while start < offset_range.end:
        aligned_end = (start // chunk_messages + 1) * chunk_messages
        end = min(aligned_end, offset_range.end)
        yield OffsetRange(offset_range.partition, start, end)
        start = end


class IncompleteRead(RuntimeError):
    """The reader stopped before the end of the range: the broker does not hold those offsets yet."""


@dataclass(frozen=True)
class UpstreamLoss:
    """Offsets of a partition deleted (by retention or by hand) before the landing read them."""

    topic: str
    lost: OffsetRange
    first_available: int

    def describe(self) -> str:
        return (
            f"{self.topic} partition {self.lost.partition}: offsets {self.lost.start}..{self.lost.end - 1} "
            f"({self.lost.size} messages) were deleted upstream before they were landed; "
            f"the partition now starts at offset {self.first_available}"
        )


@dataclass(frozen=True)
class _ChunkRead:
    chunks: list[tuple[OffsetRange, Sequence[TopicMessage]]]
    losses: list[UpstreamLoss]


def _read_chunk(
    topics: Topics, topic: str, chunk: OffsetRange
) -> tuple[OffsetRange | None, Sequence[TopicMessage], UpstreamLoss | None]:
    """The part of the chunk the broker still holds with its messages, and what was lost before it."""
    span = topics.read_span(topic, chunk.partition, chunk.start, chunk.end)
    if span.read_through < chunk.end:
        raise IncompleteRead(
            f"{topic} partition {chunk.partition}: asked for offsets {chunk.start}..{chunk.end - 1}, "
            f"the broker holds committed offsets up to {span.read_through - 1} only "
            f"({len(span.messages)} messages read)"
        )
    lost_end = min(max(span.first_available, chunk.start), chunk.end)
    loss = (
        UpstreamLoss(topic, OffsetRange(chunk.partition, chunk.start, lost_end), span.first_available)
        if lost_end > chunk.start
        else None
    )
    rest = OffsetRange(chunk.partition, lost_end, chunk.end) if lost_end < chunk.end else None
    return rest, span.messages, loss


def group_chunks(chunks: Sequence[OffsetRange], messages: int) -> list[list[OffsetRange]]:
    """Consecutive chunks taken together until a group holds `messages` (a big chunk stays alone)."""
    groups: list[list[OffsetRange]] = []
    held = messages
    for chunk in chunks:
        if held >= messages:
            groups.append([])
            held = 0
        groups[-1].append(chunk)
        held += chunk.size
    return groups


def _read_group(
    topics: Topics,
    topic: str,
    group: Sequence[OffsetRange],
    on_read: Callable[[Sequence[TopicMessage]], None],
) -> _ChunkRead:
    read = _ChunkRead([], [])
    for chunk in group:
        rest, messages, loss = _read_chunk(topics, topic, chunk)
        on_read(messages)
        if loss is not None:
            read.losses.append(loss)
        if rest is not None:
            read.chunks.append((rest, messages))
    return read


def _prepared(sink: LandingSink, read: _ChunkRead) -> tuple[list[UpstreamLoss], Any]:
    chunks = (
        sink.decode_chunks(read.chunks) if isinstance(sink, ChunkGroupSink) and read.chunks else read.chunks
    )
    return read.losses, chunks


def _prepared_when_read(sink: LandingSink, read: Future[_ChunkRead]) -> tuple[list[UpstreamLoss], Any]:
    return _prepared(sink, read.result())


def _land_group(
    sink: LandingSink,
    topic: str,
    prepared: tuple[list[UpstreamLoss], Any],
    run_id: str,
    on_upstream_loss: Callable[[UpstreamLoss], None],
) -> LandingCounts:
    losses, group = prepared
    total = LandingCounts()
    for loss in losses:
        on_upstream_loss(loss)
        total += sink.book_lost(topic, loss.lost, run_id)
    if not group:
        return total
    if isinstance(sink, ChunkGroupSink):
        for counts in sink.land_decoded(topic, group, run_id):
            total += counts
        return total
    for chunk, messages in group:
        total += sink.land_chunk(topic, chunk, messages, run_id)
    return total


def _go_on(loss: UpstreamLoss) -> None:
    """By default upstream loss is booked and the landing goes on."""


def _ignore(messages: Sequence[TopicMessage]) -> None:
    """By default nobody looks at the messages read besides the sink."""


def land_ranges(
    topics: Topics,
    sink: LandingSink,
    topic: str,
    ranges: Sequence[OffsetRange],
    run_id: str,
    chunk_messages: int = DEFAULT_CHUNK_MESSAGES,
    read_ahead: bool = False,
    on_upstream_loss: Callable[[UpstreamLoss], None] = _go_on,
    on_read: Callable[[Sequence[TopicMessage]], None] = _ignore,
) -> LandingCounts:
    """Read every range from the topic and land it in the sink; returns the summed counts.

    `on_upstream_loss` hears of each loss before it is booked; raising stops the landing there.
    `on_read` is given each chunk's messages as they are read (on the reader thread with `read_ahead`).
    """
    chunks = [chunk for r in ranges for chunk in split_into_chunks(r, chunk_messages)]
    groups = (
        group_chunks(chunks, chunk_messages) if isinstance(sink, ChunkGroupSink) else [[c] for c in chunks]
    )
    total = LandingCounts()
    if not read_ahead:
        for group in groups:
            prepared = _prepared(sink, _read_group(topics, topic, group, on_read))
            total += _land_group(sink, topic, prepared, run_id, on_upstream_loss)
        return total
    # Reading (the broker client's Python loop) and decoding (msgspec, Arrow) each get a thread, so the
    # groups flow through three stages at once: read, decode, land. At most READ_AHEAD_GROUPS groups
    # are held beyond the one landing, which bounds the memory a run needs.
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"read-{topic}") as reader,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"decode-{topic}") as decoder,
    ):
        upcoming: deque[Future[Any]] = deque()
        for position in range(len(groups)):
            for ahead in groups[position + len(upcoming) : position + 1 + READ_AHEAD_GROUPS]:
                read = reader.submit(_read_group, topics, topic, ahead, on_read)
                upcoming.append(decoder.submit(_prepared_when_read, sink, read))
            total += _land_group(sink, topic, upcoming.popleft().result(), run_id, on_upstream_loss)
    return total
