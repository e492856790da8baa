"""Dagster run logs as JSON lines (HUB_LOG_FORMAT=json): run id, asset key, partition and trace id each.

`json_console_logger` replaces Dagster's text console logger in a job whose Definitions carry it as
`loggers={"console": json_console_logger}` and whose run config turns it on (`JSON_LOGS_RUN_CONFIG`,
the default config of an asset job: Dagster uses a job's loggers only when run config names them). Each line comes from `JsonLogFormatter` (core.telemetry),
plus the asset key: a materialization names its asset; any other line of a step names the asset
the step computes, read from the op name (Dagster names an asset's op after its key, joined by
`__`). Trace ids are the OpenTelemetry span current when the line was logged.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

import dagster as dg

from hub_pipelines.core.telemetry import JsonLogFormatter
from hub_pipelines.settings import json_logs_enabled

LOGGER_NAME = "hub_pipelines.run"
JSON_LOGS_RUN_CONFIG: Mapping[str, Any] = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _event_asset_key(meta: Mapping[str, Any]) -> str | None:
    event = meta.get("dagster_event")
    asset_key = getattr(event, "asset_key", None) if event is not None else None
    return asset_key.to_user_string() if asset_key is not None else None


def _op_asset_key(meta: Mapping[str, Any]) -> str | None:
    op_name = meta.get("op_name")
    return op_name.replace("__", "/") if op_name else None


class DagsterJsonLogFormatter(JsonLogFormatter):
    """JsonLogFormatter plus the asset key and the Dagster event type from the record's metadata."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None)
        if not isinstance(meta, Mapping):
            return super().format(record)
        entry = json.loads(super().format(record))
        asset_key = getattr(record, "asset_key", None) or _event_asset_key(meta) or _op_asset_key(meta)
        if asset_key is not None:
            entry["asset_key"] = str(asset_key)
        event = meta.get("dagster_event")
        if event is not None:
            entry["event"] = event.event_type_value
        return json.dumps(entry, ensure_ascii=False, default=str)


@dg.logger(
    config_schema={"log_level": dg.Field(str, default_value="INFO", is_required=False)},
    description="One JSON object per line on stderr, with run id, asset key, partition and trace id.",
)
def json_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    level = init_context.logger_config["log_level"].upper()
    logger = logging.Logger(LOGGER_NAME, level=level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(DagsterJsonLogFormatter())
    logger.addHandler(handler)
    return logger


def job_logs_config() -> Mapping[str, Any] | None:
    """The default run config of every job: JSON_LOGS_RUN_CONFIG when HUB_LOG_FORMAT=json, else none.

    As a job's default config it applies to runs sensors request too (their run config is merged in).
    """
    return JSON_LOGS_RUN_CONFIG if json_logs_enabled() else None


def definitions_loggers() -> dict[str, dg.LoggerDefinition]:
    """The loggers of the Definitions: JSON on the console when HUB_LOG_FORMAT=json, else Dagster's own."""
    return {"console": json_console_logger} if json_logs_enabled() else {}


def python_logs_handler_config(level: str = "INFO") -> dict[str, Any]:
    """The `python_logs.dagster_handler_config` that sends the same lines through the instance.

    For dagster.yaml (or the Helm chart's pythonLogs.dagsterHandlerConfig) where run logs should be
    JSON whatever the code location's loggers are.
    """
    return {
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "level": level,
                "stream": "ext://sys.stderr",
                "formatter": "json",
            }
        },
        "formatters": {"json": {"()": f"{__name__}.DagsterJsonLogFormatter"}},
    }
