"""Orders a ledger batch left open get a run though no order arrives: the reconcile sensor, on a real
Dagster instance, asks for one catch-up run per ledger batch that left orders open, once the batch is
older than the wait and no orders run is in flight, and none otherwise."""

from __future__ import annotations

import dagster as dg
import pytest

from hub_pipelines.assets.orders.ledger import ORDER_LEDGER_KEY
from hub_pipelines.orders.reconcile_runs import next_reconcile_step, open_orders
from hub_pipelines.sensors.orders import build_orders_reconcile_sensor


def test_open_orders_counts_deferred_unknown_and_retried_orders_of_the_batch_and_its_reconciliation():
    metadata = {"orders_paid": 7, "orders_deferred": 3, "reconciled_payment_unknown": 2, "orders_retry": 1}
    assert open_orders(metadata) == 6
    assert open_orders({"orders_paid": 7, "orders_failed": 2, "orders_parked": 1}) == 0


@pytest.mark.parametrize(
    ("newest", "open_count", "age_s", "in_flight", "requested"),
    [
        (None, 0, 0.0, False, False),
        (9, 0, 500.0, False, False),
        (9, 4, 500.0, True, False),
        (9, 4, 10.0, False, False),
        (9, 4, 60.0, False, True),
    ],
)
def test_a_catch_up_run_is_due_only_for_open_orders_past_the_wait_with_no_run_in_flight(
    newest, open_count, age_s, in_flight, requested
):
    step = next_reconcile_step(newest, open_count, age_s, in_flight, wait_s=60.0)
    assert (step.run_key is not None) == requested, step.reason
    if requested:
        assert step.run_key == f"orders-reconcile:{newest}"


def _ledger_batch(instance: dg.DagsterInstance, **counts: int) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(ORDER_LEDGER_KEY, metadata=counts))


def _tick(instance: dg.DagsterInstance, wait_seconds: float) -> dg.RunRequest | dg.SkipReason:
    sensor = build_orders_reconcile_sensor(wait_seconds)
    result = sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.RunRequest | dg.SkipReason), result
    return result


def test_reconcile_sensor_asks_for_one_run_per_batch_that_left_orders_open_and_none_after_a_clean_one():
    with dg.DagsterInstance.ephemeral() as instance:
        assert isinstance(_tick(instance, 0), dg.SkipReason)

        _ledger_batch(instance, orders_paid=5, orders_deferred=681)
        waiting = _tick(instance, 3600)
        assert isinstance(waiting, dg.SkipReason) and "681 orders open" in str(waiting.skip_message)
        first = _tick(instance, 0)
        assert isinstance(first, dg.RunRequest) and first.run_key

        _ledger_batch(instance, reconciled_deferred=681)
        second = _tick(instance, 0)
        assert isinstance(second, dg.RunRequest) and second.run_key not in (None, first.run_key)

        _ledger_batch(instance, reconciled_paid=681)
        done = _tick(instance, 0)
        assert isinstance(done, dg.SkipReason) and "no order open" in str(done.skip_message)
