"""The order ledger asset: landed order events become paid (or compensated) orders, checked every batch."""

import contextlib
from dataclasses import dataclass, field

import dagster as dg
from opentelemetry import trace

from hub_pipelines.assets.instrumented import instrumented, step_metrics
from hub_pipelines.assets.orders.order_events import ORDER_EVENTS_KEY
from hub_pipelines.assets.policies import ORDER_LEDGER_FRESHNESS
from hub_pipelines.assets.topic_config import LaneConfig
from hub_pipelines.assets.tracing import continue_trace
from hub_pipelines.core.ops_metrics import record_breaker_state
from hub_pipelines.core.ports import Cache, Notifier, PaymentGateway, SqlDatabase
from hub_pipelines.orders.catalog import Catalog
from hub_pipelines.orders.invariants import Invariants
from hub_pipelines.orders.ledger_batch import push_batch_metrics, run_ledger_batch
from hub_pipelines.orders.metrics import BatchReport
from hub_pipelines.orders.overdue_payments import OverduePayments
from hub_pipelines.orders.processing import PLACE_ORDER, AdmittedOrder, OrderBatchProcessor
from hub_pipelines.resources.orders.order_settings import OrderLedgerSettings

ORDER_LEDGER_KEY = ["orders", "order_ledger"]
STOCK_CHECK = "stock_never_negative"
CHARGE_CHECK = "one_successful_charge_per_paid_order"
BALANCE_CHECK = "ledger_balances"
DUPLICATES_CHECK = "duplicates_rejected_equal_duplicates_sent"
SETTLE_CHECK = "payments_settle_within_bound"


def _checks() -> list[dg.AssetCheckSpec]:
    descriptions = {
        STOCK_CHECK: "No product's stock is below zero.",
        CHARGE_CHECK: "Every PAID order has exactly one successful charge, and no other order has one.",
        BALANCE_CHECK: "Every posting balances, and every final order's receivable is zero.",
        DUPLICATES_CHECK: "Events rejected as duplicates = events that repeated an idempotency key.",
        SETTLE_CHECK: "No order (not parked) has waited longer than payment_outcome_bound_s for its payment "
        "outcome; each one past it is paged once.",
    }
    return [
        dg.AssetCheckSpec(name, asset=ORDER_LEDGER_KEY, description=text)
        for name, text in descriptions.items()
    ]


def overdue_result(overdue: OverduePayments) -> dg.AssetCheckResult:
    """ERROR like the invariants: an order past the bound holds stock and perhaps the customer's money."""
    return dg.AssetCheckResult(
        check_name=SETTLE_CHECK,
        passed=not overdue.count,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "bound_s": overdue.bound_s,
            "overdue": overdue.count,
            "oldest_age_s": round(overdue.oldest_age_s, 1),
            "oldest": [payment.describe()[:300] for payment in overdue.oldest],
        },
    )


def invariant_results(invariants: Invariants) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            check_name=STOCK_CHECK,
            passed=not invariants.negative_stock_products,
            metadata={"negative": ", ".join(invariants.negative_stock_products[:20]) or "none"},
        ),
        dg.AssetCheckResult(
            check_name=CHARGE_CHECK,
            passed=not invariants.paid_without_one_charge,
            metadata={"violations": ", ".join(invariants.paid_without_one_charge[:20]) or "none"},
        ),
        dg.AssetCheckResult(
            check_name=BALANCE_CHECK,
            passed=not invariants.unbalanced_postings and not invariants.final_orders_with_open_receivable,
            metadata={
                "unbalanced_postings": len(invariants.unbalanced_postings),
                "final_orders_with_open_receivable": len(invariants.final_orders_with_open_receivable),
            },
        ),
        dg.AssetCheckResult(
            check_name=DUPLICATES_CHECK,
            passed=invariants.duplicates_rejected == invariants.duplicates_sent,
            metadata={
                "duplicates_rejected": invariants.duplicates_rejected,
                "duplicates_sent": invariants.duplicates_sent,
            },
        ),
    ]


