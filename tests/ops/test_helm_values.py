"""deploy/helm/values.yaml parses and names only keys the official Dagster chart (1.13) has.

The chart and its values.schema.json are not published on any package registry reachable here (the
chart lives in a Helm repository; the `dagster-helm` schema package that generates the JSON schema
is not on PyPI), so the chart's keys this file uses are listed below, transcribed from the chart's
schema models (helm/dagster/schema/schema/charts/...: values.py, subschema/webserver.py, daemon.py,
run_launcher.py, compute_log_manager.py, concurrency.py, postgresql.py, python_logs.py,
retention.py, global_.py and dagster_user_deployments/subschema/user_deployments.py). Where the
chart passes a Kubernetes object through (resources, probes, env, securityContext, deployment
strategy), the keys are checked against the Kubernetes client's own models instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import kubernetes.client
import pytest
import yaml

from hub_pipelines.settings import PROJECT_ROOT

VALUES = PROJECT_ROOT / "deploy" / "helm" / "values.yaml"

SCALAR = "scalar"
FREE_MAPPING = "free-form mapping"  # labels, params, upload args: any keys

# Kubernetes objects the chart passes through, by the client model that defines their keys. The
# chart adds `enabled` to readiness and startup probes.
PROBE_WITH_ENABLED = ("V1Probe", {"enabled"})


def k8s(model: str, extra: set[str] | None = None) -> tuple[str, set[str]]:
    return (model, extra or set())


RESOURCES = k8s("V1ResourceRequirements")
SECRET_ENV_SOURCE = k8s("V1SecretEnvSource")
CONFIG_MAP_ENV_SOURCE = k8s("V1ConfigMapEnvSource")
IMAGE = {"repository": SCALAR, "tag": SCALAR, "pullPolicy": SCALAR}

CHART_KEYS: dict[str, Any] = {
    "global": {"postgresqlSecretName": SCALAR, "serviceAccountName": SCALAR},
    "generatePostgresqlPasswordSecret": SCALAR,
    "postgresql": {
        "enabled": SCALAR,
        "postgresqlHost": SCALAR,
        "postgresqlUsername": SCALAR,
        "postgresqlPassword": SCALAR,
        "postgresqlDatabase": SCALAR,
        "postgresqlScheme": SCALAR,
        "postgresqlParams": FREE_MAPPING,
        "service": {"port": SCALAR},
    },
    "dagsterWebserver": {
        "replicaCount": SCALAR,
        "image": IMAGE,
        "logLevel": SCALAR,
        "dbStatementTimeout": SCALAR,
        "dbPoolRecycle": SCALAR,
        "envSecrets": [SECRET_ENV_SOURCE],
        "resources": RESOURCES,
        "readinessProbe": k8s("V1Probe"),
        "livenessProbe": k8s("V1Probe"),
        "startupProbe": k8s(*PROBE_WITH_ENABLED),
        "securityContext": k8s("V1SecurityContext"),
    },
    "dagster-user-deployments": {
        "enabled": SCALAR,
        "enableSubchart": SCALAR,
        "deployments": [
            {
                "name": SCALAR,
                "image": IMAGE,
                "codeServerArgs": [SCALAR],
                "port": SCALAR,
                "includeConfigInLaunchedRuns": {"enabled": SCALAR},
                "env": [k8s("V1EnvVar")],
                "envConfigMaps": [CONFIG_MAP_ENV_SOURCE],
                "resources": RESOURCES,
                "readinessProbe": k8s(*PROBE_WITH_ENABLED),
                "livenessProbe": k8s("V1Probe"),
                "startupProbe": k8s(*PROBE_WITH_ENABLED),
                "deploymentStrategy": k8s("V1DeploymentStrategy"),
                "podSecurityContext": k8s("V1PodSecurityContext"),
                "securityContext": k8s("V1SecurityContext"),
                "labels": FREE_MAPPING,
            }
        ],
    },
    "runLauncher": {
        "type": SCALAR,
        "config": {
            "k8sRunLauncher": {
                "imagePullPolicy": SCALAR,
                "loadInclusterConfig": SCALAR,
                "envConfigMaps": [CONFIG_MAP_ENV_SOURCE],
                "envSecrets": [SECRET_ENV_SOURCE],
                "envVars": [SCALAR],
                "volumeMounts": [k8s("V1VolumeMount")],
                "volumes": [k8s("V1Volume")],
                "labels": FREE_MAPPING,
                "failPodOnRunFailure": SCALAR,
                "resources": RESOURCES,
                "runK8sConfig": {"jobSpecConfig": k8s("V1JobSpec")},
            }
        },
    },
    "dagsterDaemon": {
        "enabled": SCALAR,
        "image": IMAGE,
        "heartbeatTolerance": SCALAR,
        "runCoordinator": {
            "enabled": SCALAR,
            "type": SCALAR,
            "config": {
                "queuedRunCoordinator": {
                    "dequeueIntervalSeconds": SCALAR,
                    "dequeueUseThreads": SCALAR,
                    "dequeueNumWorkers": SCALAR,
                }
            },
        },
        "runMonitoring": {
            "enabled": SCALAR,
            "startTimeoutSeconds": SCALAR,
            "cancelTimeoutSeconds": SCALAR,
            "maxResumeRunAttempts": SCALAR,
            "pollIntervalSeconds": SCALAR,
            "freeSlotsAfterRunEndSeconds": SCALAR,
            "maxRuntimeSeconds": SCALAR,
        },
        "runRetries": {"enabled": SCALAR, "maxRetries": SCALAR, "retryOnAssetOrOpFailure": SCALAR},
        "sensors": {"useThreads": SCALAR, "numWorkers": SCALAR, "numSubmitWorkers": SCALAR},
        "schedules": {"useThreads": SCALAR, "numWorkers": SCALAR},
        "envSecrets": [SECRET_ENV_SOURCE],
        "resources": RESOURCES,
        "securityContext": k8s("V1SecurityContext"),
    },
    "concurrency": {
        "enabled": SCALAR,
        "runs": {
            "maxConcurrentRuns": SCALAR,
            "tagConcurrencyLimits": [{"key": SCALAR, "value": FREE_MAPPING, "limit": SCALAR}],
        },
        "pools": {"granularity": SCALAR, "defaultLimit": SCALAR, "opGranularityRunBuffer": SCALAR},
    },
    "computeLogManager": {
        "type": SCALAR,
        "config": {
            "s3ComputeLogManager": {
                "bucket": SCALAR,
                "prefix": SCALAR,
                "region": SCALAR,
                "skipEmptyFiles": SCALAR,
                "uploadInterval": SCALAR,
                "uploadExtraArgs": FREE_MAPPING,
            }
        },
    },
    "pythonLogs": {"pythonLogLevel": SCALAR, "managedPythonLoggers": [SCALAR]},
    "telemetry": {"enabled": SCALAR},
    "retention": {
        "enabled": SCALAR,
        "sensor": {"purgeAfterDays": {"skipped": SCALAR, "failure": SCALAR, "success": SCALAR}},
        "schedule": {"purgeAfterDays": SCALAR},
    },
}


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def k8s_model_keys(model: str) -> dict[str, str]:
    """camelCase key -> type name, from the Kubernetes client's model."""
    klass = getattr(kubernetes.client, model)
    return {klass.attribute_map[field]: type_name for field, type_name in klass.openapi_types.items()}


