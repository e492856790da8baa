"""The orders workflow's sensors: the work after the ledger, and the automation conditions' evaluator
(orders/daily_revenue's days).

The orders topic's sensor is built with the analytics one in `topics.py`. Both start on deploy: a
partitioned asset nobody materializes would be a trap, and undelivered confirmations a silent one.
"""

import time

import dagster as dg

from hub_pipelines.assets.orders.ledger import ORDER_LEDGER_KEY
from hub_pipelines.assets.tracing import traced_sensor
from hub_pipelines.jobs import orders_downstream_job
from hub_pipelines.landing.batches import PendingRun, RunOutcome
from hub_pipelines.orders.downstream_runs import DownstreamCursor, next_downstream_step
from hub_pipelines.sensors.automation import workflow_automation
from hub_pipelines.sensors.topics import pending_run

# Confirmations and order events out follow each ledger batch within about this long; a shorter
# interval would start a run process for every micro-batch of a following ledger.
ORDERS_DOWNSTREAM_INTERVAL_SECONDS = 10


@dg.sensor(
    job=orders_downstream_job,
    minimum_interval_seconds=ORDERS_DOWNSTREAM_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts the outbox relay, the customers' confirmations and the inventory snapshot once "
    "the ledger has booked a batch since the previous such run; asks again after a failed one.",
)
@traced_sensor
def orders_downstream_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    cursor = DownstreamCursor.from_json(context.cursor)
    newest = context.instance.fetch_materializations(
        dg.AssetKey(ORDER_LEDGER_KEY), limit=1, ascending=False
    ).records
    previous = pending_run(context, cursor.run_key) if cursor.run_key else None
    step = next_downstream_step(
        cursor,
        newest[0].storage_id if newest else None,
        previous or PendingRun(RunOutcome.MISSING),
        time.time(),
    )
    if step.run_key is None:
        context.update_cursor(step.cursor.to_json())
        return dg.SkipReason(step.reason)
    context.log.info(f"requesting {step.run_key}: {step.reason}")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=step.run_key)], cursor=step.cursor.to_json())


orders_automation = workflow_automation(
    "orders",
    "Requests what the orders assets' automation conditions ask for: today's revenue every 15 minutes, "
    "yesterday's once after midnight.",
)
