"""What must always hold in the order ledger, as queries an asset check (or a test) can run."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.orders.ledger import RECEIVABLE, unbalanced_postings
from hub_pipelines.orders.outbox import outbox_backlog
from hub_pipelines.orders.reservation import ACCEPTED, DUPLICATE
from hub_pipelines.orders.tables import (
    FINAL_STATUSES,
    PAID,
    ledger_entries,
    order_intake,
    orders,
    payments,
    products,
)


@dataclass(frozen=True)
class Invariants:
    negative_stock_products: list[str]
    paid_without_one_charge: list[str]
    unbalanced_postings: list[str]
    final_orders_with_open_receivable: list[str]
    outbox_unsent: int
    outbox_oldest_unsent_s: float
    duplicates_rejected: int
    duplicates_sent: int

    def holds(self, outbox_bound_s: float) -> bool:
        return (
            not self.negative_stock_products
            and not self.paid_without_one_charge
            and not self.unbalanced_postings
            and not self.final_orders_with_open_receivable
            and self.outbox_oldest_unsent_s <= outbox_bound_s
            and self.duplicates_rejected == self.duplicates_sent
        )


def check_invariants(database: SqlDatabase) -> Invariants:
    with database.transaction("REPEATABLE READ") as connection:
        negative = connection.execute(sa.select(products.c.product_id).where(products.c.stock < 0)).scalars()
        succeeded = (
            sa.select(payments.c.order_id, sa.func.count().label("charges"))
            .where(payments.c.status == "succeeded")
            .group_by(payments.c.order_id)
            .subquery()
        )
        paid_wrong = connection.execute(
            sa.select(orders.c.order_id)
            .select_from(orders.outerjoin(succeeded, succeeded.c.order_id == orders.c.order_id))
            .where(
                sa.or_(
                    sa.and_(orders.c.status == PAID, sa.func.coalesce(succeeded.c.charges, 0) != 1),
                    sa.and_(orders.c.status != PAID, sa.func.coalesce(succeeded.c.charges, 0) != 0),
                )
            )
        ).scalars()
        receivable = (
            sa.select(
                ledger_entries.c.order_id,
                sa.func.sum(ledger_entries.c.debit_minor - ledger_entries.c.credit_minor).label("open"),
            )
            .where(ledger_entries.c.account == RECEIVABLE)
            .group_by(ledger_entries.c.order_id)
            .subquery()
        )
        open_receivable = connection.execute(
            sa.select(orders.c.order_id)
            .join(receivable, receivable.c.order_id == orders.c.order_id)
            .where(orders.c.status.in_(sorted(FINAL_STATUSES)), receivable.c.open != 0)
        ).scalars()
        booked = connection.execute(
            sa.select(
                sa.func.count().filter(order_intake.c.outcome == DUPLICATE),
                sa.func.count().filter(order_intake.c.outcome.in_([ACCEPTED, DUPLICATE])),
                sa.func.count(sa.distinct(order_intake.c.order_id)).filter(
                    order_intake.c.outcome.in_([ACCEPTED, DUPLICATE])
                ),
            )
        ).one()
        result = {
            "negative_stock_products": list(negative),
            "paid_without_one_charge": list(paid_wrong),
            "unbalanced_postings": unbalanced_postings(connection),
            "final_orders_with_open_receivable": list(open_receivable),
        }
    unsent, oldest = outbox_backlog(database)
    duplicates_rejected, booked_total, distinct_keys = (int(value or 0) for value in booked)
    return Invariants(
        **result,
        outbox_unsent=unsent,
        outbox_oldest_unsent_s=oldest,
        duplicates_rejected=duplicates_rejected,
        duplicates_sent=booked_total - distinct_keys,
    )
