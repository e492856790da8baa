"""The production instance file (deploy/dagster.prod.yaml) loaded against a real PostgreSQL and S3,
and the queue and daemon intervals of both instance files (the local one is dagster.yaml).

The rendered copy the tests load changes two things: the K8sRunLauncher reads a kubeconfig that names
an unreachable API server instead of the in-cluster service account (building its client needs no
connection, and running jobs in process never launches a pod), and compute logs go to the test S3
endpoint. Storage, the run queue, concurrency, retries, monitoring and the launcher's own settings
are the file's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._daemon.controller import create_daemon_of_type
from dagster._daemon.daemon import MonitoringDaemon
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME as SENSOR_DAEMON_LOOP_SECONDS
from dagster._serdes import ConfigurableClassData
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from tests.ops.prod_files import PROD_INSTANCE, offline_run_launcher, prod_config
from tests.services.postgres import PostgresServer
from tests.services.seaweedfs import S3Server

LOCAL_INSTANCE = Path(__file__).resolve().parents[2] / "dagster.yaml"
STEP_STDOUT = "transcoding upload 7f3a: 3 renditions"


@pytest.fixture
def compute_log_bucket(s3_server: S3Server) -> str:
    bucket = f"compute-logs-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def prod_environment(
    monkeypatch: pytest.MonkeyPatch,
    postgres_database: PostgresServer,
    s3_server: S3Server,
    compute_log_bucket: str,
) -> Mapping[str, str]:
    """The variables the instance file reads, as the Helm chart and .env would set them."""
    environment = {
        "DAGSTER_PG_USERNAME": postgres_database.user,
        "DAGSTER_PG_PASSWORD": postgres_database.password,
        "DAGSTER_PG_HOST": postgres_database.host,
        "DAGSTER_PG_PORT": str(postgres_database.port),
        "DAGSTER_PG_DB": postgres_database.database,
        "DAGSTER_K8S_JOB_NAMESPACE": "hub",
        "DAGSTER_COMPUTE_LOG_BUCKET": compute_log_bucket,
        "DAGSTER_COMPUTE_LOG_REGION": s3_server.region,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture
def prod_instance(
    tmp_path: Path, prod_environment: Mapping[str, str], s3_server: S3Server
) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = prod_config()
    config["run_launcher"] = offline_run_launcher(tmp_path)
    # The file targets AWS S3; the test server needs its endpoint (a MinIO deployment sets the same).
    config["compute_logs"]["config"]["endpoint_url"] = s3_server.endpoint_url
    config["compute_logs"]["config"]["local_dir"] = str(tmp_path / "compute-logs")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


@dg.asset(key=["media", "transcoded_rendition"], partitions_def=dg.StaticPartitionsDefinition(["7f3a"]))
def transcoded_rendition() -> dg.MaterializeResult:
    print(STEP_STDOUT)
    return dg.MaterializeResult(metadata={"renditions": 3})


def validated_section(config: Mapping[str, Any], section: str, expected_class: type) -> Mapping[str, Any]:
    """The section's config after its class's own schema processed it (env values resolved)."""
    data = ConfigurableClassData(
        config[section]["module"], config[section]["class"], yaml.safe_dump(config[section]["config"])
    )
    module = __import__(data.module_name, fromlist=[data.class_name])
    klass = getattr(module, data.class_name)
    assert klass is expected_class
    result = process_config(resolve_to_config_type(klass.config_type()), data.config_dict)
    assert result.success, [error.message for error in result.errors or []]
    return result.value or {}


def test_prod_instance_file_passes_dagsters_instance_schema(prod_environment: Mapping[str, str]) -> None:
    config, custom_class = dagster_instance_config(str(PROD_INSTANCE.parent), PROD_INSTANCE.name)

    assert custom_class is None
    assert config["telemetry"] == {"enabled": False}
    assert "max_concurrent_runs" not in (config["run_coordinator"].get("config") or {})


def test_prod_run_launcher_section_is_valid_k8s_run_launcher_config(
    prod_environment: Mapping[str, str],
) -> None:
    launcher = validated_section(prod_config(), "run_launcher", K8sRunLauncher)

    assert launcher["job_namespace"] == "hub"
    assert launcher["env_secrets"] == ["hub-pipelines-secrets"]
    assert launcher["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "1000m", "memory": "1Gi"},
    }
    assert launcher["run_k8s_config"]["job_spec_config"]["backoff_limit"] == 0


def test_prod_compute_logs_section_is_valid_s3_compute_log_config(
    prod_environment: Mapping[str, str],
) -> None:
    logs = validated_section(prod_config(), "compute_logs", S3ComputeLogManager)

    assert logs["bucket"] == prod_environment["DAGSTER_COMPUTE_LOG_BUCKET"]
    assert logs["upload_extra_args"] == {"ServerSideEncryption": "AES256"}


def test_prod_instance_stores_runs_and_events_in_postgres(
    prod_instance: dg.DagsterInstance, postgres_database: PostgresServer, tmp_path: Path
) -> None:
    assert isinstance(prod_instance.run_launcher, K8sRunLauncher)
    assert isinstance(prod_instance.run_storage, PostgresRunStorage)
    assert isinstance(prod_instance.event_log_storage, PostgresEventLogStorage)

    result = dg.materialize(
        [transcoded_rendition],
        instance=prod_instance,
        partition_key="7f3a",
        tags={"hub/workflow": "media"},
    )
    assert result.success

    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as reopened:
        run = reopened.get_run_by_id(result.run_id)
        assert run is not None
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["hub/workflow"] == "media"
        materialization = reopened.get_latest_materialization_event(
            dg.AssetKey(["media", "transcoded_rendition"])
        )
        assert materialization is not None
        assert materialization.run_id == result.run_id
    with postgres_database.connect() as connection:
        stored = connection.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,)).fetchone()
    assert stored == ("SUCCESS",)


def test_prod_instance_uploads_step_output_to_s3_compute_logs(
    prod_instance: dg.DagsterInstance, s3_server: S3Server, compute_log_bucket: str
) -> None:
    result = dg.materialize([transcoded_rendition], instance=prod_instance, partition_key="7f3a")
    assert result.success

    listed = s3_server.client().list_objects_v2(Bucket=compute_log_bucket, Prefix="dagster-compute-logs/")
    keys = [item["Key"] for item in listed.get("Contents", [])]
    stdout_keys = [key for key in keys if result.run_id in key and key.endswith(".out")]
    assert stdout_keys, f"no stdout log for run {result.run_id} among {keys}"
    body = s3_server.client().get_object(Bucket=compute_log_bucket, Key=stdout_keys[0])["Body"].read()
    assert STEP_STDOUT in body.decode()


def test_prod_instance_queues_runs_with_concurrency_limits_and_pools(
    prod_instance: dg.DagsterInstance,
) -> None:
    assert isinstance(prod_instance.run_coordinator, QueuedRunCoordinator)
    concurrency = prod_instance.get_concurrency_config()
    queue = concurrency.run_queue_config
    assert queue is not None
    assert queue.max_concurrent_runs == 30
    limits = {
        (limit["key"], str(limit.get("value"))): limit["limit"] for limit in queue.tag_concurrency_limits
    }
    assert limits[("hub/lane", str({"applyLimitPerUniqueValue": True}))] == 1
    assert limits[("hub/workflow", "media")] == 20
    assert concurrency.pool_config.pool_granularity.value == "op"
    assert concurrency.pool_config.default_pool_limit == 4

    # Named pool limits live in the instance database, as `dagster instance concurrency set` stores them.
    storage = prod_instance.event_log_storage
    storage.set_concurrency_slots("transcode", 8)
    storage.set_concurrency_slots("ledger_db", 4)
    assert storage.get_concurrency_info("transcode").slot_count == 8
    assert storage.get_concurrency_info("ledger_db").slot_count == 4


def test_prod_instance_dequeues_every_second_and_launches_side_by_side(
    prod_instance: dg.DagsterInstance,
) -> None:
    coordinator = prod_instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    assert coordinator.dequeue_interval_seconds == 1
    assert coordinator.dequeue_use_threads is True
    assert coordinator.dequeue_num_workers == 8
    assert (
        create_daemon_of_type(QueuedRunCoordinatorDaemon.daemon_type(), prod_instance).interval_seconds == 1
    )


def test_prod_run_queue_is_set_to_requeue_a_run_whose_dequeue_cannot_reach_the_code_server(
    prod_instance: dg.DagsterInstance,
) -> None:
    """Dagster's default fails such a run at once, and its retry, made through the same unreachable
    code server, fails too: the upload it was for stayed 'landed' for good (chaos seeds 13 and 14)."""
    queue = prod_instance.get_concurrency_config().run_queue_config
    assert queue is not None
    assert queue.max_user_code_failure_retries == 10
    assert queue.user_code_failure_retry_delay == 60


def test_prod_instance_ticks_sensors_on_their_own_threads_and_watches_runs_every_15_seconds(
    prod_instance: dg.DagsterInstance,
) -> None:
    assert prod_instance.get_sensor_settings() == {
        "use_threads": True,
        "num_workers": 8,
        "num_submit_workers": 4,
    }
    assert prod_instance.run_monitoring_enabled
    assert prod_instance.run_monitoring_start_timeout_seconds == 300
    assert prod_instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 60
    assert create_daemon_of_type(MonitoringDaemon.daemon_type(), prod_instance).interval_seconds == 15


def test_local_instance_dequeues_every_second_and_fails_a_run_that_never_started_within_a_minute(
    tmp_path: Path,
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE.read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        assert coordinator.dequeue_interval_seconds == 1
        assert coordinator.dequeue_use_threads is True
        assert (
            coordinator.dequeue_num_workers
            == instance.get_concurrency_config().run_queue_config.max_concurrent_runs
        )
        assert create_daemon_of_type(QueuedRunCoordinatorDaemon.daemon_type(), instance).interval_seconds == 1
        assert instance.get_sensor_settings() == {"use_threads": True, "num_workers": 8}
        assert instance.run_monitoring_start_timeout_seconds == 180
        assert create_daemon_of_type(MonitoringDaemon.daemon_type(), instance).interval_seconds == 5


def test_sensor_daemon_loop_floor_is_the_5_seconds_the_instance_files_describe() -> None:
    """Both instance files (and docs/operations.md) say a sensor ticks every 5 s at the most."""
    assert SENSOR_DAEMON_LOOP_SECONDS == 5
