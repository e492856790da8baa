"""One batch of the order ledger as a step runs it: place the orders, push their metrics, check the books,
page the orders whose payment outcome is overdue."""

from __future__ import annotations

from dataclasses import dataclass

from hub_pipelines.core.ops_metrics import (
    ORDER_PROCESSING_SECONDS,
    ORDERS_BREAKER_STATE,
    ORDERS_CACHE_HIT_RATE,
    ORDERS_IN_FLIGHT_LIMIT,
    ORDERS_OUTCOMES,
    ORDERS_PAYMENT_RETRIES,
)
from hub_pipelines.core.ports import Notifier
from hub_pipelines.core.telemetry import RunMetrics, push_metrics
from hub_pipelines.orders.invariants import Invariants, check_invariants
from hub_pipelines.orders.metrics import BatchReport
from hub_pipelines.orders.overdue_payments import OverduePayments, overdue_payments, page_overdue_payments
from hub_pipelines.orders.processing import OrderBatchProcessor

ORDER_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True)
class LedgerBatch:
    report: BatchReport
    invariants: Invariants
    overdue: OverduePayments


def run_ledger_batch(
    processor: OrderBatchProcessor,
    limit: int,
    pushgateway_url: str | None,
    pager: Notifier,
    payment_outcome_bound_s: float,
) -> LedgerBatch:
    """Process up to `limit` inbox events, push the batch's order metrics, then check the ledger's
    invariants (stock, charges, postings, duplicates) over the whole ledger and page, once each, the
    orders still without a payment outcome after `payment_outcome_bound_s` (also raised through the
    processor's alert hook, into the step's log)."""
    report = processor.process_batch(limit)
    push_batch_metrics(report, pushgateway_url)
    database = processor.database
    for paged in page_overdue_payments(database, pager, payment_outcome_bound_s):
        processor.alert(paged.order_id, f"paged: payment outcome overdue: {paged.describe()}")
    return LedgerBatch(
        report, check_invariants(database), overdue_payments(database, payment_outcome_bound_s)
    )


def push_batch_metrics(report: BatchReport, pushgateway_url: str | None) -> None:
    # Imported per batch, not with the code location: the breaker module loads pybreaker and redis.
    from hub_pipelines.core.breaker import STATE_VALUES

    metrics = RunMetrics()
    outcomes = metrics.counter(ORDERS_OUTCOMES, "Order events by outcome", ["outcome"])
    for status, count in report.counts.items():
        outcomes.labels(status).inc(count)
    timing = metrics.histogram(
        ORDER_PROCESSING_SECONDS, "Per-order processing time", buckets=ORDER_SECONDS_BUCKETS
    )
    for seconds in report.order_seconds:
        timing.observe(seconds)
    metrics.gauge(ORDERS_CACHE_HIT_RATE, "Catalog cache hit rate of the batch").set(report.cache.hit_rate)
    metrics.counter(ORDERS_PAYMENT_RETRIES, "Gateway calls retried").inc(report.payment_retries)
    metrics.gauge(ORDERS_BREAKER_STATE, "Payment breaker: 0 closed, 1 half-open, 2 open").set(
        STATE_VALUES.get(report.breaker_state, 0)
    )
    metrics.gauge(ORDERS_IN_FLIGHT_LIMIT, "Orders the ledger admitted at once at the batch's end").set(
        report.in_flight_limit
    )
    push_metrics(metrics.registry, pushgateway_url, job="orders_ledger")
