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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

from hub_pipelines.core.ports import TopicMessage, Topics
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import OffsetRange

DEFAULT_CHUNK_MESSAGES = 5_000
READ_AHEAD_GROUPS = 2


class LandingSink(Protocol):
    """Where a topic's messages land, and the book of which offset ranges have landed."""

    def land_chunk(
        self, topic: str, chunk: OffsetRange, messages: Sequence[TopicMessage], run_id: str
    ) -> LandingCounts:
        """Land the messages of one chunk and record the chunk, atomically or idempotently.

        A chunk already recorded lands nothing and counts every message as a duplicate.
        """
        ...

    def landed_positions(self, topic: str) -> dict[int, int]:
        """Per partition, the end of the furthest landed range."""
        ...

    def landed_ranges(self, topic: str) -> list[tuple[OffsetRange, LandingCounts]]: ...


@runtime_checkable
class ChunkGroupSink(LandingSink, Protocol):
    """A sink that lands several chunks in one pass, each booked as `land_chunk` would book it.

    Decoding is apart from landing, so the next chunks can be decoded while these land.
    """

    def decode_chunks(self, chunks: Sequence[tuple[OffsetRange, Sequence[TopicMessage]]]) -> Any:
        """Everything about the chunks that does not depend on what has landed before them."""
        ...

    def land_decoded(self, topic: str, decoded: Any, run_id: str) -> list[LandingCounts]: ...


def split_into_chunks(offset_range: OffsetRange, chunk_messages: int) -> Iterator[OffsetRange]:
    """Chunks aligned to multiples of chunk_messages, so a rerun of any range meets the same chunks."""
    start = offset_range.start
    while start < offset_range.end:
        aligned_end = (start // chunk_messages + 1) * chunk_messages
        end = min(aligned_end, offset_range.end)
        yield OffsetRange(offset_range.partition, start, end)
        start = end


class IncompleteRead(RuntimeError):
    """The broker returned fewer messages than the range holds."""


def _read_chunk(topics: Topics, topic: str, chunk: OffsetRange) -> Sequence[TopicMessage]:
    messages = topics.read_range(topic, chunk.partition, chunk.start, chunk.end)
    if len(messages) != chunk.size:
        raise IncompleteRead(
            f"{topic} partition {chunk.partition}: asked for offsets {chunk.start}..{chunk.end - 1} "
            f"({chunk.size} messages), the broker returned {len(messages)}"
        )
    return messages


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


def _read_group(topics: Topics, topic: str, group: Sequence[OffsetRange]) -> list[tuple[OffsetRange, Any]]:
    return [(chunk, _read_chunk(topics, topic, chunk)) for chunk in group]


def _prepared(sink: LandingSink, read: list[tuple[OffsetRange, Any]]) -> Any:
    return sink.decode_chunks(read) if isinstance(sink, ChunkGroupSink) else read


def _prepared_when_read(sink: LandingSink, read: Future[list[tuple[OffsetRange, Any]]]) -> Any:
    return _prepared(sink, read.result())


def _land_group(sink: LandingSink, topic: str, group: Any, run_id: str) -> LandingCounts:
    total = LandingCounts()
    if isinstance(sink, ChunkGroupSink):
        for counts in sink.land_decoded(topic, group, run_id):
            total += counts
        return total
    for chunk, messages in group:
        total += sink.land_chunk(topic, chunk, messages, run_id)
    return total


def land_ranges(
    topics: Topics,
    sink: LandingSink,
    topic: str,
    ranges: Sequence[OffsetRange],
    run_id: str,
    chunk_messages: int = DEFAULT_CHUNK_MESSAGES,
    read_ahead: bool = False,
) -> LandingCounts:
    """Read every range from the topic and land it in the sink; returns the summed counts."""
    chunks = [chunk for r in ranges for chunk in split_into_chunks(r, chunk_messages)]
    groups = (
        group_chunks(chunks, chunk_messages) if isinstance(sink, ChunkGroupSink) else [[c] for c in chunks]
    )
    total = LandingCounts()
    if not read_ahead:
        for group in groups:
            total += _land_group(sink, topic, _prepared(sink, _read_group(topics, topic, group)), run_id)
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
                read = reader.submit(_read_group, topics, topic, ahead)
                upcoming.append(decoder.submit(_prepared_when_read, sink, read))
            total += _land_group(sink, topic, upcoming.popleft().result(), run_id)
    return total
