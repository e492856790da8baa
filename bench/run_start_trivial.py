"""The smallest code location a run can start from: one job of one op, no resources. bench/run_start.py
launches its runs beside hub_pipelines' on the same instance, as the floor Dagster's launch sets."""

import dagster as dg


@dg.op
def noop() -> None:
    """Does nothing: the run's start is what is measured."""


# In process, as the code location's local jobs run (definitions.py): no second process per step.
@dg.job(executor_def=dg.in_process_executor)
def trivial_job() -> None:
    noop()


defs = dg.Definitions(jobs=[trivial_job])
