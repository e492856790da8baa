"""The dashboard's named queries, served from the rollups and cached until the next batch lands.

Invalidation is one counter: every cached answer's key carries the current generation, and landing a
batch bumps it (`invalidate`), so every older answer stops being found at once and expires on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from hub_pipelines.analytics.schema import DISTINCT_MERGE, AnalyticsTables
from hub_pipelines.core.ports import Cache, Warehouse

GENERATION_KEY = "dash:generation"
CACHE_TTL_SECONDS = 300.0

# The rollups hold a few hundred rows per window: one thread reads them with about 1 ms less CPU than two,
# as fast on an idle machine (a 7-day window of several parts about 1 ms slower) and sooner on a busy one.
_SETTINGS = " SETTINGS max_threads = 1"
_WINDOW = "bucket >= {start:DateTime('UTC')} AND bucket < {end:DateTime('UTC')}"
# Whole days of the window come from the day rollup (one state each instead of 24), only the hours of the
# partial days at its ends from the hour rollup; `window_parameters` computes where the whole days lie.
_WHOLE_DAYS = "bucket >= {whole_days_start:DateTime('UTC')} AND bucket < {whole_days_end:DateTime('UTC')}"
_HOURS_OF_PARTIAL_DAYS = (
    f"{_WINDOW} AND (bucket < {{whole_days_start:DateTime('UTC')}} "
    "OR bucket >= {whole_days_end:DateTime('UTC')})"
)
_DAY = timedelta(days=1)
# The parameters of one window: `start`, `end` and the run of whole days in it (`whole_days_start`, `_end`).
Window = dict[str, datetime]
# Arrow carries a DateTime as bare epoch seconds and a DateTime64 as a UTC timestamp: rows name their hour.
_HOUR = "toDateTime64(bucket, 0, 'UTC')"


def _utc(moment: datetime) -> datetime:
    """A naive UTC datetime, as the `DateTime('UTC')` parameters take it (a naive input already is UTC)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _first_midnight_from(moment: datetime) -> datetime:
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight if midnight == moment else midnight + _DAY


def window_parameters(start: datetime, end: datetime) -> Window:
    """The query parameters of the window [start, end): its ends and the run of days wholly inside it.

    A day is whole when all 24 of its hour buckets are in the window: it starts at or after `start`
    and its last hour starts before `end`.
    """
    start, end = _utc(start), _utc(end)
    whole_days_start = _first_midnight_from(start)
    whole_days_end = max(_first_midnight_from(end - timedelta(hours=23)), whole_days_start)
    return {
        "start": start,
        "end": end,
        "whole_days_start": whole_days_start,
        "whole_days_end": whole_days_end,
    }


def _days_and_hours(t: AnalyticsTables, window: Window, columns: str, condition: str = "") -> str:
    """The window's rollup rows: whole days from the day rollup, the partial days' hours from the hour one.

    A side with nothing to read is left out of the query: a UNION costs more to plan than its small read
    (a 24-hour window that is not midnight to midnight never holds a whole day).
    """
    extra = f" AND {condition}" if condition else ""
    selects = []
    if window["whole_days_start"] < window["whole_days_end"]:
        selects.append(f"SELECT {columns} FROM {t.rollup_day} WHERE {_WHOLE_DAYS}{extra}")
    partial_hours = window["start"] < window["whole_days_start"] or window["whole_days_end"] < window["end"]
    if partial_hours or not selects:
        selects.append(f"SELECT {columns} FROM {t.rollup_hour} WHERE {_HOURS_OF_PARTIAL_DAYS}{extra}")
    return f"({' UNION ALL '.join(selects)})"


def _active_users(t: AnalyticsTables, window: Window) -> str:
    users = _days_and_hours(t, window, "users")
    return f"SELECT {DISTINCT_MERGE}(users) AS active_users FROM {users}{_SETTINGS}"


_FUNNEL_STEPS = ("page_view", "add_to_cart", "purchase")


def _funnel(t: AnalyticsTables, window: Window) -> str:
    steps = "type IN ('page_view', 'add_to_cart', 'purchase')"
    return (
        f"SELECT type AS step, {DISTINCT_MERGE}(users) AS users, sum(events) AS events "
        f"FROM {_days_and_hours(t, window, 'type, users, events', steps)} GROUP BY type "
        f"ORDER BY indexOf(['page_view', 'add_to_cart', 'purchase'], type){_SETTINGS}"
    )


def _revenue_per_hour(t: AnalyticsTables, _: Window) -> str:
    return (
        f"SELECT {_HOUR} AS hour, toFloat64(sum(revenue)) AS revenue FROM {t.rollup_hour} "
        f"WHERE {_WINDOW} GROUP BY bucket ORDER BY bucket{_SETTINGS}"
    )


