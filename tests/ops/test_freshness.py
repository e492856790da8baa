"""Freshness policies on the assets people depend on, evaluated the way Dagster's freshness daemon does,
and the produce -> landed latency check on the landing assets."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.definitions import freshness_evaluator
from dagster._core.definitions.freshness import (
    CronFreshnessPolicy,
    FreshnessState,
    TimeWindowFreshnessPolicy,
)
from dagster._core.definitions.freshness_evaluator import FRESHNESS_EVALUATORS_BY_POLICY_TYPE
from dagster._core.loader import LoadingContextForTest

from hub_pipelines import settings
from hub_pipelines.assets.policies import LANDING_LATENCY_CHECK, landing_latency_check
from hub_pipelines.definitions import defs
from hub_pipelines.landing.latency import MAX_METADATA, LandingLatency, landing_latency
from tests.ops.prod_files import PROD_INSTANCE

LEDGER = dg.AssetKey(["orders", "order_ledger"])
ROLLUPS = dg.AssetKey(["analytics", "daily_rollups"])
PUBLISHED = [dg.AssetKey(["media", "published"]), dg.AssetKey(["media", "media_record"])]
LANDINGS = [dg.AssetKey(["analytics", "raw_events"]), dg.AssetKey(["orders", "order_events"])]
LOCAL_INSTANCE = Path(__file__).resolve().parents[2] / "dagster.yaml"


def freshness_state(instance: dg.DagsterInstance, key: dg.AssetKey) -> FreshnessState:
    node = defs.resolve_asset_graph().get(key)
    assert node.freshness_policy is not None, key
    evaluator = FRESHNESS_EVALUATORS_BY_POLICY_TYPE[type(node.freshness_policy)]()
    return asyncio.run(evaluator.evaluate_freshness(LoadingContextForTest(instance), node))


def minutes_later(monkeypatch: pytest.MonkeyPatch, minutes: float) -> None:
    now = time.time() + minutes * 60
    monkeypatch.setattr(freshness_evaluator, "get_current_timestamp", lambda: now)


def test_ledger_turns_warn_after_5_and_fail_after_15_minutes_without_a_materialization(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with dg.instance_for_test() as instance:
        assert freshness_state(instance, LEDGER) == FreshnessState.UNKNOWN
        instance.report_runless_asset_event(dg.AssetMaterialization(LEDGER))
        assert freshness_state(instance, LEDGER) == FreshnessState.PASS
        minutes_later(monkeypatch, 6)
        assert freshness_state(instance, LEDGER) == FreshnessState.WARN
        minutes_later(monkeypatch, 16)
        assert freshness_state(instance, LEDGER) == FreshnessState.FAIL


def test_published_media_fails_after_an_hour_without_a_publication(monkeypatch: pytest.MonkeyPatch) -> None:
    with dg.instance_for_test() as instance:
        for key in PUBLISHED:
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        minutes_later(monkeypatch, 45)
        assert [freshness_state(instance, key) for key in PUBLISHED] == [FreshnessState.WARN] * 2
        minutes_later(monkeypatch, 61)
        assert [freshness_state(instance, key) for key in PUBLISHED] == [FreshnessState.FAIL] * 2


def test_daily_rollups_are_due_by_two_oclock_utc_each_day() -> None:
    policy = defs.resolve_asset_graph().get(ROLLUPS).freshness_policy
    assert isinstance(policy, CronFreshnessPolicy)
    assert (policy.deadline_cron, policy.timezone) == ("0 2 * * *", "UTC")
    assert policy.lower_bound_delta == timedelta(hours=2)
    ledger = defs.resolve_asset_graph().get(LEDGER).freshness_policy
    assert isinstance(ledger, TimeWindowFreshnessPolicy)


@pytest.mark.parametrize("instance_file", [LOCAL_INSTANCE, PROD_INSTANCE], ids=["local", "prod"])
def test_instance_files_turn_on_the_freshness_daemon(instance_file: Path) -> None:
    config = yaml.safe_load(instance_file.read_text())
    with dg.instance_for_test(overrides={"freshness": config["freshness"]}) as instance:
        assert instance.freshness_enabled


def test_landing_latency_is_the_median_and_maximum_wait_from_producer_stamp_to_landing() -> None:
    latency = landing_latency([1_000, 2_000, 4_000], landed_at=5.0)
    assert latency == LandingLatency(messages=3, p50_seconds=3.0, max_seconds=4.0)
    assert landing_latency([], landed_at=5.0) is None


def test_landing_latency_check_warns_when_the_newest_batch_passes_the_setting() -> None:
    budget = settings.LANDING_LATENCY_WARN_SECONDS
    slow = landing_latency_check(LandingLatency(5, p50_seconds=budget / 2, max_seconds=budget + 0.5), budget)
    fast = landing_latency_check(LandingLatency(5, p50_seconds=budget / 4, max_seconds=budget), budget)
    idle = landing_latency_check(None, budget)
    assert (slow.passed, slow.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert slow.metadata[MAX_METADATA] == dg.FloatMetadataValue(budget + 0.5)
    assert fast.passed and idle.passed
    check_keys = defs.resolve_asset_graph().asset_check_keys
    for key in LANDINGS:
        assert dg.AssetCheckKey(key, LANDING_LATENCY_CHECK) in check_keys
