"""The jobs sensors start. Tags drive the run queue's per-workflow limits in dagster.yaml and its
order (core/run_priority.py)."""

import dagster as dg

from hub_pipelines.assets.media.partitions import uploads_partitions
from hub_pipelines.core.run_priority import LANDING_PRIORITY
from hub_pipelines.json_logs import job_logs_config
from hub_pipelines.landing.lanes import FOLLOWING_LANE_TAG

# Daily-partitioned derived assets (revenue, rollups) are rebuilt per day by their own runs and
# backfills, never inside a landing run: a job cannot mix unpartitioned and daily assets.
DAILY_ASSETS = dg.AssetSelection.tag("hub/cadence", "daily")

MEDIA_PIPELINE = "media_pipeline"


# Returns what `dg.define_asset_job` returns; Dagster does not export that type by name.
def build_media_pipeline_job(executor_def: dg.ExecutorDefinition | None = None):
    """The media job; production runs each of its steps in its own Kubernetes pod (deploy_k8s.py)."""
    return dg.define_asset_job(
        MEDIA_PIPELINE,
        config=job_logs_config(),
        selection=dg.AssetSelection.groups("media"),
        partitions_def=uploads_partitions,
        tags={"hub/workflow": "media"},
        description="Everything the media workflow does for one upload partition.",
        executor_def=executor_def,
    )


media_pipeline_job = build_media_pipeline_job()

# The queue admits one run per `hub/lane` value. Sensor runs carry their lane's (`orders/0`, ...); a
# run launched by hand lands any partition, so it carries `<topic>/all`: one at a time, beside the lanes
# (overlapping landings and ledgers are exactly-once). The events lanes hand over from one following run
# to the next (landing/handoff.py), so they carry `hub/following-lane`, which the queue admits two of.
orders_pipeline_job = dg.define_asset_job(
    "orders_pipeline",
    config=job_logs_config(),
    selection=dg.AssetSelection.assets(["orders", "order_events"], ["orders", "order_ledger"]),
    tags={"hub/workflow": "orders", "hub/topic": "orders", "hub/lane": "orders/all", **LANDING_PRIORITY},
    description="Land one offset range of the orders topic and carry it through the ledger.",
)

# What follows the ledger decides no order's outcome, so it is kept out of the landing lanes' runs (an
# order is PAID once its lane's ledger placed it, not once the batch's confirmations went out) and runs
# one at a time in a lane of its own (hub_pipelines/orders/downstream_runs.py).
orders_downstream_job = dg.define_asset_job(
    "orders_downstream",
    config=job_logs_config(),
    selection=dg.AssetSelection.assets(["orders", "order_ledger"]).downstream(include_self=False)
    - DAILY_ASSETS,
    tags={"hub/workflow": "orders", "hub/lane": "orders/downstream"},
    description="Relay the outbox, send the customers' confirmations and snapshot the inventory after "
    "the ledger's batches.",
)

analytics_pipeline_job = dg.define_asset_job(
    "analytics_pipeline",
    config=job_logs_config(),
    selection=dg.AssetSelection.assets(["analytics", "raw_events"]).downstream() - DAILY_ASSETS,
    tags={
        "hub/workflow": "analytics",
        "hub/topic": "events",
        FOLLOWING_LANE_TAG: "events/all",
        **LANDING_PRIORITY,
    },
    description="Land one offset range of the events topic, update counters and score anomalies.",
)
