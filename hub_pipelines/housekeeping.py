"""Scheduled housekeeping: the retention purge of raw order events (inbox rows and dead letters)."""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from hub_pipelines import settings
from hub_pipelines.core.ports import SqlDatabase
from hub_pipelines.orders.retention import purge_expired


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
        datetime.fromisoformat(config.as_of) if config.as_of else datetime.now(UTC),
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
