"""The plain bookkeeping behind the sensors: offset ranges, topic cursors, upload cursors."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from hub_pipelines.core.ports import ObjectInfo
from hub_pipelines.landing.batches import (
    RETRY_BACKOFF_CAP_SECONDS,
    RETRY_BACKOFF_SECONDS,
    STUCK_AFTER_FAILURES,
    Landing,
    PendingRun,
    RequestLanding,
    RunOutcome,
    TopicCursor,
    Wait,
    next_landing_step,
    resync,
    retry_backoff_seconds,
)
from hub_pipelines.landing.lanes import LaneCursors, relane, resync_lanes
from hub_pipelines.landing.offsets import (
    OffsetRange,
    describe_ranges,
    find_gaps,
    parse_ranges,
    plan_next_ranges,
)
from hub_pipelines.landing.topic_landing import split_into_chunks
from hub_pipelines.landing.uploads import (
    UploadCursor,
    object_key_for,
    partition_key_for,
    plan_upload_batch,
    run_key_for,
)

NOW = 1_790_000_000.0


def test_plan_caps_the_batch_and_shares_it_between_partitions():
    ranges = plan_next_ranges({0: 10, 1: 0}, {0: 1_000_000, 1: 1_000_000, 2: 5}, max_messages=1000)
    assert sum(r.size for r in ranges) == 1000
    assert {r.partition: r.start for r in ranges} == {0: 10, 1: 0, 2: 0}
    assert next(r for r in ranges if r.partition == 2).size == 5


def test_plan_is_empty_when_every_partition_is_landed():
    assert plan_next_ranges({0: 7, 1: 3}, {0: 7, 1: 3}, max_messages=100) == []


def test_ranges_text_round_trips():
    ranges = [OffsetRange(1, 0, 480), OffsetRange(0, 500, 1000)]
    assert parse_ranges(describe_ranges(ranges)) == sorted(ranges)


def test_gaps_are_found_and_overlaps_are_not_gaps():
    ranges = [
        OffsetRange(0, 0, 100),
        OffsetRange(0, 50, 150),
        OffsetRange(0, 200, 300),
        OffsetRange(1, 0, 10),
    ]
    gaps = find_gaps(ranges)
    assert [(g.partition, g.first_missing, g.next_landed) for g in gaps] == [(0, 150, 200)]
    assert "150..199" in gaps[0].describe()


def test_chunks_align_so_a_rerun_meets_the_same_chunks():
    first = list(split_into_chunks(OffsetRange(0, 0, 12_500), 5000))
    rerun_tail = list(split_into_chunks(OffsetRange(0, 5000, 12_500), 5000))
    assert [c.label() for c in first] == ["0:0-5000", "0:5000-10000", "0:10000-12500"]
    assert rerun_tail == first[1:]


def test_topic_cursor_waits_for_the_run_in_flight():
    cursor = TopicCursor({0: 0}, "orders:0:0-10#0", (OffsetRange(0, 0, 10),), 0)
    step = next_landing_step("orders", cursor, {0: 50}, PendingRun(RunOutcome.IN_FLIGHT), 100, NOW)
    assert isinstance(step, Wait)
    assert "still in flight" in step.reason
    assert step.cursor == cursor


def test_follower_near_its_window_end_gets_a_successor_with_no_ranges_of_its_own():
    cursor = TopicCursor({0: 40}, "events:0:0-10#0", (OffsetRange(0, 0, 10),), 0)
    running = PendingRun(RunOutcome.IN_FLIGHT, run_id="run-1", started_at=NOW - 95)
    step = next_landing_step("events", cursor, {0: 50}, running, 100, NOW, hand_over_after=90)
    assert isinstance(step, RequestLanding)
    assert step.ranges == () and step.takes_over_from == "run-1"
    assert step.cursor.pending_run_key == step.run_key == "events:after run-1#0"
    assert step.cursor.landed == {0: 40}


def test_follower_of_a_quiet_topic_gets_no_successor_so_a_drained_system_holds_no_run():
    cursor = TopicCursor({0: 50}, "events:0:0-10#0", (OffsetRange(0, 0, 10),), 0)
    running = PendingRun(RunOutcome.IN_FLIGHT, run_id="run-1", started_at=NOW - 95)
    step = next_landing_step("events", cursor, {0: 50}, running, 100, NOW, hand_over_after=90)
    assert isinstance(step, Wait), step
    assert step.cursor == cursor


def test_batch_whose_report_was_lost_is_folded_in_from_the_book_so_a_drained_topic_gets_no_successor():
    # A follower was SIGKILLed after booking 40-45 and before reporting it; its successor, planning
    # from the book, landed and reported 45-50 with the book's position.
    cursor = TopicCursor({0: 40}, "events:after run-1#0", (), 0)
    successor_report = Landing(
        (OffsetRange(0, 45, 50), OffsetRange(1, 0, 0)), False, book_positions={0: 50, 1: 7}
    )
    without_book = resync(cursor, [Landing(successor_report.ranges, False)], 1)
    assert without_book.landed == {0: 40} and without_book.landed_ahead == (OffsetRange(0, 45, 50),)

    cursor = resync(cursor, [successor_report], 1)
    assert cursor.landed == {0: 50, 1: 7} and cursor.landed_ahead == ()
    running = PendingRun(RunOutcome.IN_FLIGHT, run_id="run-2", started_at=NOW - 95)
    step = next_landing_step("events", cursor, {0: 50, 1: 7}, running, 100, NOW, hand_over_after=90)
    assert isinstance(step, Wait), step


def test_book_positions_fold_into_the_lane_that_holds_each_partition():
    cursors = resync_lanes(
        relane(LaneCursors(), 2), [Landing((), False, book_positions={0: 30, 1: 20, 2: 10})], 4
    )
    assert [lane.landed for lane in cursors.lanes] == [{0: 30, 2: 10}, {1: 20}]


def test_follower_before_its_handoff_time_or_not_started_is_waited_for():
    cursor = TopicCursor({0: 40}, "events:0:0-10#0", (OffsetRange(0, 0, 10),), 0)
    for running in (
        PendingRun(RunOutcome.IN_FLIGHT, run_id="run-1", started_at=NOW - 30),
        PendingRun(RunOutcome.IN_FLIGHT, run_id="run-1"),
    ):
        step = next_landing_step("events", cursor, {0: 50}, running, 100, NOW, hand_over_after=90)
        assert isinstance(step, Wait), running


def test_failed_successor_is_followed_at_once_by_a_run_of_what_the_cursor_has_not_landed():
    cursor = TopicCursor({0: 40}, "events:after run-1#0", (), 0)
    step = next_landing_step("events", cursor, {0: 50}, PendingRun(RunOutcome.FAILED, "SIGKILL"), 100, NOW)
    assert isinstance(step, RequestLanding)
    assert step.ranges == (OffsetRange(0, 40, 50),) and step.takes_over_from is None


def test_topic_cursor_advances_only_after_success():
    cursor = TopicCursor({0: 0}, "orders:0:0-10#0", (OffsetRange(0, 0, 10),), 0)
    step = next_landing_step("orders", cursor, {0: 50}, PendingRun(RunOutcome.SUCCEEDED), 100, NOW)
    assert isinstance(step, RequestLanding)
    assert step.ranges == (OffsetRange(0, 10, 50),)
    assert step.cursor.landed == {0: 10}


def _fail(cursor: TopicCursor, now: float, error: str = "step orders__order_events: ValueError: bad") -> Wait:
    step = next_landing_step("orders", cursor, {0: 50}, PendingRun(RunOutcome.FAILED, error), 100, now)
    assert isinstance(step, Wait), step
    return step


def test_failed_range_is_requested_again_after_a_backoff_under_a_new_run_key():
    cursor = TopicCursor({0: 0}, "orders:0:0-10#0", (OffsetRange(0, 0, 10),), 0)
    waiting = _fail(cursor, NOW)
    assert "failed (step orders__order_events: ValueError: bad)" in waiting.reason
    assert waiting.cursor.retry_at == NOW + retry_backoff_seconds(1)
    still = _fail(waiting.cursor, NOW + retry_backoff_seconds(1) - 1)
    assert still.cursor == waiting.cursor
    step = next_landing_step(
        "orders", waiting.cursor, {0: 50}, PendingRun(RunOutcome.FAILED), 100, NOW + retry_backoff_seconds(1)
    )
    assert isinstance(step, RequestLanding)
    assert step.ranges == (OffsetRange(0, 0, 10),)
    assert step.run_key != cursor.pending_run_key
    assert step.cursor.landed == {0: 0}
    assert step.cursor.attempt == 1


def test_retry_backoff_doubles_up_to_its_cap():
    delays = [retry_backoff_seconds(failures) for failures in range(1, 12)]
    assert delays[:3] == [RETRY_BACKOFF_SECONDS, 2 * RETRY_BACKOFF_SECONDS, 4 * RETRY_BACKOFF_SECONDS]
    assert delays == sorted(delays)
    assert max(delays) == RETRY_BACKOFF_CAP_SECONDS


def test_range_failing_three_times_is_stuck_once_with_the_topic_range_and_last_error():
    cursor = TopicCursor({0: 0}, "orders:0:0-10#0", (OffsetRange(0, 0, 10),), 0)
    now, stuck = NOW, []
    for failure in range(1, 6):
        waiting = _fail(cursor, now, error=f"step orders__order_events: DataError: NUL byte #{failure}")
        stuck.append(waiting.newly_stuck)
        if failure >= STUCK_AFTER_FAILURES:
            assert "orders 0:0-10 is stuck: failed" in waiting.reason
            assert f"DataError: NUL byte #{failure}" in waiting.reason
        now = waiting.cursor.retry_at or now
        retry = next_landing_step("orders", waiting.cursor, {0: 50}, PendingRun(RunOutcome.FAILED), 100, now)
        assert isinstance(retry, RequestLanding)
        cursor = retry.cursor
    [page] = [s for s in stuck if s is not None]
    assert stuck.index(page) == STUCK_AFTER_FAILURES - 1
    assert (page.topic, describe_ranges(page.ranges)) == ("orders", "0:0-10")
    assert page.last_error == "step orders__order_events: DataError: NUL byte #3"
    assert page.dedup_key == "stuck-range/orders/0:0-10"
    in_flight = next_landing_step("orders", cursor, {0: 50}, PendingRun(RunOutcome.IN_FLIGHT), 100, now)
    assert isinstance(in_flight, Wait) and "is stuck" in in_flight.reason


def test_range_landed_by_another_writer_moves_the_cursor_past_it():
    cursor = resync(TopicCursor({0: 10, 1: 5}), [Landing((OffsetRange(0, 0, 30),), by_other_writer=True)], 7)
    assert cursor.landed == {0: 30, 1: 5}
    assert cursor.last_landing_seen == 7
    step = next_landing_step("orders", cursor, {0: 40, 1: 5}, None, 100, NOW)
    assert isinstance(step, RequestLanding)
    assert step.ranges == (OffsetRange(0, 30, 40),)


def test_failed_ranges_landed_meanwhile_by_another_writer_are_not_requested_again():
    cursor = TopicCursor(
        {0: 0, 1: 0}, "orders:0:0-10,1:0-10#0", (OffsetRange(0, 0, 10), OffsetRange(1, 0, 10))
    )
    cursor = resync(cursor, [Landing((OffsetRange(0, 0, 10), OffsetRange(1, 0, 4)), by_other_writer=True)], 3)
    waiting = next_landing_step(
        "orders", cursor, {0: 10, 1: 10}, PendingRun(RunOutcome.FAILED, "x"), 100, NOW
    )
    assert isinstance(waiting, Wait)
    retry = next_landing_step(
        "orders", waiting.cursor, {0: 10, 1: 10}, PendingRun(RunOutcome.FAILED), 100, 1e12
    )
    assert isinstance(retry, RequestLanding)
    assert retry.ranges == (OffsetRange(1, 4, 10),)

    cursor = resync(retry.cursor, [Landing((OffsetRange(1, 0, 10),), by_other_writer=True)], 4)
    step = next_landing_step("orders", cursor, {0: 10, 1: 10}, PendingRun(RunOutcome.FAILED, "y"), 100, NOW)
    assert isinstance(step, RequestLanding), step
    assert step.cursor.landed == {0: 10, 1: 10}
    assert step.ranges == (OffsetRange(0, 10, 10), OffsetRange(1, 10, 10))
    assert "carrying them through the steps after the landing" in step.note


def test_failed_downstream_catch_up_run_is_retried_after_the_backoff_under_a_new_run_key():
    carrying = (OffsetRange(0, 10, 10), OffsetRange(1, 10, 10))
    cursor = TopicCursor({0: 10, 1: 10}, "orders:0:10-10,1:10-10#0", carrying)
    waiting = next_landing_step(
        "orders", cursor, {0: 10, 1: 10}, PendingRun(RunOutcome.FAILED, "e"), 100, NOW
    )
    assert isinstance(waiting, Wait) and "retrying 0:10-10,1:10-10 at" in waiting.reason
    retry = next_landing_step(
        "orders", waiting.cursor, {0: 10, 1: 10}, PendingRun(RunOutcome.FAILED), 100, 1e12
    )
    assert isinstance(retry, RequestLanding)
    assert retry.ranges == carrying and retry.run_key != cursor.pending_run_key


def test_range_landed_ahead_of_a_gap_is_not_planned_again():
    cursor = resync(TopicCursor({0: 10}), [Landing((OffsetRange(0, 20, 30),), by_other_writer=True)], 1)
    assert cursor.landed == {0: 10} and cursor.landed_ahead == (OffsetRange(0, 20, 30),)
    step = next_landing_step("orders", cursor, {0: 50}, None, 100, NOW)
    assert isinstance(step, RequestLanding) and step.ranges == (OffsetRange(0, 10, 20),)
    done = next_landing_step("orders", step.cursor, {0: 50}, PendingRun(RunOutcome.SUCCEEDED), 100, NOW)
    assert isinstance(done, RequestLanding) and done.ranges == (OffsetRange(0, 30, 50),)
    assert done.cursor.landed_ahead == ()


def test_sensor_own_landings_leave_nothing_for_a_downstream_catch_up():
    cursor = resync(TopicCursor({0: 0}), [Landing((OffsetRange(0, 0, 10),), by_other_writer=False)], 1)
    step = next_landing_step("orders", cursor, {0: 10}, None, 100, NOW)
    assert isinstance(step, Wait) and "no new messages" in step.reason


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 60), st.integers(0, 20)),
        max_size=12,
    ),
    st.integers(1, 4),
)
def test_resync_lands_exactly_the_offsets_some_writer_landed(spans, batches):
    landings = [OffsetRange(p, start, start + size) for p, start, size in spans]
    cursor = TopicCursor()
    for i in range(batches):
        cursor = TopicCursor.from_json(
            resync(cursor, [Landing(tuple(landings[i::batches]), True)], i).to_json()
        )
    covered = {(r.partition, o) for r in landings for o in range(r.start, r.end)}
    for partition in range(3):
        expected = 0
        while (partition, expected) in covered:
            expected += 1
        assert cursor.landed.get(partition, 0) == expected
    from_cursor = {(partition, o) for partition, end in cursor.landed.items() for o in range(end)}
    from_cursor |= {(r.partition, o) for r in cursor.landed_ahead for o in range(r.start, r.end)}
    assert from_cursor == covered


def test_topic_cursor_survives_a_restart_through_its_json():
    cursor = TopicCursor(
        {0: 10, 2: 7},
        "events:0:10-20#1",
        (OffsetRange(0, 10, 20),),
        1,
        landed_ahead=(OffsetRange(2, 9, 12),),
        last_landing_seen=42,
        retry_at=NOW,
        last_error="step x: ValueError: y",
        downstream_behind=True,
    )
    assert TopicCursor.from_json(cursor.to_json()) == cursor


def test_idle_topic_says_why():
    step = next_landing_step("orders", TopicCursor({0: 5}), {0: 5}, None, 100, NOW)
    assert isinstance(step, Wait)
    assert "no new messages on orders" in step.reason


def _info(key: str, at: datetime, etag: str = '"e"') -> ObjectInfo:
    return ObjectInfo(key=key, size=1, etag=etag, last_modified=at)


def test_partition_key_is_safe_stable_and_reversible():
    for key in ["incoming/2026/cat photo.jpg", "incoming/a,b[1]/x...y~z.png", "incoming/ünï.pdf"]:
        partition = partition_key_for(key, "incoming/")
        assert partition == partition_key_for(key, "incoming/")
        assert not set(",[]/ ") & set(partition) and "..." not in partition
        assert object_key_for(partition, "incoming/") == key


def test_reupload_with_new_content_gets_a_new_run_key():
    assert run_key_for("cat.jpg", '"aaa"') != run_key_for("cat.jpg", '"bbb"')


def test_objects_sharing_a_second_are_taken_in_key_order_across_ticks():
    second = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    listed = [_info(f"incoming/{i:05d}.jpg", second) for i in range(250)]
    cursor, seen = UploadCursor(), []
    for _ in range(3):
        batch = plan_upload_batch(
            listed, cursor, 100, 10, already_taken=lambda behind: {info.key for info in behind}
        )
        seen += [info.key for info in batch.new_objects]
        cursor = UploadCursor.from_json(batch.cursor.to_json())
    assert seen == [info.key for info in listed]


def test_late_listed_object_in_an_earlier_second_is_still_taken_once():
    start = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    first = [_info("incoming/b.jpg", start + timedelta(seconds=1))]
    batch = plan_upload_batch(first, UploadCursor(), 100, 10, already_taken=lambda behind: set())
    registered = {"incoming/b.jpg"}
    late = _info("incoming/a.jpg", start)
    batch = plan_upload_batch(
        [*first, late],
        batch.cursor,
        100,
        10,
        already_taken=lambda behind: {info.key for info in behind} & registered,
    )
    assert [info.key for info in batch.late_objects] == ["incoming/a.jpg"]
    assert batch.new_objects == []
