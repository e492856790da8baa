"""A following events run lends chdb's folder to a landing run opened beside it (as a CLI `dagster asset
materialize` is) at its next poll, and lands on in the same run once it has the folder back; killed
while it waits for its turn back, it leaves nothing the next run cannot land once. Each run is the
analytics job in its own process on one Dagster instance on disk (`follower_worker.py`)."""

from __future__ import annotations

import pytest

from tests.platform import test_handoff_killed
from tests.platform.test_handoff_killed import (
    PROCESS_TIMEOUT_S,
    RAW_EVENTS,
    Deployment,
    _assert_every_event_landed_once,
)
from tests.services import wait_until

# The handoff tests' deployment: runs in processes on one Dagster instance, topic log, chdb and Redis.
deployment = test_handoff_killed.deployment

pytestmark = pytest.mark.timeout(int(4 * PROCESS_TIMEOUT_S))
# The follower's first poll comes this long after its first batch: time for the borrower's process to
# start and stand in the warehouse's line before the follower could land the events the borrower lands.
POLL_S = 90.0


def _holder_batches(deployment: Deployment) -> list[dict[str, object]]:
    """The holder's materializations of raw_events, oldest first, as metadata values."""
    records = deployment.instance.fetch_materializations(RAW_EVENTS, limit=100, ascending=True).records
    return [
        {name: value.value for name, value in record.asset_materialization.metadata.items()}
        for record in records
        if record.run_id == deployment.run_id("holder") and record.asset_materialization is not None
    ]


def test_landing_run_beside_a_follower_borrows_chdb_and_the_follower_lands_on_counting_its_work_once(
    deployment: Deployment,
):
    deployment.produce(60)
    holder = deployment.start("holder", "--follow-seconds", str(POLL_S), poll=POLL_S)
    wait_until(
        lambda: deployment.landed("holder") >= 60, "the holder's first batch", PROCESS_TIMEOUT_S, holder
    )
    deployment.produce(40)

    code, _, err = deployment.finish(deployment.start("borrower"))
    assert code == 0, err
    assert deployment.landed("borrower") == 40
    code, _, err = deployment.finish(holder)
    assert code == 0, err

    # One process throughout: the holder's batch after the loan names the borrower, and having re-read
    # the book it counts the borrower's events as duplicates.
    lent = [batch for batch in _holder_batches(deployment) if batch["warehouse_lent_to"] != "none"]
    assert len(lent) == 1 and deployment.run_id("borrower") in str(lent[0]["warehouse_lent_to"])
    assert (lent[0]["landed"], lent[0]["duplicates"]) == (0, 40)
    report = deployment.land_rest_and_report(deployment.next_sensor_run("holder"))
    _assert_every_event_landed_once(deployment, report)


def test_follower_killed_while_waiting_for_its_turn_back_leaves_every_event_landed_once(
    deployment: Deployment,
):
    line = deployment.root / "warehouse.waiting"
    deployment.produce(60)
    holder = deployment.start("holder", "--follow-seconds", str(POLL_S), poll=POLL_S)
    wait_until(
        lambda: deployment.landed("holder") >= 60, "the holder's first batch", PROCESS_TIMEOUT_S, holder
    )
    deployment.produce(40)
    borrower = deployment.start("borrower")
    holder_in_line = f"run {deployment.run_id('holder')}"
    wait_until(
        lambda: any(holder_in_line in path.read_text() for path in line.iterdir()),
        "the holder back in the line",
        PROCESS_TIMEOUT_S,
        holder,
    )

    holder.kill()
    assert deployment.finish(holder)[0] == -9
    code, _, err = deployment.finish(borrower)
    assert code == 0, err
    deployment.produce(40)

    report = deployment.land_rest_and_report(deployment.next_sensor_run("holder"))
    _assert_every_event_landed_once(deployment, report)
