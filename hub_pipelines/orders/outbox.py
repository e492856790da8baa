"""The outbox relay: order events queued in SQL are published to the topic, then marked sent.

At least once: a crash between the broker's acknowledgement and the commit publishes the rows again,
and consumers deduplicate on the `event-id` header. On PostgreSQL, rows are claimed with
`FOR UPDATE SKIP LOCKED`, so two relays never publish the same row at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from hub_pipelines.core.ports import OutgoingMessage, SqlDatabase, Topics
from hub_pipelines.orders.tables import outbox

EVENT_ID_HEADER = "event-id"
EVENT_TYPE_HEADER = "event-type"
TRACEPARENT_HEADER = "traceparent"


@dataclass(frozen=True)
class RelayReport:
    published: int
    still_unsent: int
    oldest_unsent_age_s: float


def relay_outbox(database: SqlDatabase, topics: Topics, topic: str, *, limit: int = 1000) -> RelayReport:
    """Publish up to `limit` unsent outbox rows in id order, keyed by order id."""
    with database.transaction() as connection:
        claim = (
            sa.select(outbox.c.id, outbox.c.event_id, outbox.c.order_id, outbox.c.event_type)
            .add_columns(outbox.c.payload, outbox.c.traceparent)
            .where(outbox.c.sent_at.is_(None))
            .order_by(outbox.c.id)
            .limit(limit)
        )
        if database.dialect == "postgresql":
            claim = claim.with_for_update(skip_locked=True)
        rows = connection.execute(claim).all()
        if rows:
            topics.produce(
                topic,
                [
                    OutgoingMessage(
                        value=bytes(payload),
                        key=order_id.encode(),
                        headers={
                            EVENT_ID_HEADER: event_id.encode(),
                            EVENT_TYPE_HEADER: event_type.encode(),
                            TRACEPARENT_HEADER: traceparent.encode(),
                        },
                    )
                    for _, event_id, order_id, event_type, payload, traceparent in rows
                ],
            )
            connection.execute(
                sa.update(outbox)
                .where(outbox.c.id.in_([row[0] for row in rows]))
                .values(sent_at=datetime.now(UTC))
            )
    unsent, oldest_age = outbox_backlog(database)
    return RelayReport(len(rows), unsent, oldest_age)


def relay_until_drained(database: SqlDatabase, topics: Topics, topic: str) -> RelayReport:
    """Relay batch after batch until the outbox is empty or a batch publishes nothing (rows another relay
    holds); the report counts every row this call published."""
    published = 0
    while True:
        report = relay_outbox(database, topics, topic)
        published += report.published
        if not report.published or not report.still_unsent:
            return RelayReport(published, report.still_unsent, report.oldest_unsent_age_s)


def outbox_backlog(database: SqlDatabase) -> tuple[int, float]:
    """How many rows wait to be published, and the age in seconds of the oldest (0 when none)."""
    with database.transaction() as connection:
        count, oldest = connection.execute(
            sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(outbox.c.sent_at.is_(None))
        ).one()
    if not count or oldest is None:
        return 0, 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return int(count), max(0.0, (datetime.now(UTC) - oldest).total_seconds())
