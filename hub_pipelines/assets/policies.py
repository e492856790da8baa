"""Retry policies for steps that call external services, freshness policies, and automation conditions."""

from datetime import timedelta

import dagster as dg

from hub_pipelines.landing.latency import LandingLatency

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
# analytics/daily_rollups: today's rollups so far every 15 minutes, once events have landed since the
# tick. Each rebuild queues for the `warehouse` pool behind a following landing run (locally chdb admits
# one process), so a quarter hour leaves room for both. Closed days (yesterday once it closes, and any
# day late events reach) are `analytics_late_days_sensor`'s: a condition for them too would rebuild
# them twice.
DAILY_ROLLUPS_REFRESH_CRON = "*/15 * * * *"
DAILY_ROLLUPS_AUTOMATION: dg.AutomationCondition = (
    dg.AutomationCondition.on_cron(DAILY_ROLLUPS_REFRESH_CRON, "UTC").with_label(
        "today, every 15 minutes once events landed"
    )
    & ~dg.AutomationCondition.in_progress()
)
# Freshness of what the landing assets land, from the producer's stamp to landed (rows and, for events,
# the Redis counters): each landing's newest batch carries its p50 and max as numbers the UI plots, and
# this check turns WARN when that batch's slowest message passed HUB_LANDING_LATENCY_WARN_SECONDS.
LANDING_LATENCY_CHECK = "produce_to_landed_within_budget"


def landing_latency_check_spec(asset_key: list[str]) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        LANDING_LATENCY_CHECK,
        asset=asset_key,
        description="The newest landed batch's slowest message went from its producer to landed within "
        "HUB_LANDING_LATENCY_WARN_SECONDS (warns otherwise).",
    )


def landing_latency_check(latency: LandingLatency | None, budget_seconds: float) -> dg.AssetCheckResult:
    """PASS when the newest batch with messages landed them all within the budget (or none landed)."""
    metadata: dict[str, dg.RawMetadataValue] = {"budget_s": budget_seconds}
    if latency is None:
        return dg.AssetCheckResult(
            check_name=LANDING_LATENCY_CHECK, passed=True, metadata={**metadata, "messages": 0}
        )
    return dg.AssetCheckResult(
        check_name=LANDING_LATENCY_CHECK,
        passed=latency.max_seconds <= budget_seconds,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={**metadata, "messages": latency.messages, **latency.as_metadata()},
    )
