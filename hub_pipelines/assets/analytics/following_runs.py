"""What a following events landing run learns from the Dagster instance: whether another run waits for
the warehouse it holds, whether its successor is on its way or up, and which earlier runs the successor
lets go first (landing/handoff.py). Each answer is one indexed query on the run tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from hub_pipelines.landing.lanes import FOLLOWING_LANE_TAG

# A successor sets this tag on its own run, naming the run it takes over from, once it is up.
TAKES_OVER_TAG = "hub/takes-over-from"
# Queued runs of these workflows never wait for the warehouse, so a follower need not stop for them.
WORKFLOWS_WITHOUT_WAREHOUSE = frozenset({"media", "orders"})
UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
LAUNCHED = frozenset({dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED})


def may_wait_for_warehouse(run: dg.DagsterRun) -> bool:
    """Whether a run may be waiting for the warehouse a follower holds: any run but the media and
    orders workflows' (a rollup, another lane's follower, a replay, a launch from the UI or the CLI)."""
    return run.tags.get("hub/workflow") not in WORKFLOWS_WITHOUT_WAREHOUSE


@dataclass(frozen=True)
class FollowingRun:
    """This landing run, as its lane's handoff sees it."""

    instance: dg.DagsterInstance
    run: dg.DagsterRun
    created: datetime

    @classmethod
    def of(cls, context: dg.AssetExecutionContext) -> FollowingRun:
        record = context.instance.get_run_record_by_id(context.run.run_id)
        if record is None:
            raise LookupError(f"run {context.run.run_id} is not in the instance it runs on")
        return cls(context.instance, record.dagster_run, record.create_timestamp)

    @property
    def lane(self) -> str | None:
        return self.run.tags.get(FOLLOWING_LANE_TAG)

    def _unfinished(self, **filters) -> list[dg.DagsterRun]:
        runs = self.instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED, **filters), limit=100)
        return [run for run in runs if run.run_id != self.run.run_id]

    def others_wait_for_warehouse(self) -> bool:
        """Whether a run outside this lane, queued or started, may wait for the warehouse."""
        return any(
            may_wait_for_warehouse(run) and run.tags.get(FOLLOWING_LANE_TAG) != self.lane
            for run in self._unfinished()
        )

    def successor_coming(self) -> bool:
        """Whether a later run of this lane has left the queue (launching or started). One still queued
        may be held by the warehouse pool, which runs waiting for this follower's chdb fill (rollups);
        following on for it would keep all three waiting until `follow_longest_seconds`."""
        if self.lane is None:
            return False
        return any(
            run.status in LAUNCHED
            for run in self._unfinished(tags={FOLLOWING_LANE_TAG: self.lane}, created_after=self.created)
        )

    def relieved(self) -> bool:
        """Whether a successor has said it is up and takes over from this run."""
        return bool(
            self.instance.get_runs(filters=dg.RunsFilter(tags={TAKES_OVER_TAG: self.run.run_id}), limit=1)
        )

    def announce_taking_over(self, predecessor: str) -> None:
        self.instance.add_run_tags(self.run.run_id, {TAKES_OVER_TAG: predecessor})

    def to_let_go_first(self, predecessor: str, warehouse_admits_one_process: bool) -> list[str]:
        """The runs this successor waits for: its predecessor until it has ended and, when the warehouse
        admits one process at a time, the started runs outside any lane (rollups, CLI runs, waiting for
        chdb in their step) that were created before this run, so they get it within one window. A run
        still queued or launching is not waited for: its start would leave the topic unfollowed; it is
        started, and let go first, at the next handoff."""
        waiting = []
        before = self.instance.get_run_by_id(predecessor)
        if before is not None and before.status in UNFINISHED:
            waiting.append(predecessor)
        if warehouse_admits_one_process:
            started = self.instance.get_runs(
                filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], created_before=self.created),
                limit=100,
            )
            waiting += [
                run.run_id
                for run in started
                if may_wait_for_warehouse(run) and FOLLOWING_LANE_TAG not in run.tags
            ]
        return waiting
