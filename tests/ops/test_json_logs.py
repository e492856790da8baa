"""With JSON logs on, a partitioned materialization logs lines with run id, asset key, partition, trace id."""

import json
from typing import Any

import dagster as dg
import pytest
from opentelemetry.sdk.trace import TracerProvider

from hub_pipelines.json_logs import json_console_logger, python_logs_handler_config

days = dg.StaticPartitionsDefinition(["2026-11-24", "2026-11-25"])
tracer = TracerProvider().get_tracer("tests.ops.json_logs")
TRACE_IDS: list[str] = []
# Materializations are DEBUG-level events; production runs at JSON_LOGS_RUN_CONFIG's INFO.
DEBUG_JSON_LOGS = {"loggers": {"console": {"config": {"log_level": "DEBUG"}}}}


@dg.asset(key=["analytics", "daily_rollups"], partitions_def=days)
def daily_rollups(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    with tracer.start_as_current_span("rollup") as span:
        TRACE_IDS.append(format(span.get_span_context().trace_id, "032x"))
        context.log.info("rolled up 1200 events")
        return dg.MaterializeResult(metadata={"events": 1200})


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def run_rollups(instance: dg.DagsterInstance, json_logger: bool) -> str:
    defs = dg.Definitions(
        assets=[daily_rollups],
        jobs=[
            dg.define_asset_job(
                "rollups",
                [daily_rollups],
                partitions_def=days,
                config=DEBUG_JSON_LOGS if json_logger else None,
            )
        ],
        loggers={"console": json_console_logger} if json_logger else {},
    )
    result = defs.resolve_job_def("rollups").execute_in_process(instance=instance, partition_key="2026-11-25")
    assert result.success
    return result.run_id


def assert_step_lines(lines: list[dict[str, Any]], run_id: str) -> None:
    ours = [line for line in lines if line.get("message") == "rolled up 1200 events"]
    assert len(ours) == 1, lines
    line = ours[0]
    assert line["run_id"] == run_id
    assert line["asset_key"] == "analytics/daily_rollups"
    assert line["partition"] == "2026-11-25"
    assert line["trace_id"] == TRACE_IDS[-1]
    assert line["level"] == "INFO"
    materialized = [line for line in lines if line.get("event") == "ASSET_MATERIALIZATION"]
    assert materialized and all(m["asset_key"] == "analytics/daily_rollups" for m in materialized)
    assert all(m["run_id"] == run_id and m["partition"] == "2026-11-25" for m in materialized)


def test_json_console_logger_writes_run_asset_partition_and_trace(capsys: pytest.CaptureFixture[str]) -> None:
    with dg.instance_for_test() as instance:
        run_id = run_rollups(instance, json_logger=True)

    err = capsys.readouterr().err
    lines = json_lines(err)
    assert_step_lines(lines, run_id)
    assert not [line for line in err.splitlines() if line.strip() and not line.startswith("{")]


def test_instance_python_logs_handler_writes_the_same_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    overrides = {
        "python_logs": {
            "python_log_level": "DEBUG",
            "dagster_handler_config": python_logs_handler_config("DEBUG"),
        }
    }
    with dg.instance_for_test(overrides=overrides) as instance:
        run_id = run_rollups(instance, json_logger=False)

    assert_step_lines(json_lines(capsys.readouterr().err), run_id)
