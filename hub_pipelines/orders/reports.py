"""Derived views of the ledger: revenue per day and currency, and inventory snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa

from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.orders.tables import (
    PAID,
    PAYMENT_UNKNOWN,
    RESERVED,
    daily_revenue,
    inventory_snapshots,
    order_items,
    orders,
    products,
)


@dataclass(frozen=True)
class DayRevenue:
    day: date
    currency: str
    orders: int
    items: int
    revenue_minor: int


def rebuild_daily_revenue(database: SqlDatabase, day: date) -> list[DayRevenue]:
    """Recompute one UTC day of paid revenue and replace that day's rows (safe to rerun, backfillable)."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    end = start + timedelta(days=1)
    with database.transaction() as connection:
        rows = connection.execute(
            sa.select(
                orders.c.currency,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(orders.c.item_count), 0),
                sa.func.coalesce(sa.func.sum(orders.c.total_minor), 0),
            )
            .where(orders.c.status == PAID, orders.c.paid_at >= start, orders.c.paid_at < end)
            .group_by(orders.c.currency)
            .order_by(orders.c.currency)
        ).all()
        result = [
            DayRevenue(day, currency, int(n), int(items), int(value)) for currency, n, items, value in rows
        ]
        connection.execute(sa.delete(daily_revenue).where(daily_revenue.c.day == day))
        if result:
            connection.execute(
                sa.insert(daily_revenue),
                [
                    {
                        "day": r.day,
                        "currency": r.currency,
                        "orders": r.orders,
                        "items": r.items,
                        "revenue_minor": r.revenue_minor,
                    }
                    for r in result
                ],
            )
    return result


@dataclass(frozen=True)
class StockLevel:
    product_id: str
    stock: int
    reserved_unpaid: int
    sold: int


def take_inventory_snapshot(database: SqlDatabase) -> list[StockLevel]:
    """Stock on hand per product, with units held by unpaid orders and units sold, recorded with the time."""
    taken_at = datetime.now(UTC)
    held = sa.case((orders.c.status.in_([RESERVED, PAYMENT_UNKNOWN]), order_items.c.quantity), else_=0)
    sold = sa.case((orders.c.status == PAID, order_items.c.quantity), else_=0)
    movement = (
        sa.select(
            order_items.c.product_id,
            sa.func.sum(held).label("held"),
            sa.func.sum(sold).label("sold"),
        )
        .join(orders, orders.c.order_id == order_items.c.order_id)
        .group_by(order_items.c.product_id)
        .subquery()
    )
    with database.transaction("REPEATABLE READ") as connection:
        rows = connection.execute(
            sa.select(
                products.c.product_id,
                products.c.stock,
                sa.func.coalesce(movement.c.held, 0),
                sa.func.coalesce(movement.c.sold, 0),
            )
            .select_from(products.outerjoin(movement, movement.c.product_id == products.c.product_id))
            .order_by(products.c.product_id)
        ).all()
    levels = [StockLevel(row[0], int(row[1]), int(row[2]), int(row[3])) for row in rows]
    if levels:
        with database.transaction() as connection:
            connection.execute(
                sa.insert(inventory_snapshots),
                [
                    {
                        "taken_at": taken_at,
                        "product_id": level.product_id,
                        "stock": level.stock,
                        "reserved_unpaid": level.reserved_unpaid,
                        "sold": level.sold,
                    }
                    for level in levels
                ],
            )
    return levels
