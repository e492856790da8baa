"""Followers handing over, with processes SIGKILLed along the way: the predecessor once its successor is
up, the successor while it waits for the predecessor, and the successor after it took over (inside a
chunk's write). Each run is the analytics job in its own process on a Dagster instance on disk shared by
all of them (`follower_worker.py`); afterwards the run the topic sensor would request next lands the
rest, and every event is in ClickHouse exactly once and counted exactly once in Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import redis

from hub_pipelines import settings
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.landing.batches import PendingRun, RunOutcome, TopicCursor
from hub_pipelines.landing.handoff import TAKES_OVER_TAG
from hub_pipelines.landing.offsets import OffsetRange, describe_ranges, parse_ranges
from hub_pipelines.resources.topics import LocalTopicLog
from tests.platform.test_landing_killed_mid_write import redis_counted, sensor_plan
from tests.platform.test_topic_landing import _analytics_event
from tests.services import wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "tests.platform.follower_worker"]
RAW_EVENTS = dg.AssetKey(["analytics", "raw_events"])
# Long enough for a worker process to import the code location and run its job on a loaded machine
# (2 cores shared by several test suites: a worker's start alone took 80 s at load 30).
PROCESS_TIMEOUT_S = 600.0
# Three or four worker processes one after another in each test.
pytestmark = pytest.mark.timeout(int(4 * PROCESS_TIMEOUT_S))


@dataclass
class Deployment:
    """A local deployment's shared parts in a folder: the topic log, chdb, Redis, the Dagster instance."""

    root: Path
    redis_url: str
    redis_prefix: str
    instance: dg.DagsterInstance
    produced: int = 0
    # The tests name runs; Dagster wants UUIDs.
    run_ids: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topics.create_topic(settings.EVENTS_TOPIC, settings.TOPIC_PARTITIONS)

    @property
    def topics(self) -> LocalTopicLog:
        return LocalTopicLog(root=str(self.root / "hub" / "topics"))

    def produce(self, count: int) -> None:
        now = datetime.now(UTC)
        events = [
            _analytics_event(f"ev-{i}", now - timedelta(seconds=i))
            for i in range(self.produced, self.produced + count)
        ]
        self.topics.produce(settings.EVENTS_TOPIC, [OutgoingMessage(value=value) for value in events])
        self.produced += count

    def ends(self) -> dict[int, int]:
        return {p: end for p, end in self.topics.end_offsets(settings.EVENTS_TOPIC).items() if end > 0}

    def run_id(self, name: str) -> str:
        return self.run_ids.setdefault(name, str(uuid.uuid4()))

    def start(self, name: str, *args: str, poll: float = 1.0, wait: float = 60.0) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "HUB_ENV": "local",
            "HUB_DATA_DIR": str(self.root / "hub"),
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            "HUB_FOLLOW_POLL_SECONDS": str(poll),
            "HUB_HANDOFF_WAIT_SECONDS": str(wait),
        }
        command = [*WORKER, "--run-id", self.run_id(name), "--chdb-path", str(self.root / "warehouse")]
        command += ["--redis-url", self.redis_url, "--redis-prefix", self.redis_prefix, *args]
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.processes.append(process)
        return process

    def landed(self, name: str | None = None) -> int:
        """Offsets the materializations of raw_events report landed (by one run, or by any)."""
        run_id = self.run_id(name) if name else None
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW_EVENTS), limit=1000
        ).records
        ranges: list[OffsetRange] = []
        for record in records:
            if run_id in (None, record.run_id) and record.asset_materialization is not None:
                text = str(record.asset_materialization.metadata["ranges"].value)
                ranges += parse_ranges(text) if text != "none" else []
        return sum(r.size for r in ranges)

    def announced(self, name: str) -> bool:
        run = self.instance.get_run_by_id(self.run_id(name))
        return run is not None and TAKES_OVER_TAG in run.tags

    def finish(self, process: subprocess.Popen[str]) -> tuple[int, str, str]:
        out, err = process.communicate(timeout=PROCESS_TIMEOUT_S)
        return process.returncode, out, err

    def next_sensor_run(self, failed_successor_of: str) -> str:
        """The ranges the topic sensor requests once the successor of `failed_successor_of` failed, from a
        cursor that folded in no landing (the worst case: every offset is asked for again)."""
        cursor = TopicCursor({}, f"{settings.EVENTS_TOPIC}:after {self.run_id(failed_successor_of)}#0", ())
        step = sensor_plan(
            settings.EVENTS_TOPIC, cursor, self.ends(), PendingRun(RunOutcome.FAILED, "SIGKILL")
        )
        return describe_ranges(step.ranges)

    def land_rest_and_report(self, ranges: str) -> dict:
        code, out, err = self.finish(
            self.start(f"rest-{uuid.uuid4().hex[:8]}", "--ranges", ranges, "--report")
        )
        assert code == 0, err
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def deployment(tmp_path: Path, redis_server: str, redis_key_prefix: str) -> Iterator[Deployment]:
    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        shared = Deployment(tmp_path, redis_server, redis_key_prefix, instance)
        try:
            yield shared
        finally:
            shared.stop()


