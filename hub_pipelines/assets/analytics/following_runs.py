"""What a following events landing run reads from the Dagster instance for its lane's handoff: the runs
that landing/handoff.py decides from (whether another run may wait for the slots this run holds,
whether its successor is on its way or up, whether the predecessor a successor waits for has ended). Each
question is one indexed query on the run tables."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.landing import handoff
from hub_pipelines.landing.handoff import TAKES_OVER_TAG, InstanceRun
from hub_pipelines.landing.lanes import FOLLOWING_LANE_TAG


def instance_run(run: dg.DagsterRun) -> InstanceRun:
    """The run as landing/handoff.py decides from it: its id, its status's name, its tags."""
    return InstanceRun(run.run_id, run.status.value, run.tags)


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

    def _others(self, statuses: Iterable[str], **filters) -> list[InstanceRun]:
        runs = self.instance.get_runs(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus(s) for s in statuses], **filters), limit=100
        )
        return [instance_run(run) for run in runs if run.run_id != self.run.run_id]

    def others_wait_for_warehouse(self) -> bool:
        return handoff.others_wait_for_warehouse(self.lane, self._others(handoff.UNFINISHED))

    def follows_busy_topic_on(self, lends_warehouse: bool, loans: int) -> bool:
        return handoff.follows_busy_topic_on(
            lends_warehouse, loans, settings.EVENTS_LOANS_PER_FOLLOWER, self.others_wait_for_warehouse
        )

    def successor_coming(self) -> bool:
        return handoff.successor_coming(
            self.lane,
            lambda lane: self._others(
                handoff.UNFINISHED, tags={FOLLOWING_LANE_TAG: lane}, created_after=self.created
            ),
        )

    def relieved(self) -> bool:
        """Whether a successor has said it is up and takes over from this run."""
        return bool(
            self.instance.get_runs(filters=dg.RunsFilter(tags={TAKES_OVER_TAG: self.run.run_id}), limit=1)
        )

    def announce_taking_over(self, predecessor: str) -> None:
        self.instance.add_run_tags(self.run.run_id, {TAKES_OVER_TAG: predecessor})

    def to_let_go_first(self, predecessor: str) -> list[str]:
        before = self.instance.get_run_by_id(predecessor)
        return handoff.runs_to_let_go_first(instance_run(before) if before is not None else None)