def unknown_k8s_keys(value: Any, type_name: str, path: str) -> Iterator[str]:
    if type_name.startswith("list["):
        for index, item in enumerate(value):
            yield from unknown_k8s_keys(item, type_name[5:-1], f"{path}[{index}]")
        return
    if not type_name.startswith("V1") or not isinstance(value, Mapping):
        return
    keys = k8s_model_keys(type_name)
    for key, item in value.items():
        if key not in keys:
            yield join(path, key)
        else:
            yield from unknown_k8s_keys(item, keys[key], join(path, key))


def unknown_keys(value: Any, schema: Any, path: str) -> Iterator[str]:
    if schema is SCALAR:
        if isinstance(value, Mapping | list):
            yield f"{path} (expected a scalar)"
    elif schema is FREE_MAPPING:
        return
    elif isinstance(schema, tuple):
        model, extra = schema
        for key, item in value.items():
            if key in extra:
                continue
            keys = k8s_model_keys(model)
            if key not in keys:
                yield join(path, key)
            else:
                yield from unknown_k8s_keys(item, keys[key], join(path, key))
    elif isinstance(schema, list):
        for index, item in enumerate(value):
            yield from unknown_keys(item, schema[0], f"{path}[{index}]")
    else:
        for key, item in value.items():
            if key not in schema:
                yield join(path, key)
            else:
                yield from unknown_keys(item, schema[key], join(path, key))


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded = yaml.safe_load(VALUES.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_helm_values_name_only_keys_the_dagster_chart_has(values: dict[str, Any]) -> None:
    assert list(unknown_keys(values, CHART_KEYS, "")) == []


def test_key_check_rejects_a_key_the_chart_does_not_have() -> None:
    misspelled = yaml.safe_load(VALUES.read_text())
    misspelled["dagsterDaemon"]["runMonitoring"]["startTimeout"] = 10
    misspelled["dagster-user-deployments"]["deployments"][0]["deploymentStrategy"]["rollingUpdate"][
        "maxSurges"
    ] = 2

    assert sorted(unknown_keys(misspelled, CHART_KEYS, "")) == [
        "dagster-user-deployments.deployments[0].deploymentStrategy.rollingUpdate.maxSurges",
        "dagsterDaemon.runMonitoring.startTimeout",
    ]


def user_code(values: Mapping[str, Any]) -> Mapping[str, Any]:
    deployments = values["dagster-user-deployments"]["deployments"]
    assert [d["name"] for d in deployments] == ["hub-pipelines"]
    return deployments[0]


def test_user_code_rolls_out_one_new_pod_before_removing_an_old_one(values: dict[str, Any]) -> None:
    assert user_code(values)["deploymentStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_user_code_has_probes_and_the_seed_resources(values: dict[str, Any]) -> None:
    deployment = user_code(values)
    assert deployment["readinessProbe"]["enabled"] is True
    assert deployment["livenessProbe"]["periodSeconds"] > 0
    assert deployment["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "1000m", "memory": "1Gi"},
    }
    assert deployment["codeServerArgs"] == ["-m", "hub_pipelines.definitions"]


def test_user_code_secrets_come_from_secret_key_refs(values: dict[str, Any]) -> None:
    env = {item["name"]: item for item in user_code(values)["env"]}
    for secret in ("HUB_DATABASE_URL", "HUB_S3_SECRET_ACCESS_KEY", "HUB_ORDER_SIGNING_SECRET"):
        assert env[secret]["valueFrom"]["secretKeyRef"] == {"name": "hub-pipelines-secrets", "key": secret}
        assert "value" not in env[secret]
    assert env["HUB_ENV"]["value"] == "prod"


def test_run_limits_are_set_once_under_concurrency_not_on_the_coordinator(values: dict[str, Any]) -> None:
    coordinator = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert "maxConcurrentRuns" not in coordinator
    assert "tagConcurrencyLimits" not in coordinator
    assert values["concurrency"]["enabled"] is True
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["telemetry"] == {"enabled": False}


def test_helm_concurrency_matches_the_prod_instance_file(values: dict[str, Any]) -> None:
    instance = yaml.safe_load((PROJECT_ROOT / "deploy" / "dagster.prod.yaml").read_text())["concurrency"]
    runs, pools = values["concurrency"]["runs"], values["concurrency"]["pools"]

    assert runs["maxConcurrentRuns"] == instance["runs"]["max_concurrent_runs"]
    assert runs["tagConcurrencyLimits"] == instance["runs"]["tag_concurrency_limits"]
    assert pools == {
        "granularity": instance["pools"]["granularity"],
        "defaultLimit": instance["pools"]["default_limit"],
        "opGranularityRunBuffer": instance["pools"]["op_granularity_run_buffer"],
    }


def test_code_servers_api_process_waits_five_minutes_for_a_heartbeat(values: dict[str, Any]) -> None:
    """At Dagster's 30 s a busy code server's API process shut itself down and nothing started another:
    every sensor tick and run launch failed from then on (chaos seeds 13 and 14)."""
    env = {item["name"]: item for item in user_code(values)["env"]}
    assert env["DAGSTER_GRPC_PROXY_HEARTBEAT_TTL_SECONDS"]["value"] == "300"
