"""Step metrics pushed to a real Pushgateway arrive under the names and labels the alerts use."""

from __future__ import annotations

import urllib.request
import uuid

from prometheus_client.parser import text_string_to_metric_families

from hub_pipelines.core.ops_metrics import (
    METRIC_NAMES,
    push_step_metrics,
    record_breaker_state,
    record_consumer_lag,
    record_quarantine,
    record_step,
)
from hub_pipelines.core.telemetry import RunMetrics


def gateway_samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_step_metrics_arrive_with_workflow_and_asset_labels(pushgateway_url: str) -> None:
    asset = f"media/renditions-{uuid.uuid4().hex[:8]}"
    metrics = RunMetrics()
    record_step(metrics, succeeded=True, seconds=12.5, records=40, failed_records=3, at=1_700_000_000)
    record_consumer_lag(metrics, "events", {0: 120, 1: 0})
    record_breaker_state(metrics, "clamd", 2)
    record_quarantine(metrics, {"infected": 4})

    assert push_step_metrics(metrics, pushgateway_url, "media", asset)

    samples = gateway_samples(pushgateway_url)
    ours = {"job": "hub_pipelines", "workflow": "media", "asset": asset}

    def value(name: str, **labels: str) -> float:
        matches = [v for found, v in samples[name] if found.items() >= {**ours, **labels}.items()]
        assert len(matches) == 1, (name, labels, samples.get(name))
        return matches[0]

    assert value("hub_step_last_success_timestamp_seconds") == 1_700_000_000
    assert value("hub_step_duration_seconds") == 12.5
    assert value("hub_batch_records") == 40
    assert value("hub_batch_failed_records") == 3
    assert value("hub_consumer_lag_messages", topic="events", partition="0") == 120
    assert value("hub_breaker_state", breaker="clamd") == 2
    assert value("hub_quarantined_uploads", reason="infected") == 4
    assert not any(
        found.get("asset") == asset for found, _ in samples.get("hub_step_last_failure_timestamp_seconds", [])
    )


def test_a_failed_step_pushes_its_failure_time_beside_the_earlier_success(pushgateway_url: str) -> None:
    asset = f"orders/order_ledger-{uuid.uuid4().hex[:8]}"
    succeeded = RunMetrics()
    record_step(succeeded, succeeded=True, seconds=1, records=10, at=100)
    push_step_metrics(succeeded, pushgateway_url, "orders", asset)
    failed = RunMetrics()
    record_step(failed, succeeded=False, seconds=2, records=10, failed_records=10, at=200)
    push_step_metrics(failed, pushgateway_url, "orders", asset)

    samples = gateway_samples(pushgateway_url)

    def ours(name: str) -> list[float]:
        return [v for labels, v in samples[name] if labels.get("asset") == asset]

    assert ours("hub_step_last_success_timestamp_seconds") == [100]
    assert ours("hub_step_last_failure_timestamp_seconds") == [200]
    assert ours("hub_batch_failed_records") == [10]


def test_nothing_is_pushed_without_a_gateway() -> None:
    metrics = RunMetrics()
    record_step(metrics, succeeded=True, seconds=1, records=1)
    assert push_step_metrics(metrics, None, "media", "media/published") is False


def test_metric_names_are_namespaced_and_unique() -> None:
    assert all(name.startswith("hub_") for name in METRIC_NAMES)
    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)
