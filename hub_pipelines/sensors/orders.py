"""The orders workflow's sensors: the automation conditions' evaluator (orders/daily_revenue's days).

The orders topic's sensor is built with the analytics one in `topics.py`. The evaluator runs in the
daemon and starts on deploy: a partitioned asset nobody materializes would be a trap.
"""

import dagster as dg

from hub_pipelines.core.run_priority import CATCH_UP_PRIORITY

orders_automation = dg.AutomationConditionSensorDefinition(
    "orders_automation",
    target=dg.AssetSelection.groups("orders"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    run_tags={"hub/workflow": "orders", **CATCH_UP_PRIORITY},
    description="Requests what the orders assets' automation conditions ask for: today's revenue every "
    "15 minutes, yesterday's once after midnight.",
)
