"""The orders workflow's sensors: the automation conditions' evaluator (orders/daily_revenue's days).

The orders topic's sensor is built with the analytics one in `topics.py`.
"""

from hub_pipelines.sensors.automation import workflow_automation

orders_automation = workflow_automation(
    "orders",
    "Requests what the orders assets' automation conditions ask for: today's revenue every 15 minutes, "
    "yesterday's once after midnight.",
)
