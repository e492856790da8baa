import importlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.analytics.dashboard import invalidate
from hub_pipelines.analytics.schema import configured_tables
from hub_pipelines.assets.analytics.following_runs import FollowingRun
from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.landing import UpstreamLossPager, land_and_report, landing_check_specs
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY
from hub_pipelines.assets.topic_config import TopicRangeConfig
from hub_pipelines.core.ports import Cache, Notifier, Topics, Warehouse
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.handoff import HANDOFF_POLL_SECONDS, take_over
from hub_pipelines.landing.latency import ProduceStamps
from hub_pipelines.landing.offsets import OffsetRange

RAW_EVENTS_KEY = ["analytics", "raw_events"]
LATE_DAYS_METADATA = "late_days"
LANDED_POSITIONS_METADATA = "landed_positions"


def warm_up() -> None:
    """Import what the first batch would otherwise import while the topic waits for it: pandas (pyarrow
    converts Python values through it) and the warehouse's client, seconds each under load."""
    importlib.import_module("pandas")
    importlib.import_module(
        "chdb.session" if settings.warehouse_admits_one_process() else "clickhouse_connect"
    )


def take_over_from(context: dg.AssetExecutionContext, follower: FollowingRun, predecessor: str) -> None:
    """Once this successor is up, stop its predecessor and wait for the runs it lets go first."""
    warm_up()
    started = time.monotonic()
    still = take_over(
        lambda: follower.announce_taking_over(predecessor),
        lambda: follower.to_let_go_first(predecessor, settings.warehouse_admits_one_process()),
        settings.HANDOFF_WAIT_SECONDS,
        HANDOFF_POLL_SECONDS,
    )
    waited = time.monotonic() - started
    if still:
        context.log.warning(
            f"taking over from run {predecessor}: runs {', '.join(still)} had not ended after {waited:.0f} s; "
            "going on (the chunk booking lands each offset once, chdb's folder lock is waited for)"
        )
    else:
        context.log.info(f"taking over from run {predecessor} after waiting {waited:.1f} s for it to end")


@dg.asset(
    key=RAW_EVENTS_KEY,
    group_name="analytics",
    kinds={"kafka", "clickhouse", "redis"},
    pool="warehouse",
    retry_policy=EXTERNAL_CALL_RETRY,
    check_specs=landing_check_specs(RAW_EVENTS_KEY),
)
@instrumented(records="run_read", failed_records=("run_dead_lettered",))
def raw_events(
    context: dg.AssetExecutionContext,
    config: TopicRangeConfig,
    topics: dg.ResourceParam[Topics],
    warehouse: dg.ResourceParam[Warehouse],
    cache: dg.ResourceParam[Cache],
    pager: dg.ResourceParam[Notifier],
) -> dg.MaterializeResult:
    """Site events from the events topic, landed once each in ClickHouse by the day of their own timestamp
    (and counted in the real-time counters as they land); invalid ones dead-lettered with the reason.
    A sensor's run keeps following the topic in micro-batches, each one a materialization, and hands
    over to the next run without a pause."""
    # The events sink works in Arrow (pyarrow, and pandas with it): the landing run imports it, the
    # code location not.
    from hub_pipelines.landing.topic_landing import land_ranges
    from hub_pipelines.landing.warehouse_events import EVENTS_CHUNK_MESSAGES, WarehouseEventsSink

    topic = settings.EVENTS_TOPIC
    follower = FollowingRun.of(context)
    if config.takes_over_from:
        take_over_from(context, follower, config.takes_over_from)
    sink = WarehouseEventsSink(warehouse, configured_tables(), counters=cache)
    losses = UpstreamLossPager.for_topic(pager, topic)
    counted_before = 0

    def land(ranges: tuple[OffsetRange, ...], stamps: ProduceStamps) -> tuple[LandingCounts, dict[str, Any]]:
        nonlocal counted_before
        landed_before = len(sink.outcomes)
        started = time.perf_counter()
        # The same landing as orders/order_events, in larger chunks (see EVENTS_CHUNK_MESSAGES).
        counts = land_ranges(
            topics,
            sink,
            topic,
            ranges,
            context.run.run_id,
            EVENTS_CHUNK_MESSAGES,
            read_ahead=True,
            on_upstream_loss=losses,
            on_read=stamps,
        )
        # The batch has landed once its counters are in Redis too; cached dashboard answers go stale.
        counted = sink.finish_counting()
        if counts.landed:
            invalidate(cache)
        seconds = time.perf_counter() - started
        outcomes = sink.outcomes[landed_before:]
        days = {day for outcome in outcomes for day in outcome.event_days}
        today = datetime.now(UTC).date()
        # The newest event this run has landed so far: what the stream observer's freshness is measured from.
        newest = max((o.newest_event_ts for o in sink.outcomes if o.newest_event_ts), default=None)
        details = {
            "chunks_counted": counted - counted_before,
            "events_per_second": round(counts.read / seconds) if seconds > 0 and counts.read else 0,
            "days_touched": ",".join(str(day) for day in sorted(days)) or "none",
            LATE_DAYS_METADATA: ",".join(str(day) for day in sorted(days) if day < today),
            "newest_event_ts": newest.isoformat() if newest else "none",
            LANDED_POSITIONS_METADATA: json.dumps(
                {str(p): end for p, end in sink.landed_positions(topic).items()}
            ),
        }
        counted_before = counted
        return counts, details

    return land_and_report(
        context,
        config,
        topics,
        sink,
        topic,
        losses,
        land,
        keep_following=lambda: not follower.others_wait_for_warehouse(),
        relieved=follower.relieved,
        successor_coming=follower.successor_coming,
    )
