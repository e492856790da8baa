import importlib
from typing import Any

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.analytics.schema import configured_tables
from hub_pipelines.assets.analytics.following_runs import FollowingRun
from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.landing import UpstreamLossPager, land_and_report, landing_check_specs
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY
from hub_pipelines.assets.topic_config import TopicRangeConfig
from hub_pipelines.core.ports import Cache, Notifier, Topics, Warehouse, WarehouseLoan
from hub_pipelines.landing.batches import BOOK_POSITIONS_METADATA, format_book_positions
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.handoff import take_over
from hub_pipelines.landing.latency import ProduceStamps
from hub_pipelines.landing.offsets import OffsetRange

RAW_EVENTS_KEY = ["analytics", "raw_events"]
LATE_DAYS_METADATA = "late_days"


def warm_up() -> None:
    """Import what the first batch would otherwise import while the topic waits for it: pandas (pyarrow
    converts Python values through it) and the warehouse's client, seconds each under load."""
    importlib.import_module("pandas")
    importlib.import_module(
        "chdb.session" if settings.warehouse_admits_one_process() else "clickhouse_connect"
    )


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
    from hub_pipelines.landing.events_landing import EventsLanding
    from hub_pipelines.landing.warehouse_events import WarehouseEventsSink

    topic = settings.EVENTS_TOPIC
    follower = FollowingRun.of(context)
    if predecessor := config.takes_over_from:
        handoff = take_over(
            predecessor,
            warm_up,
            announce=lambda: follower.announce_taking_over(predecessor),
            waiting_for=lambda: follower.to_let_go_first(predecessor),
            timeout=settings.HANDOFF_WAIT_SECONDS,
        )
        (context.log.warning if handoff.not_ended else context.log.info)(handoff.describe())
    sink = WarehouseEventsSink(warehouse, configured_tables(), counters=cache)
    losses = UpstreamLossPager.for_topic(pager, topic)
    landing = EventsLanding(topics, sink, cache, topic, context.run.run_id, losses)
    loans: list[WarehouseLoan] = []
    loans_in_run = 0

    def lend_warehouse() -> None:
        nonlocal loans_in_run
        loan = warehouse.lend_to_waiting_processes()
        if loan is not None:
            sink.forget_book()
            context.log.info(f"{topic}: {loan.describe()}")
            loans.append(loan)
            loans_in_run += 1

    def land(ranges: tuple[OffsetRange, ...], stamps: ProduceStamps) -> tuple[LandingCounts, dict[str, Any]]:
        batch = landing.land(ranges, stamps)
        # How long the warehouse was lent before this micro-batch (its events waited for that too), to whom.
        lent_seconds = round(sum(loan.seconds for loan in loans), 1)
        lent_to = "; ".join(", ".join(loan.borrowers) for loan in loans) or "none"
        loans.clear()
        return batch.counts, {
            "warehouse_lent_s": lent_seconds,
            "warehouse_lent_to": lent_to,
            "chunks_counted": batch.chunks_counted,
            "events_per_second": batch.events_per_second,
            "days_touched": ",".join(map(str, batch.days_touched)) or "none",
            LATE_DAYS_METADATA: ",".join(map(str, batch.late_days)),
            "newest_event_ts": batch.newest_event_ts.isoformat() if batch.newest_event_ts else "none",
            # The whole topic's, read from the warehouse: the stream observer measures lag from them.
            BOOK_POSITIONS_METADATA: format_book_positions(batch.landed_positions),
        }

    return land_and_report(
        context,
        config,
        topics,
        sink,
        topic,
        losses,
        land,
        keep_following=lambda: follower.follows_busy_topic_on(
            settings.warehouse_admits_one_process(), loans_in_run
        ),
        relieved=follower.relieved,
        successor_coming=follower.successor_coming,
        between_batches=lend_warehouse,
    )
