"""Every failed run pages the on-call (PagerDuty) and posts to Slack, with its link and its error.

Delivery goes through the paging resource the analytics workflow already uses
(`hub_pipelines.resources.notifier`: `LogNotifier` locally, `PagerDutySlackNotifier` in production),
under the resource key `pager`. One incident per run: the dedup key is the run id, so a sensor
tick retried after a crash pages once.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.analytics.alerting import Alert
from hub_pipelines.core.ports import Notifier

ERROR_CHARS = 600


def run_url(run_id: str, base_url: str | None = None) -> str:
    """The run's page in the Dagster UI (`settings.dagster_ui_url`, unless another base is given)."""
    base = (base_url or settings.dagster_ui_url()).rstrip("/")
    return f"{base}/runs/{run_id}"


def run_failure_alert(job_name: str, run_id: str, error: str, url: str, workflow: str | None = None) -> Alert:
    """A trigger alert naming the job, the run, its first error and where to look."""
    first_line = error.strip().splitlines()[0] if error.strip() else "no error message"
    where = f"{workflow} workflow, " if workflow else ""
    summary = f"Dagster run failed: {job_name} ({where}run {run_id[:8]}): {first_line[:ERROR_CHARS]} {url}"
    return Alert(
        action="trigger",
        dedup_key=f"dagster-run/{run_id}",
        metric=job_name,
        summary=summary,
        group=workflow or "dagster",
    )


def first_step_error(events: Iterable[dg.DagsterEvent]) -> str | None:
    """The first failed step's own error (under Dagster's wrapper), as 'step <key>: <Type>: <message>'."""
    for event in events:
        data = event.step_failure_data if event.is_step_failure else None
        if data is not None and data.error is not None:
            error = data.error
            while error.cause is not None:
                error = error.cause
            return f"step {event.step_key}: {error.message}"
    return None


def run_error(instance: dg.DagsterInstance, run_id: str) -> str:
    """A finished run's first step error, read from its event log, else the run's failure message."""
    entries = instance.all_logs(
        run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    )
    events = [entry.dagster_event for entry in entries if entry.dagster_event is not None]
    failures = [
        event.message or "" for event in events if event.event_type == dg.DagsterEventType.RUN_FAILURE
    ]
    return first_step_error(events) or next(iter(failures), "") or "the run failed without an error message"


def failure_message(context: dg.RunFailureSensorContext) -> str:
    """The first failed step's own error, else the run's failure message."""
    return first_step_error(context.get_step_failure_events()) or context.failure_event.message or ""


@dg.run_failure_sensor(
    name="run_failure_alerts",
    description="Pages PagerDuty and posts to Slack for every failed run, with its link and error.",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def run_failure_alerts(context: dg.RunFailureSensorContext, pager: dg.ResourceParam[Notifier]) -> None:
    run = context.dagster_run
    alert = run_failure_alert(
        run.job_name,
        run.run_id,
        failure_message(context),
        run_url(run.run_id),
        workflow=run.tags.get("hub/workflow"),
    )
    delivered = pager.send([alert])
    context.log.info(f"run {run.run_id} failure alert delivered to {delivered} pager destination(s)")
