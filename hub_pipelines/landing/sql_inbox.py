"""The orders inbox: raw order events landed in the SQL database, keyed by topic/partition/offset and event id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters, landed_ranges, topic_inbox
from hub_pipelines.core.ports import SqlDatabase, TopicMessage
from hub_pipelines.core.sql import insert_ignoring_duplicates
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.orders.sealed_payloads import seal_dead_letter_payload, seal_inbox_payload


class EventEnvelope(msgspec.Struct):
    """The part of every event the landing layer needs: an id to deduplicate on."""

    event_id: str


_decode_envelope = msgspec.json.Decoder(EventEnvelope)


class UndecodableMessage(ValueError):
    """The message is not an event: not JSON, or no usable event_id."""


def decode_event_id(message: TopicMessage) -> str:
    try:
        event_id = _decode_envelope.decode(message.value).event_id
    except msgspec.DecodeError as error:
        raise UndecodableMessage(
            f"{message.topic} partition {message.partition} offset {message.offset}: undecodable event: {error}"
        ) from error
    if not event_id.strip():
        raise UndecodableMessage(
            f"{message.topic} partition {message.partition} offset {message.offset}: empty event_id"
        )
    return event_id


def headers_as_text(message: TopicMessage) -> dict[str, str]:
    return {name: value.decode("utf-8", "backslashreplace") for name, value in message.headers.items()}


@dataclass
class SqlInboxSink:
    """Lands order events in `topic_inbox`, undecodable ones in `dead_letters`, and books `landed_ranges`."""

    database: SqlDatabase
    source: str = "orders-landing"

    def land_chunk(
        self, topic: str, chunk: OffsetRange, messages: Sequence[TopicMessage], run_id: str
    ) -> LandingCounts:
        now = datetime.now(UTC)
        rows, rejects = [], []
        for message in messages:
            try:
                event_id = decode_event_id(message)
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
                    "headers": headers_as_text(message),
                    "received_at": now,
                }
            )
        with self.database.transaction() as connection:
            already = connection.execute(
                sa.select(landed_ranges.c.read).where(
                    landed_ranges.c.topic == topic,
                    landed_ranges.c.partition == chunk.partition,
                    landed_ranges.c.start_offset == chunk.start,
                    landed_ranges.c.end_offset == chunk.end,
                )
            ).first()
            if already is not None:
                return LandingCounts(read=len(messages), duplicates=len(rows), dead_lettered=len(rejects))
            landed = 0
            if rows:
                statement = insert_ignoring_duplicates(topic_inbox, self.database.dialect).returning(
                    topic_inbox.c.offset
                )
                landed = len(connection.execute(statement, rows).all())
            if rejects:
                connection.execute(insert_ignoring_duplicates(dead_letters, self.database.dialect), rejects)
            counts = LandingCounts(len(messages), landed, len(rows) - landed, len(rejects))
            connection.execute(
                sa.insert(landed_ranges).values(
                    topic=topic,
                    partition=chunk.partition,
                    start_offset=chunk.start,
                    end_offset=chunk.end,
                    run_id=run_id,
                    landed_at=now,
                    **counts.as_metadata(),
                )
            )
        return counts

    def _dead_letter(self, message: TopicMessage, reason: str, now: datetime) -> dict[str, object]:
        return {
            "source": self.source,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "event_id": None,
            "reason": reason,
            **seal_dead_letter_payload(
                self.source, message.topic, message.partition, message.offset, None, message.value
            ),
            "created_at": now,
        }

    def landed_positions(self, topic: str) -> dict[int, int]:
        with self.database.transaction() as connection:
            result = connection.execute(
                sa.select(landed_ranges.c.partition, sa.func.max(landed_ranges.c.end_offset))
                .where(landed_ranges.c.topic == topic)
                .group_by(landed_ranges.c.partition)
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
                ).where(landed_ranges.c.topic == topic)
            )
            return [
                (OffsetRange(int(p), int(s), int(e)), LandingCounts(int(r), int(la), int(d), int(dl)))
                for p, s, e, r, la, d, dl in result
            ]
