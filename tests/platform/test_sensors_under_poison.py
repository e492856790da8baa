"""The local stack as `make run` serves it: a real Dagster instance with the daemon running the sensors,
poison on every partition of both topics, and the README's CLI landing run twice beside the sensor's own
run. Nothing wedges: the cursors reach the topic ends, the orders behind the poison are paid, and no run
fails twice for the same cause.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest

from hub_pipelines import settings
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.demo.feeder import SIGNATURE_HEADER, analytics_event, order_event, seed_demo_catalog, sign
from hub_pipelines.landing.batches import TopicCursor
from hub_pipelines.resources.object_storage import LocalObjectStorage
from hub_pipelines.resources.sql_database import SqliteDatabase
from hub_pipelines.resources.topics import LocalTopicLog
from hub_pipelines.sensors.run_failures import run_error

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECRET = "daemon-test-secret"
TOPIC_SENSORS = {"orders_topic_sensor": settings.ORDERS_TOPIC, "events_topic_sensor": settings.EVENTS_TOPIC}
GOOD_ORDERS_PER_PARTITION = 40
GOOD_EVENTS_PER_PARTITION = 100
# Generous for a loaded machine (each run is a process that loads the code location); typically ~2 min.
FIRST_RUN_TIMEOUT_SECONDS = 180
SETTLE_TIMEOUT_SECONDS = 300
CLI_LANDING = ["asset", "materialize", "-m", "hub_pipelines.definitions", "--select", "orders/order_events"]
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}

T = TypeVar("T")


@dataclass
class LocalStack:
    data_dir: Path
    dagster_home: Path
    environment: dict[str, str]
    topics: LocalTopicLog
    daemon_log: Path

    def tail_of_daemon_log(self, chars: int = 3000) -> str:
        return self.daemon_log.read_text(errors="replace")[-chars:]


@pytest.fixture
def local_stack(tmp_path: Path) -> Iterator[LocalStack]:
    """HUB_ENV=local under a temporary .hub, with `make run`'s instance file, and its topics created."""
    data_dir = tmp_path / ".hub"
    dagster_home = data_dir / "dagster_home"
    dagster_home.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    # The instance's SQLite storage is made before the daemon and the test open it side by side, as
    # `make run` makes it with its first `dagster instance` command: two processes making its tables at
    # once race ("table instigators already exists").
    dg.DagsterInstance.from_config(str(dagster_home)).dispose()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_ENV": "local",
        "HUB_DATA_DIR": str(data_dir),
        "HUB_ORDER_SIGNING_SECRET": SECRET,
        "DAGSTER_HOME": str(dagster_home),
        # On a busy machine a run's launch through the code server can take longer than Dagster's
        # 60 s default; the run would then be failed from outside, a cause of no interest here.
        "DAGSTER_GRPC_TIMEOUT_SECONDS": "300",
        # Landing runs follow their topics briefly, so followers meet the poison and the CLI landings too.
        "HUB_EVENTS_FOLLOW_SECONDS": "3",
        "HUB_ORDERS_FOLLOW_SECONDS": "3",
    }
    LocalObjectStorage(root=str(data_dir / "objects")).create_bucket(settings.UPLOADS_BUCKET)
    # The products the good orders buy, as `hub-pipelines demo` seeds them beside `make run`.
    seed_demo_catalog(SqliteDatabase(path=str(data_dir / "hub.sqlite3"), migrate_schema=True))
    topics = LocalTopicLog(root=str(data_dir / "topics"))
    for topic in (settings.ORDERS_TOPIC, settings.EVENTS_TOPIC, settings.ORDER_EVENTS_OUT_TOPIC):
        topics.create_topic(topic, settings.TOPIC_PARTITIONS)
    yield LocalStack(data_dir, dagster_home, environment, topics, tmp_path / "daemon.log")


