"""orders/daily_revenue is materialized without a click: its automation condition, evaluated by Dagster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from hub_pipelines.assets.orders.downstream import DAILY_REVENUE_KEY
from hub_pipelines.assets.orders.ledger import ORDER_LEDGER_KEY
from hub_pipelines.definitions import defs
from tests import automation_conditions

REVENUE = dg.AssetKey(DAILY_REVENUE_KEY)


class Evaluations(automation_conditions.Evaluations):
    """The conditions' evaluations, holding that only daily_revenue's days were requested."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        super().__init__(instance, REVENUE)

    def requested_days(self, at: datetime) -> set[str]:
        days = super().requested_days(at)
        assert self.requested_elsewhere == 0
        return days


def ledger_batch_landed(instance: dg.DagsterInstance) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=ORDER_LEDGER_KEY))


def test_today_is_rebuilt_after_each_quarter_hour_once_the_ledger_moved() -> None:
    with dg.instance_for_test() as instance:
        evaluations = Evaluations(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 7, tzinfo=UTC)) == set()
        # 10:15 passed, but the ledger has not moved since: nothing new to count yet.
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 16, tzinfo=UTC)) == set()
        ledger_batch_landed(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 17, tzinfo=UTC)) == {"2026-12-06"}
        # Another batch within the same quarter hour waits for the next tick.
        ledger_batch_landed(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 18, tzinfo=UTC)) == set()
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 31, tzinfo=UTC)) == set()
        ledger_batch_landed(instance)
        assert evaluations.requested_days(datetime(2026, 12, 6, 10, 32, tzinfo=UTC)) == {"2026-12-06"}


def test_yesterday_is_rebuilt_once_after_midnight_and_never_again() -> None:
    # Evaluated at a midnight ahead of the real clock, which stamps the ledger's batches, so each batch
    # comes in order between the evaluations around it, whatever the day the suite runs.
    new_day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=2)
    with dg.instance_for_test() as instance:
        evaluations = Evaluations(instance)
        assert evaluations.requested_days(new_day - timedelta(minutes=10)) == set()
        assert evaluations.requested_days(new_day + timedelta(minutes=16)) == {
            f"{new_day - timedelta(days=1):%Y-%m-%d}"
        }
        ledger_batch_landed(instance)
        assert evaluations.requested_days(new_day + timedelta(minutes=17)) == {f"{new_day:%Y-%m-%d}"}
        assert evaluations.requested_days(new_day + timedelta(hours=9, minutes=1)) == set()


def test_the_automation_sensor_is_on_by_default_and_covers_daily_revenue() -> None:
    sensor = defs.resolve_sensor_def("orders_automation")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert REVENUE in sensor.asset_selection.resolve(defs.resolve_asset_graph())
