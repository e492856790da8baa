"""Order confirmations by email and SMS after PAID: at most once per order and channel, never fatal.

The notification log is claimed (status 'sending', committed) before a message goes out and marked
'sent' after. A crash between the two leaves 'sending', which is never retried: a customer may miss
a confirmation but never gets two (a run sends a few messages at once, so a crash leaves at most that
many). A channel that raises `NotificationNotSent` (the message surely
did not leave, e.g. connection refused) is retried by later runs up to `max_attempts`; any other error
marks the row 'unknown' and it is not retried. No failure here ever changes the order.

The recipient is decrypted only to hand it to the channel: an error that echoes it (an SMTP refusal
names the address, an SMS API the number) is logged and recorded with it masked.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from hub_pipelines.core.ports import NotificationChannel, NotificationNotSent, SqlDatabase
from hub_pipelines.core.sql import insert_ignoring_duplicates
from hub_pipelines.orders.intake import format_minor
from hub_pipelines.orders.pii import PiiCipher, PiiDecryptionFailed, PiiKeyError, pii_context
from hub_pipelines.orders.tables import PAID, notification_log, orders

logger = logging.getLogger(__name__)

EMAIL = "email"
SMS = "sms"
_RECIPIENT_COLUMN = {EMAIL: orders.c.email_ciphertext, SMS: orders.c.phone_ciphertext}
_RECIPIENT_FIELD = {EMAIL: "email", SMS: "phone"}


@dataclass(frozen=True)
class Confirmation:
    order_id: str
    total: str
    currency: str

    @property
    def subject(self) -> str:
        return f"Your order {self.order_id[:8]} is confirmed"

    @property
    def body(self) -> str:
        return (
            f"Thank you! We received your payment of {self.total} {self.currency} for order {self.order_id}."
        )


def send_confirmations(
    database: SqlDatabase,
    channels: Mapping[str, NotificationChannel],
    cipher: PiiCipher | None,
    *,
    max_attempts: int = 3,
    limit: int = 500,
    concurrency: int = 8,
) -> dict[str, int]:
    """Send what is due on every channel, `concurrency` messages at a time (each claimed, sent and
    marked on its own, so overlapping senders still send each once); returns counts by
    '<channel>_<status>'. Pages of `limit` in paid order until none is left: a run sends the whole
    backlog, since with the ledger quiet no other run comes for what a single page left (a chaos
    run left 658 paid orders unconfirmed for good). Each order is tried once per call; a failed one
    waits for a later run."""
    counts: Counter[str] = Counter()

    def confirm(channel_name: str, channel: NotificationChannel, due: sa.Row) -> str | None:
        order_id, blob, key_id, total_minor, currency, _ = due
        if not _claim(database, order_id, channel_name, max_attempts):
            return None
        status, error = _deliver(channel, channel_name, order_id, blob, key_id, total_minor, currency, cipher)
        _finish(database, order_id, channel_name, status, error)
        return f"{channel_name}_{status}"

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="confirm") as pool:
        for channel_name, channel in channels.items():
            after: tuple[datetime, str] | None = None
            while due := _due(database, channel_name, max_attempts, limit, after):
                outcomes = pool.map(lambda row, n=channel_name, c=channel: confirm(n, c, row), due)
                counts.update(outcome for outcome in outcomes if outcome is not None)
                after = (due[-1].paid_at, due[-1].order_id)
    return dict(counts)


def _due(
    database: SqlDatabase, channel: str, max_attempts: int, limit: int, after: tuple[datetime, str] | None
) -> list[sa.Row]:
    """The next page of paid orders due on `channel`, in (paid_at, order_id) order after `after`."""
    log = notification_log
    past = sa.tuple_(orders.c.paid_at, orders.c.order_id) > sa.tuple_(*after) if after else sa.true()
    with database.transaction() as connection:
        return list(
            connection.execute(
                sa.select(
                    orders.c.order_id,
                    _RECIPIENT_COLUMN[channel],
                    orders.c.pii_key_id,
                    orders.c.total_minor,
                    orders.c.currency,
                    orders.c.paid_at,
                )
                .select_from(
                    orders.outerjoin(
                        log, sa.and_(log.c.order_id == orders.c.order_id, log.c.channel == channel)
                    )
                )
                .where(
                    orders.c.status == PAID,
                    sa.or_(
                        log.c.order_id.is_(None),
                        sa.and_(log.c.status == "failed", log.c.attempts < max_attempts),
                    ),
                )
                .where(past)
                .order_by(orders.c.paid_at, orders.c.order_id)
                .limit(limit)
            ).all()
        )


def _claim(database: SqlDatabase, order_id: str, channel: str, max_attempts: int) -> bool:
    log = notification_log
    with database.transaction() as connection:
        inserted = connection.execute(
            insert_ignoring_duplicates(log, database.dialect)
            .values(order_id=order_id, channel=channel, status="sending", attempts=1)
            .returning(log.c.order_id)
        ).first()
        if inserted is not None:
            return True
        retried = connection.execute(
            sa.update(log)
            .where(
                log.c.order_id == order_id,
                log.c.channel == channel,
                log.c.status == "failed",
                log.c.attempts < max_attempts,
            )
            .values(status="sending", attempts=log.c.attempts + 1, updated_at=sa.func.now())
        ).rowcount
        return bool(retried)


def _deliver(
    channel: NotificationChannel,
    channel_name: str,
    order_id: str,
    blob: bytes | None,
    key_id: str | None,
    total_minor: int,
    currency: str,
    cipher: PiiCipher | None,
) -> tuple[str, str | None]:
    if blob is None or key_id is None or cipher is None:
        return "skipped", "no recipient on the order"
    try:
        recipient = cipher.decrypt(bytes(blob), key_id, pii_context(order_id, _RECIPIENT_FIELD[channel_name]))
    except (PiiKeyError, PiiDecryptionFailed) as unreadable:
        return "skipped", str(unreadable)
    message = Confirmation(order_id, format_minor(int(total_minor), currency), currency)
    try:
        channel.send(recipient, message.subject, message.body)
    except NotificationNotSent as refused:
        error = mask_recipient(str(refused), recipient)
        logger.warning("%s confirmation for order %s not sent: %s", channel_name, order_id, error)
        return "failed", error
    except Exception as unclear:
        error = mask_recipient(f"{type(unclear).__name__}: {unclear}", recipient)
        logger.warning("%s confirmation for order %s may not have arrived: %s", channel_name, order_id, error)
        return "unknown", error
    return "sent", None


def mask_recipient(text: str, recipient: str) -> str:
    """`text` with every occurrence of the recipient (any case) replaced by '<recipient>'."""
    return re.sub(re.escape(recipient), "<recipient>", text, flags=re.IGNORECASE) if recipient else text


def _finish(database: SqlDatabase, order_id: str, channel: str, status: str, error: str | None) -> None:
    with database.transaction() as connection:
        connection.execute(
            sa.update(notification_log)
            .where(notification_log.c.order_id == order_id, notification_log.c.channel == channel)
            .values(status=status, last_error=error, updated_at=sa.func.now())
        )
