"""What follows the ledger: order events out to Kafka, customer confirmations, revenue and inventory views."""

from datetime import date

import dagster as dg

from hub_pipelines.assets.daily_partitions import daily_partitions
from hub_pipelines.assets.instrumented import instrumented
from hub_pipelines.assets.orders.ledger import ORDER_LEDGER_KEY
from hub_pipelines.assets.policies import DAILY_REVENUE_AUTOMATION, EXTERNAL_CALL_RETRY
from hub_pipelines.core.ports import CustomerChannels, SqlDatabase, Topics
from hub_pipelines.orders.notifications import send_confirmations
from hub_pipelines.orders.outbox import relay_until_drained
from hub_pipelines.orders.reports import rebuild_daily_revenue, take_inventory_snapshot
from hub_pipelines.resources.orders.order_settings import OrderLedgerSettings

OUTBOX_RELAY_KEY = ["orders", "outbox_relay"]
OUTBOX_DRAINED_CHECK = "outbox_drained_within_bound"
DAILY_REVENUE_KEY = ["orders", "daily_revenue"]


@dg.asset(
    key=OUTBOX_RELAY_KEY,
    deps=[ORDER_LEDGER_KEY],
    retry_policy=EXTERNAL_CALL_RETRY,
    group_name="orders",
    kinds={"sql", "kafka"},
    check_specs=[
        dg.AssetCheckSpec(
            OUTBOX_DRAINED_CHECK,
            asset=OUTBOX_RELAY_KEY,
            description="No outbox row has waited longer than the configured bound.",
        )
    ],
)
@instrumented(records="published")
def outbox_relay(
    database: dg.ResourceParam[SqlDatabase],
    topics: dg.ResourceParam[Topics],
    order_settings: OrderLedgerSettings,
) -> dg.MaterializeResult:
    """order.created / order.paid / order.failed events published from the outbox to the order-events topic."""
    report = relay_until_drained(database, topics, order_settings.order_events_topic)
    return dg.MaterializeResult(
        metadata={
            "published": report.published,
            "still_unsent": report.still_unsent,
            "oldest_unsent_s": round(report.oldest_unsent_age_s, 3),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=OUTBOX_DRAINED_CHECK,
                passed=report.oldest_unsent_age_s <= order_settings.outbox_bound_s,
                metadata={"bound_s": order_settings.outbox_bound_s, "still_unsent": report.still_unsent},
            )
        ],
    )


@dg.asset(
    key=["orders", "notifications"],
    deps=[ORDER_LEDGER_KEY],
    retry_policy=EXTERNAL_CALL_RETRY,
    group_name="orders",
    kinds={"python", "sql"},
)
@instrumented(records="notifications")
def order_notifications(
    database: dg.ResourceParam[SqlDatabase],
    customer_notifier: dg.ResourceParam[CustomerChannels],
    order_settings: OrderLedgerSettings,
) -> dg.MaterializeResult:
    """Confirmation email and SMS for every paid order, at most once per order and channel."""
    counts = send_confirmations(
        database,
        customer_notifier.channels(),
        order_settings.cipher(),
        max_attempts=order_settings.notification_max_attempts,
        concurrency=order_settings.notification_concurrency,
    )
    return dg.MaterializeResult(metadata={"notifications": sum(counts.values()), **counts})


@dg.asset(
    key=DAILY_REVENUE_KEY,
    deps=[ORDER_LEDGER_KEY],
    partitions_def=daily_partitions,
    automation_condition=DAILY_REVENUE_AUTOMATION,
    group_name="orders",
    kinds={"sql"},
    tags={"hub/cadence": "daily"},
)
@instrumented(records="orders")
def daily_revenue(
    context: dg.AssetExecutionContext, database: dg.ResourceParam[SqlDatabase]
) -> dg.MaterializeResult:
    """Paid orders, items and revenue per currency for one UTC day (rebuilt whole, so backfills are safe)."""
    day = date.fromisoformat(context.partition_key)
    rows = rebuild_daily_revenue(database, day)
    metadata: dict[str, int | str] = {"day": day.isoformat(), "orders": sum(r.orders for r in rows)}
    metadata.update({f"revenue_minor_{r.currency}": r.revenue_minor for r in rows})
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=["orders", "inventory_snapshot"],
    deps=[ORDER_LEDGER_KEY],
    retry_policy=EXTERNAL_CALL_RETRY,
    group_name="orders",
    kinds={"sql"},
)
@instrumented(records="products")
def inventory_snapshot(database: dg.ResourceParam[SqlDatabase]) -> dg.MaterializeResult:
    """Stock on hand per product, beside units held by unpaid orders and units sold."""
    levels = take_inventory_snapshot(database)
    return dg.MaterializeResult(
        metadata={
            "products": len(levels),
            "units_in_stock": sum(level.stock for level in levels),
            "units_held_unpaid": sum(level.reserved_unpaid for level in levels),
            "units_sold": sum(level.sold for level in levels),
            "products_out_of_stock": sum(1 for level in levels if level.stock == 0),
        }
    )
