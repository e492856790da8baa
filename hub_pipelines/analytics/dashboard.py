"""The dashboard's named queries, served from the rollups and cached until the next batch lands.

Invalidation is one counter: every cached answer's key carries the current generation, and landing a
batch bumps it (`invalidate`), so every older answer stops being found at once and expires on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from hub_pipelines.analytics.schema import DISTINCT_MERGE, AnalyticsTables
from hub_pipelines.core.ports import Cache, Warehouse

GENERATION_KEY = "dash:generation"
CACHE_TTL_SECONDS = 300.0

_WINDOW = "bucket >= {start:DateTime('UTC')} AND bucket < {end:DateTime('UTC')}"
# A day is whole in the window when every one of its hour buckets is: the days' states come from the day
# rollup (one state each instead of 24) and only the hours of partial days from the hour rollup.
_WHOLE_DAY = "bucket >= {start:DateTime('UTC')} AND bucket + INTERVAL 23 HOUR < {end:DateTime('UTC')}"
_HOURS_OF_PARTIAL_DAYS = (
    f"{_WINDOW} AND NOT (toStartOfDay(bucket) >= {{start:DateTime('UTC')}} "
    "AND toStartOfDay(bucket) + INTERVAL 23 HOUR < {end:DateTime('UTC')})"
)


def _days_and_hours(t: AnalyticsTables, columns: str, condition: str = "") -> str:
    """The window's rollup rows: whole days from the day rollup, the partial days' hours from the hour one."""
    extra = f" AND {condition}" if condition else ""
    return (
        f"(SELECT {columns} FROM {t.rollup_day} WHERE {_WHOLE_DAY}{extra} "
        f"UNION ALL SELECT {columns} FROM {t.rollup_hour} WHERE {_HOURS_OF_PARTIAL_DAYS}{extra})"
    )


def _active_users(t: AnalyticsTables) -> str:
    return f"SELECT {DISTINCT_MERGE}(users) AS active_users FROM {_days_and_hours(t, 'users')}"


def _funnel(t: AnalyticsTables) -> str:
    steps = "type IN ('page_view', 'add_to_cart', 'purchase')"
    return (
        f"SELECT type AS step, {DISTINCT_MERGE}(users) AS users, sum(events) AS events "
        f"FROM {_days_and_hours(t, 'type, users, events', steps)} GROUP BY type "
        "ORDER BY indexOf(['page_view', 'add_to_cart', 'purchase'], type)"
    )


def _revenue_per_hour(t: AnalyticsTables) -> str:
    return (
        f"SELECT bucket AS hour, toFloat64(sum(revenue)) AS revenue FROM {t.rollup_hour} "
        f"WHERE {_WINDOW} GROUP BY bucket ORDER BY bucket"
    )


def _top_products(t: AnalyticsTables) -> str:
    return (
        "SELECT product_id, sum(purchases) AS purchases, toFloat64(sum(revenue)) AS revenue, "
        f"sum(add_to_cart) AS add_to_cart FROM {t.daily_product_rollups} "
        "WHERE day >= toDate({start:DateTime('UTC')}) AND day < toDate({end:DateTime('UTC')}) "
        "GROUP BY product_id ORDER BY revenue DESC, product_id LIMIT 10"
    )


def _error_rate(t: AnalyticsTables) -> str:
    return (
        "SELECT bucket AS hour, sum(errors) AS error_count, sum(events) AS event_count, "
        "if(event_count = 0, 0, error_count / event_count) AS error_rate "
        f"FROM {t.rollup_hour} WHERE {_WINDOW} GROUP BY bucket ORDER BY bucket"
    )


NAMED_QUERIES: dict[str, Callable[[AnalyticsTables], str]] = {
    "active_users": _active_users,
    "funnel": _funnel,
    "revenue_per_hour": _revenue_per_hour,
    "top_products": _top_products,
    "error_rate": _error_rate,
}


class UnknownDashboardQuery(KeyError):
    """No named dashboard query has this name."""


def invalidate(cache: Cache) -> int:
    """Make every cached dashboard answer stale (called when a batch lands); returns the new generation."""
    return cache.incr(GENERATION_KEY)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass
class DashboardQueries:
    warehouse: Warehouse
    cache: Cache
    tables: AnalyticsTables

    def run(self, name: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The rows of a named query for [start, end), from the cache when this generation has them."""
        if name not in NAMED_QUERIES:
            raise UnknownDashboardQuery(f"dashboard query {name!r} is not one of {sorted(NAMED_QUERIES)}")
        generation = int(self.cache.get(GENERATION_KEY) or 0)
        key = f"dash:{generation}:{name}:{start.isoformat()}:{end.isoformat()}"
        cached = self.cache.get(key)
        if cached is not None:
            rows: list[dict[str, Any]] = msgspec.json.decode(cached)
            return rows
        frame = self.warehouse.query_df(
            NAMED_QUERIES[name](self.tables),
            {"start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)},
        )
        rows = [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
        self.cache.set(key, msgspec.json.encode(rows), ttl=CACHE_TTL_SECONDS)
        return rows
