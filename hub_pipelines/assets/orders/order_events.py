import dagster as dg

from hub_pipelines import settings
from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.landing import land_topic_asset, landing_check_specs
from hub_pipelines.assets.policies import EXTERNAL_CALL_RETRY
from hub_pipelines.assets.topic_config import TopicRangeConfig
from hub_pipelines.core.ports import Notifier, SqlDatabase, Topics
from hub_pipelines.landing.sql_inbox import SqlInboxSink

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
) -> dg.MaterializeResult:
    """Raw order events from the orders topic, landed once each in the SQL inbox; undecodable ones dead-lettered."""
    return land_topic_asset(context, config, topics, SqlInboxSink(database), settings.ORDERS_TOPIC, pager)
