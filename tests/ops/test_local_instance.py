"""The local instance file (dagster.yaml) and the code location's log format, as `make run` uses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import yaml

from hub_pipelines.definitions import defs

LOCAL_INSTANCE = Path(__file__).resolve().parents[2] / "dagster.yaml"

SENSOR_LAUNCHED_LANDING_RUN = """
import sys
import dagster as dg
from hub_pipelines import settings
from hub_pipelines.definitions import build_definitions, local_resources
from hub_pipelines.demo.feeder import DemoFeeder

resources = local_resources()
DemoFeeder(objects=resources["objects"], topics=resources["topics"], uploads_bucket=settings.UPLOADS_BUCKET,
           uploads_prefix=settings.UPLOADS_PREFIX, orders_topic=settings.ORDERS_TOPIC,
           events_topic=settings.EVENTS_TOPIC, signing_secret="s", seed=3).send_orders(2)
defs = build_definitions(resources, local=True)
with dg.instance_for_test() as instance:
    with dg.build_sensor_context(instance=instance, resources=resources,
                                 sensor_name="orders_topic_sensor") as context:
        [request] = defs.resolve_sensor_def("orders_topic_sensor")(context).run_requests
    run = defs.resolve_job_def("orders_pipeline").execute_in_process(
        run_config=request.run_config, instance=instance, tags=request.tags,
        asset_selection=[dg.AssetKey(["orders", "order_events"])])
    print(run.run_id)
"""


def test_local_instance_admits_one_run_at_a_time_into_each_pool() -> None:
    config = yaml.safe_load(LOCAL_INSTANCE.read_text())
    with dg.instance_for_test(overrides={"concurrency": config["concurrency"]}) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert pools.pool_granularity.value == "run"
        assert pools.default_pool_limit == 1

        storage = instance.event_log_storage
        for pool in ("transcode", "warehouse"):
            first, second = (
                instance.add_run(dg.DagsterRun(job_name="j", run_id=str(uuid.uuid4()))) for _ in "12"
            )
            assert storage.initialize_concurrency_limit_to_default(pool)
            assert storage.claim_concurrency_slot(pool, first.run_id, "step").is_claimed
            assert not storage.claim_concurrency_slot(pool, second.run_id, "step").is_claimed


def test_local_instance_evaluates_automation_conditions_through_sensors() -> None:
    config = yaml.safe_load(LOCAL_INSTANCE.read_text())
    with dg.instance_for_test(overrides={"auto_materialize": config["auto_materialize"]}) as instance:
        assert instance.auto_materialize_enabled
        assert instance.auto_materialize_use_sensors


def test_the_code_location_uses_exactly_the_transcode_and_warehouse_pools() -> None:
    pools = {pool for node in defs.resolve_asset_graph().asset_nodes for pool in node.pools or ()}
    assert pools == {"transcode", "warehouse"}


def test_text_logs_stay_the_default() -> None:
    assert "HUB_LOG_FORMAT" not in os.environ
    assert defs.loggers in (None, {})
    assert defs.resolve_job_def("orders_pipeline").loggers.keys() == {"console"}
    assert defs.resolve_job_def("orders_pipeline").run_config is None


def test_json_log_format_applies_to_a_sensor_requested_run(tmp_path: Path) -> None:
    # The run lands its range once: a following run would poll the quiet topic for its whole window.
    environment = {
        **os.environ,
        "HUB_LOG_FORMAT": "json",
        "HUB_DATA_DIR": str(tmp_path / "hub"),
        "HUB_ORDERS_FOLLOW_SECONDS": "0",
    }
    environment.pop("HUB_OTLP_ENDPOINT", None)
    environment.pop("HUB_PUSHGATEWAY_URL", None)
    finished = subprocess.run(
        [sys.executable, "-c", SENSOR_LAUNCHED_LANDING_RUN],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    run_id = finished.stdout.strip().splitlines()[-1]
    run_lines = [json.loads(line) for line in finished.stderr.splitlines() if line.startswith("{")]
    run_lines = [line for line in run_lines if line.get("run_id") == run_id]
    landed = [line for line in run_lines if "landed" in line["message"]]
    assert landed and landed[0]["asset_key"] == "orders/order_events"
    text_run_lines = [
        line for line in finished.stderr.splitlines() if run_id in line and not line.startswith("{")
    ]
    assert text_run_lines == []
