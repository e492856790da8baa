"""The Kubernetes Jobs production would create, built by dagster-k8s's own code from our settings.

The run launcher comes from deploy/dagster.prod.yaml (with an offline kubeconfig, see prod_files);
the step pods' settings from `hub_pipelines.deploy_k8s`. The step context is merged in the order
K8sStepHandler merges it: run launcher, then executor config, then the step's `dagster-k8s/config`
tag. No cluster is contacted: the Job objects are built, not submitted.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._serdes import ConfigurableClassData
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.executor import K8sStepHandler
from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY as DAGSTER_K8S_CONFIG_KEY
from dagster_k8s.job import (
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_job_name_from_run_id,
    get_user_defined_k8s_config,
)
from kubernetes.client import V1Job

from hub_pipelines.deploy_k8s import (
    DEFAULT_STEP_RESOURCES,
    IMAGE_STEP_TAGS,
    MAX_STEP_PODS_PER_RUN,
    MEDIA_EXECUTOR_CONFIG,
    TRANSCODE_DEADLINE_SECONDS,
    TRANSCODE_STEP_RESOURCES,
    TRANSCODE_STEP_TAGS,
    USER_DEFINED_K8S_CONFIG_KEY,
    configured_k8s_job_executor,
    media_k8s_job_executor,
)
from tests.ops.prod_files import offline_run_launcher

IMAGE = "registry.example.com/hub/hub-pipelines:3f9c2e1"
SEED_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}}


@pytest.fixture
def launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> K8sRunLauncher:
    monkeypatch.setenv("DAGSTER_K8S_JOB_NAMESPACE", "hub")
    section = offline_run_launcher(tmp_path)
    data = ConfigurableClassData(section["module"], section["class"], yaml.safe_dump(section["config"]))
    return data.rehydrate(as_type=K8sRunLauncher)


def media_run(tags: Mapping[str, str] | None = None) -> dg.DagsterRun:
    return dg.DagsterRun(
        job_name="media_pipeline", run_id=str(uuid.uuid4()), tags={"hub/workflow": "media", **(tags or {})}
    )


def executor_config() -> Mapping[str, Any]:
    """The config k8s_job_executor receives from `media_k8s_job_executor`, as Dagster maps it."""
    mapped = configured_k8s_job_executor().apply_config_mapping({})
    assert mapped.success, mapped.errors
    return mapped.value["config"]


def step_container_context(
    launcher: K8sRunLauncher, run: dg.DagsterRun, step_tags: Mapping[str, str]
) -> K8sContainerContext:
    config = executor_config()
    executor_context = K8sContainerContext(
        labels=config.get("labels"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config["step_k8s_config"]),
    )
    return (
        K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
        .merge(executor_context)
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags)))
    )


def build_job(context: K8sContainerContext, launcher: K8sRunLauncher, name: str) -> V1Job:
    job_config = context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher)
    return construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_run"],
        job_name=name,
        user_defined_k8s_config=context.run_k8s_config,
        component="run_worker",
    )


def env_by_name(job: V1Job) -> dict[str, Any]:
    container = job.spec.template.spec.containers[0]
    return {item.name: item for item in container.env}


def env_sources(job: V1Job) -> set[tuple[str, str]]:
    sources = set()
    for source in job.spec.template.spec.containers[0].env_from:
        if source.secret_ref is not None:
            sources.add(("secret", source.secret_ref.name))
        if source.config_map_ref is not None:
            sources.add(("configmap", source.config_map_ref.name))
    return sources


def test_run_worker_job_uses_our_image_env_secrets_and_seed_resources(launcher: K8sRunLauncher) -> None:
    run = media_run()
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job = build_job(context, launcher, get_job_name_from_run_id(run.run_id))

    container = job.spec.template.spec.containers[0]
    assert container.image == IMAGE
    assert container.resources.to_dict()["requests"] == SEED_RESOURCES["requests"]
    assert container.resources.to_dict()["limits"] == SEED_RESOURCES["limits"]
    assert env_sources(job) == {("secret", "hub-pipelines-secrets"), ("configmap", "hub-pipelines-env")}
    password = env_by_name(job)["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref
    assert (password.name, password.key) == ("dagster-postgresql-secret", "postgresql-password")
    assert job.spec.template.spec.service_account_name == "dagster"
    assert job.spec.backoff_limit == 0
    assert job.spec.ttl_seconds_after_finished == 86400
    assert context.namespace == "hub"
    # The same DAGSTER_HOME as the image (Dockerfile) and the chart.
    assert env_by_name(job)["DAGSTER_HOME"].value == "/opt/dagster/dagster_home"


def test_run_tags_can_resize_the_run_worker_pod(launcher: K8sRunLauncher) -> None:
    run = media_run(IMAGE_STEP_TAGS)
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job = build_job(context, launcher, get_job_name_from_run_id(run.run_id))

    resources = job.spec.template.spec.containers[0].resources.to_dict()
    assert resources["limits"] == {"cpu": "2", "memory": "2Gi"}


def test_transcode_step_pod_gets_its_own_resources_and_deadline(launcher: K8sRunLauncher) -> None:
    run = media_run()
    context = step_container_context(launcher, run, TRANSCODE_STEP_TAGS)
    job = build_job(context, launcher, f"dagster-step-{uuid.uuid4().hex[:20]}")

    container = job.spec.template.spec.containers[0]
    assert container.image == IMAGE
    assert container.resources.to_dict()["requests"] == dict(TRANSCODE_STEP_RESOURCES["requests"])
    assert container.resources.to_dict()["limits"] == dict(TRANSCODE_STEP_RESOURCES["limits"])
    assert job.spec.active_deadline_seconds == TRANSCODE_DEADLINE_SECONDS
    assert env_sources(job) == {("secret", "hub-pipelines-secrets"), ("configmap", "hub-pipelines-env")}
    assert job.spec.template.metadata.labels["hub/workflow"] == "media"


def test_untagged_media_step_pod_gets_the_executor_default_resources(launcher: K8sRunLauncher) -> None:
    context = step_container_context(launcher, media_run(), {})
    job = build_job(context, launcher, f"dagster-step-{uuid.uuid4().hex[:20]}")

    resources = job.spec.template.spec.containers[0].resources.to_dict()
    assert resources["requests"] == dict(DEFAULT_STEP_RESOURCES["requests"])
    assert resources["limits"] == dict(DEFAULT_STEP_RESOURCES["limits"])
    assert job.spec.active_deadline_seconds is None


def test_media_executor_config_is_valid_for_k8s_job_executor() -> None:
    config = executor_config()

    assert config["max_concurrent"] == MAX_STEP_PODS_PER_RUN
    assert config["step_k8s_config"]["container_config"]["resources"] == dict(DEFAULT_STEP_RESOURCES)


def test_step_tags_use_the_key_dagster_k8s_reads() -> None:
    assert USER_DEFINED_K8S_CONFIG_KEY == DAGSTER_K8S_CONFIG_KEY
    assert set(TRANSCODE_STEP_TAGS) == set(IMAGE_STEP_TAGS) == {DAGSTER_K8S_CONFIG_KEY}


@dg.op
def probe_step() -> None:
    """A step for the executor to be made for; it never runs."""


@dg.job
def probe_job() -> None:
    probe_step()


def test_media_executor_made_at_run_start_delegates_steps_to_k8s_jobs_with_the_media_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_K8S_JOB_NAMESPACE", "hub")
    creation_fn = media_k8s_job_executor.executor_creation_fn
    assert creation_fn is not None
    with dg.instance_for_test(overrides={"run_launcher": offline_run_launcher(tmp_path)}) as instance:
        executor = creation_fn(
            dg.InitExecutorContext(
                job=dg.reconstructable(probe_job),
                executor_def=media_k8s_job_executor,
                executor_config={},
                instance=instance,
            )
        )

    # What the run worker would start steps with; dagster exposes no public view of a built executor.
    step_handler = executor._step_handler  # type: ignore[attr-defined]
    assert isinstance(step_handler, K8sStepHandler)
    assert executor._max_concurrent == MAX_STEP_PODS_PER_RUN  # type: ignore[attr-defined]
    # The executor context the step pod tests above merge in (step_container_context), built by hand.
    assert step_handler._executor_container_context == K8sContainerContext(
        labels=MEDIA_EXECUTOR_CONFIG["labels"],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(MEDIA_EXECUTOR_CONFIG["step_k8s_config"]),
    )
