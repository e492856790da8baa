"""A following landing run on a ClickHouse server follows past its window only while no other run may
need the slots it holds, stops once its successor is up, and the successor waits for its predecessor."""

from __future__ import annotations

import uuid

import dagster as dg

from hub_pipelines.assets.analytics.following_runs import FollowingRun
from hub_pipelines.definitions import defs
from hub_pipelines.landing.handoff import may_wait_for_warehouse
from hub_pipelines.landing.lanes import FOLLOWING_LANE_TAG


def _tags_of(job_name: str) -> dict[str, str]:
    """A run's tags as its job's sensor or the launchpad would create it: the job's."""
    return dict(defs.resolve_job_def(job_name).tags)


def test_queued_rollup_and_analytics_runs_make_the_follower_stop_at_its_window():
    assert may_wait_for_warehouse(_tags_of("analytics_daily_rollups"))
    assert may_wait_for_warehouse(_tags_of("analytics_pipeline"))


def test_queued_media_and_orders_runs_let_the_follower_follow_on():
    assert not may_wait_for_warehouse(_tags_of("media_pipeline"))
    assert not may_wait_for_warehouse(_tags_of("orders_pipeline"))


def _add(
    instance: dg.DagsterInstance, job_name: str, status: dg.DagsterRunStatus, **tags: str
) -> dg.DagsterRun:
    """A run recorded as the queue or a sensor records it, with its job's tags and these."""
    run = dg.DagsterRun(
        job_name=job_name,
        run_id=str(uuid.uuid4()),
        status=status,
        tags={**defs.resolve_job_def(job_name).tags, **tags},
    )
    return instance.add_run(run)


def _following(instance: dg.DagsterInstance, run: dg.DagsterRun) -> FollowingRun:
    record = instance.get_run_record_by_id(run.run_id)
    assert record is not None
    return FollowingRun(instance, record.dagster_run, record.create_timestamp)


LANE = {FOLLOWING_LANE_TAG: "events/0"}
STARTED = dg.DagsterRunStatus.STARTED
# Created and not launched yet: what the follower reads for a queued run too (a QUEUED record needs a
# code location's origin to be written).
WAITING = dg.DagsterRunStatus.NOT_STARTED


def test_follower_is_relieved_once_a_successor_names_it_and_not_before():
    with dg.instance_for_test() as instance:
        follower = _following(instance, _add(instance, "analytics_pipeline", STARTED, **LANE))
        successor = _following(instance, _add(instance, "analytics_pipeline", STARTED, **LANE))
        assert follower.successor_coming() and not follower.relieved()
        successor.announce_taking_over(follower.run.run_id)
        assert follower.relieved() and not successor.relieved()


def test_successor_waits_for_its_unfinished_predecessor_not_for_rollups_started_before_it():
    with dg.instance_for_test() as instance:
        predecessor = _add(instance, "analytics_pipeline", STARTED, **LANE)
        # A rollup waiting for chdb borrows it from the predecessor at its next poll.
        _add(instance, "analytics_daily_rollups", STARTED)
        successor = _following(instance, _add(instance, "analytics_pipeline", STARTED, **LANE))
        assert successor.to_let_go_first(predecessor.run_id) == [predecessor.run_id]
        instance.report_run_failed(predecessor)
        assert successor.to_let_go_first(predecessor.run_id) == []


def test_follower_yields_to_a_rollup_waiting_for_the_warehouse_not_to_its_own_successor():
    with dg.instance_for_test() as instance:
        follower = _following(instance, _add(instance, "analytics_pipeline", STARTED, **LANE))
        _add(instance, "analytics_pipeline", WAITING, **LANE)
        _add(instance, "orders_pipeline", WAITING)
        assert not follower.others_wait_for_warehouse()
        _add(instance, "analytics_daily_rollups", STARTED)
        assert follower.others_wait_for_warehouse()


def test_a_successor_still_in_the_queue_is_not_followed_on_for_so_waiting_rollups_get_the_warehouse():
    """A queued successor may be held by the warehouse pool that rollups waiting for this follower fill:
    following on for it would leave all of them waiting (a chaos cut sat there until the longest time)."""
    with dg.instance_for_test() as instance:
        follower = _following(instance, _add(instance, "analytics_pipeline", STARTED, **LANE))
        successor = _add(instance, "analytics_pipeline", WAITING, **LANE)
        assert not follower.successor_coming()
        instance.handle_run_event(
            successor.run_id,
            dg.DagsterEvent(dg.DagsterEventType.RUN_STARTING.value, successor.job_name),
        )
        assert follower.successor_coming()
