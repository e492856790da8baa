"""What each landed batch of events feeds: real-time counters and anomaly scores (with paging)."""

import json
from datetime import UTC, datetime

import dagster as dg

from hub_pipelines.analytics.schema import configured_tables
from hub_pipelines.assets.analytics.raw_events import RAW_EVENTS_KEY
from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY
from hub_pipelines.core.ports import Cache, Notifier, Warehouse

REALTIME_COUNTERS_KEY = ["analytics", "realtime_counters"]
ANOMALY_SCORES_KEY = ["analytics", "anomaly_scores"]


@dg.asset(
    key=REALTIME_COUNTERS_KEY,
    deps=[RAW_EVENTS_KEY],
    group_name="analytics",
    kinds={"clickhouse", "redis"},
    pool="warehouse",
    retry_policy=EXTERNAL_CALL_RETRY,
)
@instrumented(records="events_counted")
def realtime_counters(
    context: dg.AssetExecutionContext,
    warehouse: dg.ResourceParam[Warehouse],
    cache: dg.ResourceParam[Cache],
) -> dg.MaterializeResult:
    """Active users per minute/hour/day, trending types and products, errors and purchases over the last 24 h,
    for every landed chunk of this run (the landing counts them as it inserts; this step counts any it could
    not); cached dashboard answers are invalidated. The dashboard of the last 24 hours (active users, funnel,
    revenue, top products, error rate) is in each materialization's metadata: see Metadata > Plots."""
    # Counting and scoring work in Arrow and NumPy: imported by the run, not with the code location.
    from hub_pipelines.analytics.realtime import refresh_realtime_counters

    refresh = refresh_realtime_counters(
        warehouse, configured_tables(), cache, context.run.run_id, datetime.now(UTC)
    )
    counted, dashboard = refresh.counted, refresh.dashboard
    return dg.MaterializeResult(
        metadata={
            "chunks_counted_at_landing": counted.counted_at_landing,
            "chunks_counted_here": counted.counted_now,
            "events_counted": counted.events_counted,
            "dashboard_generation": refresh.dashboard_generation,
            **dashboard.numbers,
            **{name: dg.MetadataValue.md(table) for name, table in dashboard.tables.items()},
        }
    )


@dg.asset(
    key=ANOMALY_SCORES_KEY,
    deps=[RAW_EVENTS_KEY],
    group_name="analytics",
    kinds={"clickhouse", "python"},
    pool="warehouse",
    retry_policy=EXTERNAL_CALL_RETRY,
)
@instrumented(records="minutes_scored")
def anomaly_scores(
    context: dg.AssetExecutionContext,
    warehouse: dg.ResourceParam[Warehouse],
    pager: dg.ResourceParam[Notifier],
) -> dg.MaterializeResult:
    """Anomaly scores in [0, 1] per minute for event rates per type, error rate, purchase volume and active
    users, from detectors that continue across runs; findings page the on-call through the pager."""
    from hub_pipelines.analytics.scoring import score_and_page

    outcome, delivered = score_and_page(warehouse, configured_tables(), pager)
    for alert in outcome.alerts:
        context.log.warning(f"{alert.action} {alert.dedup_key}: {alert.summary}")
    return dg.MaterializeResult(
        metadata={
            "minutes_scored": outcome.minutes_scored,
            "findings": len(outcome.findings),
            "findings_detail": dg.MetadataValue.json([f.to_dict() for f in outcome.findings[:50]]),
            "alerts": json.dumps([f"{a.action} {a.dedup_key}" for a in outcome.alerts])
            if outcome.alerts
            else "none",
            "alerts_delivered": delivered,
            "max_latest_score": max(outcome.latest_scores.values(), default=0.0),
            **{f"score.{metric}": round(score, 4) for metric, score in outcome.latest_scores.items()},
        }
    )
