"""Scheduled housekeeping: the retention purge of raw order events (inbox rows and dead letters), and the
retirement of settled uploads' partitions from the Dagster instance."""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from hub_pipelines import settings
from hub_pipelines.assets.media.partitions import UPLOADS_PARTITIONS_NAME, originals_layout
from hub_pipelines.core.ports import ObjectStorage, SqlDatabase
from hub_pipelines.landing.upload_retention import retire_settled_uploads
from hub_pipelines.orders.retention import purge_expired
from hub_pipelines.sensors.media import UNFINISHED


def _as_of(text: str) -> datetime:
    return datetime.fromisoformat(text) if text else datetime.now(UTC)


class RetentionConfig(dg.Config):
    inbox_retention_days: float = settings.INBOX_RETENTION_DAYS
    dead_letter_retention_days: float = settings.DEAD_LETTER_RETENTION_DAYS
    as_of: str = Field(default="", description="Purge as if it were this ISO 8601 UTC time; empty: now.")


@dg.op(tags={"hub/workflow": "orders"})
def purge_expired_order_events(
    context: dg.OpExecutionContext, config: RetentionConfig, database: dg.ResourceParam[SqlDatabase]
) -> None:
    """Deletes processed inbox rows older than the inbox retention and dead letters older than theirs."""
    report = purge_expired(
        database,
        _as_of(config.as_of),
        timedelta(days=config.inbox_retention_days),
        timedelta(days=config.dead_letter_retention_days),
    )
    context.add_output_metadata(
        {"inbox_rows_purged": report.inbox_rows, "dead_letters_purged": report.dead_letters}
    )
    context.log.info(f"purged {report.inbox_rows} inbox rows and {report.dead_letters} dead letters")


@dg.job(tags={"hub/workflow": "orders"}, description="Purge raw order events past their retention.")
def order_events_retention_job() -> None:
    purge_expired_order_events()


order_events_retention_schedule = dg.ScheduleDefinition(
    job=order_events_retention_job,
    cron_schedule=settings.PII_RETENTION_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: processed inbox rows after HUB_INBOX_RETENTION_DAYS, dead letters after HUB_DEAD_LETTER_RETENTION_DAYS.",
)


class InstanceUploadPartitions:
    """The uploads' dynamic partitions in a Dagster instance, as `landing.upload_retention` needs them."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self._instance = instance

    def in_flight(self) -> set[str]:
        # Every unfinished run, not only the media job's: a UI materialization runs as an asset job.
        runs = self._instance.get_runs(dg.RunsFilter(statuses=UNFINISHED))
        return {run.tags["dagster/partition"] for run in runs if "dagster/partition" in run.tags}

    def remove(self, partition_key: str) -> None:
        self._instance.delete_dynamic_partition(UPLOADS_PARTITIONS_NAME, partition_key)

    def add(self, partition_key: str) -> None:
        self._instance.add_dynamic_partitions(UPLOADS_PARTITIONS_NAME, [partition_key])


class UploadRetentionConfig(dg.Config):
    retention_days: float = settings.UPLOADS_RETENTION_DAYS
    as_of: str = Field(default="", description="Retire as if it were this ISO 8601 UTC time; empty: now.")


@dg.op(tags={"hub/workflow": "media"})
def retire_settled_upload_partitions(
    context: dg.OpExecutionContext,
    config: UploadRetentionConfig,
    database: dg.ResourceParam[SqlDatabase],
    objects: dg.ResourceParam[ObjectStorage],
) -> None:
    """Deletes the partitions of uploads settled longer than the retention (and sets aside any original left)."""
    now = _as_of(config.as_of)
    report = retire_settled_uploads(
        database,
        objects.bucket(settings.UPLOADS_BUCKET),
        InstanceUploadPartitions(context.instance),
        originals_layout(),
        settled_before=now - timedelta(days=config.retention_days),
        now=now,
    )
    context.add_output_metadata(
        {
            "partitions_retired": report.retired,
            "originals_moved": report.originals_moved,
            "left_in_flight": report.left_in_flight,
        }
    )
    context.log.info(
        f"retired {report.retired} upload partitions ({report.originals_moved} originals left under the "
        f"uploads prefix moved to '{settings.UPLOADS_SETTLED_PREFIX}'); {report.left_in_flight} left for a run "
        "in flight"
    )


@dg.job(
    tags={"hub/workflow": "media"},
    description="Retire the Dagster partitions of uploads settled longer than the retention (SQL rows stay).",
)
def media_uploads_retention_job() -> None:
    retire_settled_upload_partitions()


media_uploads_retention_schedule = dg.ScheduleDefinition(
    job=media_uploads_retention_job,
    cron_schedule=settings.UPLOADS_RETENTION_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: the partitions of uploads published, quarantined or rejected more than "
    "HUB_UPLOADS_RETENTION_DAYS ago leave the instance; `hub-pipelines uploads restore` adds one back.",
)
