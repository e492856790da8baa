"""The plain bookkeeping behind the sensors: offset ranges, topic cursors, upload cursors."""

from datetime import UTC, datetime, timedelta

from hub_pipelines.core.ports import ObjectInfo
from hub_pipelines.landing.batches import RequestLanding, RunOutcome, TopicCursor, Wait, next_landing_step
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
    step = next_landing_step("orders", cursor, {0: 50}, RunOutcome.IN_FLIGHT, 100)
    assert isinstance(step, Wait)
    assert "still in flight" in step.reason
    assert step.cursor == cursor


def test_topic_cursor_advances_only_after_success():
    cursor = TopicCursor({0: 0}, "orders:0:0-10#0", (OffsetRange(0, 0, 10),), 0)
    step = next_landing_step("orders", cursor, {0: 50}, RunOutcome.SUCCEEDED, 100)
    assert isinstance(step, RequestLanding)
    assert step.ranges == (OffsetRange(0, 10, 50),)
    assert step.cursor.landed == {0: 10}


def test_failed_range_is_requested_again_under_a_new_run_key():
    cursor = TopicCursor({0: 0}, "orders:0:0-10#0", (OffsetRange(0, 0, 10),), 0)
    step = next_landing_step("orders", cursor, {0: 50}, RunOutcome.FAILED, 100)
    assert isinstance(step, RequestLanding)
    assert step.ranges == (OffsetRange(0, 0, 10),)
    assert step.run_key != cursor.pending_run_key
    assert step.cursor.landed == {0: 0}


def test_topic_cursor_survives_a_restart_through_its_json():
    cursor = TopicCursor({0: 10, 2: 7}, "events:0:10-20#1", (OffsetRange(0, 10, 20),), 1)
    assert TopicCursor.from_json(cursor.to_json()) == cursor


def test_idle_topic_says_why():
    step = next_landing_step("orders", TopicCursor({0: 5}), {0: 5}, None, 100)
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
        batch = plan_upload_batch(listed, cursor, 100, 10, already_registered=lambda info: True)
        seen += [info.key for info in batch.new_objects]
        cursor = UploadCursor.from_json(batch.cursor.to_json())
    assert seen == [info.key for info in listed]


def test_late_listed_object_in_an_earlier_second_is_still_taken_once():
    start = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    first = [_info("incoming/b.jpg", start + timedelta(seconds=1))]
    batch = plan_upload_batch(first, UploadCursor(), 100, 10, already_registered=lambda info: False)
    registered = {"incoming/b.jpg"}
    late = _info("incoming/a.jpg", start)
    batch = plan_upload_batch(
        [*first, late], batch.cursor, 100, 10, already_registered=lambda info: info.key in registered
    )
    assert [info.key for info in batch.late_objects] == ["incoming/a.jpg"]
    assert batch.new_objects == []
