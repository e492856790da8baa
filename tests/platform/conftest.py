"""A local environment (embedded parts in a temporary folder) and helpers to drive sensors and runs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from hub_pipelines import settings
from hub_pipelines.definitions import build_definitions, local_resources
from hub_pipelines.demo.feeder import DemoFeeder, seed_demo_catalog
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from hub_pipelines.resources.topics import LocalTopicLog


@dataclass
class LocalEnvironment:
    data_dir: Path
    resources: dict[str, Any]
    defs: dg.Definitions
    instance: dg.DagsterInstance

    def demo_feeder(self, seed: int) -> DemoFeeder:
        """The demo feeder writing into this environment's storage and topics, signing with its secret,
        with the demo's products in the environment's database (as `hub-pipelines demo` seeds them)."""
        seed_demo_catalog(self.resources["database"])
        return DemoFeeder(
            objects=self.resources["objects"],
            topics=self.resources["topics"],
            uploads_bucket=settings.UPLOADS_BUCKET,
            uploads_prefix=settings.UPLOADS_PREFIX,
            orders_topic=settings.ORDERS_TOPIC,
            events_topic=settings.EVENTS_TOPIC,
            signing_secret=self.resources["order_settings"].hmac_secret,
            partitions=settings.TOPIC_PARTITIONS,
            seed=seed,
        )

    def with_topics(self, topics: Any) -> LocalEnvironment:
        """This environment on other topics: its resources and instance, definitions built on them."""
        resources = {**self.resources, "topics": topics}
        return LocalEnvironment(
            self.data_dir, resources, build_definitions(resources, local=True), self.instance
        )

    def tick(
        self, sensor_name: str, cursor: str | None
    ) -> tuple[dg.SensorResult | dg.SkipReason, str | None]:
        """Evaluate a sensor once, as the daemon would: register the partitions it asks for and
        return its result with the cursor it leaves behind."""
        sensor = self.defs.resolve_sensor_def(sensor_name)
        with dg.build_sensor_context(
            instance=self.instance, cursor=cursor, resources=self.resources, sensor_name=sensor_name
        ) as context:
            result = sensor(context)
            if isinstance(result, dg.SensorResult):
                for request in result.dynamic_partitions_requests or []:
                    assert isinstance(request, dg.AddDynamicPartitionsRequest)
                    self.instance.add_dynamic_partitions(
                        request.partitions_def_name, list(request.partition_keys)
                    )
                return result, result.cursor if result.cursor is not None else context.cursor
            assert isinstance(result, dg.SkipReason)
            return result, context.cursor

    def run(
        self,
        sensor_name: str,
        job_name: str,
        request: dg.RunRequest,
        asset_selection: list[dg.AssetKey] | None = None,
    ) -> dg.ExecuteInProcessResult:
        """Execute a run request in process, tagged like a sensor-launched run."""
        job = self.defs.resolve_job_def(job_name)
        return job.execute_in_process(
            run_config=request.run_config,
            instance=self.instance,
            partition_key=request.partition_key,
            tags={
                **request.tags,
                "dagster/run_key": request.run_key or "",
                "dagster/sensor_name": sensor_name,
            },
            asset_selection=asset_selection,
            raise_on_error=False,
        )


@dataclass
class ArrivalsWhileFollowing:
    """The local topics, where more messages arrive on `topic` the first time a follower asks for its
    ends once `armed` (the sensor's tick before the run asks too, and must not see them)."""

    inner: LocalTopicLog
    topic: str
    arrive: Callable[[], int]
    armed: bool = False
    arrived: int = 0

    def end_offsets(self, topic: str) -> dict[int, int]:
        if self.armed and not self.arrived and topic == self.topic:
            self.arrived = self.arrive()
        return self.inner.end_offsets(topic)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def local_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chdb_path: str
) -> Iterator[LocalEnvironment]:
    """The local environment's resources in a temporary folder, its sensors' runs landing without
    following their topics.

    chdb opens one data folder per process, so the warehouse is the session's shared chdb folder
    with a database of this test's own instead of a folder under HUB_DATA_DIR.
    """
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "hub"))
    monkeypatch.setenv("HUB_ANALYTICS_DATABASE", f"test_{uuid.uuid4().hex[:12]}")
    # Runs executed here land their ranges once; tests of following ask for it in the run config.
    monkeypatch.setattr(settings, "EVENTS_FOLLOW_SECONDS", 0.0)
    monkeypatch.setattr(settings, "ORDERS_FOLLOW_SECONDS", 0.0)
    resources = local_resources()
    resources["warehouse"] = ChdbWarehouse(path=chdb_path)
    for bucket in [settings.UPLOADS_BUCKET, *resources["media_settings"].bucket_names()]:
        resources["objects"].create_bucket(bucket)
    for topic in (settings.ORDERS_TOPIC, settings.EVENTS_TOPIC, settings.ORDER_EVENTS_OUT_TOPIC):
        resources["topics"].create_topic(topic, settings.TOPIC_PARTITIONS)
    with dg.instance_for_test() as instance:
        yield LocalEnvironment(
            tmp_path / "hub", resources, build_definitions(resources, local=True), instance
        )
