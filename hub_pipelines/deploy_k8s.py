"""Kubernetes execution for production: every media step in its own pod, sized by its op tags.

The K8sRunLauncher (deploy/dagster.prod.yaml) starts one Job per run. For the media job, the
executor `media_k8s_job_executor` then starts one Job per step, so a 4 GiB transcode
does not share a pod with thirty thumbnail steps. Each step's pod takes the run launcher's settings (image, env from
the ConfigMap and Secret, service account), then the executor's defaults, then the step's own
`dagster-k8s/config` tag: put `TRANSCODE_STEP_TAGS` or `IMAGE_STEP_TAGS` in an asset's `op_tags`.

Wire this in prod only (definitions.py): locally there is no cluster, and the executor would fail
to load the in-cluster configuration. dagster-k8s (with the kubernetes client, over a second to import)
is imported only when a media run starts its executor: every other process that loads the code location
(the code server, the daemon, each orders or analytics run, each step pod) never needs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import dagster as dg

# dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY, spelled out so the tags need no kubernetes import.
USER_DEFINED_K8S_CONFIG_KEY = "dagster-k8s/config"

Resources = Mapping[str, Mapping[str, str]]

DEFAULT_STEP_RESOURCES: Resources = {
    "requests": {"cpu": "500m", "memory": "512Mi"},
    "limits": {"cpu": "1000m", "memory": "1Gi"},
}
# PyAV decodes and encodes a 1080p rendition ladder on up to four threads; the ephemeral storage
# holds the source and the renditions before they go to S3.
TRANSCODE_STEP_RESOURCES: Resources = {
    "requests": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "10Gi"},
    "limits": {"cpu": "4", "memory": "4Gi", "ephemeral-storage": "20Gi"},
}
IMAGE_STEP_RESOURCES: Resources = {
    "requests": {"cpu": "1", "memory": "1Gi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}
TRANSCODE_DEADLINE_SECONDS = 3600
MAX_STEP_PODS_PER_RUN = 8


def step_k8s_tags(
    resources: Resources,
    *,
    deadline_seconds: int | None = None,
    node_selector: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Op tags that size one step's pod, as k8s_job_executor reads them (`dagster-k8s/config`)."""
    config: dict[str, Any] = {"container_config": {"resources": dict(resources)}}
    if deadline_seconds is not None:
        config["job_spec_config"] = {"active_deadline_seconds": deadline_seconds}
    if node_selector:
        config["pod_spec_config"] = {"node_selector": dict(node_selector)}
    return {USER_DEFINED_K8S_CONFIG_KEY: json.dumps(config, sort_keys=True)}


TRANSCODE_STEP_TAGS = step_k8s_tags(TRANSCODE_STEP_RESOURCES, deadline_seconds=TRANSCODE_DEADLINE_SECONDS)
IMAGE_STEP_TAGS = step_k8s_tags(IMAGE_STEP_RESOURCES)

MEDIA_EXECUTOR_CONFIG: Mapping[str, Any] = {
    "max_concurrent": MAX_STEP_PODS_PER_RUN,
    "step_k8s_config": {"container_config": {"resources": dict(DEFAULT_STEP_RESOURCES)}},
    "labels": {"app.kubernetes.io/part-of": "hub-pipelines", "hub/workflow": "media"},
}
MEDIA_EXECUTOR_NAME = "media_k8s_job_executor"


class MediaExecutorConfigInvalid(ValueError):
    """dagster-k8s refused the media job's executor settings (a field renamed or removed upstream)."""


def configured_k8s_job_executor() -> dg.ExecutorDefinition:
    """dagster-k8s's `k8s_job_executor` with the media job's step pod defaults."""
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(dict(MEDIA_EXECUTOR_CONFIG), name=MEDIA_EXECUTOR_NAME)


@dg.executor(name=MEDIA_EXECUTOR_NAME, requirements=dg.multiple_process_executor_requirements())
def media_k8s_job_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """dagster-k8s's `k8s_job_executor` with the media job's step pod defaults, made when a run starts.

    The settings are checked against dagster-k8s's own config schema, and take its defaults, here
    rather than at definition time: the schema lives in dagster_k8s, which imports the kubernetes client.
    """
    k8s_executor = configured_k8s_job_executor()
    mapped = k8s_executor.apply_config_mapping({})
    creation_fn = k8s_executor.executor_creation_fn
    if not mapped.success or mapped.value is None or creation_fn is None:
        raise MediaExecutorConfigInvalid(
            f"{MEDIA_EXECUTOR_NAME}: dagster-k8s's k8s_job_executor refused {dict(MEDIA_EXECUTOR_CONFIG)}: "
            + "; ".join(error.message for error in mapped.errors or [])
        )
    return creation_fn(
        dg.InitExecutorContext(
            job=init_context.job,
            executor_def=k8s_executor,
            executor_config=mapped.value["config"],
            instance=init_context.instance,
        )
    )
