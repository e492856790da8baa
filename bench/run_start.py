"""Queued + launching per run, in its parts, beside the floor a trivial code location sets on the same instance.

    uv run python bench/run_start.py [--runs 20] [--job analytics_pipeline] [--no-bytecode] [--keep]

The deployment is `make run`'s: `dagster dev` on free loopback ports with the repository's dagster.yaml in
a temporary DAGSTER_HOME, HUB_ENV=local, the topics created empty. Its workspace has two locations: the
code location (`hub_pipelines`) and `trivial` (bench/run_start_trivial.py: one job of one op, no
resources). The bench submits a run of `--job` and one of `trivial_job`, alternately, through the
webserver's GraphQL API (as the launchpad does), each after the previous run ended; the landing jobs
follow their topic for 0 s, so a run ends once its start is measured.

Each run's start is split by the event log's stamps (created, RUN_ENQUEUED, RUN_STARTING, RUN_START,
first STEP_START) and by the run worker's own timeline, written by bench/run_start_probe/sitecustomize.py
(on the deployment's PYTHONPATH; it only wraps the loading of a few modules): when the code server's
child (a multiprocessing spawn) was exec'd, when site ran, when `import dagster` and the code location's
import began and ended. `--no-bytecode` gives the deployment an empty bytecode cache it may not write to
(PYTHONPYCACHEPREFIX, PYTHONDONTWRITEBYTECODE): every interpreter compiles what it imports, as on a
venv installed without .pyc files where Python may not write them. The machine's load average is printed
at start and end: on a shared machine compare the two locations within one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from local_deployment import prepare_local_deployment, stop_session

PROJECT = Path(__file__).resolve().parent.parent
BENCH = PROJECT / "bench"
BIN = Path(sys.executable).parent
HUB_LOCATION, TRIVIAL_LOCATION, TRIVIAL_JOB = "hub_pipelines", "trivial", "trivial_job"
ENDED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}

# (label, from mark, to mark): marks are event types' names or the run worker's timeline entries.
SEGMENTS = (
    ("submitted (created -> RUN_ENQUEUED)", "created", "RUN_ENQUEUED"),
    ("queue: daemon's dequeue loop, limits, pools (-> RUN_STARTING)", "RUN_ENQUEUED", "RUN_STARTING"),
    ("launch: daemon -> code server -> process exec'd", "RUN_STARTING", "exec"),
    ("interpreter start-up (exec -> site)", "exec", "site"),
    ("import dagster", "import dagster begins", "import dagster ends"),
    (
        "run's arguments, instance, run record (-> code location import)",
        "import dagster ends",
        "location begins",
    ),
    ("code location import (beyond dagster)", "location begins", "location ends"),
    ("job, executor, RUN_START written (-> RUN_START)", "location ends", "RUN_START"),
    ("resources, first step (RUN_START -> first STEP_START)", "RUN_START", "STEP_START"),
)
TOTALS = (
    ("queued + launching (created -> RUN_START)", "created", "RUN_START"),
    ("launching (RUN_STARTING -> RUN_START)", "RUN_STARTING", "RUN_START"),
    ("created -> first STEP_START", "created", "STEP_START"),
)
# Dagster storage's libraries, imported while the instance loads. The CLI (dagster._cli) is not on the
# run worker's path: the code server starts it as a multiprocessing spawn, not `dagster api execute_run`.
WITHIN = ("sqlalchemy", "alembic")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _workspace(root: Path) -> Path:
    path = root / "workspace.yaml"
    path.write_text(
        json.dumps(
            {
                "load_from": [
                    {
                        "python_module": {
                            "module_name": "hub_pipelines.definitions",
                            "location_name": HUB_LOCATION,
                            "working_directory": str(PROJECT),
                        }
                    },
                    {
                        "python_module": {
                            "module_name": "run_start_trivial",
                            "location_name": TRIVIAL_LOCATION,
                            "working_directory": str(BENCH),
                        }
                    },
                ]
            }
        )
    )
    return path


def _environment(root: Path, no_bytecode: bool) -> dict[str, str]:
    data_dir = root / ".hub"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "PYTHONPYCACHEPREFIX"))},
        "HUB_ENV": "local",
        "HUB_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(data_dir / "dagster_home"),
        # A hand-launched landing run follows its topic for this long after its ranges: not at all here.
        "HUB_EVENTS_FOLLOW_SECONDS": "0",
        "HUB_ORDERS_FOLLOW_SECONDS": "0",
        "HUB_BENCH_TIMELINE_DIR": str(root / "timelines"),
        "PYTHONPATH": os.pathsep.join(
            [str(BENCH / "run_start_probe"), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    if no_bytecode:
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        environment["PYTHONPYCACHEPREFIX"] = str(root / "empty-bytecode-cache")
    return environment


def _bytecode_state(environment: dict[str, str]) -> str:
    spec = importlib.util.find_spec("dagster")
    assert spec is not None and spec.origin is not None
    compiled = Path(importlib.util.cache_from_source(spec.origin)).exists()
    if "PYTHONPYCACHEPREFIX" in environment:
        return "none (empty PYTHONPYCACHEPREFIX, PYTHONDONTWRITEBYTECODE=1): every import compiles"
    writes = (
        "not written (PYTHONDONTWRITEBYTECODE=1)" if environment.get("PYTHONDONTWRITEBYTECODE") else "written"
    )
    return f"venv's .pyc {'present' if compiled else 'MISSING'}, new ones {writes}"


def _submit(client: DagsterGraphQLClient, location: str, job: str) -> str:
    return client.submit_job_execution(
        job, repository_location_name=location, repository_name="__repository__", run_config={}
    )


def _submit_once_served(client: DagsterGraphQLClient, location: str, job: str, deadline: float) -> str:
    """Submits as soon as the webserver and the location answer (code servers start cold)."""
    while True:
        try:
            return _submit(client, location, job)
        except DagsterGraphQLClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _wait_for_end(instance: dg.DagsterInstance, run_id: str, timeout: float) -> dg.DagsterRunStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status in ENDED:
            return run.status
        time.sleep(0.2)
    raise SystemExit(f"run {run_id} did not end within {timeout:.0f} s")


def _marks(instance: dg.DagsterInstance, run_id: str, timelines: Path) -> dict[str, float]:
    """Epoch seconds of each mark of the run; the run worker's own marks also as `<mark> cpu`: the CPU
    seconds the worker had used by then (0 at exec)."""
    record = instance.get_run_record_by_id(run_id)
    assert record is not None
    marks = {"created": record.create_timestamp.timestamp()}
    kinds = {
        dg.DagsterEventType.RUN_ENQUEUED,
        dg.DagsterEventType.RUN_STARTING,
        dg.DagsterEventType.RUN_START,
        dg.DagsterEventType.STEP_START,
    }
    pid = None
    for entry in instance.all_logs(run_id, of_type=kinds):
        if entry.dagster_event is None:
            continue
        marks.setdefault(entry.dagster_event_type.name, entry.timestamp)
        # RUN_START is written by the run worker itself.
        if entry.dagster_event_type == dg.DagsterEventType.RUN_START:
            pid = entry.dagster_event.pid
    if pid is not None and (timelines / f"{pid}.jsonl").exists():
        for line in (timelines / f"{pid}.jsonl").read_text().splitlines():
            entry = json.loads(line)
            what = entry["what"]
            for module in ("hub_pipelines.definitions", "run_start_trivial"):
                what = what.replace(f"import {module} ", "location ")
            marks.setdefault(what, entry["at"])
            marks.setdefault(f"{what} cpu", 0.0 if what == "exec" else entry["cpu"])
    return marks


def _describe(label: str, values: list[float], cpu: list[float] | None = None) -> str:
    if not values:
        return f"  {label:<66} -"
    line = f"  {label:<66} {statistics.median(values):6.2f} s  ({min(values):5.2f}-{max(values):5.2f})"
    if cpu:
        line += f"  cpu {statistics.median(cpu):5.2f} s"
    return line


def _spans(runs: list[dict[str, float]], start: str, end: str, suffix: str = "") -> list[float]:
    return [m[end + suffix] - m[start + suffix] for m in runs if start + suffix in m and end + suffix in m]


def _table(title: str, runs: list[dict[str, float]]) -> None:
    print(f"{title}: {len(runs)} runs, median (min-max)")
    for label, start, end in TOTALS:
        print(_describe(label, _spans(runs, start, end)))
    print("  in turn (cpu: the run worker's own CPU seconds in it, which the machine's load moves less):")
    for label, start, end in SEGMENTS:
        print(_describe(label, _spans(runs, start, end), _spans(runs, start, end, " cpu")))
    print(
        _describe(
            "run worker, exec -> code location imported",
            _spans(runs, "exec", "location ends"),
            _spans(runs, "exec", "location ends", " cpu"),
        )
    )
    for module in WITHIN:
        begins, ends = f"import {module} begins", f"import {module} ends"
        print(
            _describe(
                f"  within the above: import {module}",
                _spans(runs, begins, ends),
                _spans(runs, begins, ends, " cpu"),
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="measured runs of each location")
    parser.add_argument("--job", default="analytics_pipeline", help="the code location's job to launch")
    parser.add_argument("--no-bytecode", action="store_true", help="every interpreter compiles its imports")
    parser.add_argument("--keep", action="store_true", help="keep the deployment's folder")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    root = Path(tempfile.mkdtemp(prefix="run-start-"))
    environment = _environment(root, args.no_bytecode)
    data_dir, dagster_home, timelines = (
        Path(environment["HUB_DATA_DIR"]),
        Path(environment["DAGSTER_HOME"]),
        root / "timelines",
    )
    for folder in (dagster_home, timelines, root / "empty-bytecode-cache"):
        folder.mkdir(parents=True)
    prepare_local_deployment(data_dir, dagster_home, environment)
    port = _free_port()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.2f}, "
        f"{os.cpu_count()} CPUs; bytecode: {_bytecode_state(environment)}"
    )
    log = (root / "dagster_dev.log").open("wb")
    deployment = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-w", str(_workspace(root)), "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    measured: dict[str, list[dict[str, float]]] = {HUB_LOCATION: [], TRIVIAL_LOCATION: []}
    statuses: dict[str, list[str]] = {HUB_LOCATION: [], TRIVIAL_LOCATION: []}
    try:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            pairs = ((HUB_LOCATION, args.job), (TRIVIAL_LOCATION, TRIVIAL_JOB))
            # One unmeasured round: the code servers' first launch warms caches no later run pays for.
            for location, job in pairs:
                run_id = _submit_once_served(client, location, job, time.monotonic() + 300)
                _wait_for_end(instance, run_id, 300)
            for _ in range(args.runs):
                for location, job in pairs:
                    run_id = _submit(client, location, job)
                    statuses[location].append(_wait_for_end(instance, run_id, 300).value)
                    measured[location].append(_marks(instance, run_id, timelines))
    finally:
        stop_session(deployment, signal.SIGINT, 30)

    print(f"load average at end {os.getloadavg()[0]:.2f}")
    for location, job in ((HUB_LOCATION, args.job), (TRIVIAL_LOCATION, TRIVIAL_JOB)):
        counts = {status: statuses[location].count(status) for status in sorted(set(statuses[location]))}
        _table(f"{location} / {job} ({counts})", measured[location])
    hub = [m["RUN_START"] - m["created"] for m in measured[HUB_LOCATION] if "RUN_START" in m]
    floor = [m["RUN_START"] - m["created"] for m in measured[TRIVIAL_LOCATION] if "RUN_START" in m]
    if hub and floor:
        print(
            f"queued + launching: {HUB_LOCATION} {statistics.median(hub):.2f} s, trivial location "
            f"{statistics.median(floor):.2f} s, ours over the floor {statistics.median(hub) - statistics.median(floor):.2f} s"
        )
    if args.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
