"""The jobs sensors start. Tags drive the run queue's per-workflow limits in dagster.yaml."""

import dagster as dg

from hub_pipelines.assets.media.partitions import uploads_partitions

media_pipeline_job = dg.define_asset_job(
    "media_pipeline",
    selection=dg.AssetSelection.groups("media"),
    partitions_def=uploads_partitions,
    tags={"hub/workflow": "media"},
    description="Everything the media workflow does for one upload partition.",
)

orders_pipeline_job = dg.define_asset_job(
    "orders_pipeline",
    selection=dg.AssetSelection.keys(["orders", "order_events"]).downstream()
    - dg.AssetSelection.keys(["orders", "daily_revenue"]),
    tags={"hub/workflow": "orders", "hub/topic": "orders"},
    description="Land one offset range of the orders topic and carry it through the ledger.",
)

analytics_pipeline_job = dg.define_asset_job(
    "analytics_pipeline",
    selection=dg.AssetSelection.keys(["analytics", "raw_events"]).downstream()
    - dg.AssetSelection.keys(["analytics", "daily_rollups"]),
    tags={"hub/workflow": "analytics", "hub/topic": "events"},
    description="Land one offset range of the events topic, update counters and score anomalies.",
)
