from typing import Any

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.landing import (
    UpstreamLossPager,
    land_and_report,
    land_topic_asset,
    landing_check_specs,
)
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY
from hub_pipelines.assets.topic_config import TopicRangeConfig
from hub_pipelines.core.ports import Cache, Notifier, PaymentGateway, SqlDatabase, Topics
from hub_pipelines.landing.counts import LandingCounts
from hub_pipelines.landing.latency import ProduceStamps
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.sql_inbox import SqlInboxSink
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.resources.orders.order_settings import OrderLedgerSettings

ORDER_EVENTS_KEY = ["orders", "order_events"]


@dg.asset(
    key=ORDER_EVENTS_KEY,
    group_name="orders",
    kinds={"kafka", "sql"},
    retry_policy=EXTERNAL_CALL_RETRY,
    check_specs=landing_check_specs(ORDER_EVENTS_KEY),
)
@instrumented(records="run_read", failed_records=("run_dead_lettered",))
def order_events(
    context: dg.AssetExecutionContext,
    config: TopicRangeConfig,
    topics: dg.ResourceParam[Topics],
    database: dg.ResourceParam[SqlDatabase],
    pager: dg.ResourceParam[Notifier],
    cache: dg.ResourceParam[Cache],
    payment_gateway: dg.ResourceParam[PaymentGateway],
    order_settings: OrderLedgerSettings,
) -> dg.MaterializeResult:
    """Raw order events from the orders topic, landed once each in the SQL inbox; undecodable ones
    dead-lettered. A run that follows the topic places each micro-batch's orders as soon as it landed."""
    sink = SqlInboxSink(database)
    if config.follow_seconds <= 0:
        return land_topic_asset(context, config, topics, sink, settings.ORDERS_TOPIC, pager)
    return follow_and_place(context, config, topics, sink, pager, cache, payment_gateway, order_settings)


def follow_and_place(
    context: dg.AssetExecutionContext,
    config: TopicRangeConfig,
    topics: Topics,
    sink: SqlInboxSink,
    pager: Notifier,
    cache: Cache,
    payment_gateway: PaymentGateway,
    order_settings: OrderLedgerSettings,
) -> dg.MaterializeResult:
    """Follow the lane's partitions, and after each micro-batch run the lane's ledger over it (reported as
    a materialization of the ledger), so an order is PAID a poll after it arrives, not after the follow
    window; the ledger step after this one places what is left and checks the ledger."""
    # ledger.py names this module's asset as its dependency.
    from hub_pipelines.assets.orders.ledger import ORDER_LEDGER_KEY, lane_ledger, place_lane_batch

    topic = settings.ORDERS_TOPIC
    losses = UpstreamLossPager.for_topic(pager, topic)
    ledger = lane_ledger(context, config, sink.database, cache, payment_gateway, pager, order_settings)

    def land_then_place(
        ranges: tuple[OffsetRange, ...], stamps: ProduceStamps
    ) -> tuple[LandingCounts, dict[str, Any]]:
        counts = land_ranges(
            topics, sink, topic, ranges, context.run.run_id, on_upstream_loss=losses, on_read=stamps
        )
        if not counts.read:
            return counts, {}
        report = place_lane_batch(context, ledger, order_settings)
        context.log_event(dg.AssetMaterialization(asset_key=ORDER_LEDGER_KEY, metadata=report.as_metadata()))
        return counts, {"ledger_events": sum(report.counts.values())}

    # Orders hold no pool another run waits for: a busy follower follows on up to its longest time.
    return land_and_report(context, config, topics, sink, topic, losses, land_then_place, lambda: True)
