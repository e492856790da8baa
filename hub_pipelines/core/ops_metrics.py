"""The metrics every workflow pushes, by the names the alert rules and the dashboard use.

Runs are short-lived and push to a Pushgateway, which keeps the last value pushed per group. So
each metric here is a gauge describing the latest step (its records, failures, duration and when it
last succeeded) rather than a counter: a counter restarted by every run cannot be `rate()`d. The
group (`job="hub_pipelines"`, `workflow`, `asset`) becomes labels on every series; rates over time
come from Prometheus's own history of these gauges.

Full names (namespace `hub_`), as deploy/prometheus/alerts.yml and deploy/grafana/hub_pipelines.json
reference them, are listed in METRIC_NAMES.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from hub_pipelines.core.telemetry import RunMetrics, push_metrics

PUSH_JOB = "hub_pipelines"

STEP_LAST_SUCCESS = "step_last_success_timestamp_seconds"
STEP_LAST_FAILURE = "step_last_failure_timestamp_seconds"
STEP_DURATION = "step_duration_seconds"
BATCH_RECORDS = "batch_records"
BATCH_FAILED_RECORDS = "batch_failed_records"
CONSUMER_LAG = "consumer_lag_messages"
BREAKER_STATE = "breaker_state"
QUARANTINED_UPLOADS = "quarantined_uploads"

METRIC_NAMES = tuple(
    f"hub_{name}"
    for name in (
        STEP_LAST_SUCCESS,
        STEP_LAST_FAILURE,
        STEP_DURATION,
        BATCH_RECORDS,
        BATCH_FAILED_RECORDS,
        CONSUMER_LAG,
        BREAKER_STATE,
        QUARANTINED_UPLOADS,
    )
)
"""Every series name these helpers push (namespace included)."""

ORDERS_OUTCOMES = "orders_outcomes_total"
ORDER_PROCESSING_SECONDS = "order_processing_seconds"
ORDERS_CACHE_HIT_RATE = "orders_cache_hit_rate"
ORDERS_PAYMENT_RETRIES = "orders_payment_retries_total"
ORDERS_BREAKER_STATE = "orders_breaker_state"
ORDERS_IN_FLIGHT_LIMIT = "orders_in_flight_limit"

# Pushed by orders/ledger_batch.py under job="orders_ledger", one group per push: like the gauges
# above they describe the latest batch, so the dashboard plots them as they are.
ORDERS_LEDGER_METRIC_NAMES = tuple(
    f"hub_{name}"
    for name in (
        ORDERS_OUTCOMES,
        ORDER_PROCESSING_SECONDS,
        ORDERS_CACHE_HIT_RATE,
        ORDERS_PAYMENT_RETRIES,
        ORDERS_BREAKER_STATE,
        ORDERS_IN_FLIGHT_LIMIT,
    )
)


def record_step(
    metrics: RunMetrics,
    *,
    succeeded: bool,
    seconds: float,
    records: int,
    failed_records: int = 0,
    at: float | None = None,
) -> None:
    """One step's outcome: `records` it handled, `failed_records` it rejected or dead-lettered."""
    now = time.time() if at is None else at
    stamp = STEP_LAST_SUCCESS if succeeded else STEP_LAST_FAILURE
    metrics.gauge(stamp, "Unix time the step last ended this way.").set(now)
    metrics.gauge(STEP_DURATION, "Wall time of the latest step, seconds.").set(seconds)
    metrics.gauge(BATCH_RECORDS, "Records the latest step handled.").set(records)
    metrics.gauge(BATCH_FAILED_RECORDS, "Records the latest step rejected or dead-lettered.").set(
        failed_records
    )


def record_consumer_lag(metrics: RunMetrics, topic: str, lag_by_partition: Mapping[int, int]) -> None:
    """Messages between each partition's end offset and the landing cursor."""
    gauge = metrics.gauge(CONSUMER_LAG, "Messages not yet landed, per partition.", ["topic", "partition"])
    for partition, lag in lag_by_partition.items():
        gauge.labels(topic=topic, partition=str(partition)).set(lag)


def record_breaker_state(metrics: RunMetrics, breaker: str, state_value: int) -> None:
    """A breaker's state as `Breaker.state_value` gives it: 0 closed, 1 half-open, 2 open."""
    metrics.gauge(BREAKER_STATE, "Circuit state: 0 closed, 1 half-open, 2 open.", ["breaker"]).labels(
        breaker=breaker
    ).set(state_value)


def record_quarantine(metrics: RunMetrics, held_by_reason: Mapping[str, int]) -> None:
    """Uploads currently held in quarantine, by reason (infected, unsupported_type, ...)."""
    gauge = metrics.gauge(QUARANTINED_UPLOADS, "Uploads held in quarantine.", ["reason"])
    for reason, held in held_by_reason.items():
        gauge.labels(reason=reason).set(held)


def push_step_metrics(metrics: RunMetrics, gateway_url: str | None, workflow: str, asset: str) -> bool:
    """Push under the step's group, replacing only the names this step measured; False when unset."""
    return push_metrics(
        metrics.registry, gateway_url, job=PUSH_JOB, grouping_key={"workflow": workflow, "asset": asset}
    )
