"""analytics/daily_rollups keeps today's partition current without a click: its automation condition,
evaluated by Dagster as the daemon's `analytics_automation` sensor does."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from hub_pipelines.assets.analytics.daily_rollups import DAILY_ROLLUPS_KEY
from hub_pipelines.assets.analytics.raw_events import RAW_EVENTS_KEY
from hub_pipelines.definitions import defs

ROLLUPS = dg.AssetKey(DAILY_ROLLUPS_KEY)


class Evaluations:
    """Successive evaluations of the code location's automation conditions, as the daemon's sensor runs them."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.cursor = None

    def requested_days(self, at: datetime) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=self.instance, evaluation_time=at, cursor=self.cursor
        )
        self.cursor = result.cursor
        return {str(day) for day in result.get_requested_partitions(ROLLUPS)}


def events_landed(instance: dg.DagsterInstance) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=RAW_EVENTS_KEY))


def test_today_is_rebuilt_after_each_quarter_hour_once_events_landed() -> None:
    with dg.instance_for_test() as instance:
        evaluations = Evaluations(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 7, tzinfo=UTC)) == set()
        # 10:15 passed, but no event has landed since: nothing new to roll up.
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 16, tzinfo=UTC)) == set()
        events_landed(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 17, tzinfo=UTC)) == {"2026-12-06"}
        # A follower landing every second does not ask again within the quarter hour.
        events_landed(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 18, tzinfo=UTC)) == set()
        # Events landed before an evaluation saw the 10:30 tick count for the 10:15 one: already rebuilt.
        events_landed(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 31, tzinfo=UTC)) == set()
        events_landed(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 32, tzinfo=UTC)) == {"2026-12-06"}


def test_after_midnight_only_the_new_day_is_requested_the_closed_one_is_the_late_days_sensors() -> None:
    with dg.instance_for_test() as instance:
        evaluations = Evaluations(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 23, 50, tzinfo=UTC)) == set()
        events_landed(instance)
        assert evaluations.requested_days(datetime(2026, 12, 7, 0, 1, tzinfo=UTC)) == set()
        events_landed(instance)
        assert evaluations.requested_days(datetime(2026, 12, 7, 0, 2, tzinfo=UTC)) == {"2026-12-07"}
        assert evaluations.requested_days(datetime(2026, 12, 7, 0, 16, tzinfo=UTC)) == set()


def test_the_analytics_automation_sensor_is_on_by_default_and_covers_daily_rollups() -> None:
    sensor = defs.resolve_sensor_def("analytics_automation")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.run_tags == {"hub/workflow": "analytics"}
    assert ROLLUPS in sensor.asset_selection.resolve(defs.resolve_asset_graph())
