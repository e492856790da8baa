"""The nemesis finds a run's process from the engine event the run's process logs as it starts."""

from __future__ import annotations

import os

import dagster as dg

from chaos.nemesis import worker_pid


@dg.op
def step() -> None:
    pass


@dg.job
def one_step() -> None:
    step()


def test_run_worker_pid_is_read_from_the_process_started_engine_event() -> None:
    with dg.instance_for_test() as instance:
        result = one_step.execute_in_process(instance=instance)
        # Dagster's own in-process execution logs "Executing steps in process (pid: N)"; the run
        # launcher's process logs "Started process for run (pid: N)." as it starts.
        instance.report_engine_event(f"Started process for run (pid: {os.getpid()}).", result.dagster_run)
        assert worker_pid(instance, result.run_id) == os.getpid()


def test_a_run_whose_process_never_started_has_no_worker_pid() -> None:
    with dg.instance_for_test() as instance:
        result = one_step.execute_in_process(instance=instance)
        assert worker_pid(instance, result.run_id) is None
