"""Dead letters for operators: read one with its payload opened, or hand a rejected order event back to the ledger.

A replay puts the event back in front of the ledger where it stands: its inbox row (sealed, with the
signature headers it arrived with) loses its `rejected` or `parked` intake record (and a parked
event its failure count), and the dead letter goes, so
the next ledger batch takes the event again and a new rejection can dead-letter it again. Nothing is
produced to the topic: the inbox keeps one row per event id, so a re-produced copy would land as a
duplicate and never reach the ledger, and it would put the plaintext event back on the broker. The
ledger takes a parked event back the same way, its failure count kept, when its page was not delivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters, topic_inbox
from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.orders.attempts import event_subject
from hub_pipelines.orders.pii import PiiCipher, PiiDecryptionFailed
from hub_pipelines.orders.reservation import DEAD_LETTER_SOURCE, PARKED, REJECTED, IntakePosition
from hub_pipelines.orders.sealed_payloads import open_dead_letter_payload
from hub_pipelines.orders.tables import ledger_attempts, order_intake


class DeadLetterNotReplayable(ValueError):
    """The dead letter does not exist, or is not an order event the ledger could take again."""


@dataclass(frozen=True)
class DeadLetter:
    id: int
    source: str
    topic: str | None
    partition: int | None
    offset: int | None
    event_id: str | None
    reason: str
    created_at: datetime
    payload_key_id: str | None
    payload: bytes | None
    payload_error: str | None = None
    """Why the payload is None although one is stored: it does not open (corrupted at rest)."""

    def describe(self) -> dict[str, object]:
        """JSON-ready, the payload as text (invalid UTF-8 escaped)."""
        return {
            "id": self.id,
            "source": self.source,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "event_id": self.event_id,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "payload_key_id": self.payload_key_id,
            "payload": None if self.payload is None else self.payload.decode("utf-8", "backslashreplace"),
            **({"payload_error": self.payload_error} if self.payload_error else {}),
        }


def read_dead_letters(
    database: SqlDatabase,
    ids: list[int] | None = None,
    *,
    source: str | None = None,
    limit: int = 100,
    keyring: PiiCipher | None = None,
) -> list[DeadLetter]:
    """Dead letters by id (or the newest `limit`, of `source` when given), payloads opened."""
    query = sa.select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
    if ids is not None:
        query = query.where(dead_letters.c.id.in_(ids))
    if source is not None:
        query = query.where(dead_letters.c.source == source)
    with database.transaction() as connection:
        rows = connection.execute(query).mappings().all()
    return [_dead_letter(row, keyring) for row in rows]


def replay_dead_letter(
    database: SqlDatabase, dead_letter_id: int, keyring: PiiCipher | None = None
) -> DeadLetter:
    """Hand a rejected order event back to the ledger (see the module docstring); returns the dead letter."""
    with database.transaction() as connection:
        row = (
            connection.execute(
                sa.select(dead_letters).where(dead_letters.c.id == dead_letter_id).with_for_update()
            )
            .mappings()
            .first()
        )
        if row is None:
            raise DeadLetterNotReplayable(f"dead letter {dead_letter_id}: no such dead letter")
        where = f"dead letter {dead_letter_id} ({row['topic']} partition {row['partition']} offset {row['offset']})"
        if row["source"] != DEAD_LETTER_SOURCE:
            raise DeadLetterNotReplayable(
                f"{where}: source {row['source']!r} is not the order ledger's ({DEAD_LETTER_SOURCE!r}); "
                "an event the landing could not decode has no event id and would only be dead-lettered again"
            )
        position = sa.and_(
            order_intake.c.topic == row["topic"],
            order_intake.c.partition == row["partition"],
            order_intake.c.offset == row["offset"],
        )
        landed = connection.execute(
            sa.select(sa.func.count()).where(
                topic_inbox.c.topic == row["topic"],
                topic_inbox.c.partition == row["partition"],
                topic_inbox.c.offset == row["offset"],
            )
        ).scalar_one()
        if not landed:
            raise DeadLetterNotReplayable(
                f"{where}: its inbox row (and the signature it arrived with) is gone"
            )
        replayed = _dead_letter(row, keyring)
        connection.execute(
            sa.delete(order_intake).where(position, order_intake.c.outcome.in_([REJECTED, PARKED]))
        )
        # A parked event's failure count goes too, so the ledger gives the fixed code its full retries.
        subject = event_subject(row["topic"], row["partition"], row["offset"])
        connection.execute(sa.delete(ledger_attempts).where(ledger_attempts.c.subject == subject))
        connection.execute(sa.delete(dead_letters).where(dead_letters.c.id == dead_letter_id))
    return replayed


def take_back_parked(database: SqlDatabase, position: IntakePosition) -> None:
    """Undo the ledger's parking of the event at `position` (its intake record and dead letter), its
    failure count kept: the next batch takes the event again, and one more failure parks it again.
    For a parked event whose page the pager did not take."""
    with database.transaction() as connection:
        connection.execute(
            sa.delete(order_intake).where(
                order_intake.c.topic == position.topic,
                order_intake.c.partition == position.partition,
                order_intake.c.offset == position.offset,
                order_intake.c.outcome == PARKED,
            )
        )
        connection.execute(
            sa.delete(dead_letters).where(
                dead_letters.c.source == DEAD_LETTER_SOURCE,
                dead_letters.c.topic == position.topic,
                dead_letters.c.partition == position.partition,
                dead_letters.c.offset == position.offset,
            )
        )


def _dead_letter(row: sa.RowMapping, keyring: PiiCipher | None) -> DeadLetter:
    """The dead letter with its payload opened; one whose payload does not open under a key the
    keyring holds is still shown (and replayable), without it. An unknown key id raises."""
    error = None
    try:
        opened = open_dead_letter_payload(
            row["source"],
            row["topic"],
            row["partition"],
            row["offset"],
            row["event_id"],
            row["payload"],
            row["payload_key_id"],
            keyring,
        )
    except PiiDecryptionFailed as unreadable:
        opened, error = None, f"the stored payload does not open (corrupted at rest): {unreadable}"
    return DeadLetter(
        id=int(row["id"]),
        source=row["source"],
        topic=row["topic"],
        partition=row["partition"],
        offset=row["offset"],
        event_id=row["event_id"],
        reason=row["reason"],
        created_at=row["created_at"],
        payload_key_id=row["payload_key_id"],
        payload=opened,
        payload_error=error,
    )
