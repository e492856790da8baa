"""The orders inbox: raw order events landed in the SQL database, keyed by topic/partition/offset and event id.

Every message ends landed, a duplicate, or dead-lettered with its position and a reason. What the
database could not store is found before it is sent (an event id or header with a NUL byte, an
oversize id or payload); what it refuses anyway (a constraint, a value it cannot take) is isolated by
bisecting the chunk under savepoints, so one refused row never rolls back its neighbours.

Landing writers may overlap (the sensor's run, the CLI, a retry, a backfill): a chunk is landed under
a per-partition lock, and only the parts of it no booked range covers are booked, so the book counts
each offset once. Messages of the covered parts count as duplicates for the run that re-read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters, landed_ranges, topic_inbox
from hub_pipelines.core.ports import SqlDatabase, TopicMessage
from hub_pipelines.core.sql import insert_ignoring_duplicates, is_serialization_failure
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import OffsetRange, uncovered_parts
from hub_pipelines.orders.authenticity import AUTHORIZATION_HEADER, SIGNATURE_HEADER
from hub_pipelines.orders.pii import PiiDecryptionFailed
from hub_pipelines.orders.sealed_payloads import (
    open_inbox_payload,
    seal_dead_letter_payload,
    seal_inbox_payload,
)

# The unique index on (topic, event_id) is a B-tree: PostgreSQL refuses an index row past ~2.7 kB.
MAX_EVENT_ID_BYTES = 512
# Kafka's default message limit is 1 MB; a broker configured higher must not fill the inbox with
# payloads no order needs.
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
# SQLSTATE classes of a row the database will not take whatever the neighbours: data exception (22),
# integrity constraint violation (23), program limit exceeded (54).
_ROW_REFUSED_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


class EventEnvelope(msgspec.Struct):
    """The part of every event the landing layer needs: an id to deduplicate on."""

    event_id: str


_decode_envelope = msgspec.json.Decoder(EventEnvelope)


class UndecodableMessage(ValueError):
    """The message cannot be stored as an event: not JSON, no usable event_id, or text SQL refuses."""


def _position(message: TopicMessage) -> str:
    return f"{message.topic} partition {message.partition} offset {message.offset}"


def _storable_text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "holds a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (lone surrogate)"
    return None


def decode_event_id(message: TopicMessage) -> str:
    if len(message.value) > MAX_PAYLOAD_BYTES:
        raise UndecodableMessage(
            f"{_position(message)}: payload of {len(message.value)} bytes exceeds {MAX_PAYLOAD_BYTES}"
        )
    try:
        event_id = _decode_envelope.decode(message.value).event_id
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise UndecodableMessage(f"{_position(message)}: undecodable event: {error}") from error
    except RecursionError:
        # msgspec walks nested JSON recursively even through fields it skips.
        raise UndecodableMessage(f"{_position(message)}: JSON nested too deeply to decode") from None
    if not event_id.strip():
        raise UndecodableMessage(f"{_position(message)}: empty event_id")
    problem = _storable_text_problem(event_id)
    if problem is not None:
        raise UndecodableMessage(f"{_position(message)}: event_id {problem}")
    if len(event_id.encode()) > MAX_EVENT_ID_BYTES:
        raise UndecodableMessage(
            f"{_position(message)}: event_id of {len(event_id.encode())} bytes exceeds {MAX_EVENT_ID_BYTES}"
        )
    return event_id


def headers_as_text(message: TopicMessage) -> dict[str, str]:
    """Header values as text (bytes that are not UTF-8 shown as escapes); a NUL anywhere is refused,
    and so are headers the reader could not read (an order's signature is among them)."""
    if message.unreadable_headers is not None:
        raise UndecodableMessage(f"{_position(message)}: {message.unreadable_headers}")
    text = {}
    for name, value in message.headers.items():
        problem = _storable_text_problem(name)
        if problem is not None:
            raise UndecodableMessage(f"{_position(message)}: header name {name!r} {problem}")
        if b"\x00" in value:
            raise UndecodableMessage(f"{_position(message)}: header {name!r} holds a NUL byte")
        text[name] = value.decode("utf-8", "backslashreplace")
    return text


def _signature(headers: Any) -> dict[str, Any]:
    """The headers an order's authenticity rests on, by lower-case name."""
    if not isinstance(headers, dict):
        return {}
    return {
        name.lower(): value
        for name, value in headers.items()
        if isinstance(name, str) and name.lower() in (SIGNATURE_HEADER, AUTHORIZATION_HEADER)
    }


def _printable_reason(reason: str) -> str:
    """A reason the dead-letter table can store whatever input it quotes."""
    return reason.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _refused_row(error: sa.exc.StatementError) -> bool:
    """Whether the database refused the rows themselves (a retry or a reconnect would not help)."""
    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated or is_serialization_failure(error):
            return False
        if isinstance(error, sa.exc.DataError | sa.exc.IntegrityError):
            return True
        sqlstate = getattr(error.orig, "sqlstate", None) or ""
        return sqlstate[:2] in _ROW_REFUSED_SQLSTATE_CLASSES
    return isinstance(error.orig, ValueError)


def _refused_reason(row: dict[str, Any], reason: str) -> str:
    return f"{row['topic']} partition {row['partition']} offset {row['offset']}: {reason}"


def _first_line(error: sa.exc.StatementError) -> str:
    return str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else type(error.orig).__name__


@dataclass
class SqlInboxSink:
    """Lands order events in `topic_inbox`, undecodable ones in `dead_letters`, and books `landed_ranges`."""

    database: SqlDatabase
    source: str = "orders-landing"

    def land_chunk(
        self, topic: str, chunk: OffsetRange, messages: Sequence[TopicMessage], run_id: str
    ) -> LandingCounts:
        """Land a chunk; its offsets without a message are gaps (markers, aborted or compacted records)."""
        now = datetime.now(UTC)
        rows, rejects = [], []
        for message in messages:
            try:
                event_id = decode_event_id(message)
                headers = headers_as_text(message)
            except UndecodableMessage as error:
                rejects.append(self._dead_letter(message, str(error), now))
                continue
            rows.append(
                {
                    "topic": topic,
                    "partition": message.partition,
                    "offset": message.offset,
                    "event_id": event_id,
                    "key": message.key,
                    **seal_inbox_payload(topic, message.partition, message.offset, message.value),
                    "headers": headers,
                    "received_at": now,
                }
            )
        with self.database.transaction() as connection:
            self._lock_partition(connection, topic, chunk.partition)
            parts = uncovered_parts(chunk, self._booked_overlapping(connection, topic, chunk))

            def new(row: dict[str, Any]) -> bool:
                return any(part.start <= row["offset"] < part.end for part in parts)

            new_rows = [row for row in rows if new(row)]
            new_rejects = [reject for reject in rejects if new(reject)]
            landed, refused = self._insert_isolating(connection, new_rows)
            by_offset = {message.offset: message for message in messages}
            settled = landed | {int(row["offset"]) for row, _ in refused}
            duplicates = [row for row in new_rows if row["offset"] not in settled]
            refused += self._impostors(connection, topic, duplicates, by_offset)
            new_rejects += [
                self._dead_letter(by_offset[row["offset"]], _refused_reason(row, reason), now)
                for row, reason in refused
            ]
            if new_rejects:
                connection.execute(
                    insert_ignoring_duplicates(dead_letters, self.database.dialect), new_rejects
                )
            rejected = {int(reject["offset"]) for reject in new_rejects}
            for part in parts:
                counts = self._part_counts(part, messages, landed, rejected)
                self._book(connection, topic, part, counts, run_id, now)
        dead_lettered = len(rejects) + len(refused)
        return LandingCounts(
            read=len(messages),
            landed=len(landed),
            duplicates=len(messages) - len(landed) - dead_lettered,
            dead_lettered=dead_lettered,
            gaps=chunk.size - len(messages),
        )

    @staticmethod
    def _impostors(
        connection: sa.Connection,
        topic: str,
        duplicates: list[dict[str, Any]],
        by_offset: dict[int, TopicMessage],
    ) -> list[tuple[dict[str, Any], str]]:
        """The rows not inserted because their event id had landed at another position, whose payload
        or signature headers differ from the landed one's, each with its reason.

        A true duplicate (a producer's retry) carries the same bytes and signature. Another message
        under a landed event id is not one: counted as a duplicate, it would vanish, and a forged copy
        landed first (from another partition, say) would make the real event vanish so. It is
        dead-lettered instead, naming the position that holds the event id."""
        if not duplicates:
            return []
        landed = {
            row.event_id: row
            for row in connection.execute(
                sa.select(
                    topic_inbox.c.event_id,
                    topic_inbox.c.partition,
                    topic_inbox.c.offset,
                    topic_inbox.c.payload,
                    topic_inbox.c.payload_key_id,
                    topic_inbox.c.headers,
                ).where(
                    topic_inbox.c.topic == topic,
                    topic_inbox.c.event_id.in_({row["event_id"] for row in duplicates}),
                )
            )
        }
        impostors = []
        for row in duplicates:
            first = landed.get(row["event_id"])
            if first is None:
                continue
            message = by_offset[row["offset"]]
            try:
                same_payload = message.value == open_inbox_payload(
                    topic, int(first.partition), int(first.offset), first.payload, first.payload_key_id
                )
            except PiiDecryptionFailed:
                same_payload = False
            if same_payload and _signature(row["headers"]) == _signature(first.headers or {}):
                continue
            impostors.append(
                (
                    row,
                    f"event_id {row['event_id']!r} already landed at partition {first.partition} offset "
                    f"{first.offset} with another payload or signature; this message is not its duplicate",
                )
            )
        return impostors

    def _lock_partition(self, connection: sa.Connection, topic: str, partition: int) -> None:
        """Serialise landings of one partition until commit (SQLite's BEGIN IMMEDIATE already does)."""
        if self.database.dialect == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(topic), partition)))

    @staticmethod
    def _booked_overlapping(connection: sa.Connection, topic: str, chunk: OffsetRange) -> list[OffsetRange]:
        """The booked ranges that may overlap the chunk: those starting inside it, and the last one
        starting before it. Ranges booked under the lock never overlap, so no earlier one reaches
        further; both lookups are primary-key range scans however long the book grows."""
        booked = sa.select(landed_ranges.c.start_offset, landed_ranges.c.end_offset).where(
            landed_ranges.c.topic == topic, landed_ranges.c.partition == chunk.partition
        )
        inside = booked.where(
            landed_ranges.c.start_offset >= chunk.start, landed_ranges.c.start_offset < chunk.end
        )
        before = (
            booked.where(landed_ranges.c.start_offset < chunk.start)
            .order_by(landed_ranges.c.start_offset.desc())
            .limit(1)
        )
        found = [*connection.execute(inside), *connection.execute(before)]
        return [OffsetRange(chunk.partition, int(start), int(end)) for start, end in found]

    def _insert_isolating(
        self, connection: sa.Connection, rows: list[dict[str, Any]]
    ) -> tuple[set[int], list[tuple[dict[str, Any], str]]]:
        """Offsets inserted (not duplicates), and the rows the database refused with its reason.

        All rows go in one statement under a savepoint; when the database refuses it, each half is
        tried again under its own savepoint, down to the single rows it refuses.
        """
        if not rows:
            return set(), []
        statement = insert_ignoring_duplicates(topic_inbox, self.database.dialect).returning(
            topic_inbox.c.offset
        )
        try:
            with connection.begin_nested():
                return {int(offset) for (offset,) in connection.execute(statement, rows)}, []
        except sa.exc.StatementError as error:
            if not _refused_row(error):
                raise
            if len(rows) == 1:
                return set(), [(rows[0], f"the database refused the row: {_first_line(error)}")]
        middle = len(rows) // 2
        landed_first, refused_first = self._insert_isolating(connection, rows[:middle])
        landed_second, refused_second = self._insert_isolating(connection, rows[middle:])
        return landed_first | landed_second, refused_first + refused_second

    @staticmethod
    def _part_counts(
        part: OffsetRange, messages: Sequence[TopicMessage], landed: set[int], rejected: set[int]
    ) -> LandingCounts:
        read = sum(1 for m in messages if part.start <= m.offset < part.end)
        part_landed = sum(1 for offset in landed if part.start <= offset < part.end)
        part_rejected = sum(1 for offset in rejected if part.start <= offset < part.end)
        return LandingCounts(
            read, part_landed, read - part_landed - part_rejected, part_rejected, gaps=part.size - read
        )

    @staticmethod
    def _book(
        connection: sa.Connection,
        topic: str,
        part: OffsetRange,
        counts: LandingCounts,
        run_id: str,
        now: datetime,
    ) -> None:
        connection.execute(
            sa.insert(landed_ranges).values(
                topic=topic,
                partition=part.partition,
                start_offset=part.start,
                end_offset=part.end,
                run_id=run_id,
                landed_at=now,
                **counts.as_metadata(),
            )
        )

    def book_lost(self, topic: str, lost: OffsetRange, run_id: str) -> LandingCounts:
        """Book offsets deleted upstream before they were read; the parts already booked stay as they are."""
        now = datetime.now(UTC)
        with self.database.transaction() as connection:
            self._lock_partition(connection, topic, lost.partition)
            parts = uncovered_parts(lost, self._booked_overlapping(connection, topic, lost))
            for part in parts:
                self._book(connection, topic, part, LandingCounts(lost=part.size), run_id, now)
        return LandingCounts(lost=sum(part.size for part in parts))

    def _dead_letter(self, message: TopicMessage, reason: str, now: datetime) -> dict[str, Any]:
        return {
            "source": self.source,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "event_id": None,
            "reason": _printable_reason(reason),
            **seal_dead_letter_payload(
                self.source, message.topic, message.partition, message.offset, None, message.value
            ),
            "created_at": now,
        }

    def landed_positions(self, topic: str) -> dict[int, int]:
        # Each range beside the furthest end booked before it (in start order): the first range that
        # starts past it opens a gap, and the position is that end; without a gap, the furthest end.
        reached = sa.func.max(landed_ranges.c.end_offset).over(
            partition_by=landed_ranges.c.partition, order_by=landed_ranges.c.start_offset, rows=(None, -1)
        )
        ranges = (
            sa.select(
                landed_ranges.c.partition,
                landed_ranges.c.start_offset,
                landed_ranges.c.end_offset,
                reached.label("reached"),
            )
            .where(landed_ranges.c.topic == topic)
            .subquery()
        )
        gap_at = sa.func.min(sa.case((ranges.c.start_offset > ranges.c.reached, ranges.c.reached)))
        with self.database.transaction() as connection:
            result = connection.execute(
                sa.select(
                    ranges.c.partition, sa.func.coalesce(gap_at, sa.func.max(ranges.c.end_offset))
                ).group_by(ranges.c.partition)
            )
            return {int(partition): int(end) for partition, end in result}

    def landed_ranges(self, topic: str) -> list[tuple[OffsetRange, LandingCounts]]:
        with self.database.transaction() as connection:
            result = connection.execute(
                sa.select(
                    landed_ranges.c.partition,
                    landed_ranges.c.start_offset,
                    landed_ranges.c.end_offset,
                    landed_ranges.c.read,
                    landed_ranges.c.landed,
                    landed_ranges.c.duplicates,
                    landed_ranges.c.dead_lettered,
                    landed_ranges.c.gaps,
                    landed_ranges.c.lost,
                )
                .where(landed_ranges.c.topic == topic)
                .order_by(landed_ranges.c.partition, landed_ranges.c.start_offset)
            )
            return [
                (OffsetRange(int(p), int(s), int(e)), LandingCounts(*(int(n) for n in counts)))
                for p, s, e, *counts in result
            ]
