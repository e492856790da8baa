"""The real-time side of a landing run: its chunks counted, cached answers made stale, the dashboard read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hub_pipelines.analytics.counters import CatchUpCounts, count_uncounted_chunks
from hub_pipelines.analytics.dashboard import (
    DashboardQueries,
    DashboardSnapshot,
    dashboard_snapshot,
    invalidate,
)
from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.core.ports import Cache, Warehouse


@dataclass(frozen=True)
class RealtimeRefresh:
    counted: CatchUpCounts
    dashboard_generation: int
    dashboard: DashboardSnapshot


def refresh_realtime_counters(
    warehouse: Warehouse, tables: AnalyticsTables, cache: Cache, run_id: str, now: datetime
) -> RealtimeRefresh:
    """Count every chunk of run `run_id` the landing could not, invalidate the cached dashboard answers,
    and read the dashboard of the 24 hours up to `now` afresh (cached again for the next reader)."""
    counted = count_uncounted_chunks(warehouse, tables, cache, run_id)
    generation = invalidate(cache)
    return RealtimeRefresh(
        counted, generation, dashboard_snapshot(DashboardQueries(warehouse, cache, tables), now)
    )
