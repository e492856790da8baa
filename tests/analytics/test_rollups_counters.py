"""Rollups, real-time counters and dashboard answers, against chdb, Redis and the in-process cache."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from hub_pipelines.analytics import counters
from hub_pipelines.analytics.dashboard import DashboardQueries, invalidate
from hub_pipelines.analytics.rollups import rebuild_day
from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.landing.warehouse_events import WarehouseEventsSink
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from hub_pipelines.resources.cache import InProcessCache
from hub_pipelines.resources.topics import LocalTopicLog
from tests.analytics.demo_events import demo_event_topic

HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


def land_demo_events(
    tmp_path: Path,
    warehouse: ChdbWarehouse,
    tables: AnalyticsTables,
    count: int,
    when: datetime,
    seed: int = 7,
):
    topic = f"events-{seed}"
    topics = demo_event_topic(tmp_path, topic, count, when, seed)
    return land_ranges(
        topics, WarehouseEventsSink(warehouse, tables), topic, [OffsetRange(0, 0, count)], "r1"
    )


def test_backfill_of_a_day_twice_gives_the_same_rows(tmp_path, warehouse, tables):
    day_start = HOUR - timedelta(days=2)
    land_demo_events(tmp_path, warehouse, tables, 2000, day_start.replace(hour=10))
    query = f"SELECT * EXCEPT rebuilt_at FROM {tables.daily_rollups} ORDER BY type"
    first = rebuild_day(warehouse, tables, day_start.date())
    rows_once = warehouse.query_df(query)
    second = rebuild_day(warehouse, tables, day_start.date())
    assert rows_once.equals(warehouse.query_df(query))
    assert first == second and first.matches and first.raw_events == 2000


def test_rebuilding_a_day_without_events_leaves_it_empty(tmp_path, warehouse, tables):
    busy_day = (HOUR - timedelta(days=4)).replace(hour=9)
    land_demo_events(tmp_path, warehouse, tables, 50, busy_day)
    quiet_day = (busy_day - timedelta(days=1)).date()
    totals = rebuild_day(warehouse, tables, quiet_day)
    assert (totals.raw_events, totals.rollup_events) == (0, 0)
    assert totals.matches
    assert rebuild_day(warehouse, tables, busy_day.date()).rollup_events == 50


def test_rebuilding_a_day_after_late_events_includes_them(tmp_path, warehouse, tables):
    closed_day = (HOUR - timedelta(days=3)).replace(hour=9)
    land_demo_events(tmp_path / "a", warehouse, tables, 300, closed_day)
    assert rebuild_day(warehouse, tables, closed_day.date()).rollup_events == 300
    late = {
        "event_id": "late-1",
        "type": "page_view",
        "user_id": "u-late",
        "session_id": "s-late",
        "ts": (closed_day + timedelta(minutes=5)).isoformat(),
        "properties": {"path": "/"},
    }
    topics = LocalTopicLog(root=str(tmp_path / "late"))
    topics.create_topic("events-late", 1)
    topics.produce("events-late", [OutgoingMessage(json.dumps(late).encode(), partition=0)])
    sink = WarehouseEventsSink(warehouse, tables)
    land_ranges(topics, sink, "events-late", [OffsetRange(0, 0, 1)], "r2")
    assert {day for outcome in sink.outcomes for day in outcome.event_days} == {closed_day.date()}
    totals = rebuild_day(warehouse, tables, closed_day.date())
    assert totals.matches and totals.rollup_events == 301


def test_hyperloglog_active_users_within_two_percent_of_the_exact_count(cache, tables):
    users = [f"user-{n}" for n in range(40_000)]
    rows = pa.table(
        {
            "type": ["page_view"] * len(users),
            "user_id": users,
            "ts": pa.array(
                [HOUR + timedelta(seconds=n % 3600) for n in range(len(users))], pa.timestamp("ms", "UTC")
            ),
            "product_id": pa.nulls(len(users), pa.string()),
            "amount": pa.nulls(len(users), pa.decimal128(18, 2)),
        }
    )
    assert counters.write_counters(cache, "batch-hll", counters.counter_update(rows))
    counted = counters.numbers_from_cache(cache, HOUR).active_users
    assert abs(counted - len(users)) <= 0.02 * len(users)


def test_a_batch_is_counted_once_even_when_written_again(cache, tmp_path, warehouse, tables):
    land_demo_events(tmp_path, warehouse, tables, 1500, HOUR)
    rows = warehouse.query_df(f"SELECT type, user_id, ts, product_id, amount FROM {tables.raw_events}")
    update = counters.counter_update(pa.Table.from_pandas(rows, preserve_index=False))
    assert counters.write_counters(cache, "events/0:0-1500", update) is True
    assert counters.write_counters(cache, "events/0:0-1500", update) is False
    from_cache = counters.numbers_from_cache(cache, HOUR)
    from_warehouse = counters.numbers_from_warehouse(warehouse, tables, HOUR)
    assert from_cache.events_by_type == from_warehouse.events_by_type
    assert (from_cache.errors, from_cache.purchases, from_cache.revenue_cents) == (
        from_warehouse.errors,
        from_warehouse.purchases,
        from_warehouse.revenue_cents,
    )
    assert abs(from_cache.active_users - from_warehouse.active_users) <= 0.02 * from_warehouse.active_users


def test_dashboard_answer_is_cached_until_a_batch_lands(tmp_path, warehouse, tables):
    cache = InProcessCache()
    dashboard = DashboardQueries(warehouse, cache, tables)
    window = (HOUR, HOUR + timedelta(hours=1))
    land_demo_events(tmp_path / "one", warehouse, tables, 500, HOUR)
    before = dashboard.run("funnel", *window)
    assert sum(step["events"] for step in before) > 0
    land_demo_events(tmp_path / "two", warehouse, tables, 500, HOUR, seed=8)
    assert dashboard.run("funnel", *window) == before
    invalidate(cache)
    after = dashboard.run("funnel", *window)
    assert sum(s["events"] for s in after) > sum(s["events"] for s in before)


def test_dashboard_users_and_funnel_over_whole_and_partial_days_match_raw_events(tmp_path, warehouse, tables):
    first_day = (HOUR - timedelta(days=3)).replace(hour=0)
    for n, start in enumerate(first_day + timedelta(hours=h) for h in (5, 20, 30, 47, 60)):
        land_demo_events(tmp_path / str(n), warehouse, tables, 400, start, seed=20 + n)
    dashboard = DashboardQueries(warehouse, InProcessCache(), tables)
    window = {"start": first_day + timedelta(hours=12), "end": first_day + timedelta(hours=61)}
    raw = warehouse.query_df(
        "SELECT type, uniqExact(user_id) AS users, count() AS events FROM "
        f"{tables.raw_events} FINAL WHERE toStartOfHour(ts) >= {{start:DateTime('UTC')}} "
        "AND toStartOfHour(ts) < {end:DateTime('UTC')} GROUP BY type",
        {k: v.replace(tzinfo=None) for k, v in window.items()},
    )
    exact = {str(t): (int(u), int(e)) for t, u, e in raw.itertuples(index=False)}
    funnel = {step["step"]: step for step in dashboard.run("funnel", window["start"], window["end"])}
    assert list(funnel) == ["page_view", "add_to_cart", "purchase"]
    for step, found in funnel.items():
        assert found["events"] == exact[step][1]
        assert abs(found["users"] - exact[step][0]) <= 0.02 * exact[step][0]
    active = dashboard.run("active_users", window["start"], window["end"])[0]["active_users"]
    all_users = warehouse.query_df(
        f"SELECT uniqExact(user_id) FROM {tables.raw_events} FINAL WHERE toStartOfHour(ts) >= "
        "{start:DateTime('UTC')} AND toStartOfHour(ts) < {end:DateTime('UTC')}",
        {k: v.replace(tzinfo=None) for k, v in window.items()},
    ).iloc[0, 0]
    assert abs(active - int(all_users)) <= 0.02 * int(all_users)
