"""The dashboard as the UI shows it: one snapshot of every named query over the last 24 hours."""

from __future__ import annotations

from datetime import timedelta

from hub_pipelines.analytics.dashboard import DashboardQueries, dashboard_snapshot
from hub_pipelines.analytics.rollups import rebuild_day
from hub_pipelines.resources.cache import InProcessCache
from tests.analytics.test_rollups_counters import HOUR, land_demo_events


def test_snapshot_numbers_are_the_named_queries_answers_for_the_last_24_hours(tmp_path, warehouse, tables):
    land_demo_events(tmp_path, warehouse, tables, 600, HOUR, seed=61)
    rebuild_day(warehouse, tables, HOUR.date())
    dashboard = DashboardQueries(warehouse, InProcessCache(), tables)
    start, end = HOUR + timedelta(hours=1) - timedelta(days=1), HOUR + timedelta(hours=1)
    midnight = HOUR.replace(hour=0)

    snapshot = dashboard_snapshot(dashboard, HOUR + timedelta(minutes=30))

    [active] = dashboard.fetch("active_users", start, end)
    funnel = {row["step"]: row["users"] for row in dashboard.fetch("funnel", start, end)}
    revenue = dashboard.fetch("revenue_per_hour", start, end)
    top = dashboard.fetch("top_products", midnight, midnight + timedelta(days=1))
    numbers = snapshot.numbers
    assert numbers["dashboard.active_users_24h"] == active["active_users"] > 0
    assert numbers["dashboard.funnel.page_view_users"] == funnel["page_view"] > 0
    assert numbers["dashboard.funnel.purchase_users"] == funnel["purchase"] > 0
    assert numbers["dashboard.revenue_24h"] == round(sum(row["revenue"] for row in revenue), 2) > 0
    assert numbers["dashboard.top_product_revenue_today"] == round(top[0]["revenue"], 2) > 0
    assert (
        f"| {top[0]['product_id']} | {top[0]['purchases']} |"
        in snapshot.tables["dashboard.top_products_today"]
    )
    assert "| page_view |" in snapshot.tables["dashboard.funnel"]
