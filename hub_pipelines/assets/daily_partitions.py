"""The UTC days that orders/daily_revenue and analytics/daily_rollups are partitioned by."""

import dagster as dg

from hub_pipelines import settings

# A fixed first day, so the partition set does not move with the calendar. end_offset=1 makes today a
# partition too: today's figures so far are built before the day closes.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=settings.DAILY_PARTITIONS_START, timezone="UTC", end_offset=1
)
