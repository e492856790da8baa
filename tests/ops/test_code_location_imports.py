"""What a process imports when it loads the code location: every run pays it before its first step.

Production-only integrations (cloud, cluster, broker and server clients) must load only under
HUB_ENV=prod, and there, like heavy libraries, only where they are used, never at definition time.
Each check imports the code location in a fresh interpreter and reads `sys.modules`; the time it
takes is a bench figure (bench/import_time.py), not an assertion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

# Clients of services that only production runs (S3, Kubernetes, Kafka, ClickHouse server, Redis,
# PostgreSQL, Stripe, SMTP/SMS and pager HTTP APIs), and their integrations.
PRODUCTION_ONLY = (
    "dagster_aws",
    "dagster_k8s",
    "kubernetes",
    "boto3",
    "botocore",
    "confluent_kafka",
    "clickhouse_connect",
    "redis",
    "pybreaker",
    "psycopg",
    "stripe",
    "httpx",
    "limits",
    "jwt",
)
# Libraries that cost a large share of `import dagster` each and are only needed inside a step.
HEAVY = (
    "pandas",
    "pyarrow",
    "numpy",
    "chdb",
    "PIL",
    "av",
    "pikepdf",
    "puremagic",
    "alembic",
    "opentelemetry.sdk",
    "opentelemetry.exporter",
    "opentelemetry.instrumentation",
    "prometheus_client",
)


# What a production run does when it needs them: the media run makes its k8s executor, a step opens an
# S3 bucket and its client, a landing asks a topic for its partitions (no broker listens: it gives up).
USE_PRODUCTION_CLIENTS = """
import contextlib
from hub_pipelines.core.ports import TopicUnavailable
from hub_pipelines.deploy_k8s import configured_k8s_job_executor
from hub_pipelines.resources.kafka_topics import KafkaTopics
from hub_pipelines.resources.object_storage import S3ObjectStorage
configured_k8s_job_executor()
storage = S3ObjectStorage(endpoint_url="http://127.0.0.1:9", region_name="us-east-1")
storage.bucket("probe")
storage.client
with contextlib.suppress(TopicUnavailable):
    KafkaTopics(bootstrap_servers="127.0.0.1:9", timeout_seconds=0.5).partitions("probe")
"""


def modules_loaded_by_code_location(
    hub_env: str, tmp_path: Path, candidates: tuple[str, ...], then: str = ""
) -> list[str]:
    """Which of `candidates` are in sys.modules after loading the code location under `hub_env` as a
    code server does (import, then resolve and validate every definition), and after running `then`."""
    program = (
        "import json, sys\n"
        "import dagster as dg\n"
        "import hub_pipelines.definitions\n"
        "dg.Definitions.validate_loadable(hub_pipelines.definitions.defs)\n"
        f"{then}\n"
        f"print(json.dumps(sorted(name for name in {list(candidates)!r} if name in sys.modules)))\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    env.update({"HUB_ENV": hub_env, "HUB_DATA_DIR": str(tmp_path)})
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"loading the code location under HUB_ENV={hub_env} failed:\n{done.stderr}"
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize("forbidden", [PRODUCTION_ONLY, HEAVY], ids=["production_only", "heavy"])
def test_local_code_location_imports_no_production_client_or_heavy_library(
    forbidden: tuple[str, ...], tmp_path: Path
) -> None:
    loaded = modules_loaded_by_code_location("local", tmp_path, forbidden)

    assert loaded == [], (
        f"HUB_ENV=local imports {loaded} at definition time; import them where they are used "
        "(`python -X importtime -c 'import hub_pipelines.definitions'` shows who pulls them in)"
    )


@pytest.mark.parametrize("forbidden", [PRODUCTION_ONLY, HEAVY], ids=["production_only", "heavy"])
def test_prod_code_location_imports_no_production_client_or_heavy_library(
    forbidden: tuple[str, ...], tmp_path: Path
) -> None:
    loaded = modules_loaded_by_code_location("prod", tmp_path, forbidden)

    assert loaded == [], (
        f"HUB_ENV=prod imports {loaded} at definition time; import them where a run uses them "
        "(`HUB_ENV=prod python -X importtime -c 'import hub_pipelines.definitions'` shows who pulls them in)"
    )


def test_prod_cluster_cloud_and_broker_clients_load_when_a_run_uses_them(tmp_path: Path) -> None:
    """The same probe sees production's integrations once used, so an empty list above means absent."""
    loaded = modules_loaded_by_code_location("prod", tmp_path, PRODUCTION_ONLY, then=USE_PRODUCTION_CLIENTS)

    assert {"dagster_aws", "dagster_k8s", "kubernetes", "boto3", "botocore", "confluent_kafka"} <= set(loaded)
