"""Produce -> landed through Dagster: marked events at a steady rate into a real local deployment.

    uv run python bench/freshness.py [--seconds 300] [--rate 10] [--follow 120] [--follow-longest 600]
        [--rollup-every 90] [--keep]

The deployment is `make run`'s: HUB_ENV=local under a temporary .hub with the repository's
dagster.yaml, `dagster-daemon run` on the code location (sensors, run queue, launcher, monitoring), a
redis-server on a Unix socket for the real-time counters, chdb for the warehouse. The events sensor's
landing runs follow the topic for `--follow` seconds (HUB_EVENTS_FOLLOW_SECONDS; 0 is one run per batch),
window after window up to `--follow-longest` while no other run is queued (a rollup ends that).

A probe is one analytics event, produced at a steady rate; its produce time is taken just before the
append (the topic log stamps it then too). It counts as landed in the warehouse when a materialization
of analytics/raw_events whose `ranges` cover its offset is in the Dagster instance (written after the
batch's rows and counters are in: what the UI shows), and in Redis when the counters' marker of a chunk
covering its offset exists (written in the same MULTI/EXEC as the chunk's counters). Landed = both.
Probes produced before the first landing run started (the daemon's and code server's cold start) are
not measured; they are counted apart. Every `--rollup-every` seconds a daily rollup run is queued (it
needs the warehouse pool the follower holds): its wait is reported beside the landing runs'. Runs'
queued + launching (created -> started) and running times come from the run records, and each run's
start in its phases (queue, launch and imports, resources, the step's warm-up to its first landing)
and each gap between two followers in its parts from the event log: those move less with the load
than the latencies. A probe "waited for a run to start" when it was produced before the run that
landed it had landed its first batch (with the handoff: produced after the previous follower's last
poll). The machine's load average is printed at start and end: on a
shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import redis
from local_deployment import prepare_local_deployment, stop_session

from hub_pipelines import settings
from hub_pipelines.analytics.counters import PREFIX
from hub_pipelines.core.ports import OutgoingMessage
from hub_pipelines.demo.feeder import analytics_event
from hub_pipelines.landing.offsets import OffsetRange, parse_ranges

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RAW_EVENTS = dg.AssetKey(["analytics", "raw_events"])
JOB = "analytics_pipeline"
ROLLUP_JOB = "analytics_daily_rollups"


@dataclass
class Probe:
    partition: int
    offset: int
    produced_at: float
    in_warehouse_at: float | None = None
    in_redis_at: float | None = None
    # Produced before the run that landed it had landed its first batch: it waited for a run to start
    # (the queue, the launch, the step's warm-up), not for a running follower's next poll.
    waited_for_run_start: bool = False

    @property
    def landed_at(self) -> float | None:
        if self.in_warehouse_at is None or self.in_redis_at is None:
            return None
        return max(self.in_warehouse_at, self.in_redis_at)


@dataclass
class Watcher:
    """Notices probes landing: materializations in the instance, counter markers in Redis."""

    instance: dg.DagsterInstance
    counters: redis.Redis
    topic: str
    after_storage_id: int | None = None
    landed_ranges: list[tuple[OffsetRange, float, str]] = field(default_factory=list)
    first_landing_of_run: dict[str, float] = field(default_factory=dict)
    counted_chunks: set[OffsetRange] = field(default_factory=set)

    def look(self, probes: list[Probe]) -> None:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW_EVENTS, after_storage_id=self.after_storage_id),
            limit=1000,
            ascending=True,
        ).records
        for record in records:
            self.after_storage_id = record.storage_id
            metadata = record.asset_materialization.metadata if record.asset_materialization else {}
            text = getattr(metadata.get("ranges"), "value", "none")
            self.first_landing_of_run.setdefault(record.run_id, record.timestamp)
            for r in parse_ranges(text) if text and text != "none" else []:
                self.landed_ranges.append((r, record.timestamp, record.run_id))
        for key in self.counters.scan_iter(match=f"{PREFIX}:counted:{self.topic}/*", count=1000):
            partition, span = key.decode().rsplit("/", 1)[1].split(":")
            start, end = span.split("-")
            self.counted_chunks.add(OffsetRange(int(partition), int(start), int(end)))
        now = time.time()
        for probe in probes:
            if probe.in_warehouse_at is None:
                found = next(((at, run) for r, at, run in self.landed_ranges if _covers(r, probe)), None)
                if found is not None:
                    probe.in_warehouse_at = found[0]
                    probe.waited_for_run_start = probe.produced_at < self.first_landing_of_run[found[1]]
            if probe.in_redis_at is None and any(_covers(r, probe) for r in self.counted_chunks):
                probe.in_redis_at = now


def _covers(r: OffsetRange, probe: Probe) -> bool:
    return r.partition == probe.partition and r.start <= probe.offset < r.end


def _percentiles(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered):.2f} s, p95 {p95:.2f} s, max {ordered[-1]:.2f} s (n={len(ordered)})"
    )


def _start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    socket = folder / "redis.sock"
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    process = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700", "--dir", str(folder),
         "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        if socket.exists():
            return process, socket
        time.sleep(0.05)
    process.kill()
    raise SystemExit("redis-server did not open its socket")


def _launch_rollup(environment: dict[str, str]) -> subprocess.Popen[bytes]:
    """Queue today's daily rollup as an operator would: it needs the warehouse pool the follower holds."""
    tags = json.dumps({"dagster/partition": datetime.now(UTC).date().isoformat()})
    return subprocess.Popen(
        [str(BIN / "dagster"), "job", "launch", "-m", "hub_pipelines.definitions", "-j", ROLLUP_JOB,
         "--tags", tags],
        cwd=PROJECT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


PHASES = (
    # (label, from event, to event): the run's way from its record to its first step, per event-log stamps.
    ("submitted (created -> RUN_ENQUEUED)", None, dg.DagsterEventType.RUN_ENQUEUED),
    # The daemon writes RUN_STARTING when it dequeues a run, just before the launch.
    (
        "queue wait, limits and pools (-> RUN_STARTING)",
        dg.DagsterEventType.RUN_ENQUEUED,
        dg.DagsterEventType.RUN_STARTING,
    ),
    (
        "launch through the code server, process spawn, imports, instance (-> RUN_START)",
        dg.DagsterEventType.RUN_STARTING,
        dg.DagsterEventType.RUN_START,
    ),
    (
        "executor, resources (-> first STEP_START)",
        dg.DagsterEventType.RUN_START,
        dg.DagsterEventType.STEP_START,
    ),
    (
        "step warm-up, first batch (-> first materialization)",
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
    ),
)


def _phases(instance: dg.DagsterInstance, job: str) -> dict[str, list[float]]:
    """Per phase of a run's start, each run's seconds in it (from the run's event log)."""
    seconds: dict[str, list[float]] = {label: [] for label, _, _ in PHASES}
    for record in instance.get_run_records(filters=dg.RunsFilter(job_name=job)):
        stamps: dict[dg.DagsterEventType | None, float] = {None: record.create_timestamp.timestamp()}
        for entry in instance.all_logs(record.dagster_run.run_id, of_type={to for _, _, to in PHASES}):
            if entry.dagster_event is not None and entry.dagster_event_type not in stamps:
                stamps[entry.dagster_event_type] = entry.timestamp
        for label, start, end in PHASES:
            if start in stamps and end in stamps:
                seconds[label].append(stamps[end] - stamps[start])
    return seconds


HANDOFF = (
    "previous run's last landing -> the next one's first (the lane unfollowed)",
    "previous run's last landing -> its end (checks, downstream steps)",
    "the next run created -> the previous one's end (negative: after it)",
    "next run created -> its first landing (queue, launch, warm-up, taking over)",
)


def _handoffs(instance: dg.DagsterInstance, job: str) -> dict[str, list[float]]:
    """Between consecutive landing runs (a follower and its successor), the time without a follower, and
    how the two runs overlapped."""
    runs = []
    for record in instance.get_run_records(filters=dg.RunsFilter(job_name=job)):
        landings = [
            entry.timestamp
            for entry in instance.all_logs(
                record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            )
            if entry.dagster_event is not None and entry.dagster_event.asset_key == RAW_EVENTS
        ]
        if landings:
            runs.append((record.create_timestamp.timestamp(), min(landings), max(landings), record.end_time))
    runs.sort()
    seconds: dict[str, list[float]] = {label: [] for label in HANDOFF}
    for (_, _, last, ended), (created, first, _, _) in itertools.pairwise(runs):
        if ended is None:
            continue
        parts = (first - last, ended - last, ended - created, first - created)
        for label, value in zip(HANDOFF, parts, strict=True):
            seconds[label].append(value)
    return seconds


def _run_times(instance: dg.DagsterInstance, job: str) -> tuple[list[float], list[float]]:
    queued_launching, running = [], []
    for record in instance.get_run_records(filters=dg.RunsFilter(job_name=job)):
        if record.start_time is None:
            continue
        queued_launching.append(record.start_time - record.create_timestamp.timestamp())
        if record.end_time is not None:
            running.append(record.end_time - record.start_time)
    return queued_launching, running


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300, help="how long probes are produced")
    parser.add_argument("--rate", type=float, default=10, help="probes per second")
    parser.add_argument("--follow", type=float, default=settings.EVENTS_FOLLOW_SECONDS)
    parser.add_argument(
        "--follow-longest",
        type=float,
        default=settings.EVENTS_FOLLOW_LONGEST_SECONDS,
        help="how long a busy follower may follow while no other run is queued",
    )
    parser.add_argument(
        "--handoff-lead",
        type=float,
        default=settings.EVENTS_HANDOFF_LEAD_SECONDS,
        help="start a follower's successor this long before its window ends (0: after it ended)",
    )
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument(
        "--rollup-every", type=float, default=90, help="queue a daily rollup run this often (0: never)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the deployment's folder (instance, daemon log) to look into"
    )
    args = parser.parse_args()
    # Stopped from outside, the deployment it started (its own session) is still stopped below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    print(
        f"probes: {args.rate}/s for {args.seconds:.0f} s; events landing runs follow for {args.follow:.0f} s "
        f"windows, up to {args.follow_longest:.0f} s while no other run waits; successors start "
        f"{args.handoff_lead:.0f} s before a window ends"
    )
    root = Path(tempfile.mkdtemp(prefix="freshness-"))
    data_dir, dagster_home = root / ".hub", root / ".hub" / "dagster_home"
    dagster_home.mkdir(parents=True)
    (data_dir / "redis").mkdir()
    redis_process, socket = _start_redis(data_dir / "redis")
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_ENV": "local",
        "HUB_DATA_DIR": str(data_dir),
        "HUB_REDIS_URL": f"unix://{socket}",
        "HUB_EVENTS_FOLLOW_SECONDS": str(args.follow),
        "HUB_EVENTS_FOLLOW_LONGEST_SECONDS": str(args.follow_longest),
        "HUB_EVENTS_HANDOFF_LEAD_SECONDS": str(args.handoff_lead),
        "DAGSTER_HOME": str(dagster_home),
    }
    topics = prepare_local_deployment(data_dir, dagster_home, environment)
    daemon_log = (root / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-m", "hub_pipelines.definitions"],
        cwd=PROJECT,
        env=environment,
        stdout=daemon_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    counters = redis.Redis(unix_socket_path=str(socket))
    rng = random.Random(20)
    probes: list[Probe] = []
    cold: list[Probe] = []
    try:
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            watcher = Watcher(instance, counters, settings.EVENTS_TOPIC)

            def produce() -> Probe:
                event = analytics_event(rng, datetime.now(UTC))
                produced_at = time.time()
                [(partition, offset)] = topics.produce(
                    settings.EVENTS_TOPIC, [OutgoingMessage(value=json.dumps(event).encode())]
                )
                return Probe(partition, offset, produced_at)

            started = time.monotonic()
            while not any(
                r.start_time for r in instance.get_run_records(filters=dg.RunsFilter(job_name=JOB))
            ):
                cold.append(produce())
                time.sleep(1)
                if time.monotonic() - started > 600:
                    raise SystemExit(f"no landing run started in 10 minutes; see {root / 'daemon.log'}")
            print(f"first landing run started {time.monotonic() - started:.0f} s after the daemon")
            interval = 1 / args.rate
            began = time.monotonic()
            next_at = began
            next_rollup = began + args.rollup_every / 2 if args.rollup_every else float("inf")
            launches: list[subprocess.Popen[bytes]] = []
            while time.monotonic() - began < args.seconds:
                probes.append(produce())
                if time.monotonic() >= next_rollup:
                    launches.append(_launch_rollup(environment))
                    next_rollup += args.rollup_every
                next_at += interval
                watcher.look(probes)
                time.sleep(max(0.0, next_at - time.monotonic()))
            drain_until = time.monotonic() + args.drain_timeout
            while time.monotonic() < drain_until and any(p.landed_at is None for p in probes):
                watcher.look(probes)
                time.sleep(0.2)
            for launch in launches:
                launch.wait()
            queued_launching, running = _run_times(instance, JOB)
            phases = _phases(instance, JOB)
            handoffs = _handoffs(instance, JOB)
            rollups_waited, rollups_ran = _run_times(instance, ROLLUP_JOB)
    finally:
        stop_session(daemon, signal.SIGTERM, 60)
        redis_process.terminate()
        redis_process.wait()

    landed = [p for p in probes if p.landed_at is not None]
    print(f"probes produced {len(probes)}, landed {len(landed)} (plus {len(cold)} during the cold start)")
    print(
        "warehouse (materialization covering it):",
        _percentiles([p.in_warehouse_at - p.produced_at for p in probes if p.in_warehouse_at is not None]),
    )
    print(
        "Redis counters (chunk marker):           ",
        _percentiles([p.in_redis_at - p.produced_at for p in probes if p.in_redis_at is not None]),
    )
    print(
        "landed (both):                           ",
        _percentiles([p.landed_at - p.produced_at for p in landed if p.landed_at is not None]),
    )
    for label, part in (
        ("  by a running follower's next poll:    ", [p for p in landed if not p.waited_for_run_start]),
        ("  waited for a run to start or take over:", [p for p in landed if p.waited_for_run_start]),
    ):
        print(label, _percentiles([p.landed_at - p.produced_at for p in part if p.landed_at is not None]))
    print(
        f"{JOB} runs: {len(queued_launching)}; queued + launching median "
        f"{statistics.median(queued_launching):.1f} s"
        if queued_launching
        else f"{JOB} runs: none"
    )
    for label, values in phases.items():
        if values:
            print(f"  {label}: median {statistics.median(values):.2f} s, max {max(values):.2f} s")
    for label, values in handoffs.items():
        if values:
            print(
                f"  between runs, {label}: median {statistics.median(values):.2f} s, max {max(values):.2f} s"
            )
    if running:
        print(f"running median {statistics.median(running):.1f} s, max {max(running):.1f} s")
    if rollups_waited:
        print(
            f"{ROLLUP_JOB} runs: {len(rollups_waited)}; queued + launching "
            f"median {statistics.median(rollups_waited):.1f} s, max {max(rollups_waited):.1f} s; "
            f"running (waiting for chdb, then the rebuild) median {statistics.median(rollups_ran or [0]):.1f} s, "
            f"max {max(rollups_ran or [0]):.1f} s"
        )
    print(f"load average at end {os.getloadavg()}")
    if args.keep:
        print(f"kept {root} (DAGSTER_HOME {dagster_home}, daemon log {root / 'daemon.log'})")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if len(landed) == len(probes) else 1


if __name__ == "__main__":
    sys.exit(main())
