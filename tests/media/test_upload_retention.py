"""Retiring settled uploads' partitions and restoring them, on a real instance, SeaweedFS and SQL.

The retention job runs `as_of` a moment past the retention, so nothing waits for days.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa

from hub_pipelines import settings
from hub_pipelines.assets.media import uploads as uploads_module
from hub_pipelines.assets.media.partitions import originals_layout, uploads_partitions
from hub_pipelines.core.platform_tables import media_uploads
from hub_pipelines.core.ports import ObjectInfo, ObjectStore
from hub_pipelines.housekeeping import InstanceUploadPartitions, media_uploads_retention_job
from hub_pipelines.landing.upload_retention import restore_uploads
from hub_pipelines.landing.uploads import object_key_for
from hub_pipelines.media.records import media_publications
from tests.media.corpus import encode, photo_like
from tests.media.pipeline_env import MediaWorld, failure_messages

PAST_RETENTION = timedelta(days=settings.UPLOADS_RETENTION_DAYS, hours=1)


def _jpeg(seed: int) -> bytes:
    return encode(photo_like(160, 120, seed), "JPEG", quality=85)


def _retire(world: MediaWorld, as_of: datetime, objects: Any = None) -> dg.ExecuteInProcessResult:
    return media_uploads_retention_job.execute_in_process(
        instance=world.instance,
        resources={"database": world.database, "objects": objects or world.storage},
        run_config={"ops": {"retire_settled_upload_partitions": {"config": {"as_of": as_of.isoformat()}}}},
    )


def _row(world: MediaWorld, partition_key: str) -> dict[str, Any]:
    with world.database.transaction() as connection:
        query = sa.select(media_uploads).where(media_uploads.c.partition_key == partition_key)
        return dict(connection.execute(query).mappings().one())


def _held(world: MediaWorld) -> list[str]:
    return list(world.instance.get_dynamic_partitions(uploads_partitions.name))


def _in_uploads_bucket(world: MediaWorld, key: str) -> bool:
    return world.storage.bucket(world.buckets.uploads).head(key) is not None


def test_retired_upload_leaves_dagster_partitions_and_keeps_its_sql_row(media_world: MediaWorld) -> None:
    old = media_world.upload("old.jpg", _jpeg(1), "image/jpeg")
    assert media_world.run(old).success
    recent = media_world.upload("recent.jpg", _jpeg(2), "image/jpeg")
    assert media_world.run(recent).success
    # Retire as of the moment `recent` has been settled one microsecond short of the retention.
    settled_recent = _row(media_world, recent)["settled_at"].replace(tzinfo=UTC)
    as_of = settled_recent + timedelta(days=settings.UPLOADS_RETENTION_DAYS, microseconds=-1)

    result = _retire(media_world, as_of)

    assert result.success
    assert _held(media_world) == [recent]
    row = _row(media_world, old)
    assert (row["status"], row["retired_at"] is not None) == ("published", True)
    assert _row(media_world, recent)["retired_at"] is None


def test_published_upload_original_leaves_the_prefix_the_sensor_lists(media_world: MediaWorld) -> None:
    partition = media_world.upload("listed-once.jpg", _jpeg(6), "image/jpeg")
    uploads = media_world.storage.bucket(media_world.buckets.uploads)
    arrived = object_key_for(partition, settings.UPLOADS_PREFIX)
    assert arrived in [info.key for info in uploads.list_after(settings.UPLOADS_PREFIX)]

    assert media_world.run(partition).success

    assert arrived not in [info.key for info in uploads.list_after(settings.UPLOADS_PREFIX)]
    assert _in_uploads_bucket(media_world, object_key_for(partition, settings.UPLOADS_SETTLED_PREFIX))
    rerun = media_world.run(partition)  # a re-run from the UI reads the settled original
    assert rerun.success, failure_messages(rerun)


def test_reupload_after_settling_is_neither_set_aside_nor_retired(media_world: MediaWorld) -> None:
    partition = media_world.upload("replaced.jpg", _jpeg(7), "image/jpeg")
    assert media_world.run(partition).success
    arrived = object_key_for(partition, settings.UPLOADS_PREFIX)
    media_world.storage.bucket(media_world.buckets.uploads).put(arrived, _jpeg(8), content_type="image/jpeg")

    assert _retire(media_world, datetime.now(UTC) + PAST_RETENTION).success

    assert partition in _held(media_world)
    assert _row(media_world, partition)["retired_at"] is None
    assert _in_uploads_bucket(media_world, arrived)


def test_restored_upload_is_registered_again_and_a_run_of_it_publishes(media_world: MediaWorld) -> None:
    partition = media_world.upload("restore-me.jpg", _jpeg(3), "image/jpeg")
    assert media_world.run(partition).success
    assert _retire(media_world, datetime.now(UTC) + PAST_RETENTION).success
    assert partition not in _held(media_world)

    [restored] = restore_uploads(
        media_world.database,
        media_world.storage.bucket(media_world.buckets.uploads),
        InstanceUploadPartitions(media_world.instance),
        originals_layout(),
        [partition],
        now=datetime.now(UTC),
    )

    assert restored.original_key == object_key_for(partition, settings.UPLOADS_SETTLED_PREFIX)
    assert partition in _held(media_world)
    assert _row(media_world, partition)["retired_at"] is None
    rerun = media_world.run(partition)
    assert rerun.success, failure_messages(rerun)
    with media_world.database.transaction() as connection:
        publications = connection.execute(
            sa.select(sa.func.count()).where(media_publications.c.partition_key == partition)
        ).scalar_one()
    assert publications >= 1
    assert _row(media_world, partition)["status"] == "published"


class _RetireDuringHead:
    """Object storage that runs the retention job the first time the uploads asset looks at its upload,
    so the retention meets a real run of that partition in flight."""

    def __init__(self, world: MediaWorld, as_of: datetime) -> None:
        self._world = world
        self._as_of = as_of
        self.retention: dg.ExecuteInProcessResult | None = None

    def bucket(self, name: str) -> ObjectStore:
        store = self._world.storage.bucket(name)
        if name != self._world.buckets.uploads:
            return store
        outer = self

        class _Store:
            bucket = store.bucket

            def __getattr__(self, attribute: str) -> Any:
                return getattr(store, attribute)

            def head(self, key: str) -> ObjectInfo | None:
                if outer.retention is None and key.startswith(settings.UPLOADS_PREFIX):
                    outer.retention = _retire(outer._world, outer._as_of)
                return store.head(key)

        return _Store()  # type: ignore[return-value]

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._world.storage, attribute)


def test_retention_never_retires_an_upload_whose_run_is_in_flight(media_world: MediaWorld) -> None:
    partition = media_world.upload("busy.jpg", _jpeg(4), "image/jpeg")
    assert media_world.run(partition).success
    retiring = _RetireDuringHead(media_world, datetime.now(UTC) + PAST_RETENTION)

    rerun = media_world.run(partition, objects=retiring)

    assert retiring.retention is not None and retiring.retention.success
    assert rerun.success, failure_messages(rerun)
    assert partition in _held(media_world)
    assert _row(media_world, partition)["retired_at"] is None
    assert _in_uploads_bucket(media_world, object_key_for(partition, settings.UPLOADS_SETTLED_PREFIX))


def test_retention_never_retires_an_upload_landed_but_not_settled(media_world: MediaWorld) -> None:
    partition = media_world.upload("landed-only.jpg", _jpeg(5), "image/jpeg")
    landed = dg.materialize(
        list(dg.load_assets_from_modules([uploads_module])),
        partition_key=partition,
        resources=media_world.resources(),
        instance=media_world.instance,
    )
    assert landed.success

    assert _retire(media_world, datetime.now(UTC) + timedelta(days=365)).success

    assert partition in _held(media_world)
    row = _row(media_world, partition)
    assert (row["status"], row["settled_at"], row["retired_at"]) == ("landed", None, None)


def test_the_code_location_schedules_the_uploads_retention_daily() -> None:
    from hub_pipelines.definitions import defs

    schedule = defs.resolve_schedule_def("media_uploads_retention_job_schedule")

    assert schedule.job_name == "media_uploads_retention_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "47 3 * * *"
