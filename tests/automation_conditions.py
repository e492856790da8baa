"""The code location's automation conditions evaluated one tick after another, as the daemon's sensors do."""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from hub_pipelines.definitions import defs


class Evaluations:
    """Successive evaluations of the code location's automation conditions; each tick's requested days of `asset`."""

    def __init__(self, instance: dg.DagsterInstance, asset: dg.AssetKey) -> None:
        self.instance = instance
        self.asset = asset
        self.cursor = None
        self.requested_elsewhere = 0

    def requested_days(self, at: datetime) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=self.instance, evaluation_time=at, cursor=self.cursor
        )
        self.cursor = result.cursor
        days = result.get_requested_partitions(self.asset)
        self.requested_elsewhere = result.total_requested - len(days)
        return {str(day) for day in days}
