"""A following landing run follows past its window only while no queued run may need the warehouse pool
it holds."""

from __future__ import annotations

import dagster as dg

from hub_pipelines.assets.analytics.following_runs import may_wait_for_warehouse
from hub_pipelines.definitions import defs


def _run_of(job_name: str) -> dg.DagsterRun:
    """A run as its job's sensor or the launchpad would create it: with the job's tags."""
    return dg.DagsterRun(job_name=job_name, tags=dict(defs.resolve_job_def(job_name).tags))


def test_queued_rollup_and_analytics_runs_make_the_follower_stop_at_its_window():
    assert may_wait_for_warehouse(_run_of("analytics_daily_rollups"))
    assert may_wait_for_warehouse(_run_of("analytics_pipeline"))


def test_queued_media_and_orders_runs_let_the_follower_follow_on():
    assert not may_wait_for_warehouse(_run_of("media_pipeline"))
    assert not may_wait_for_warehouse(_run_of("orders_pipeline"))
