"""What the asset catalog shows beside each asset's own docstring, kept in one place.

Every asset belongs to the workflow its group names: it gets that workflow's owner, the `hub/workflow`
tag (the run queue's limits and the alerts read it) and, under its description, what an operator can
do with it. `definitions.py` passes every asset it loads through `cataloged`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import dagster as dg

WORKFLOW_TAG = "hub/workflow"

WORKFLOW_OWNERS: Mapping[str, str] = {
    "media": "team:media",
    "orders": "team:commerce",
    "analytics": "team:data-platform",
}

RUNBOOK = "docs/operations.md"

_RERUN_ANY_TIME = (
    "Materialize it by hand at any time: it takes up what is pending since its last run, so a second run "
    "changes nothing."
)

# Per workflow, unless the asset has its own line below.
_WORKFLOW_ACTIONS: Mapping[str, str] = {
    "media": (
        "Re-run one upload: materialize its partition (the upload's key below `incoming/`, percent-encoded, "
        "`/` shown as `~`), with its downstream assets to carry it through; every step can run twice. "
        "Why an upload stopped: `media_uploads.status` and `status_reason` (`published`, `quarantined`, "
        f'`rejected`). Release a false positive: {RUNBOOK}, "Release a quarantined upload".'
    ),
    "orders": _RERUN_ANY_TIME,
    "analytics": _RERUN_ANY_TIME,
}

_REPLAY_RANGE = (
    "Replay an offset range: Materialize, then Launch with config "
    '`ranges: "0:1200-1700,2:980-1400"` (partition:start-end, end exclusive). Landing is idempotent: a '
    f'range can run twice or beside the sensor\'s run ({RUNBOOK}, "Replay a Kafka range").'
)

_ASSET_ACTIONS: Mapping[str, str] = {
    "orders/order_events": (
        f"{_REPLAY_RANGE} Messages it could not store (not JSON, no event id, oversize): "
        "`hub-pipelines dead-letters show --source orders-landing`."
    ),
    "orders/order_ledger": (
        "Events it refused: `hub-pipelines dead-letters show --source orders-intake` (payloads decrypted); "
        "after fixing the cause, `hub-pipelines dead-letters replay <id>` hands one back to the next batch "
        f'({RUNBOOK}, "Dead letters of the order ledger").'
    ),
    "orders/daily_revenue": (
        "Backfill: Materialize, then select the days; a day is rebuilt whole, so it can run twice. Its "
        "automation condition keeps today current every 15 minutes and rebuilds yesterday once after midnight."
    ),
    "analytics/raw_events": (
        f"{_REPLAY_RANGE} Events it could not store are in the warehouse's `event_dead_letters` table, with "
        "topic, partition, offset and reason."
    ),
    "analytics/daily_rollups": (
        "Backfill: Materialize, then select the days; a day is swapped in whole, so it can run twice. "
        "`analytics_late_days_sensor` rebuilds each day once it closes and every closed day late events reach."
    ),
}


class AssetOutsideWorkflows(ValueError):
    """An asset whose group is not one of the workflows, so it would have no owner."""


def operator_actions(key: dg.AssetKey, workflow: str) -> str:
    return _ASSET_ACTIONS.get(key.to_user_string()) or _WORKFLOW_ACTIONS[workflow]


def catalog_entry(spec: dg.AssetSpec) -> dg.AssetSpec:
    """The asset with its workflow's owner and tag, and what an operator can do below its description."""
    workflow = spec.group_name or ""
    if workflow not in WORKFLOW_OWNERS:
        raise AssetOutsideWorkflows(
            f"asset {spec.key.to_user_string()}: group {workflow!r} is none of the workflows "
            f"{sorted(WORKFLOW_OWNERS)}"
        )
    description = f"{spec.description or ''}\n\n**What you can do.** {operator_actions(spec.key, workflow)}"
    return spec.replace_attributes(
        owners=[WORKFLOW_OWNERS[workflow]],
        tags={**spec.tags, WORKFLOW_TAG: workflow},
        description=description.strip(),
    )


def cataloged(loaded: Iterable[object]) -> Sequence[dg.AssetsDefinition | dg.AssetSpec]:
    """Every loaded asset with its catalog entry; anything but a software-defined asset is refused."""
    definitions: list[dg.AssetsDefinition] = []
    for item in loaded:
        if not isinstance(item, dg.AssetsDefinition):
            raise AssetOutsideWorkflows(f"{item!r} is not a software-defined asset of a workflow")
        definitions.append(item)
    return dg.map_asset_specs(catalog_entry, definitions)
