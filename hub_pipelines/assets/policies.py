"""Retry policies for steps that call external services, freshness policies, and automation conditions."""

from datetime import timedelta

import dagster as dg

# A step that lost a connection or hit a timeout is rerun whole; every step is idempotent, so a rerun
# yields the same state. Mirrors the in-process retry block: 3 tries, 1 s -> 2 s -> 4 s, with jitter.
EXTERNAL_CALL_RETRY = dg.RetryPolicy(
    max_retries=3,
    delay=1.0,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)

# What "up to date" means for the assets people read (Dagster's freshness daemon evaluates these and
# the UI shows PASS / WARN / FAIL; deploy/prometheus/alerts.yml pages on the same windows).
# Orders arrive all day: a ledger not updated for 15 minutes means landing or the ledger is stuck.
ORDER_LEDGER_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=15), warn_window=timedelta(minutes=5)
)
# Yesterday's rollup is rebuilt once the day closes (analytics_late_days_sensor): by 02:00 UTC.
DAILY_ROLLUPS_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron="0 2 * * *", lower_bound_delta=timedelta(hours=2)
)
# Uploads come in through the day; an hour without a published upload means media is stuck.
PUBLISHED_MEDIA_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=1), warn_window=timedelta(minutes=30)
)

# orders/daily_revenue: today's revenue so far every 15 minutes (once the ledger has moved since the
# tick), and yesterday once more after midnight, so orders paid in its last minutes count too.
DAILY_REVENUE_REFRESH_CRON = "*/15 * * * *"
DAY_CLOSED_CRON = "15 0 * * *"
_TODAY: dg.AutomationCondition = dg.AutomationCondition.in_latest_time_window()
# The lookback reaches from the end of the latest window (today's): two days hold today and yesterday.
_YESTERDAY: dg.AutomationCondition = dg.AutomationCondition.in_latest_time_window(timedelta(days=2)) & ~_TODAY
_DAY_CLOSED: dg.AutomationCondition = dg.AutomationCondition.cron_tick_passed(DAY_CLOSED_CRON, "UTC")
DAILY_REVENUE_AUTOMATION: dg.AutomationCondition = (
    dg.AutomationCondition.on_cron(DAILY_REVENUE_REFRESH_CRON, "UTC").with_label("today, every 15 minutes")
    | (_YESTERDAY & _DAY_CLOSED.since_last_handled()).with_label("yesterday, once after it closed")
) & ~dg.AutomationCondition.in_progress()