@dataclass
class TracedOrderBatchProcessor(OrderBatchProcessor):
    """The batch processor placing each order in a span that continues the trace its producer put in the
    message headers (linked to the step's span), so the order's outbox events carry that trace on."""

    step_span: trace.SpanContext = field(default=trace.INVALID_SPAN_CONTEXT, init=False, repr=False)

    def process_batch(self, limit: int = 5000) -> BatchReport:
        # Orders are placed on worker threads, where the step's span is not current.
        self.step_span = trace.get_current_span().get_span_context()
        return super().process_batch(limit)

    def order_context(
        self, admitted: AdmittedOrder, name: str = PLACE_ORDER
    ) -> contextlib.AbstractContextManager[object]:
        position = admitted.event.position
        attributes = {
            "messaging.destination.name": position.topic,
            "messaging.destination.partition.id": str(position.partition),
            "messaging.kafka.offset": str(position.offset),
        }
        return continue_trace(admitted.event.headers, name, self.step_span, attributes)


def lane_ledger(
    context: dg.AssetExecutionContext,
    lane: LaneConfig,
    database: SqlDatabase,
    cache: Cache,
    payment_gateway: PaymentGateway,
    pager: Notifier,
    order_settings: OrderLedgerSettings,
) -> TracedOrderBatchProcessor:
    """The batch processor of one lane of the orders topic: every alert in the step's log, those that
    need a person also paged."""
    return TracedOrderBatchProcessor(
        database=database,
        catalog=Catalog(database, cache),
        gateway=payment_gateway,
        authenticator=order_settings.authenticator(),
        rate_limiter=order_settings.rate_limiter(),
        cipher=order_settings.cipher(),
        alert=lambda subject, reason: context.log.error(f"ALERT {subject}: {reason}"),
        pager=pager,
        topic=order_settings.orders_topic,
        lane=lane.lane,
        lanes=lane.lanes,
        min_in_flight=order_settings.min_in_flight,
        max_in_flight=order_settings.max_in_flight,
        stale_after_s=order_settings.stale_after_s,
    )


def place_lane_batch(
    context: dg.AssetExecutionContext, ledger: OrderBatchProcessor, order_settings: OrderLedgerSettings
) -> BatchReport:
    """One ledger batch over what the lane has landed and not placed, logged and pushed as metrics."""
    report = ledger.process_batch(order_settings.batch_limit)
    context.log.info(f"order ledger batch: {report.counts}, reconciled {report.reconciled}")
    push_batch_metrics(report, order_settings.pushgateway_url)
    return report


@dg.asset(
    key=ORDER_LEDGER_KEY,
    freshness_policy=ORDER_LEDGER_FRESHNESS,
    deps=[ORDER_EVENTS_KEY],
    group_name="orders",
    kinds={"python", "sql", "redis", "stripe"},
    check_specs=_checks(),
)
@instrumented(records="events", failed_records=("orders_rejected",))
def order_ledger(
    context: dg.AssetExecutionContext,
    config: LaneConfig,
    database: dg.ResourceParam[SqlDatabase],
    cache: dg.ResourceParam[Cache],
    payment_gateway: dg.ResourceParam[PaymentGateway],
    pager: dg.ResourceParam[Notifier],
    order_settings: OrderLedgerSettings,
) -> dg.MaterializeResult:
    """Orders placed from the landed events of the run's lane: validated, price-checked, reserved, paid or
    compensated, booked."""
    # Imported per run, not with the code location: the breaker module loads pybreaker and redis.
    from hub_pipelines.core.breaker import STATE_VALUES

    ledger = lane_ledger(context, config, database, cache, payment_gateway, pager, order_settings)
    batch = run_ledger_batch(
        ledger,
        order_settings.batch_limit,
        order_settings.pushgateway_url,
        pager,
        order_settings.payment_outcome_bound_s,
    )
    report = batch.report
    context.log.info(f"order ledger batch: {report.counts}, reconciled {report.reconciled}")
    record_breaker_state(step_metrics(), "payments", STATE_VALUES.get(report.breaker_state, 0))
    return dg.MaterializeResult(
        metadata=report.as_metadata(),
        check_results=[*invariant_results(batch.invariants), overdue_result(batch.overdue)],
    )
