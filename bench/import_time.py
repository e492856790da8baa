"""Code location import time beside `import dagster`, in the same run.

    uv run python bench/import_time.py [--repetitions 7] [--envs local,prod] [--baseline DIR]

Every Dagster run is a fresh process that imports the code location before its first step, so this
is a floor under every run's launch. Each repetition imports, each in a fresh interpreter, `dagster`
alone and then `hub_pipelines.definitions` under every HUB_ENV asked for, interleaved so machine
load falls on all of them alike. The time is taken inside the child around the import statement
(interpreter start-up excluded), as wall time and as the child's CPU time, and reported as the median,
with the range, and as a multiple of `import dagster`. On a loaded machine the wall time grows with
every other process while the CPU time barely moves: CPU is the figure to compare then. The machine's load average is printed with them: on a shared machine
compare figures within one run only. `--baseline DIR` times another checkout's code location in the
same run (e.g. `git archive main hub_pipelines | tar -x -C DIR`), imported from DIR with this
environment's packages.

The regression guard is not a timing: tests/ops/test_code_location_imports.py fails when the local
code location imports a production-only or heavy module at definition time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DAGSTER = "dagster"
CODE_LOCATION = "hub_pipelines.definitions"


def timed_import(module: str, env: dict[str, str], source: Path = PROJECT) -> tuple[float, float]:
    """Wall and CPU seconds `import module` takes in a fresh interpreter, with `source` first on the path."""
    program = "\n".join(
        [
            "import time",
            "started, cpu = time.perf_counter(), time.process_time()",
            f"import {module}",
            "print(time.perf_counter() - started, time.process_time() - cpu)",
        ]
    )
    env = {**env, "PYTHONPATH": str(source)}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, cwd=source, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"import {module} failed (HUB_ENV={env.get('HUB_ENV')}):\n{done.stderr}")
    wall, cpu = done.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def child_env(hub_env: str | None, data_dir: str) -> dict[str, str]:
    """This environment without HUB_* settings; production's connection settings are read only when
    a resource is used (dg.EnvVar), so the prod code location imports without them."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    env["HUB_DATA_DIR"] = data_dir
    if hub_env is not None:
        env["HUB_ENV"] = hub_env
    return env


def medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def describe(label: str, samples: list[tuple[float, float]], anchor: tuple[float, float] | None) -> str:
    """Median (range) of wall and CPU seconds, each with its multiple of the anchor's median."""
    line = f"  {label:<50}"
    for kind, index in (("wall", 0), ("cpu", 1)):
        seconds = [sample[index] for sample in samples]
        median = statistics.median(seconds)
        line += f"  {kind} {median:5.2f} s ({min(seconds):5.2f}-{max(seconds):5.2f})"
        if anchor is not None:
            line += f" {median / anchor[index]:3.1f}x"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument(
        "--envs", default="local,prod", help="HUB_ENV values to import the code location under"
    )
    parser.add_argument("--baseline", type=Path, help="another checkout whose code location is timed beside")
    args = parser.parse_args()
    envs = [env for env in args.envs.split(",") if env]
    sources = {"": PROJECT} if args.baseline is None else {"": PROJECT, "baseline ": args.baseline.resolve()}
    cases = [(name, env, source) for name, source in sources.items() for env in envs]

    samples: dict[str, list[tuple[float, float]]] = {
        DAGSTER: [],
        **{f"{name}{env}": [] for name, env, _ in cases},
    }
    load_before = os.getloadavg()
    started_at, started = datetime.now(UTC), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hub-import-bench-") as data_dir:
        # One untimed pass writes the bytecode caches, so no repetition pays for compiling.
        for _, env, source in cases:
            timed_import(CODE_LOCATION, child_env(env, data_dir), source)
        for _ in range(args.repetitions):
            samples[DAGSTER].append(timed_import(DAGSTER, child_env(None, data_dir)))
            for name, env, source in cases:
                samples[f"{name}{env}"].append(timed_import(CODE_LOCATION, child_env(env, data_dir), source))
    load_after = os.getloadavg()

    print(
        f"import time, {args.repetitions} fresh interpreters each, from {started_at:%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, load average {load_before[0]:.2f} before / {load_after[0]:.2f} after, "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    anchor = medians(samples[DAGSTER])
    print(describe("import dagster", samples[DAGSTER], None))
    for name, env, _ in cases:
        print(describe(f"import {CODE_LOCATION} ({name}{env})", samples[f"{name}{env}"], anchor))


if __name__ == "__main__":
    main()
