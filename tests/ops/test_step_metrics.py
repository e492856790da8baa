"""Every asset step pushes its metrics to the Pushgateway when HUB_PUSHGATEWAY_URL is set."""

from __future__ import annotations

import time
import uuid

import dagster as dg
import pytest

from hub_pipelines import settings
from hub_pipelines.assets.instrumented import instrumented
from tests.ops.conftest import feeder, run_orders_pipeline
from tests.ops.test_ops_metrics import gateway_samples
from tests.platform.conftest import LocalEnvironment

BROKEN_KEY = ["media", f"broken_{uuid.uuid4().hex[:8]}"]


@dg.asset(key=BROKEN_KEY, group_name="media")
@instrumented(records=1)
def broken_step() -> dg.MaterializeResult:
    raise dg.Failure("the scanner refused every upload", allow_retries=False)


def pushed(url: str, name: str, asset: str, **labels: str) -> list[float]:
    wanted = {"job": "hub_pipelines", "asset": asset, **labels}
    return [value for found, value in gateway_samples(url).get(name, []) if found.items() >= wanted.items()]


def test_an_orders_run_pushes_success_records_lag_and_breaker_state_per_step(
    pushgateway_url: str, orders_environment: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_PUSHGATEWAY_URL", pushgateway_url)
    started = time.time()
    feeder(orders_environment).send_orders(3)

    run_orders_pipeline(orders_environment)

    for asset in ("orders/order_events", "orders/order_ledger", "orders/outbox_relay"):
        [success] = pushed(
            pushgateway_url, "hub_step_last_success_timestamp_seconds", asset, workflow="orders"
        )
        assert success >= started, asset
    assert pushed(pushgateway_url, "hub_batch_records", "orders/order_events") == [3]
    assert pushed(pushgateway_url, "hub_batch_records", "orders/order_ledger") == [3]
    lag = pushed(
        pushgateway_url, "hub_consumer_lag_messages", "orders/order_events", topic=settings.ORDERS_TOPIC
    )
    assert len(lag) == settings.TOPIC_PARTITIONS and sum(lag) == 0
    assert pushed(pushgateway_url, "hub_breaker_state", "orders/order_ledger", breaker="payments") == [0]


def test_a_failed_step_pushes_its_failure_time_and_no_success(
    pushgateway_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_PUSHGATEWAY_URL", pushgateway_url)
    started = time.time()

    result = dg.materialize([broken_step], raise_on_error=False)

    assert not result.success
    asset = "/".join(BROKEN_KEY)
    [failure] = pushed(pushgateway_url, "hub_step_last_failure_timestamp_seconds", asset, workflow="media")
    assert failure >= started
    assert pushed(pushgateway_url, "hub_step_last_success_timestamp_seconds", asset) == []


def test_without_a_pushgateway_url_a_step_runs_and_pushes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_PUSHGATEWAY_URL", raising=False)
    attempts: list[str] = []
    monkeypatch.setattr(
        "hub_pipelines.assets.instrumented.push_step_metrics", lambda *a: attempts.append("x")
    )

    assert not dg.materialize([broken_step], raise_on_error=False).success
    assert attempts == []