@pytest.fixture
def running_daemon(local_stack: LocalStack) -> Iterator[subprocess.Popen[bytes]]:
    """`dagster-daemon run` on the code location: sensors, the run queue and the run launcher."""
    with local_stack.daemon_log.open("wb") as log:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-m", "hub_pipelines.definitions"],
            cwd=PROJECT_ROOT,
            env=local_stack.environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield daemon
        finally:
            # The daemon's session holds its code server and the run workers it launched.
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()


def _signed(event: dict[str, object], partition: int) -> OutgoingMessage:
    payload = json.dumps(event).encode()
    return OutgoingMessage(
        value=payload, headers={SIGNATURE_HEADER: sign(payload, SECRET)}, partition=partition
    )


def poison_orders(partition: int, rng: random.Random, now: datetime) -> list[OutgoingMessage]:
    unicode_signature = json.dumps(order_event(rng, now)).encode()
    nul_id = {**order_event(rng, now), "event_id": f"order\x00{partition}"}
    huge_price = order_event(rng, now)
    huge_price["items"] = [{"product_id": "p-100", "quantity": 1, "unit_price": "1E+999999999"}]
    not_json = b"\xff\xfe{not json" + bytes([partition])
    return [
        OutgoingMessage(
            value=unicode_signature, headers={SIGNATURE_HEADER: "sha256=é".encode()}, partition=partition
        ),
        _signed(nul_id, partition),
        _signed(huge_price, partition),
        OutgoingMessage(
            value=not_json, headers={SIGNATURE_HEADER: sign(not_json, SECRET)}, partition=partition
        ),
    ]


def poison_events(partition: int, rng: random.Random, now: datetime) -> list[OutgoingMessage]:
    wrong_types = {"event_id": 7, "type": ["page_view"], "user_id": None, "ts": {"at": 1}, "properties": "x"}
    nul = {**analytics_event(rng, now), "event_id": f"event\x00{partition}", "user_id": "u\x00"}
    return [
        OutgoingMessage(value=b"\x00\xff not json " + bytes([partition]), partition=partition),
        OutgoingMessage(value=json.dumps(wrong_types).encode(), partition=partition),
        OutgoingMessage(value=json.dumps(nul).encode(), partition=partition),
    ]


def feed_poison_then_good_messages(topics: LocalTopicLog) -> set[str]:
    """Poison at the head of every partition of both topics, well-formed traffic behind it; returns the
    event ids of the well-formed orders."""
    rng, now = random.Random(13), datetime.now(UTC)
    good_orders: set[str] = set()
    for partition in range(settings.TOPIC_PARTITIONS):
        orders = [order_event(rng, now) for _ in range(GOOD_ORDERS_PER_PARTITION)]
        good_orders |= {str(order["event_id"]) for order in orders}
        topics.produce(
            settings.ORDERS_TOPIC,
            [*poison_orders(partition, rng, now), *(_signed(order, partition) for order in orders)],
        )
        events = [
            OutgoingMessage(value=json.dumps(analytics_event(rng, now)).encode(), partition=partition)
            for _ in range(GOOD_EVENTS_PER_PARTITION)
        ]
        topics.produce(settings.EVENTS_TOPIC, [*poison_events(partition, rng, now), *events])
    return good_orders


def poll(what: str, observe: Callable[[], T | None], timeout: float, diagnose: Callable[[], str]) -> T:
    """Observe until `observe` returns a value; fail with the diagnosis after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = observe()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what} not reached within {timeout:.0f} s\n{diagnose()}")


def sensor_cursor(instance: dg.DagsterInstance, sensor_name: str) -> TopicCursor:
    for state in instance.all_instigator_state():
        if state.instigator_name == sensor_name and state.instigator_data is not None:
            return TopicCursor.from_json(getattr(state.instigator_data, "cursor", None))
    return TopicCursor()


def paid_orders(data_dir: Path, event_ids: set[str]) -> set[str]:
    database = data_dir / "hub.sqlite3"
    if not database.exists():
        return set()
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        rows = connection.execute("SELECT event_id FROM orders WHERE status = 'PAID'").fetchall()
    except sqlite3.OperationalError:  # not migrated yet
        return set()
    finally:
        connection.close()
    return {event_id for (event_id,) in rows} & event_ids


def failure_cause(error: str) -> str:
    """A run's first error with its numbers (offsets, ids, counts) masked: the same cause reads the same."""
    return re.sub(r"\d+", "#", error.strip().splitlines()[0] if error.strip() else "")


