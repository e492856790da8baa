"""The sensor that evaluates the orders assets' automation conditions (orders/daily_revenue's days).

It runs in the daemon and starts on deploy: a partitioned asset nobody materializes would be a trap.
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
