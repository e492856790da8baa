"""The late-days sensor asks for one rebuild per day and waiting run, however many landings add late
events to the day while that run waits in the queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from hub_pipelines.assets.analytics.raw_events import LATE_DAYS_METADATA, RAW_EVENTS_KEY
from hub_pipelines.definitions import defs
from hub_pipelines.sensors.analytics import analytics_late_days_sensor

LATE_DAY = (datetime.now(UTC).date() - timedelta(days=3)).isoformat()


def land_late_events(instance: dg.DagsterInstance, day: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=RAW_EVENTS_KEY, metadata={LATE_DAYS_METADATA: day})
    )


def tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[set[str], str | None]:
    context = dg.build_sensor_context(
        instance=instance, sensor_name="analytics_late_days_sensor", cursor=cursor
    )
    result = analytics_late_days_sensor(context)
    if isinstance(result, dg.SensorResult):
        return {request.partition_key for request in result.run_requests or []}, result.cursor
    return set(), context.cursor


def rebuild_run(instance: dg.DagsterInstance, day: str, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    return instance.create_run_for_job(
        job_def=defs.resolve_job_def("analytics_daily_rollups"),
        status=status,
        tags={"dagster/partition": day},
    )


def test_a_day_whose_rebuild_waits_in_the_queue_is_not_requested_again_until_that_run_starts():
    with dg.instance_for_test() as instance:
        land_late_events(instance, LATE_DAY)
        requested, cursor = tick(instance, None)
        assert LATE_DAY in requested
        waiting = rebuild_run(instance, LATE_DAY, dg.DagsterRunStatus.NOT_STARTED)

        for _ in range(3):
            land_late_events(instance, LATE_DAY)
            requested, cursor = tick(instance, cursor)
            assert LATE_DAY not in requested

        # Once the waiting run has started it may have read the day already: later late events need
        # a rebuild of their own.
        instance.report_run_canceled(waiting)
        land_late_events(instance, LATE_DAY)
        requested, cursor = tick(instance, cursor)
        assert requested == {LATE_DAY}
