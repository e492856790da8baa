from datetime import date

import dagster as dg

from hub_pipelines.analytics.rollups import rebuild_day
from hub_pipelines.analytics.schema import configured_tables
from hub_pipelines.assets.analytics.raw_events import RAW_EVENTS_KEY
from hub_pipelines.assets.daily_partitions import daily_partitions
from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.policies import (
    DAILY_ROLLUPS_AUTOMATION,
    DAILY_ROLLUPS_FRESHNESS,
    EXTERNAL_CALL_RETRY,
)
from hub_pipelines.core.ports import Warehouse
from hub_pipelines.core.run_priority import CATCH_UP_PRIORITY
from hub_pipelines.json_logs import job_logs_config

DAILY_ROLLUPS_KEY = ["analytics", "daily_rollups"]
TOTALS_CHECK = "rollup_totals_match_raw"


@dg.asset(
    key=DAILY_ROLLUPS_KEY,
    freshness_policy=DAILY_ROLLUPS_FRESHNESS,
    deps=[RAW_EVENTS_KEY],
    partitions_def=daily_partitions,
    automation_condition=DAILY_ROLLUPS_AUTOMATION,
    group_name="analytics",
    kinds={"clickhouse"},
    pool="warehouse",
    retry_policy=EXTERNAL_CALL_RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            TOTALS_CHECK,
            asset=DAILY_ROLLUPS_KEY,
            # Partitioned like the asset, so each evaluation is recorded (and shown) for its day.
            partitions_def=daily_partitions,
            description="The day's rollup totals (per type and over all types) equal the raw event count.",
        )
    ],
    tags={"hub/cadence": "daily"},
)
@instrumented(records="raw_events")
def daily_rollups(
    context: dg.AssetExecutionContext, warehouse: dg.ResourceParam[Warehouse]
) -> dg.MaterializeResult:
    """Events, distinct users and sessions, revenue and errors per type and per product for one day, rebuilt
    from raw events and swapped in atomically (safe to backfill twice)."""
    day = date.fromisoformat(context.partition_key)
    totals = rebuild_day(warehouse, configured_tables(), day)
    return dg.MaterializeResult(
        metadata={
            "day": str(day),
            "raw_events": totals.raw_events,
            "rollup_events": totals.rollup_events,
            "active_users": totals.users,
            "revenue": totals.revenue,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=TOTALS_CHECK,
                passed=totals.matches,
                metadata={
                    "raw_events": totals.raw_events,
                    "rollup_events_per_type": totals.rollup_events,
                    "rollup_events_all_types": totals.rollup_all_types_events,
                },
            )
        ],
    )


daily_rollups_job = dg.define_asset_job(
    "analytics_daily_rollups",
    config=job_logs_config(),
    selection=dg.AssetSelection.assets(daily_rollups),
    tags={"hub/workflow": "analytics", **CATCH_UP_PRIORITY},
    description="Rebuild the daily rollups of one day from raw events.",
)
