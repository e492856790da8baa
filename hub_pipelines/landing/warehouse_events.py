"""The events landing sink: analytics events landed in ClickHouse's `raw_events`, once each.

ClickHouse has no transaction across tables, so the sink makes every step of a chunk repeatable and
books the chunk last. A chunk is landed as:

1. booked already (in `event_landed_ranges`)? then nothing lands and every message is a duplicate
   (with a cache, a booked chunk without its counters' marker, left by a run killed before its
   counter thread wrote them, is counted now from its rows in `raw_events`);
   booked in part (an overlapping run, a range planned with other bounds)? then only the unbooked
   parts land, each booked as a chunk of its own, and the rest are duplicates;
2. decode; invalid messages go to the dead-letter table (keyed by topic/partition/offset);
3. look up the chunk's event ids already stored (by minute and id, an index lookup): a stored row
   from this very message (same partition and offset) is this chunk's own insert from an attempt
   that died before booking, and counts as landed; a stored row from any other message makes this
   one a duplicate, as does an id repeated earlier in the same chunk;
4. insert the new rows with a deduplication token naming the chunk and its content; should the
   warehouse refuse the rows themselves (a constraint; the decoder dead-letters what it can foresee),
   each half is inserted under a token of its own (the group's token and the half's position), down
   to the single rows it refuses, which are dead-lettered while their neighbours land; a connection
   or availability failure fails the run. With a cache, the chunk's real-time counters are then
   written from the landed rows on a thread, while the next chunks' lookup and insert run (guarded by
   the chunk's batch marker, so a rerun of the chunk does not count it again; `finish_counting` waits
   for the last of them);
5. book the chunk with its counts (offsets without a message are gaps: transaction markers, aborted
   or compacted records), the days its events fall on and its newest event time.

Small chunks (one per partition of a short range) land together: one decode, lookup, insert and
booking statement for all of them, each chunk still booked (one row each, in one insert) and counted
under its own batch marker. Decoding needs nothing from the warehouse, so `land_ranges` decodes the
next chunks on its read-ahead thread while these land.

Only one landing run per topic is in flight (the topic sensor sees to it), so step 3 cannot race.
Runs started beside it (the CLI, a backfill) may still book overlapping ranges in the moment between
reading the book and booking; `landed_ranges` counts each offset once by leaving out a range the ranges
booked before it already cover.
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from hub_pipelines.analytics.counters import ChunkCounter, chunk_batch_id, count_booked_chunk
from hub_pipelines.analytics.events import DecodedBatch, Rejected, decode_batch, describe, events_to_arrow
from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.core.gc_pause import collector_paused
from hub_pipelines.core.ports import Cache, TopicMessage, Warehouse, WarehouseRowsRefused
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import OffsetRange, uncovered_parts

# The events topic is landed in chunks this large: each chunk costs a few warehouse round trips and
# materialized-view passes, and 50,000 rows amortise them (5,000 costs six times more per event).
EVENTS_CHUNK_MESSAGES = 50_000
RETENTION = timedelta(days=730)
FUTURE_TOLERANCE = timedelta(days=1)

_DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("event_id", pa.string()),
        ("reason", pa.string()),
        ("payload", pa.binary()),
    ]
)
_BOOK_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("start_offset", pa.int64()),
        ("end_offset", pa.int64()),
        ("run_id", pa.string()),
        ("read", pa.uint32()),
        ("landed", pa.uint32()),
        ("duplicates", pa.uint32()),
        ("dead_lettered", pa.uint32()),
        ("gaps", pa.uint32()),
        ("lost", pa.uint32()),
        ("event_days", pa.list_(pa.date32())),
        ("newest_event_ts", pa.timestamp("ms", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class ChunkOutcome:
    """What landing one chunk did, beyond its counts: which days it touched and its newest event."""

    chunk: OffsetRange
    counts: LandingCounts
    event_days: frozenset[date]
    newest_event_ts: datetime | None
    batch_id: str


@dataclass(frozen=True)
class DecodedChunks:
    """Chunks read and decoded, not landed yet: what can be done while the chunks before them land."""

    chunks: Sequence[tuple[OffsetRange, Sequence[TopicMessage]]]
    batch: DecodedBatch
    rows: pa.Table
    first_of_each_id: list[int]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _naive_minute(epoch_seconds: int) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC).replace(tzinfo=None)


@dataclass
class WarehouseEventsSink:
    """Lands analytics events in `raw_events`, invalid ones in `event_dead_letters`, and books ranges."""

    warehouse: Warehouse
    tables: AnalyticsTables = field(default_factory=AnalyticsTables)
    clock: Callable[[], datetime] = _utcnow
    counters: Cache | None = None
    outcomes: list[ChunkOutcome] = field(default_factory=list)
    _booked: dict[str, dict[tuple[int, int, int], LandingCounts]] = field(default_factory=dict, repr=False)
    _counter: ChunkCounter | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.tables.ensure(self.warehouse)
        if self.counters is not None:
            self._counter = ChunkCounter(self.counters)

    def finish_counting(self) -> int:
        """Wait for the counters still being written (at most the counter's timeout); how many of the
        chunks this sink landed have their counters in the cache."""
        if self._counter is None:
            return 0
        counted = self._counter.finish()
        return sum(1 for outcome in self.outcomes if outcome.batch_id in counted)

    def land_chunk(
        self, topic: str, chunk: OffsetRange, messages: Sequence[TopicMessage], run_id: str
    ) -> LandingCounts:
        return self.land_decoded(topic, self.decode_chunks([(chunk, messages)]), run_id)[0]

    def decode_chunks(self, chunks: Sequence[tuple[OffsetRange, Sequence[TopicMessage]]]) -> DecodedChunks:
        """The chunks' events decoded into rows: all of landing that needs nothing from the warehouse."""
        with collector_paused():
            now = self.clock()
            messages = [message for _, chunk_messages in chunks for message in chunk_messages]
            batch = decode_batch(messages, accept_from=now - RETENTION, accept_until=now + FUTURE_TOLERANCE)
            rows = events_to_arrow(batch.events, batch.messages)
            return DecodedChunks(chunks, batch, rows, self._first_of_each_id(rows))

    def land_decoded(self, topic: str, decoded: DecodedChunks, run_id: str) -> list[LandingCounts]:
        """Land decoded chunks in one pass (one lookup, one insert, one booking), each booked as itself."""
        book = self._book(topic)
        booked_by_partition: dict[int, list[OffsetRange]] = {}
        for partition, start, end in book:
            booked_by_partition.setdefault(partition, []).append(OffsetRange(partition, start, end))
        chunks = decoded.chunks
        outcomes: dict[OffsetRange, LandingCounts] = {}
        parts_of: dict[OffsetRange, list[OffsetRange]] = {}
        pending: list[tuple[OffsetRange, Sequence[TopicMessage]]] = []
        for chunk, messages in chunks:
            booked = book.get((chunk.partition, chunk.start, chunk.end))
            if booked is not None and booked.landed:
                self._count_if_uncounted(topic, chunk, decoded.rows)
            parts = [] if booked else uncovered_parts(chunk, booked_by_partition.get(chunk.partition, []))
            gaps = chunk.size - len(messages)
            if parts == [chunk]:
                pending.append((chunk, messages))
                continue
            already = booked.dead_lettered if booked is not None else 0
            outcomes[chunk] = LandingCounts(
                read=len(messages), duplicates=len(messages) - already, dead_lettered=already, gaps=gaps
            )
            parts_of[chunk] = parts
            for part in parts:
                pending.append((part, [m for m in messages if part.start <= m.offset < part.end]))
        if pending:
            if len(pending) < len(chunks) or parts_of:
                decoded = self.decode_chunks(pending)
            with collector_paused():
                landed = {
                    outcome.chunk: outcome.counts for outcome in self._land_pending(topic, decoded, run_id)
                }
            for chunk, parts in parts_of.items():
                # The landed parts' messages were counted as duplicates of the booked ones above.
                for part in parts:
                    counts = landed.pop(part)
                    outcomes[chunk] += LandingCounts(
                        landed=counts.landed,
                        duplicates=-counts.landed - counts.dead_lettered,
                        dead_lettered=counts.dead_lettered,
                    )
            outcomes.update(landed)
        return [outcomes[chunk] for chunk, _ in chunks]

    def _count_if_uncounted(self, topic: str, chunk: OffsetRange, rows: pa.Table) -> None:
        """Count a chunk booked earlier whose counters never made it (the run that booked it was killed
        before its counter thread wrote them): the catch-up after a landing counts only its own run's."""
        if self.counters is None:
            return
        positions = rows.select(["partition", "offset", "ts"])
        mine = positions.filter(
            pc.and_(
                pc.equal(positions.column("partition"), chunk.partition),
                pc.and_(
                    pc.greater_equal(positions.column("offset"), chunk.start),
                    pc.less(positions.column("offset"), chunk.end),
                ),
            )
        )
        days = pc.unique(pc.cast(mine.column("ts"), pa.date32())).to_pylist()
        count_booked_chunk(
            self.warehouse, self.tables, self.counters, topic, chunk.partition, chunk.start, chunk.end, days
        )

    def _land_pending(self, topic: str, decoded: DecodedChunks, run_id: str) -> list[ChunkOutcome]:
        chunks, batch, rows, unique = decoded.chunks, decoded.batch, decoded.rows, decoded.first_of_each_id
        labels = "+".join(chunk.label() for chunk, _ in chunks)
        stored = self._stored_positions(
            rows if len(unique) == rows.num_rows else rows.take(pa.array(unique, pa.int64()))
        )
        fresh, landed_before = (unique, []) if not stored else self._split_by_stored(batch, unique, stored)
        token = self._token(topic, labels, fresh)
        refused: list[Rejected] = []
        if fresh:
            fresh_rows = rows if len(fresh) == rows.num_rows else rows.take(pa.array(fresh, pa.int64()))
            refused_at = self._insert_isolating(fresh_rows, f"{self.tables.raw_events}/{token}")
            if refused_at:
                refused = [self._refused(batch, fresh[position], reason) for position, reason in refused_at]
                refused_indexes = {fresh[position] for position, _ in refused_at}
                fresh = [index for index in fresh if index not in refused_indexes]
        landed = len(fresh) + len(landed_before)
        kept = None if landed == rows.num_rows else sorted((*fresh, *landed_before))
        landed_rows = rows if kept is None else rows.take(pa.array(kept, pa.int64()))
        read = [len(chunk_messages) for _, chunk_messages in chunks]
        decoded_rejects = Counter(self._chunk_of(chunks, r.message) for r in batch.rejected)
        valid = [read[index] - decoded_rejects[index] for index in range(len(chunks))]
        rejected = decoded_rejects + Counter(self._chunk_of(chunks, r.message) for r in refused)
        per_chunk = list(
            zip((chunk for chunk, _ in chunks), self._split_by_chunk(landed_rows, valid, kept), strict=True)
        )
        batch_ids = [chunk_batch_id(topic, chunk.partition, chunk.start, chunk.end) for chunk, _ in chunks]
        if landed > 0 and self._counter is not None:
            self._counter.start(
                [
                    (batch_id, chunk_rows)
                    for batch_id, (_, chunk_rows) in zip(batch_ids, per_chunk, strict=True)
                    if chunk_rows.num_rows > 0
                ]
            )
        if batch.rejected or refused:
            self.warehouse.insert_arrow(
                self.tables.dead_letters,
                self._dead_letter_rows([*batch.rejected, *refused]),
                dedup_token=f"{self.tables.dead_letters}/{token}",
            )
        outcomes = []
        for index, (chunk, chunk_rows) in enumerate(per_chunk):
            chunk_landed = chunk_rows.num_rows
            counts = LandingCounts(
                read[index],
                chunk_landed,
                valid[index] - chunk_landed - (rejected[index] - decoded_rejects[index]),
                rejected[index],
                gaps=chunk.size - read[index],
            )
            landed_ts = chunk_rows.column("ts")
            newest = pc.max(landed_ts).as_py() if chunk_landed else None
            days = pc.unique(pc.cast(landed_ts, pa.date32())).to_pylist()
            outcomes.append(ChunkOutcome(chunk, counts, frozenset(days), newest, batch_ids[index]))
        self._record(topic, outcomes, run_id)
        self.outcomes.extend(outcomes)
        return outcomes

    def _insert_isolating(self, rows: pa.Table, dedup_token: str) -> list[tuple[int, str]]:
        """Insert new events; the positions (in `rows`) of those the warehouse refused, with its reason.

        When the warehouse refuses the rows themselves, each half is inserted under a token of its own,
        the group's token and the half's position (so a replay meets the same tokens), down to the
        single rows it refuses; a connection or availability failure fails the run, to be retried.
        """
        try:
            self.warehouse.insert_arrow(self.tables.raw_events, rows, dedup_token=dedup_token)
            return []
        except WarehouseRowsRefused as refusal:
            if rows.num_rows == 1:
                return [(0, refusal.reason)]
        middle = rows.num_rows // 2
        first = self._insert_isolating(rows.slice(0, middle), f"{dedup_token}/0")
        second = self._insert_isolating(rows.slice(middle), f"{dedup_token}/1")
        return first + [(middle + position, reason) for position, reason in second]

    @staticmethod
    def _refused(batch: DecodedBatch, index: int, reason: str) -> Rejected:
        message, event_id = batch.messages[index], batch.events[index].event_id
        return Rejected(
            message, f"{describe(message, event_id)}: the warehouse refused the row: {reason}", event_id
        )

    @staticmethod
    def _chunk_of(chunks: Sequence[tuple[OffsetRange, Sequence[TopicMessage]]], message: TopicMessage) -> int:
        for index, (chunk, _) in enumerate(chunks):
            if chunk.partition == message.partition and chunk.start <= message.offset < chunk.end:
                return index
        raise ValueError(f"{describe(message)} is in none of the chunks landed with it")

    @staticmethod
    def _split_by_chunk(landed_rows: pa.Table, valid: list[int], kept: list[int] | None) -> list[pa.Table]:
        """Each chunk's landed rows, as slices: decoding keeps the messages' order, so a chunk's valid
        events are the next `valid[i]` rows, and its landed ones those of `kept` (sorted) among them."""
        slices = []
        start = end = 0
        for count in valid:
            end += count
            landed_start = start if kept is None else bisect.bisect_left(kept, start)
            landed_end = end if kept is None else bisect.bisect_left(kept, end)
            slices.append(landed_rows.slice(landed_start, landed_end - landed_start))
            start = end
        return slices

    @staticmethod
    def _first_of_each_id(rows: pa.Table) -> list[int]:
        """Indexes of the first event with each id: a repeat later in the chunk is a duplicate."""
        ids = rows.column("event_id")
        if len(pc.unique(ids)) == len(ids):
            return list(range(len(ids)))
        first_seen: dict[str, int] = {}
        for index, event_id in enumerate(ids.to_pylist()):
            first_seen.setdefault(event_id, index)
        return list(first_seen.values())

    @staticmethod
    def _split_by_stored(
        batch: DecodedBatch, unique: list[int], stored: dict[str, tuple[str, int, int]]
    ) -> tuple[list[int], list[int]]:
        """The unique events not stored yet, and those stored from this very message by an unbooked attempt."""
        fresh, landed_before = [], []
        for index in unique:
            message = batch.messages[index]
            position = stored.get(batch.events[index].event_id)
            if position is None:
                fresh.append(index)
            elif position == (message.topic, message.partition, message.offset):
                landed_before.append(index)
        return fresh, landed_before

    def _stored_positions(self, candidates: pa.Table) -> dict[str, tuple[str, int, int]]:
        """For each candidate already in raw_events (same minute and id): where it was read from."""
        if candidates.num_rows == 0:
            return {}
        epoch_seconds = pc.divide(pc.cast(candidates.column("ts"), pa.int64()), 1000)
        minutes = pc.cast(pc.multiply(pc.divide(epoch_seconds, 60), 60), pa.uint32())
        sent = pa.Table.from_arrays([candidates.column("event_id"), minutes], names=["event_id", "minute"])
        # The ids travel with the query (external data) rather than through a table. The time bounds
        # prune days, and the minutes set the primary index's granules: a live chunk's few minutes plus
        # one granule or so per late event, however long ago they were stamped. Within those granules
        # ClickHouse reads the ids' 8-byte hashes, and the ids only of rows whose hash matches; the few
        # matches are held to the same minute and id here.
        found = self.warehouse.query_arrow_with_rows(
            f"SELECT event_id, toUInt32(toStartOfMinute(ts)) AS minute, topic, partition, offset "
            f"FROM {self.tables.raw_events} "
            "PREWHERE id_hash IN (SELECT cityHash64(event_id) FROM {sent_rows}) "
            "WHERE ts >= {first:DateTime('UTC')} AND ts < {last:DateTime('UTC')} + INTERVAL 1 MINUTE "
            "AND toStartOfMinute(ts) IN (SELECT DISTINCT toDateTime(minute, 'UTC') FROM {sent_rows})",
            sent,
            {
                "first": _naive_minute(pc.min(minutes).as_py()),
                "last": _naive_minute(pc.max(minutes).as_py()),
            },
        )
        if found.num_rows == 0:
            return {}
        minute_of = dict(zip(sent.column("event_id").to_pylist(), minutes.to_pylist(), strict=True))
        return {
            event_id: (topic, partition, offset)
            for event_id, minute, topic, partition, offset in zip(
                *(found.column(name).to_pylist() for name in found.column_names), strict=True
            )
            if minute_of.get(event_id) == minute
        }

    @staticmethod
    def _token(topic: str, labels: str, fresh: list[int]) -> str:
        digest = hashlib.blake2b(array("q", fresh).tobytes(), digest_size=8).hexdigest()
        return f"{topic}/{labels}/{digest}"

    @staticmethod
    def _dead_letter_rows(rejected: Sequence[Rejected]) -> pa.Table:
        return pa.Table.from_pydict(
            {
                "topic": [r.message.topic for r in rejected],
                "partition": [r.message.partition for r in rejected],
                "offset": [r.message.offset for r in rejected],
                "event_id": [r.event_id for r in rejected],
                "reason": [r.reason for r in rejected],
                "payload": [r.message.value for r in rejected],
            },
            schema=_DEAD_LETTER_SCHEMA,
        )

    def _record(self, topic: str, outcomes: Sequence[ChunkOutcome], run_id: str) -> None:
        rows = pa.Table.from_pylist(
            [
                {
                    "topic": topic,
                    "partition": outcome.chunk.partition,
                    "start_offset": outcome.chunk.start,
                    "end_offset": outcome.chunk.end,
                    "run_id": run_id,
                    **outcome.counts.as_metadata(),
                    "event_days": sorted(outcome.event_days),
                    "newest_event_ts": outcome.newest_event_ts,
                }
                for outcome in outcomes
            ],
            schema=_BOOK_SCHEMA,
        )
        self.warehouse.insert_arrow(self.tables.landed_ranges, rows)
        book = self._book(topic)
        for outcome in outcomes:
            book[(outcome.chunk.partition, outcome.chunk.start, outcome.chunk.end)] = outcome.counts

    def book_lost(self, topic: str, lost: OffsetRange, run_id: str) -> LandingCounts:
        """Book offsets deleted upstream before they were read; the parts already booked stay as they are."""
        book = self._book(topic)
        booked = [OffsetRange(p, s, e) for p, s, e in book if p == lost.partition]
        parts = uncovered_parts(lost, booked)
        if parts:
            self._record(
                topic,
                [ChunkOutcome(part, LandingCounts(lost=part.size), frozenset(), None, "") for part in parts],
                run_id,
            )
        return LandingCounts(lost=sum(part.size for part in parts))

    def forget_book(self) -> None:
        """Read the book from the warehouse again before the next chunk: while this run lent the warehouse
        (chdb) another process may have booked ranges, which must count as duplicates here."""
        self._booked.clear()

    def _book(self, topic: str) -> dict[tuple[int, int, int], LandingCounts]:
        if topic not in self._booked:
            self._booked[topic] = {
                (r.partition, r.start, r.end): counts for r, counts in self.landed_ranges(topic)
            }
        return self._booked[topic]

    def landed_positions(self, topic: str) -> dict[int, int]:
        # Each range beside the furthest end booked before it (in start order; NULL for the first): the
        # first range that starts past it opens a gap, and the position is that end.
        found = self.warehouse.query_df(
            "SELECT partition, if(countIf(start_offset > reached) > 0, "
            "assumeNotNull(minIf(reached, start_offset > reached)), max(end_offset)) AS end_offset FROM (SELECT partition, start_offset, end_offset, "
            "max(toNullable(end_offset)) OVER (PARTITION BY partition ORDER BY start_offset "
            "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reached "
            f"FROM {self.tables.landed_ranges} FINAL WHERE topic = {{topic:String}}) GROUP BY partition",
            {"topic": topic},
        )
        return {int(p): int(e) for p, e in found.itertuples(index=False)}

    def landed_ranges(self, topic: str) -> list[tuple[OffsetRange, LandingCounts]]:
        """The booked ranges, each offset counted once: a range that the ranges booked before it already
        cover is left out (a run beside another booked it again between reading the book and booking)."""
        found = self.warehouse.query_df(
            "SELECT partition, start_offset, end_offset, read, landed, duplicates, dead_lettered, gaps, lost "
            f"FROM {self.tables.landed_ranges} FINAL WHERE topic = {{topic:String}} ORDER BY landed_at",
            {"topic": topic},
        )
        kept: list[tuple[OffsetRange, LandingCounts]] = []
        covered: dict[int, list[OffsetRange]] = {}
        for p, s, e, *counts in found.itertuples(index=False):
            booked = OffsetRange(int(p), int(s), int(e))
            if not uncovered_parts(booked, covered.get(booked.partition, [])):
                continue
            covered.setdefault(booked.partition, []).append(booked)
            kept.append((booked, LandingCounts(*(int(n) for n in counts))))
        return sorted(kept, key=lambda entry: entry[0])
