"""The automation conditions' evaluator of one workflow: the daemon's sensor that requests what the
conditions of the workflow's assets ask for. It starts on deploy, since a partitioned asset nobody
materializes would be a trap; its runs carry the workflow's tag and leave the queue after the
arrivals' runs."""

import dagster as dg

from hub_pipelines.assets.catalog import WORKFLOW_TAG
from hub_pipelines.core.run_priority import CATCH_UP_PRIORITY


def workflow_automation(workflow: str, description: str) -> dg.AutomationConditionSensorDefinition:
    """`<workflow>_automation`, over the assets of the workflow's group."""
    return dg.AutomationConditionSensorDefinition(
        f"{workflow}_automation",
        target=dg.AssetSelection.groups(workflow),
        default_status=dg.DefaultSensorStatus.RUNNING,
        run_tags={WORKFLOW_TAG: workflow, **CATCH_UP_PRIORITY},
        description=description,
    )
