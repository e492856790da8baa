"""Analytics sensors: rebuilding the days late events touched, keeping today's rollups current (the
automation conditions' evaluator), and observing the stream's lag and freshness.

Neither opens the warehouse (locally chdb admits one process per folder, and that process is the run's):
both read what the landing runs reported in their materialization metadata, and end offsets from the
broker, which is metadata only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from hub_pipelines.assets.analytics.daily_rollups import daily_partitions, daily_rollups_job
from hub_pipelines.assets.analytics.raw_events import LATE_DAYS_METADATA, RAW_EVENTS_KEY
from hub_pipelines.assets.tracing import traced_sensor
from hub_pipelines.core.ports import Topics
from hub_pipelines.landing.batches import BOOK_POSITIONS_METADATA, parse_book_positions
from hub_pipelines.sensors.automation import workflow_automation

RAW_EVENTS = dg.AssetKey(RAW_EVENTS_KEY)


def _text(metadata: Mapping[str, Any], name: str) -> str:
    value = metadata.get(name)
    return str(getattr(value, "value", value) or "") if value is not None else ""


def days_waiting_in_the_queue(instance: dg.DagsterInstance) -> set[str]:
    """Days with a rebuild run that has not started: it reads the day's raw events when it starts, so
    late events landed before then need no run of their own. Without this, a follower landing late
    events every second queued one rebuild of the same day per micro-batch (chaos run: 8 in 5 min)."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=daily_rollups_job.name,
            statuses=[dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED],
        )
    )
    return {run.tags["dagster/partition"] for run in runs if "dagster/partition" in run.tags}


@dg.sensor(
    name="analytics_late_days_sensor",
    job=daily_rollups_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Rebuilds the daily rollups of every closed day that landing runs added late events to, "
    "and of each day once it closes.",
)
@traced_sensor
def analytics_late_days_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    cursor: dict[str, Any] = json.loads(context.cursor) if context.cursor else {"after": 0, "closed": None}
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_EVENTS, after_storage_id=cursor["after"]),
        limit=200,
        ascending=True,
    ).records
    days: set[str] = set()
    for record in records:
        materialization = record.asset_materialization
        if materialization is not None:
            days.update(filter(None, _text(materialization.metadata, LATE_DAYS_METADATA).split(",")))
        cursor["after"] = max(int(cursor["after"]), int(record.storage_id or 0))
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    if cursor["closed"] != yesterday:
        days.add(yesterday)
        cursor["closed"] = yesterday
    known = set(daily_partitions.get_partition_keys(dynamic_partitions_store=context.instance))
    queued = days_waiting_in_the_queue(context.instance)
    wanted = sorted(day for day in days if day in known and day not in queued)
    if not wanted:
        context.update_cursor(json.dumps(cursor))
        waiting = sorted(days & queued)
        return dg.SkipReason(
            f"no late events for closed days in {len(records)} new landing materializations"
            + (
                f" but for {', '.join(waiting)}, whose rebuild is queued and will read them"
                if waiting
                else ""
            )
        )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=day, run_key=f"rollup-{day}-{cursor['after']}") for day in wanted
        ],
        cursor=json.dumps(cursor),
    )


def build_stream_observer(topic: str, interval_seconds: int) -> dg.SensorDefinition:
    """A sensor that records, per tick, consumer lag per partition and the freshness of landed events."""

    @dg.sensor(
        name="analytics_stream_observer",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Observes the '{topic}' topic: lag per partition (end offset minus landed offset) and "
        "freshness (now minus the newest landed event time), as observations of analytics/raw_events.",
    )
    def analytics_stream_observer(
        context: dg.SensorEvaluationContext, topics: dg.ResourceParam[Topics]
    ) -> dg.SensorResult:
        ends = topics.end_offsets(topic)
        latest = context.instance.fetch_materializations(RAW_EVENTS, limit=1, ascending=False).records
        landed: dict[int, int] = {}
        newest: datetime | None = None
        if latest and latest[0].asset_materialization is not None:
            reported = latest[0].asset_materialization.metadata
            positions = _text(reported, BOOK_POSITIONS_METADATA)
            landed = parse_book_positions(positions)
            newest_text = _text(reported, "newest_event_ts")
            newest = datetime.fromisoformat(newest_text) if newest_text not in ("", "none") else None
        lag = {partition: end - landed.get(partition, 0) for partition, end in sorted(ends.items())}
        freshness = (datetime.now(UTC) - newest).total_seconds() if newest else None
        metadata: dict[str, dg.RawMetadataValue] = {
            "consumer_lag_total": sum(lag.values()),
            **{f"consumer_lag.partition_{p}": n for p, n in lag.items()},
            "freshness_seconds": round(freshness, 1) if freshness is not None else "no events landed yet",
        }
        return dg.SensorResult(asset_events=[dg.AssetObservation(asset_key=RAW_EVENTS, metadata=metadata)])

    return analytics_stream_observer


analytics_automation = workflow_automation(
    "analytics",
    "Requests what the analytics assets' automation conditions ask for: today's daily rollups every 15 "
    "minutes once events landed (closed days are analytics_late_days_sensor's).",
)