def describe_runs(instance: dg.DagsterInstance) -> str:
    lines = []
    for run in instance.get_runs():
        error = run_error(instance, run.run_id) if run.status == dg.DagsterRunStatus.FAILURE else ""
        lines.append(
            f"{run.run_id[:8]} {run.job_name} {run.status.value} {run.tags.get('hub/offsets', '')} {error[:300]}"
        )
    return "\n".join(lines)


@pytest.mark.timeout(FIRST_RUN_TIMEOUT_SECONDS + SETTLE_TIMEOUT_SECONDS + 120)
def test_sensors_land_past_poison_and_overlapping_cli_landings_and_every_good_order_is_paid(
    local_stack: LocalStack, running_daemon: subprocess.Popen[bytes]
):
    good_orders = feed_poison_then_good_messages(local_stack.topics)
    ends = {
        topic: {p: end for p, end in local_stack.topics.end_offsets(topic).items() if end}
        for topic in TOPIC_SENSORS.values()
    }
    with dg.DagsterInstance.from_config(str(local_stack.dagster_home)) as instance:

        def diagnosis() -> str:
            cursors = {name: sensor_cursor(instance, name).to_json() for name in TOPIC_SENSORS}
            return (
                f"topic ends: {ends}\ncursors: {cursors}\n"
                f"paid: {len(paid_orders(local_stack.data_dir, good_orders))} of {len(good_orders)}\n"
                f"runs:\n{describe_runs(instance)}\ndaemon log:\n{local_stack.tail_of_daemon_log()}"
            )

        def sensor_landing_in_flight() -> dg.DagsterRun | None:
            runs = instance.get_runs(
                filters=dg.RunsFilter(tags={"dagster/sensor_name": "orders_topic_sensor"})
            )
            return next((run for run in runs if run.status not in FINISHED), None)

        sensor_run = poll(
            "the orders sensor's landing run", sensor_landing_in_flight, FIRST_RUN_TIMEOUT_SECONDS, diagnosis
        )
        cli_landings = [
            subprocess.Popen(
                [str(BIN / "dagster"), *CLI_LANDING],
                cwd=PROJECT_ROOT,
                env=local_stack.environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(2)
        ]
        cli_outputs = [
            landing.communicate(timeout=300)[0].decode(errors="replace") for landing in cli_landings
        ]

        def settled() -> bool:
            cursors = {name: sensor_cursor(instance, name) for name in TOPIC_SENSORS}
            at_ends = all(
                cursors[name].landed == ends[topic] and cursors[name].pending_run_key is None
                for name, topic in TOPIC_SENSORS.items()
            )
            unfinished = [run for run in instance.get_runs() if run.status not in FINISHED]
            return (
                at_ends and not unfinished and paid_orders(local_stack.data_dir, good_orders) == good_orders
            )

        poll("cursors at the topic ends, every good order paid", settled, SETTLE_TIMEOUT_SECONDS, diagnosis)

        for name, topic in TOPIC_SENSORS.items():
            assert sensor_cursor(instance, name).landed == ends[topic], name
        assert paid_orders(local_stack.data_dir, good_orders) == good_orders
        causes = Counter(
            (run.job_name, failure_cause(run_error(instance, run.run_id)))
            for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        )
        assert [cause for cause, count in causes.items() if count > 1] == [], diagnosis()
        assert [landing.returncode for landing in cli_landings] == [0, 0], "\n".join(cli_outputs)[-4000:]
        cli_runs = [run for run in instance.get_runs() if run.job_name == "__ASSET_JOB"]
        assert len(cli_runs) == 2 and sensor_run.run_id not in {run.run_id for run in cli_runs}
