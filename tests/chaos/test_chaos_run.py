"""The chaos run's cut for `make test`: the whole production wiring (HUB_ENV=prod, Dagster's daemon,
code server and webserver as processes, a process per run) under the workload and the nemesis for a
few minutes, then the checker. `make chaos` is the same command for longer (docs/operations.md).

The harness runs as `make chaos` runs it, in a process of its own: its checker opens the run's chdb
folder, and chdb opens one data folder per process (the suite's own is open in this one).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

# Three minutes of load and faults (issue 15's cut); with the start, the drain and the checks the test
# takes 6-13 minutes (a loaded machine stretches every run's start, and the drain with it), on one xdist
# worker while the other runs the rest of the suite.
CUT_MINUTES = float(os.environ.get("CHAOS_TEST_MINUTES", "3"))
CUT_RATES = ["--orders-per-s", "2", "--events-per-s", "20", "--uploads-per-min", "2"]
# The drain gives up when nothing moved for this long, or after twice this in all.
DRAIN_TIMEOUT_S = 900.0


@pytest.mark.timeout(int(CUT_MINUTES * 60 + 2 * DRAIN_TIMEOUT_S + 600))
def test_chaos_run_under_the_nemesis_ends_with_no_anomaly(tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1, 10**6))
    command = [
        sys.executable, "-m", "chaos", "--minutes", str(CUT_MINUTES), "--seed", str(seed),
        *CUT_RATES, "--drain-timeout", str(DRAIN_TIMEOUT_S), "--report", str(tmp_path),
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    reports = sorted(tmp_path.glob("chaos-*.json"))
    assert reports, (
        f"no report (exit {finished.returncode}):\n{finished.stdout[-4000:]}\n{finished.stderr[-4000:]}"
    )
    report = json.loads(reports[-1].read_text())
    assert report["anomalies"] == [], finished.stdout[-6000:]
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert sum(report["faults"].values()) >= int(CUT_MINUTES), finished.stdout[-6000:]
    # The first fault of every run is the kill of a run worker inside a PostgreSQL write; it fired when
    # the killed transaction was found aborted.
    assert report["faults"].get("kill -9 run worker", 0) >= 1, report["fault_log"]
    assert report["operations"].get("orders.valid", 0) > 0 and report["operations"].get("events.valid", 0) > 0
