"""The run queue's order: landing runs leave it before day rebuilds waiting for the same slots."""

import dagster as dg

from hub_pipelines.definitions import defs

PRIORITY_TAG = "dagster/priority"


def priority(tags: dict[str, str]) -> int:
    return int(tags.get(PRIORITY_TAG, "0"))


def test_every_topic_landing_job_outranks_every_day_rebuild_in_the_run_queue():
    jobs = [defs.resolve_job_def(job.name) for job in defs.jobs or []]
    landing = {job.name: priority(job.tags) for job in jobs if "hub/topic" in job.tags}
    rebuilds = {
        job.name: priority(job.tags)
        for job in jobs
        if job.partitions_def is not None and "hub/topic" not in job.tags and job.name != "media_pipeline"
    }
    automation = {
        sensor.name: priority(sensor.run_tags or {})
        for sensor in defs.sensors or []
        if isinstance(sensor, dg.AutomationConditionSensorDefinition)
    }

    assert set(landing) == {"orders_pipeline", "analytics_pipeline"}
    assert "analytics_daily_rollups" in rebuilds
    assert set(automation) == {"orders_automation", "analytics_automation"}
    assert min(landing.values()) > 0 > max([*rebuilds.values(), *automation.values()]), (
        landing,
        rebuilds,
        automation,
    )