def _assert_every_event_landed_once(deployment: Deployment, report: dict) -> None:
    assert report["success"]
    assert report["rows"] == report["ids"] == deployment.produced
    assert report["most"] == 1
    counted, _ = redis_counted(redis.Redis.from_url(deployment.redis_url), deployment.redis_prefix)
    assert counted == deployment.produced


def test_predecessor_killed_once_its_successor_is_up_leaves_every_event_landed_once(deployment: Deployment):
    deployment.produce(60)
    predecessor = deployment.start("predecessor", "--follow-seconds", "300", poll=3.0)
    wait_until(
        lambda: deployment.landed("predecessor") >= 60, "the predecessor's first batch", 600, predecessor
    )
    deployment.produce(40)
    # The successor waits for the killed predecessor as long as a local deployment would (its run is
    # never marked ended), then takes over.
    successor = deployment.start(
        "successor", "--follow-seconds", "1", "--takes-over-from", deployment.run_id("predecessor"), wait=5.0
    )
    wait_until(lambda: deployment.announced("successor"), "the successor's announcement", 600, successor)
    predecessor.kill()
    assert deployment.finish(predecessor)[0] == -9
    deployment.produce(40)
    code, _, err = deployment.finish(successor)
    assert code == 0, err
    assert deployment.landed("successor") > 0

    report = deployment.land_rest_and_report(deployment.next_sensor_run("predecessor"))
    _assert_every_event_landed_once(deployment, report)


def test_successor_killed_while_waiting_for_its_predecessor_leaves_every_event_landed_once(
    deployment: Deployment,
):
    deployment.produce(60)
    predecessor = deployment.start("predecessor", "--follow-seconds", "300", poll=3.0)
    wait_until(
        lambda: deployment.landed("predecessor") >= 60, "the predecessor's first batch", 600, predecessor
    )
    successor = deployment.start(
        "successor", "--follow-seconds", "300", "--takes-over-from", deployment.run_id("predecessor")
    )
    wait_until(lambda: deployment.announced("successor"), "the successor's announcement", 600, successor)
    successor.kill()
    assert deployment.finish(successor)[0] == -9
    # Told to stop by the announcement, the predecessor ends its run well before its window.
    code, _, err = deployment.finish(predecessor)
    assert code == 0, err
    deployment.produce(40)

    report = deployment.land_rest_and_report(deployment.next_sensor_run("predecessor"))
    _assert_every_event_landed_once(deployment, report)


def test_successor_killed_inside_a_write_after_taking_over_leaves_every_event_landed_once(
    deployment: Deployment,
):
    deployment.produce(60)
    predecessor = deployment.start("predecessor", "--follow-seconds", "300")
    wait_until(
        lambda: deployment.landed("predecessor") >= 60, "the predecessor's first batch", 600, predecessor
    )
    successor = deployment.start(
        "successor", "--follow-seconds", "300", "--takes-over-from", deployment.run_id("predecessor"),
        "--die-after-events-insert", "2",
    )  # fmt: skip
    code, _, err = deployment.finish(predecessor)
    assert code == 0, err
    deployment.produce(40)
    wait_until(lambda: deployment.landed() >= 100, "the successor's first landing", 600, successor)
    deployment.produce(40)
    assert deployment.finish(successor)[0] == -9

    report = deployment.land_rest_and_report(deployment.next_sensor_run("predecessor"))
    _assert_every_event_landed_once(deployment, report)
