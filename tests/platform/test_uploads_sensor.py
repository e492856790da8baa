"""The uploads sensor against the local object store: cursors, ties, restarts, re-uploads, bounded ticks."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.assets.media.partitions import uploads_partitions
from hub_pipelines.landing.uploads import object_key_for
from tests.platform.conftest import LocalEnvironment

SENSOR = "media_uploads_sensor"


def _put(env: LocalEnvironment, name: str, data: bytes, at: datetime | None = None) -> str:
    key = settings.UPLOADS_PREFIX + name
    env.resources["objects"].bucket(settings.UPLOADS_BUCKET).put(key, data)
    if at is not None:
        path = env.data_dir / "objects" / settings.UPLOADS_BUCKET / key
        os.utime(path, (at.timestamp(), at.timestamp()))
    return key


def _requested_keys(result: dg.SensorResult | dg.SkipReason) -> list[str]:
    assert isinstance(result, dg.SensorResult), result
    return [object_key_for(r.partition_key or "", settings.UPLOADS_PREFIX) for r in result.run_requests or []]


def test_new_upload_gets_a_partition_and_one_run(local_environment: LocalEnvironment):
    key = _put(local_environment, "cat.jpg", b"meow")
    result, cursor = local_environment.tick(SENSOR, None)
    assert _requested_keys(result) == [key]
    assert local_environment.instance.get_dynamic_partitions(uploads_partitions.name) == ["cat.jpg"]
    again, _ = local_environment.tick(SENSOR, cursor)
    assert isinstance(again, dg.SkipReason)
    assert "no new uploads" in (again.skip_message or "")


def test_uploads_sharing_one_second_are_all_taken_across_bounded_ticks(
    local_environment: LocalEnvironment, monkeypatch
):
    monkeypatch.setattr(settings, "UPLOADS_PER_TICK", 7)
    second = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    keys = [_put(local_environment, f"batch/{i:03d}.jpg", b"x", at=second) for i in range(20)]
    cursor, taken = None, []
    for _ in range(4):
        result, cursor = local_environment.tick(SENSOR, cursor)
        if isinstance(result, dg.SensorResult):
            assert len(result.run_requests or []) <= 7
            taken += _requested_keys(result)
    assert sorted(taken) == keys
    assert len(taken) == len(set(taken))


def test_cursor_survives_a_restart(local_environment: LocalEnvironment):
    first = _put(local_environment, "a.jpg", b"1", at=datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC))
    _, cursor = local_environment.tick(SENSOR, None)
    second = _put(local_environment, "b.jpg", b"2", at=datetime(2026, 11, 25, 12, 0, 5, tzinfo=UTC))
    # A restarted daemon has only the stored cursor text: a fresh context built from it.
    result, _ = local_environment.tick(SENSOR, str(cursor))
    assert _requested_keys(result) == [second]
    assert first != second


def test_reupload_with_new_content_runs_again_under_a_new_run_key(local_environment: LocalEnvironment):
    _put(local_environment, "doc.pdf", b"v1", at=datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC))
    first, cursor = local_environment.tick(SENSOR, None)
    _put(local_environment, "doc.pdf", b"v2 with more bytes", at=datetime(2026, 11, 25, 12, 1, 0, tzinfo=UTC))
    second, _ = local_environment.tick(SENSOR, cursor)
    assert isinstance(first, dg.SensorResult) and isinstance(second, dg.SensorResult)
    [first_request], [second_request] = first.run_requests or [], second.run_requests or []
    assert first_request.partition_key == second_request.partition_key
    assert first_request.run_key != second_request.run_key


def test_late_listed_upload_behind_the_cursor_is_still_taken(local_environment: LocalEnvironment):
    _put(local_environment, "z-newer.jpg", b"1", at=datetime(2026, 11, 25, 12, 0, 5, tzinfo=UTC))
    _, cursor = local_environment.tick(SENSOR, None)
    late = _put(local_environment, "a-older.jpg", b"2", at=datetime(2026, 11, 25, 12, 0, 4, tzinfo=UTC))
    result, _ = local_environment.tick(SENSOR, cursor)
    assert _requested_keys(result) == [late]


def test_tick_with_10000_pending_uploads_requests_a_bounded_batch(local_environment: LocalEnvironment):
    store_root = local_environment.data_dir / "objects" / settings.UPLOADS_BUCKET / settings.UPLOADS_PREFIX
    store = local_environment.resources["objects"].bucket(settings.UPLOADS_BUCKET)
    store.put(settings.UPLOADS_PREFIX + "bulk/00000.jpg", b"x")
    # Files dropped straight into the folder, as a bulk copy would: the store lists them all.
    for i in range(1, 10_000):
        (store_root / "bulk" / f"{i:05d}.jpg").write_bytes(b"x")
    result, cursor = local_environment.tick(SENSOR, None)
    assert isinstance(result, dg.SensorResult)
    assert len(result.run_requests or []) == settings.UPLOADS_PER_TICK
    second, _ = local_environment.tick(SENSOR, cursor)
    assert isinstance(second, dg.SensorResult)
    firsts = {r.partition_key for r in result.run_requests or []}
    assert firsts.isdisjoint({r.partition_key for r in second.run_requests or []})
