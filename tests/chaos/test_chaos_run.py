"""The chaos run's cut for `make test`: the whole production wiring (HUB_ENV=prod, Dagster's daemon,
code server and webserver as processes, a process per run) under the workload and the nemesis for a
few minutes, then the checker. `make chaos` is the same harness for longer (docs/operations.md).
"""

from __future__ import annotations

import os
import random

import pytest

from chaos.run import ChaosSettings, run_chaos
from chaos.workload import Rates

# Two minutes of load and faults; with the start, the drain and the checks the test takes about four
# on a quiet machine (a loaded one stretches every run's start, and the drain with it).
CUT_MINUTES = float(os.environ.get("CHAOS_TEST_MINUTES", "2"))
CUT_RATES = Rates(orders_per_s=2, events_per_s=20, uploads_per_min=2)
DRAIN_TIMEOUT_S = 600.0


@pytest.mark.timeout(int(CUT_MINUTES * 60 + DRAIN_TIMEOUT_S + 600))
def test_chaos_run_under_the_nemesis_ends_with_no_anomaly() -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1, 10**6))
    report = run_chaos(
        ChaosSettings(minutes=CUT_MINUTES, seed=seed, rates=CUT_RATES, drain_timeout_s=DRAIN_TIMEOUT_S)
    )
    assert report.anomalies == [], report.render()
    assert sum(report.faults.values()) >= int(CUT_MINUTES), report.render()
    assert report.operations.get("orders.valid", 0) > 0 and report.operations.get("events.valid", 0) > 0
