"""The daily rollups asset run by Dagster: its totals check is recorded against the day it checked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from hub_pipelines.analytics.schema import AnalyticsTables
from hub_pipelines.assets.analytics.daily_rollups import DAILY_ROLLUPS_KEY, TOTALS_CHECK, daily_rollups
from hub_pipelines.landing.offsets import OffsetRange
from hub_pipelines.landing.topic_landing import land_ranges
from hub_pipelines.landing.warehouse_events import WarehouseEventsSink
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from tests.analytics.demo_events import demo_event_topic

DAY = "2026-11-24"


def test_rollup_totals_check_is_recorded_for_the_day_it_checked(
    tmp_path: Path, warehouse: ChdbWarehouse, tables: AnalyticsTables, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_ANALYTICS_DATABASE", tables.database)
    monkeypatch.delenv("HUB_PUSHGATEWAY_URL", raising=False)
    topics = demo_event_topic(tmp_path, "events-day", 300, datetime(2026, 11, 24, 10, tzinfo=UTC), seed=3)
    land_ranges(topics, WarehouseEventsSink(warehouse, tables), "events-day", [OffsetRange(0, 0, 300)], "r1")
    check_key = dg.AssetCheckKey(dg.AssetKey(DAILY_ROLLUPS_KEY), TOTALS_CHECK)

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [daily_rollups], partition_key=DAY, resources={"warehouse": warehouse}, instance=instance
        )
        [evaluation] = result.get_asset_check_evaluations()
        record = instance.get_latest_asset_check_evaluation_record(check_key)

    assert evaluation.passed
    assert evaluation.partition == DAY
    # What the UI's check history reads: the execution record of the check, with its partition.
    assert record is not None and record.partition == DAY
