"""analytics/daily_rollups keeps today's partition current without a click: its automation condition,
evaluated by Dagster as the daemon's `analytics_automation` sensor does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from hub_pipelines.assets.analytics.daily_rollups import DAILY_ROLLUPS_KEY
from hub_pipelines.assets.analytics.raw_events import RAW_EVENTS_KEY
from hub_pipelines.definitions import defs
from tests.automation_conditions import Evaluations

ROLLUPS = dg.AssetKey(DAILY_ROLLUPS_KEY)


def events_landed(instance: dg.DagsterInstance) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=RAW_EVENTS_KEY))


def test_today_is_rebuilt_after_each_quarter_hour_once_events_landed() -> None:
    with dg.instance_for_test() as instance:
        evaluations = Evaluations(instance, ROLLUPS)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 7, tzinfo=UTC)) == set()
        # 10:15 passed, but no event has landed since: nothing new to roll up.
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 16, tzinfo=UTC)) == set()
        events_landed(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 17, tzinfo=UTC)) == {"2026-12-06"}
        # A follower landing every second does not ask again within the quarter hour.
        events_landed(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 18, tzinfo=UTC)) == set()
        # Landings are stamped with the real clock, which is past these evaluation times: each one
        # counts as landed after the 10:30 tick, so today is rebuilt again once that tick passed.
        events_landed(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 32, tzinfo=UTC)) == {"2026-12-06"}


def test_after_midnight_only_the_new_day_is_requested_the_closed_one_is_the_late_days_sensors() -> None:
    # Evaluated at a midnight ahead of the real clock, which stamps the landings: both landings then
    # come before the midnight tick, as a landing seen at 00:01 and at 00:02 does in production.
    new_day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=2)
    with dg.instance_for_test() as instance:
        evaluations = Evaluations(instance, ROLLUPS)
        assert evaluations.requested_days(new_day - timedelta(minutes=10)) == set()
        events_landed(instance)
        assert evaluations.requested_days(new_day + timedelta(minutes=1)) == set()
        events_landed(instance)
        assert evaluations.requested_days(new_day + timedelta(minutes=2)) == {f"{new_day:%Y-%m-%d}"}
        assert evaluations.requested_days(new_day + timedelta(minutes=16)) == set()


def test_the_analytics_automation_sensor_is_on_by_default_and_covers_daily_rollups() -> None:
    sensor = defs.resolve_sensor_def("analytics_automation")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.run_tags == {"hub/workflow": "analytics", "dagster/priority": "-10"}
    assert ROLLUPS in sensor.asset_selection.resolve(defs.resolve_asset_graph())
