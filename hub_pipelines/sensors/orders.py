"""The orders workflow's sensors: the work after the ledger, and the automation conditions' evaluator
(orders/daily_revenue's days).

The orders topic's sensor is built with the analytics one in `topics.py`. Both start on deploy: a
partitioned asset nobody materializes would be a trap, and undelivered confirmations a silent one.
"""

import time

import dagster as dg

from hub_pipelines.assets.orders.ledger import ORDER_LEDGER_KEY
from hub_pipelines.assets.tracing import traced_sensor
from hub_pipelines.jobs import orders_downstream_job, orders_pipeline_job
from hub_pipelines.landing.batches import PendingRun, RunOutcome
from hub_pipelines.orders.downstream_runs import DownstreamCursor, next_downstream_step
from hub_pipelines.orders.reconcile_runs import next_reconcile_step, open_orders
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


RUNS_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def build_orders_reconcile_sensor(wait_seconds: float) -> dg.SensorDefinition:
    """`orders_reconcile_sensor`: a catch-up orders run when the newest ledger batch left orders open
    (gateway unavailable, outcome unknown, an internal retry) and no orders run would reconcile them
    (orders/reconcile_runs.py). The run has no config: it lands what is pending by the book and its
    ledger reconciles every open order first."""

    @dg.sensor(
        name="orders_reconcile_sensor",
        job=orders_pipeline_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts an orders run to finish orders a ledger batch left open (the gateway was "
        "unavailable or its answer lost) when no new order brings one.",
    )
    def orders_reconcile_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        newest = context.instance.fetch_materializations(
            dg.AssetKey(ORDER_LEDGER_KEY), limit=1, ascending=False
        ).records
        record = newest[0] if newest else None
        materialization = record.asset_materialization if record else None
        metadata = {k: v.value for k, v in materialization.metadata.items()} if materialization else {}
        in_flight = bool(
            context.instance.get_run_records(
                dg.RunsFilter(job_name=orders_pipeline_job.name, statuses=RUNS_IN_FLIGHT), limit=1
            )
        )
        step = next_reconcile_step(
            record.storage_id if record else None,
            open_orders(metadata),
            time.time() - record.timestamp if record else 0.0,
            in_flight,
            wait_seconds,
        )
        if step.run_key is None:
            return dg.SkipReason(step.reason)
        context.log.info(f"requesting {step.run_key}: {step.reason}")
        return dg.RunRequest(run_key=step.run_key)

    return orders_reconcile_sensor


orders_automation = workflow_automation(
    "orders",
    "Requests what the orders assets' automation conditions ask for: today's revenue every 15 minutes, "
    "yesterday's once after midnight.",
)
