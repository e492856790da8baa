"""The asset catalog answers who owns an asset, which workflow it is in and what an operator can do."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from hub_pipelines import settings
from hub_pipelines.assets.catalog import WORKFLOW_OWNERS, WORKFLOW_TAG, AssetOutsideWorkflows, catalog_entry
from hub_pipelines.definitions import defs

SPECS = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
DAILY_ASSETS = ("orders/daily_revenue", "analytics/daily_rollups")


def test_every_asset_has_its_workflows_owner_and_workflow_tag() -> None:
    assert {spec.group_name for spec in SPECS.values()} == set(WORKFLOW_OWNERS)
    for key, spec in SPECS.items():
        assert spec.owners == [WORKFLOW_OWNERS[str(spec.group_name)]], key
        assert spec.tags.get(WORKFLOW_TAG) == spec.group_name, key


def test_every_asset_description_says_what_an_operator_can_do() -> None:
    for key, spec in SPECS.items():
        assert spec.description is not None and "**What you can do.**" in spec.description, key
    for key in DAILY_ASSETS:
        assert "Backfill" in str(SPECS[key].description), key
    for key in ("orders/order_events", "analytics/raw_events"):
        assert "Replay an offset range" in str(SPECS[key].description), key
    assert "hub-pipelines dead-letters show --source orders-landing" in str(
        SPECS["orders/order_events"].description
    )
    assert "event_dead_letters" in str(SPECS["analytics/raw_events"].description)
    ledger = str(SPECS["orders/order_ledger"].description)
    assert "hub-pipelines dead-letters show --source orders-intake" in ledger
    assert "hub-pipelines dead-letters replay <id>" in ledger


def test_the_asset_docstring_stays_first_in_its_description() -> None:
    revenue = str(SPECS["orders/daily_revenue"].description)
    assert revenue.startswith("Paid orders, items and revenue per currency for one UTC day")


def test_an_asset_outside_the_workflows_is_refused_by_name() -> None:
    with pytest.raises(AssetOutsideWorkflows, match=r"asset misc/orphan: group 'misc'"):
        catalog_entry(dg.AssetSpec(["misc", "orphan"], group_name="misc"))


def test_daily_assets_start_on_the_configured_fixed_day() -> None:
    for key in DAILY_ASSETS:
        partitions = SPECS[key].partitions_def
        assert isinstance(partitions, dg.DailyPartitionsDefinition), key
        assert partitions.get_first_partition_key() == settings.DAILY_PARTITIONS_START, key


def test_daily_partitions_start_is_read_from_hub_daily_partitions_start() -> None:
    program = (
        "from hub_pipelines.assets.daily_partitions import daily_partitions;"
        "print(daily_partitions.get_first_partition_key())"
    )
    environment = {**os.environ, "HUB_DAILY_PARTITIONS_START": "2025-06-01"}
    printed = subprocess.run(
        [sys.executable, "-c", program], env=environment, capture_output=True, text=True, check=True
    )
    assert printed.stdout.strip() == "2025-06-01"
