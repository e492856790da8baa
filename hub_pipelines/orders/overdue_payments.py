"""Orders that have waited longer than a bound for their payment outcome, and the one page each gets.

Every ledger batch reconciles RESERVED and PAYMENT_UNKNOWN orders with the same idempotency key, and
most settle within minutes. Some never do that way: Stripe answers the key with 400 idempotency_error
each time (its first request carried other parameters), every attempt times out, or the search never
shows the charge behind a replayed 5xx. Such an order holds its stock and the customer may have been
charged, so past the bound a person has to look. Its age counts from its reservation (`created_at`),
which the bookkeeping of later attempts (PAYMENT_UNKNOWN, a hidden outcome) does not move. Parked
orders are left out: they were alerted when parked and are out of reconciliation until cleared.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from hub_pipelines.analytics.alerting import Alert
from hub_pipelines.core.ports import Notifier, SqlDatabase
from hub_pipelines.orders.attempts import order_parked
from hub_pipelines.orders.tables import OPEN_STATUSES, orders

OVERDUE_SHOWN = 20
"""Overdue orders named (oldest first) in a check's metadata."""

PAGES_PER_BATCH = 50
"""Overdue orders one batch pages at most: after a long gateway outage the rest follow batch by
batch, so the pager's rate limit is not spent on one batch's flood."""

# A claim that waited on a row re-reads it as committed (paged, or settled, by another) instead of
# failing to serialize. Only the page column moves, not `updated_at`: reconciliation's view is unchanged.
_CLAIM_ISOLATION = "READ COMMITTED"


def outcome_overdue_dedup_key(order_id: str) -> str:
    """The one incident of an order whose payment outcome is overdue, whichever batch pages it."""
    return f"payment-outcome-overdue/{order_id}"


@dataclass(frozen=True)
class OverduePayment:
    order_id: str
    status: str
    age_s: float
    failure_reason: str | None

    def describe(self) -> str:
        reason = self.failure_reason or "no gateway answer recorded (RESERVED: not charged yet, or deferred)"
        return f"order {self.order_id} ({self.status} for {self.age_s / 60:.0f} min): {reason}"


@dataclass(frozen=True)
class OverduePayments:
    """How many orders are past the bound, and the oldest of them."""

    bound_s: float
    count: int
    oldest: list[OverduePayment]

    @property
    def oldest_age_s(self) -> float:
        return self.oldest[0].age_s if self.oldest else 0.0


def overdue_payments(database: SqlDatabase, bound_s: float, shown: int = OVERDUE_SHOWN) -> OverduePayments:
    """Orders open (RESERVED or PAYMENT_UNKNOWN, not parked) for longer than `bound_s`, oldest first."""
    now = datetime.now(UTC)
    overdue = _overdue(now - timedelta(seconds=bound_s))
    with database.transaction("REPEATABLE READ") as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(orders).where(overdue)).scalar_one()
        rows = connection.execute(
            sa.select(orders.c.order_id, orders.c.status, orders.c.created_at, orders.c.failure_reason)
            .where(overdue)
            .order_by(orders.c.created_at, orders.c.order_id)
            .limit(shown)
        ).all()
    return OverduePayments(bound_s, int(count), [_overdue_payment(row, now) for row in rows])


def page_overdue_payments(
    database: SqlDatabase, pager: Notifier, bound_s: float, limit: int = PAGES_PER_BATCH
) -> list[OverduePayment]:
    """Page each overdue order not paged before (at most `limit`, oldest first); returns those paged.

    An order is claimed by setting its `outcome_overdue_paged_at` in one UPDATE that holds only while
    the column is empty and the order still open, so of all batches and lanes exactly one pages it, and
    an order settled before the claim is never paged. A page the pager did not deliver (its rate limit
    held it back, PagerDuty unreachable) gives the claim back: a later batch pages the order again. A
    crash between the claim and the send loses that page; the check still fails after every batch."""
    now = datetime.now(UTC)
    claimable = sa.and_(
        _overdue(now - timedelta(seconds=bound_s)), orders.c.outcome_overdue_paged_at.is_(None)
    )
    oldest = (
        sa.select(orders.c.order_id)
        .where(claimable)
        .order_by(orders.c.created_at, orders.c.order_id)
        .limit(limit)
        .correlate(None)
    )
    with database.transaction(_CLAIM_ISOLATION) as connection:
        claimed = connection.execute(
            sa.update(orders)
            .where(orders.c.order_id.in_(oldest.scalar_subquery()), claimable)
            .values(outcome_overdue_paged_at=sa.func.now())
            .returning(orders.c.order_id, orders.c.status, orders.c.created_at, orders.c.failure_reason)
        ).all()
    paged = []
    for overdue in sorted((_overdue_payment(row, now) for row in claimed), key=lambda o: -o.age_s):
        if pager.send([_page(overdue, bound_s)]):
            paged.append(overdue)
        else:
            _give_back(database, overdue.order_id)
    return paged


def _overdue(cutoff: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        orders.c.status.in_(OPEN_STATUSES),
        orders.c.created_at <= cutoff,
        ~order_parked(orders.c.order_id),
    )


def _overdue_payment(row: sa.Row, now: datetime) -> OverduePayment:
    order_id, status, created_at, failure_reason = row
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    return OverduePayment(order_id, status, max(0.0, (now - created_at).total_seconds()), failure_reason)


def _page(overdue: OverduePayment, bound_s: float) -> Alert:
    return Alert(
        action="trigger",
        dedup_key=outcome_overdue_dedup_key(overdue.order_id),
        metric="orders/payment_outcome_overdue",
        summary=(
            f"{overdue.describe()}; no payment outcome within {bound_s / 60:.0f} min. Its stock stays "
            "reserved and the customer may have been charged: look the PaymentIntent up at Stripe by "
            "metadata.order_id (docs/operations.md, 'Payment outcome overdue')"
        ),
        group="orders",
    )


def _give_back(database: SqlDatabase, order_id: str) -> None:
    with database.transaction(_CLAIM_ISOLATION) as connection:
        connection.execute(
            sa.update(orders).where(orders.c.order_id == order_id).values(outcome_overdue_paged_at=None)
        )
