"""The dashboard's window arithmetic and the named queries' answers, compared with raw events in chdb."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hub_pipelines.analytics.dashboard import (
    DashboardQueries,
    UnknownDashboardQuery,
    window_parameters,
)
from hub_pipelines.analytics.rollups import rebuild_day
from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.resources.cache import InProcessCache
from tests.analytics.test_rollups_counters import HOUR, land_demo_events

JAN_1 = datetime(2026, 1, 1)


@pytest.mark.parametrize(
    ("start", "end", "whole_days"),
    [
        (JAN_1 + timedelta(hours=12), JAN_1 + timedelta(days=2, hours=13), (JAN_1 + timedelta(days=1), 1)),
        (JAN_1, JAN_1 + timedelta(days=1), (JAN_1, 1)),
        (JAN_1, JAN_1 + timedelta(hours=23), (JAN_1, 0)),
        (JAN_1 + timedelta(hours=2), JAN_1 + timedelta(hours=5), (JAN_1 + timedelta(days=1), 0)),
        (JAN_1 - timedelta(days=7), JAN_1, (JAN_1 - timedelta(days=7), 7)),
    ],
    ids=["partial-ends", "one-exact-day", "day-missing-its-last-hour", "inside-one-day", "seven-exact-days"],
)
def test_window_counts_a_day_whole_only_when_all_24_hours_are_inside(start, end, whole_days):
    first_whole_day, days = whole_days

    found = window_parameters(start, end)

    assert (found["start"], found["end"]) == (start, end)
    assert found["whole_days_start"] == first_whole_day
    assert found["whole_days_end"] - found["whole_days_start"] == timedelta(days=days)


def test_window_given_in_another_time_zone_means_the_same_utc_hours():
    berlin = timezone(timedelta(hours=1))
    start, end = JAN_1 + timedelta(hours=12), JAN_1 + timedelta(days=2, hours=13)

    in_berlin = window_parameters(
        start.replace(tzinfo=UTC).astimezone(berlin), end.replace(tzinfo=UTC).astimezone(berlin)
    )

    assert in_berlin == window_parameters(start, end)


def test_unknown_query_name_is_refused_naming_the_known_ones(warehouse, tables):
    dashboard = DashboardQueries(warehouse, InProcessCache(), tables)

    with pytest.raises(UnknownDashboardQuery, match=r"'bounce_rate' is not one of .*'funnel'"):
        dashboard.run("bounce_rate", HOUR, HOUR + timedelta(hours=1))


def test_revenue_errors_and_top_products_per_window_match_raw_events(tmp_path, warehouse, tables):
    first_hour = HOUR - timedelta(hours=30)
    for n, start in enumerate(first_hour + timedelta(hours=h) for h in (0, 5, 29)):
        land_demo_events(tmp_path / str(n), warehouse, tables, 400, start, seed=40 + n)
    for day in {(first_hour + timedelta(hours=h)).date() for h in (0, 5, 29)}:
        rebuild_day(warehouse, tables, day)
    start, end = first_hour + timedelta(hours=1), HOUR + timedelta(hours=1)
    dashboard = DashboardQueries(warehouse, InProcessCache(), tables)
    hourly = warehouse.query_arrow(
        "SELECT toDateTime64(toStartOfHour(ts), 0, 'UTC') AS hour, "
        "toFloat64(sum(ifNull(amount, 0))) AS revenue, countIf(type = 'error') AS errors, count() AS events "
        f"FROM {tables.raw_events} FINAL "
        "WHERE ts >= {start:DateTime('UTC')} AND ts < {end:DateTime('UTC')} "
        "GROUP BY hour ORDER BY hour",
        {"start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)},
    ).to_pylist()
    products = warehouse.query_arrow(
        "SELECT assumeNotNull(product_id) AS product, countIf(type = 'purchase') AS purchases, "
        "toFloat64(sum(ifNull(amount, 0))) AS revenue, countIf(type = 'add_to_cart') AS add_to_cart "
        f"FROM {tables.raw_events} FINAL WHERE toDate(ts) >= toDate({{start:DateTime('UTC')}}) "
        "AND toDate(ts) < toDate({end:DateTime('UTC')}) AND product_id IS NOT NULL "
        "GROUP BY product ORDER BY revenue DESC, product LIMIT 10",
        {"start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)},
    ).to_pylist()

    revenue = dashboard.run("revenue_per_hour", start, end)
    errors = dashboard.run("error_rate", start, end)
    top = dashboard.run("top_products", start, end)

    assert len(hourly) == 2 and products
    assert [(r["hour"], round(r["revenue"], 2)) for r in revenue] == [
        (h["hour"].isoformat(), round(h["revenue"], 2)) for h in hourly
    ]
    assert [(r["hour"], r["error_count"], r["event_count"]) for r in errors] == [
        (h["hour"].isoformat(), h["errors"], h["events"]) for h in hourly
    ]
    assert all(r["error_rate"] == r["error_count"] / r["event_count"] for r in errors)
    assert [(p["product_id"], p["purchases"], p["add_to_cart"]) for p in top] == [
        (p["product"], p["purchases"], p["add_to_cart"]) for p in products
    ]
    assert [round(p["revenue"], 2) for p in top] == [round(p["revenue"], 2) for p in products]


@pytest.mark.parametrize(
    "hours", [(0, 48), (0, 30), (20, 44)], ids=["whole-days-only", "day-and-hours", "hours-only"]
)
def test_funnel_events_match_raw_events_whichever_rollups_the_window_reads(
    tmp_path, warehouse, tables, hours
):
    first_day = (HOUR - timedelta(days=3)).replace(hour=0)
    for n, start in enumerate(first_day + timedelta(hours=h) for h in (3, 21, 27, 40, 50)):
        land_demo_events(tmp_path / str(n), warehouse, tables, 200, start, seed=60 + n)
    start, end = (first_day + timedelta(hours=h) for h in hours)
    raw = warehouse.query_arrow(
        f"SELECT type, count() AS events FROM {tables.raw_events} FINAL "
        "WHERE ts >= {start:DateTime('UTC')} AND ts < {end:DateTime('UTC')} GROUP BY type",
        {"start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)},
    ).to_pylist()
    expected = {
        row["type"]: row["events"] for row in raw if row["type"] in ("page_view", "add_to_cart", "purchase")
    }

    funnel = DashboardQueries(warehouse, InProcessCache(), tables).fetch("funnel", start, end)

    assert {step["step"]: step["events"] for step in funnel} == expected
    assert sum(expected.values()) > 0


def test_rollups_created_before_the_merge_age_get_it_from_ensure(warehouse):
    tables = AnalyticsTables(database=f"analytics_{uuid.uuid4().hex[:10]}")
    statements = tables.statements()
    older = [s.replace(", min_age_to_force_merge_seconds = 60", "") for s in statements if "ALTER" not in s]
    try:
        for statement in older:
            warehouse.execute(statement)
        before = _create_statement(warehouse, tables.rollup_hour)

        tables.ensure(warehouse)

        assert "min_age_to_force_merge_seconds" not in before
        for rollup in (tables.rollup_hour, tables.rollup_day):
            assert "min_age_to_force_merge_seconds = 60" in _create_statement(warehouse, rollup)
    finally:
        warehouse.execute(f"DROP DATABASE IF EXISTS {tables.database}")


def _create_statement(warehouse, table: str) -> str:
    database, name = table.split(".")
    return warehouse.query_arrow(
        "SELECT create_table_query FROM system.tables WHERE database = {d:String} AND name = {n:String}",
        {"d": database, "n": name},
    ).to_pylist()[0]["create_table_query"]
