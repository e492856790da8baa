"""Retention of raw order events: processed inbox rows and old dead letters are deleted.

An inbox row goes once the ledger has booked its event (any outcome) longer ago than the inbox
retention, unless the event is still dead-lettered: a replay needs the row and its signature headers,
so a rejected event's row stays as long as its dead letter. Dead letters of every source go after the
dead-letter retention. Both delete in batches of short transactions, so a purge never holds many
locks and a killed one leaves nothing half-done; running it twice deletes nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from hub_pipelines.core.platform_tables import dead_letters, topic_inbox
from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.orders.reservation import DEAD_LETTER_SOURCE
from hub_pipelines.orders.tables import order_intake


@dataclass(frozen=True)
class PurgeReport:
    inbox_rows: int
    dead_letters: int


def purge_expired(
    database: SqlDatabase,
    now: datetime,
    inbox_retention: timedelta,
    dead_letter_retention: timedelta,
    *,
    batch_size: int = 5000,
) -> PurgeReport:
    """Delete dead letters older than their retention, then processed inbox rows older than theirs."""
    letters = _delete_in_batches(
        database,
        sa.select(dead_letters.c.id).where(dead_letters.c.created_at < now - dead_letter_retention),
        lambda ids: sa.delete(dead_letters).where(dead_letters.c.id.in_(ids)),
        batch_size,
    )
    inbox_key = sa.tuple_(topic_inbox.c.topic, topic_inbox.c.partition, topic_inbox.c.offset)
    processed = sa.exists().where(
        order_intake.c.topic == topic_inbox.c.topic,
        order_intake.c.partition == topic_inbox.c.partition,
        order_intake.c.offset == topic_inbox.c.offset,
        order_intake.c.processed_at < now - inbox_retention,
    )
    still_dead_lettered = sa.exists().where(
        dead_letters.c.source == DEAD_LETTER_SOURCE,
        dead_letters.c.topic == topic_inbox.c.topic,
        dead_letters.c.partition == topic_inbox.c.partition,
        dead_letters.c.offset == topic_inbox.c.offset,
    )
    inbox = _delete_in_batches(
        database,
        sa.select(topic_inbox.c.topic, topic_inbox.c.partition, topic_inbox.c.offset).where(
            processed, ~still_dead_lettered
        ),
        lambda keys: sa.delete(topic_inbox).where(inbox_key.in_(keys)),
        batch_size,
    )
    return PurgeReport(inbox_rows=inbox, dead_letters=letters)


def _delete_in_batches(
    database: SqlDatabase,
    expired: sa.Select,
    delete: Callable[[list[Any]], sa.Delete],
    batch_size: int,
) -> int:
    deleted = 0
    while True:
        with database.transaction() as connection:
            keys = connection.execute(expired.limit(batch_size)).all()
            if keys:
                connection.execute(delete([key[0] if len(key) == 1 else tuple(key) for key in keys]))
        deleted += len(keys)
        if len(keys) < batch_size:
            return deleted