def _top_products(t: AnalyticsTables, _: Window) -> str:
    return (
        "SELECT product_id, sum(purchases) AS purchases, toFloat64(sum(revenue)) AS revenue, "
        f"sum(add_to_cart) AS add_to_cart FROM {t.daily_product_rollups} "
        "WHERE day >= toDate({start:DateTime('UTC')}) AND day < toDate({end:DateTime('UTC')}) "
        f"GROUP BY product_id ORDER BY revenue DESC, product_id LIMIT 10{_SETTINGS}"
    )


def _error_rate(t: AnalyticsTables, _: Window) -> str:
    return (
        f"SELECT {_HOUR} AS hour, sum(errors) AS error_count, sum(events) AS event_count, "
        "if(event_count = 0, 0, error_count / event_count) AS error_rate "
        f"FROM {t.rollup_hour} WHERE {_WINDOW} GROUP BY bucket ORDER BY bucket{_SETTINGS}"
    )


NAMED_QUERIES: dict[str, Callable[[AnalyticsTables, Window], str]] = {
    "active_users": _active_users,
    "funnel": _funnel,
    "revenue_per_hour": _revenue_per_hour,
    "top_products": _top_products,
    "error_rate": _error_rate,
}


class UnknownDashboardQuery(KeyError):
    """No named dashboard query has this name."""


def _named_query(name: str) -> Callable[[AnalyticsTables, Window], str]:
    if name not in NAMED_QUERIES:
        raise UnknownDashboardQuery(f"dashboard query {name!r} is not one of {sorted(NAMED_QUERIES)}")
    return NAMED_QUERIES[name]


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
        _named_query(name)  # an unknown name fails before the cache is asked
        generation = int(self.cache.get(GENERATION_KEY) or 0)
        key = f"dash:{generation}:{name}:{start.isoformat()}:{end.isoformat()}"
        cached = self.cache.get(key)
        if cached is not None:
            rows: list[dict[str, Any]] = msgspec.json.decode(cached)
            return rows
        rows = self.fetch(name, start, end)
        self.cache.set(key, msgspec.json.encode(rows), ttl=CACHE_TTL_SECONDS)
        return rows

    def fetch(self, name: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The rows of a named query for [start, end), straight from the warehouse (no cache)."""
        # A dashboard answer is a few hundred rows at most: Arrow to Python objects directly costs a
        # fraction of a millisecond, a pandas frame in between about one.
        window = window_parameters(start, end)
        table = self.warehouse.query_arrow(_named_query(name)(self.tables, window), window)
        return [{k: _plain(v) for k, v in row.items()} for row in table.to_pylist()]


@dataclass(frozen=True)
class DashboardSnapshot:
    """The dashboard over the last 24 hours: numbers to plot per materialization, and tables to read."""

    numbers: dict[str, float]
    tables: dict[str, str]


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(row[column]) for column in columns) + " |" for row in rows]
    return "\n".join(lines) if rows else "no rows in the window"


def dashboard_snapshot(queries: DashboardQueries, now: datetime) -> DashboardSnapshot:
    """Every named query over the 24 hours that end with the current hour, through the cache.

    Top products come from the daily product rollup, so they cover the current day (midnight to midnight).
    """
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - _DAY
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    answers = {name: queries.run(name, start, end) for name in NAMED_QUERIES if name != "top_products"}
    answers["top_products"] = queries.run("top_products", today, today + _DAY)
    [active] = answers["active_users"] or [{"active_users": 0}]
    users_per_step = {row["step"]: row["users"] for row in answers["funnel"]}
    viewers = users_per_step.get("page_view", 0)
    revenue = answers["revenue_per_hour"]
    errors = answers["error_rate"]
    top = answers["top_products"]
    numbers: dict[str, float] = {
        "dashboard.active_users_24h": active["active_users"],
        **{f"dashboard.funnel.{step}_users": users_per_step.get(step, 0) for step in _FUNNEL_STEPS},
        "dashboard.funnel.conversion_pct": round(100 * users_per_step.get("purchase", 0) / viewers, 2)
        if viewers
        else 0.0,
        "dashboard.revenue_24h": round(sum(row["revenue"] for row in revenue), 2),
        "dashboard.revenue_last_hour": round(revenue[-1]["revenue"], 2) if revenue else 0.0,
        "dashboard.error_rate_last_hour": round(errors[-1]["error_rate"], 4) if errors else 0.0,
        "dashboard.top_product_revenue_today": round(top[0]["revenue"], 2) if top else 0.0,
    }
    tables = {
        "dashboard.funnel": _markdown(answers["funnel"], ["step", "users", "events"]),
        "dashboard.revenue_per_hour": _markdown(revenue, ["hour", "revenue"]),
        "dashboard.top_products_today": _markdown(top, ["product_id", "purchases", "revenue", "add_to_cart"]),
        "dashboard.error_rate": _markdown(errors, ["hour", "error_count", "event_count", "error_rate"]),
    }
    return DashboardSnapshot(numbers, tables)
