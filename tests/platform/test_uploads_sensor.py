"""The uploads sensor against the local object store (cursors, ties, restarts, re-uploads, bounded
ticks) and against SeaweedFS holding keys the stores refuse."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime

import dagster as dg
import pytest
import sqlalchemy as sa

from hub_pipelines import settings
from hub_pipelines.assets.media.partitions import uploads_partitions
from hub_pipelines.core.platform_tables import media_uploads
from hub_pipelines.landing.uploads import object_key_for
from hub_pipelines.media.printable import printable
from hub_pipelines.resources.object_storage import S3ObjectStorage
from hub_pipelines.resources.sql_database import PostgresDatabase
from hub_pipelines.sensors.media import media_uploads_sensor
from tests.platform.conftest import LocalEnvironment
from tests.services.postgres import PostgresServer
from tests.services.seaweedfs import S3Server

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


# Keys SeaweedFS stores but the key rule refuses, each with the words of its reason (SeaweedFS itself
# refuses NUL, "." and ".." segments and over-long keys, and turns a backslash into "/").
HOSTILE_KEYS = {
    "line\nbreak.jpg": "control character U+000A",
    "carriage\rreturn.jpg": "control character U+000D",
    "ansi\x1b[31mred.jpg": "control character U+001B",
    "delete\x7f.jpg": "control character U+007F",
    "c1\x85next-line.jpg": "control character U+0085",
    "folder-marker/": "empty, '.' or '..' segment",
    # Valid, but 1210 bytes once percent-encoded: the staged renditions' keys would pass 1024 bytes.
    "/".join([" " * 100] * 4) + "/x.jpg": "too long to process",
}


@pytest.fixture
def hostile_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    bucket = f"hostile-{secrets.token_hex(3)}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    # Written with a bare client, as any uploader with bucket access could: our stores would refuse these keys.
    for name in [*HOSTILE_KEYS, "good-before.jpg", "zz-good-after.jpg"]:
        client.put_object(
            Bucket=bucket, Key=settings.UPLOADS_PREFIX + name, Body=b"bytes", ServerSideEncryption="AES256"
        )
    monkeypatch.setattr(settings, "UPLOADS_BUCKET", bucket)
    return bucket


def _upload_rows(database: PostgresDatabase) -> dict[str, dict]:
    with database.transaction() as connection:
        return {
            row["partition_key"]: dict(row) for row in connection.execute(sa.select(media_uploads)).mappings()
        }


def test_keys_the_stores_refuse_are_recorded_rejected_and_never_run(
    s3_server: S3Server, postgres_database: PostgresServer, hostile_bucket: str
) -> None:
    storage = S3ObjectStorage(
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name=s3_server.region,
    )
    database = PostgresDatabase(url=postgres_database.url, migrate_schema=True)
    resources = {"objects": storage, "database": database}
    with dg.instance_for_test() as instance:

        def tick(cursor: str | None) -> dg.SensorResult | dg.SkipReason:
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                result = media_uploads_sensor(context)
            assert isinstance(result, dg.SensorResult | dg.SkipReason)
            return result

        first = tick(None)
        assert isinstance(first, dg.SensorResult)
        requested = [
            object_key_for(r.partition_key or "", settings.UPLOADS_PREFIX) for r in first.run_requests or []
        ]
        good = [settings.UPLOADS_PREFIX + "good-before.jpg", settings.UPLOADS_PREFIX + "zz-good-after.jpg"]
        assert sorted(requested) == good
        uploads = storage.bucket(hostile_bucket)
        assert all(uploads.head(key) is not None for key in requested)
        (registered,) = first.dynamic_partitions_requests or []
        assert sorted(registered.partition_keys or []) == sorted(
            r.partition_key for r in first.run_requests or []
        )

        rows = _upload_rows(database)
        assert len(rows) == len(HOSTILE_KEYS)
        by_key = {row["object_key"]: row for row in rows.values()}
        for name, reason in HOSTILE_KEYS.items():
            row = by_key[printable(settings.UPLOADS_PREFIX + name)]
            assert row["status"] == "rejected"
            assert reason in row["status_reason"]
            assert repr(settings.UPLOADS_PREFIX + name) in row["status_reason"]
            assert row["object_key"].isprintable() and row["status_reason"].isprintable()
            assert (
                object_key_for(row["partition_key"], settings.UPLOADS_PREFIX)
                == settings.UPLOADS_PREFIX + name
            )

        instance.add_dynamic_partitions(registered.partitions_def_name, list(registered.partition_keys or []))
        again = tick(first.cursor)
        assert isinstance(again, dg.SkipReason), again
        assert _upload_rows(database) == rows
    database.dispose()
