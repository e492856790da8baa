"""What scripts/run_local.sh prepares before `dagster dev` starts, for the benches that stand up `make run`'s
deployment in a temporary folder (bench/freshness.py, bench/run_start.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from hub_pipelines import settings
from hub_pipelines.resources.object_storage_local import LocalObjectStorage
from hub_pipelines.resources.topics import LocalTopicLog

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def prepare_local_deployment(
    data_dir: Path, dagster_home: Path, environment: Mapping[str, str]
) -> LocalTopicLog:
    """The repository's dagster.yaml in `dagster_home`, the uploads bucket and the empty topics under
    `data_dir`, and the `warehouse` pool at 3 (a follower, its successor and a rollup may hold it
    together), as scripts/run_local.sh sets them. Returns the topic log, for the bench to produce to."""
    shutil.copy(PROJECT / "dagster.yaml", dagster_home / "dagster.yaml")
    LocalObjectStorage(root=str(data_dir / "objects")).create_bucket(settings.UPLOADS_BUCKET)
    topics = LocalTopicLog(root=str(data_dir / "topics"))
    for topic in (settings.ORDERS_TOPIC, settings.EVENTS_TOPIC, settings.ORDER_EVENTS_OUT_TOPIC):
        topics.create_topic(topic, settings.TOPIC_PARTITIONS)
    subprocess.run(
        [str(BIN / "dagster"), "instance", "concurrency", "set", "warehouse", "3"],
        env=dict(environment),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return topics


def stop_session(process: subprocess.Popen[bytes], stop_signal: signal.Signals, timeout_s: float) -> None:
    """Send `stop_signal` to the session `process` leads (started with start_new_session: its children,
    a daemon's code server and run workers, are in it); SIGKILL the session if it has not ended after
    `timeout_s`."""
    os.killpg(process.pid, stop_signal)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
