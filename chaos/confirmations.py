"""The customers' confirmations, checked against what the SMTP and SMS servers received.

Each PAID order gets at most one email and one SMS (a run killed between claiming and marking one sent
leaves it 'sending', never sent twice); after the drain, every PAID order's confirmation was sent
unless its log names why not, and no other order got one.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

import sqlalchemy as sa

from hub_pipelines.orders.notifications import EMAIL, SMS
from hub_pipelines.orders.tables import PAID, notification_log, orders

if TYPE_CHECKING:
    from chaos.checker import Findings
    from chaos.services import PaidApis
    from hub_pipelines.resources.sql_database import PostgresDatabase

ORDER_IN_BODY = re.compile(r"for order (\S+?)\.(?:\s|$)")


def body_text(payload: object) -> str:
    return payload.decode(errors="replace") if isinstance(payload, bytes) else ""


def received(apis: PaidApis) -> dict[str, Counter[str]]:
    """Confirmations per channel and order id, as the servers received them."""
    emails = [body_text(message.get_payload(decode=True)) for message in apis.mailbox.messages]
    texts = [message.get("Body", "") for message in apis.sms.messages]
    return {
        channel: Counter(match.group(1) for body in bodies if (match := ORDER_IN_BODY.search(body)))
        for channel, bodies in ((EMAIL, emails), (SMS, texts))
    }


def confirmations_due(connection: sa.Connection) -> int:
    """Confirmation records PAID orders still lack, over both channels (the drain waits for them)."""
    log = notification_log
    due = 0
    for channel in (EMAIL, SMS):
        joined = orders.outerjoin(log, sa.and_(log.c.order_id == orders.c.order_id, log.c.channel == channel))
        due += connection.execute(
            sa.select(sa.func.count())
            .select_from(joined)
            .where(orders.c.status == PAID, log.c.order_id.is_(None))
        ).scalar_one()
    return due


def check_confirmations(database: PostgresDatabase, apis: PaidApis, found: Findings) -> None:
    with database.transaction() as connection:
        statuses = dict(connection.execute(sa.select(orders.c.order_id, orders.c.status)).tuples().all())
        records = {
            (row.order_id, row.channel): row
            for row in connection.execute(
                sa.select(notification_log.c.order_id, notification_log.c.channel, notification_log.c.status,
                          notification_log.c.last_error)
            )
        }  # fmt: skip
    for channel, per_order in received(apis).items():
        for order_id, count in per_order.items():
            if count > 1:
                found.add(
                    "confirmation sent twice", f"{channel} for order {order_id}: {count}", order_id=order_id
                )
            if statuses.get(order_id) != PAID:
                found.add(
                    "confirmation for an order not PAID",
                    f"{channel} for order {order_id} ({statuses.get(order_id, 'missing')})",
                    order_id=order_id,
                )
        for order_id, status in statuses.items():
            if status != PAID:
                continue
            record = records.get((order_id, channel))
            found.outcomes[f"confirmations.{channel}"][record.status if record else "missing"] += 1
            if record is None:
                found.add("PAID order never confirmed", f"{channel} for order {order_id}", order_id=order_id)
            elif record.status == "sent" and not per_order.get(order_id):
                found.add(
                    "confirmation recorded sent but never received",
                    f"{channel} for order {order_id}",
                    order_id=order_id,
                )
