"""The local environment end to end: demo feeder -> sensors -> runs -> the three landing assets, checks green."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from tests.platform.conftest import LocalEnvironment

LANDING_ONLY = {
    "media_pipeline": [dg.AssetKey(["media", "uploads"])],
    "orders_pipeline": [dg.AssetKey(["orders", "order_events"])],
    "analytics_pipeline": [dg.AssetKey(["analytics", "raw_events"])],
}
SENSORS = {
    "media_uploads_sensor": "media_pipeline",
    "orders_topic_sensor": "orders_pipeline",
    "events_topic_sensor": "analytics_pipeline",
}
# Every sensor that starts work, in an order that lets each find what the previous one made: the orders
# downstream sensor starts the outbox relay once the ledger has booked a batch.
EVERY_STEP_SENSORS = {
    "media_uploads_sensor": "media_pipeline",
    "orders_topic_sensor": "orders_pipeline",
    "orders_downstream_sensor": "orders_downstream",
    "events_topic_sensor": "analytics_pipeline",
}


def _drive(env: LocalEnvironment, sensor_name: str, cursor: str | None) -> tuple[list, str | None]:
    """Tick a sensor and execute what it asks for, until it has nothing left to ask."""
    results = []
    for _ in range(10):
        result, cursor = env.tick(sensor_name, cursor)
        if isinstance(result, dg.SkipReason):
            return results, cursor
        for request in result.run_requests or []:
            job = SENSORS[sensor_name]
            results.append(env.run(sensor_name, job, request, asset_selection=LANDING_ONLY[job]))
    raise AssertionError(f"{sensor_name} kept requesting runs")


def _latest_metadata(env: LocalEnvironment, key: list[str], partition: str | None = None) -> dict:
    event = env.instance.get_latest_materialization_event(dg.AssetKey(key))
    assert event is not None and event.asset_materialization is not None
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def test_demo_work_flows_through_sensors_into_the_three_landing_assets(local_environment: LocalEnvironment):
    feeder = local_environment.demo_feeder(seed=7)
    uploaded = feeder.drop_uploads()
    feeder.send_orders(40)
    feeder.send_events(500)

    cursors: dict[str, str | None] = dict.fromkeys(SENSORS)
    for sensor_name in SENSORS:
        results, cursors[sensor_name] = _drive(local_environment, sensor_name, None)
        assert results and all(r.success for r in results), sensor_name
        for result in results:
            # WARN checks measure time (produce -> landed latency): a loaded machine may trip them.
            for check in result.get_asset_check_evaluations():
                if check.severity == dg.AssetCheckSeverity.ERROR:
                    assert check.passed, (sensor_name, check.check_name, check.metadata)

    partitions = local_environment.instance.get_dynamic_partitions("media_uploads")
    assert len(partitions) == len(uploaded) == 3
    orders = _latest_metadata(local_environment, ["orders", "order_events"])
    assert (orders["read"], orders["landed"]) == (40, 40)
    events = _latest_metadata(local_environment, ["analytics", "raw_events"])
    assert (events["read"], events["landed"]) == (500, 500)

    feeder.send_orders(5)
    results, _ = _drive(local_environment, "orders_topic_sensor", cursors["orders_topic_sensor"])
    assert len(results) == 1 and results[0].success
    assert _latest_metadata(local_environment, ["orders", "order_events"])["landed"] == 5


def test_cli_materializes_order_events_without_config(local_environment: LocalEnvironment, tmp_path: Path):
    local_environment.demo_feeder(seed=7).send_orders(12)
    home = tmp_path / "dagster_home"
    home.mkdir()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "hub_pipelines.definitions",
            "--select",
            "orders/order_events",
        ],
        env={**os.environ, "DAGSTER_HOME": str(home), "HUB_DATA_DIR": str(local_environment.data_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(["orders", "order_events"]))
    assert event is not None and event.asset_materialization is not None
    assert event.asset_materialization.metadata["landed"].value == 12


def test_demo_work_flows_through_every_asset_of_the_three_workflows(local_environment: LocalEnvironment):
    feeder = local_environment.demo_feeder(seed=7)
    feeder.drop_uploads()
    feeder.send_orders(20)
    feeder.send_events(300)

    for sensor_name, job in EVERY_STEP_SENSORS.items():
        result, _ = local_environment.tick(sensor_name, None)
        assert isinstance(result, dg.SensorResult), (sensor_name, result)
        for request in result.run_requests or []:
            run = local_environment.run(sensor_name, job, request)
            assert run.success, (sensor_name, request.partition_key)
            failed_checks = [
                c.check_name
                for c in run.get_asset_check_evaluations()
                if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR
            ]
            assert failed_checks == [], (sensor_name, failed_checks)

    instance = local_environment.instance
    published = instance.get_materialized_partitions(dg.AssetKey(["media", "media_record"]))
    assert len(published) == 3
    ledger = _latest_metadata(local_environment, ["orders", "order_ledger"])
    assert ledger["events"] == 20
    assert ledger["orders_paid"] == 20, str(ledger)
    for key in (
        ["orders", "outbox_relay"],
        ["analytics", "realtime_counters"],
        ["analytics", "anomaly_scores"],
    ):
        assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None, key
