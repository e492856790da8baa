"""Daily rollups rebuilt from raw events and swapped in whole, and the checks that compare them with raw.

A day is rebuilt into staging tables of the same structure, then `REPLACE PARTITION` moves the staged
partition into the rollup table in one atomic step: readers see the old day or the new day, never a
mix, and rebuilding a day twice gives the same rows (a UI backfill over a range is safe to repeat).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.core.ports import Warehouse

ALL_TYPES = "*"


@dataclass(frozen=True)
class DayTotals:
    day: date
    raw_events: int
    rollup_events: int
    rollup_all_types_events: int
    users: int
    revenue: float

    @property
    def matches(self) -> bool:
        return self.raw_events == self.rollup_events == self.rollup_all_types_events


def _daily_select(tables: AnalyticsTables) -> str:
    per_type = (
        "SELECT toDate(ts) AS day, type AS event_type, count() AS events, uniqExact(user_id) AS users, "
        "uniqExact(session_id) AS sessions, toDecimal128(sum(ifNull(amount, 0)), 2) AS revenue, "
        "countIf(type = 'error') AS errors, now64(3) AS rebuilt_at "
        f"FROM {tables.raw_events} FINAL WHERE toDate(ts) = {{day:Date}} GROUP BY day, type"
    )
    # Aliases differ from column names: ClickHouse lets an alias shadow the column in the whole query.
    all_types = per_type.replace("type AS event_type", f"'{ALL_TYPES}' AS event_type", 1).replace(
        "GROUP BY day, type", "GROUP BY day"
    )
    return f"{per_type} UNION ALL {all_types}"


def _product_select(tables: AnalyticsTables) -> str:
    return (
        "SELECT toDate(ts) AS day, assumeNotNull(product_id) AS product, "
        "countIf(type = 'add_to_cart') AS add_to_cart, countIf(type = 'purchase') AS purchases, "
        "toDecimal128(sumIf(ifNull(amount, 0), type = 'purchase'), 2) AS revenue, "
        "uniqExactIf(user_id, type = 'purchase') AS buyers, now64(3) AS rebuilt_at "
        f"FROM {tables.raw_events} FINAL WHERE toDate(ts) = {{day:Date}} AND product_id IS NOT NULL "
        "GROUP BY day, product"
    )


def _swap_in(warehouse: Warehouse, target: str, select: str, day: date) -> None:
    staging = f"{target}_staging_{uuid.uuid4().hex[:12]}"
    warehouse.execute(f"CREATE TABLE {staging} AS {target}")
    try:
        warehouse.execute(f"INSERT INTO {staging} {select}", {"day": day})
        staged = warehouse.query_df(f"SELECT count() AS n FROM {staging}")
        if int(staged["n"].iloc[0]):
            warehouse.execute(f"ALTER TABLE {target} REPLACE PARTITION '{day.isoformat()}' FROM {staging}")
        else:
            # A day without events is an empty day: newer ClickHouse refuses to REPLACE from an empty
            # source, and DROP PARTITION is just as atomic on every version.
            warehouse.execute(f"ALTER TABLE {target} DROP PARTITION '{day.isoformat()}'")
    finally:
        warehouse.execute(f"DROP TABLE IF EXISTS {staging}")


def rebuild_day(warehouse: Warehouse, tables: AnalyticsTables, day: date) -> DayTotals:
    """Recompute one day's rollups from raw events and swap them in atomically; returns the totals."""
    tables.ensure(warehouse)
    _swap_in(warehouse, tables.daily_rollups, _daily_select(tables), day)
    _swap_in(warehouse, tables.daily_product_rollups, _product_select(tables), day)
    return day_totals(warehouse, tables, day)


def day_totals(warehouse: Warehouse, tables: AnalyticsTables, day: date) -> DayTotals:
    found = warehouse.query_df(
        f"SELECT (SELECT count() FROM {tables.raw_events} FINAL WHERE toDate(ts) = {{day:Date}}) AS raw, "
        f"sumIf(events, type != '{ALL_TYPES}') AS per_type, sumIf(events, type = '{ALL_TYPES}') AS all_types, "
        f"sumIf(users, type = '{ALL_TYPES}') AS users, toFloat64(sumIf(revenue, type = '{ALL_TYPES}')) AS revenue "
        f"FROM {tables.daily_rollups} WHERE day = {{day:Date}}",
        {"day": day},
    )
    row = found.iloc[0]
    return DayTotals(
        day,
        int(row["raw"]),
        int(row["per_type"]),
        int(row["all_types"]),
        int(row["users"]),
        float(row["revenue"]),
    )
