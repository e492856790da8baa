"""The sensors that evaluate the assets' automation conditions, one per workflow so each run carries its
workflow's tag (the run queue's limits): orders/daily_revenue's days, analytics/daily_rollups' today.

They run in the daemon and start on deploy: a partitioned asset nobody materializes would be a trap.
"""

import dagster as dg

orders_automation = dg.AutomationConditionSensorDefinition(
    "orders_automation",
    target=dg.AssetSelection.groups("orders"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    run_tags={"hub/workflow": "orders"},
    description="Requests what the orders assets' automation conditions ask for: today's revenue every "
    "15 minutes, yesterday's once after midnight.",
)

analytics_automation = dg.AutomationConditionSensorDefinition(
    "analytics_automation",
    target=dg.AssetSelection.groups("analytics"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    run_tags={"hub/workflow": "analytics"},
    description="Requests what the analytics assets' automation conditions ask for: today's daily rollups "
    "every 15 minutes once events landed (closed days are analytics_late_days_sensor's).",
)
