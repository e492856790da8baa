"""`hub-pipelines uploads restore` as production runs it: PostgreSQL, SeaweedFS, the instance of DAGSTER_HOME."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from hub_pipelines import settings
from hub_pipelines.assets.media.partitions import UPLOADS_PARTITIONS_NAME, originals_layout
from hub_pipelines.cli import main
from hub_pipelines.core.platform_tables import media_uploads
from hub_pipelines.core.ports import ObjectStore
from hub_pipelines.core.schema import upgrade_schema
from hub_pipelines.housekeeping import InstanceUploadPartitions
from hub_pipelines.landing.upload_records import PUBLISHED, UploadRecord, record_upload, record_upload_outcome
from hub_pipelines.landing.upload_retention import retire_settled_uploads
from hub_pipelines.landing.uploads import object_key_for, partition_key_for
from hub_pipelines.resources.object_storage import S3ObjectStorage
from hub_pipelines.resources.sql_database import PostgresDatabase
from tests.media.pipeline_env import storage_for
from tests.services.postgres import PostgresServer
from tests.services.seaweedfs import S3Server


@dataclass
class ProdWorld:
    database: PostgresDatabase
    store: ObjectStore
    instance: dg.DagsterInstance

    def settled_upload(self, name: str) -> str:
        key = f"{settings.UPLOADS_PREFIX}{secrets.token_hex(3)}/{name}"
        info = self.store.put(key, name.encode())
        partition_key = partition_key_for(key, settings.UPLOADS_PREFIX)
        self.instance.add_dynamic_partitions(UPLOADS_PARTITIONS_NAME, [partition_key])
        record_upload(
            self.database,
            UploadRecord(partition_key, key, info.size, info.etag, None, None, datetime.now(UTC)),
        )
        record_upload_outcome(self.database, partition_key, PUBLISHED, None)
        return partition_key

    def retire(self, as_of: datetime, batch_size: int = 500) -> int:
        return retire_settled_uploads(
            self.database,
            self.store,
            InstanceUploadPartitions(self.instance),
            originals_layout(),
            settled_before=as_of - timedelta(days=settings.UPLOADS_RETENTION_DAYS),
            now=as_of,
            batch_size=batch_size,
        ).retired

    def retired_at(self, partition_key: str) -> datetime | None:
        with self.database.transaction() as connection:
            return connection.execute(
                sa.select(media_uploads.c.retired_at).where(media_uploads.c.partition_key == partition_key)
            ).scalar_one()


@pytest.fixture
def prod_world(
    postgres_database: PostgresServer,
    s3_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ProdWorld]:
    storage: S3ObjectStorage = storage_for(s3_server)
    bucket = f"restore-{secrets.token_hex(3)}"
    storage.create_bucket(bucket)
    monkeypatch.setattr(settings, "UPLOADS_BUCKET", bucket)
    monkeypatch.setenv("HUB_ENV", "prod")
    monkeypatch.setenv("HUB_DATABASE_URL", postgres_database.url)
    monkeypatch.setenv("HUB_S3_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("HUB_S3_REGION", s3_server.region)
    monkeypatch.setenv("HUB_S3_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("HUB_S3_SECRET_ACCESS_KEY", s3_server.secret_key)
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    database = PostgresDatabase(url=postgres_database.url)
    upgrade_schema(database.engine)
    with dg.DagsterInstance.get() as instance:
        yield ProdWorld(database, storage.bucket(bucket), instance)
    database.dispose()


def test_restore_command_registers_a_retired_upload_again(prod_world: ProdWorld, capsys) -> None:
    # Recorded as published with its original still under the uploads prefix, as when the settling
    # run could not set it aside: the retention sets it aside itself.
    partition_key = prod_world.settled_upload("poster.jpg")
    as_of = datetime.now(UTC) + timedelta(days=settings.UPLOADS_RETENTION_DAYS, hours=1)
    assert prod_world.retire(as_of) == 1
    assert prod_world.instance.get_dynamic_partitions(UPLOADS_PARTITIONS_NAME) == []
    settled = object_key_for(partition_key, settings.UPLOADS_SETTLED_PREFIX)
    assert prod_world.store.head(object_key_for(partition_key, settings.UPLOADS_PREFIX)) is None
    assert prod_world.store.head(settled) is not None

    assert main(["uploads", "restore", partition_key]) == 0

    assert prod_world.instance.get_dynamic_partitions(UPLOADS_PARTITIONS_NAME) == [partition_key]
    assert prod_world.retired_at(partition_key) is None
    assert f"is registered again (original at {settled!r})" in capsys.readouterr().out


def test_restore_command_names_a_partition_key_it_has_no_upload_for(prod_world: ProdWorld, capsys) -> None:
    assert main(["uploads", "restore", "never~uploaded.jpg"]) == 1
    assert "no upload in media_uploads with partition key 'never~uploaded.jpg'" in capsys.readouterr().err
    assert prod_world.instance.get_dynamic_partitions(UPLOADS_PARTITIONS_NAME) == []


def test_retirement_pages_through_batches_and_a_second_pass_retires_nothing(prod_world: ProdWorld) -> None:
    keys = [prod_world.settled_upload(f"{index}.jpg") for index in range(7)]
    as_of = datetime.now(UTC) + timedelta(days=settings.UPLOADS_RETENTION_DAYS, hours=1)

    assert prod_world.retire(as_of, batch_size=3) == 7
    assert prod_world.retire(as_of, batch_size=3) == 0

    assert prod_world.instance.get_dynamic_partitions(UPLOADS_PARTITIONS_NAME) == []
    assert all(prod_world.retired_at(key) is not None for key in keys)


class _LandedAgainWhileRemoved(InstanceUploadPartitions):
    """The instance's partitions, where a run lands each upload again the moment its partition goes:
    the race between the retention's in-flight check and its delete."""

    def __init__(self, world: ProdWorld) -> None:
        super().__init__(world.instance)
        self._world = world

    def remove(self, partition_key: str) -> None:
        super().remove(partition_key)
        record_upload(
            self._world.database,
            UploadRecord(partition_key, partition_key, 1, "new", None, None, datetime.now(UTC)),
        )


def test_upload_landed_again_while_being_retired_keeps_its_partition(prod_world: ProdWorld) -> None:
    partition_key = prod_world.settled_upload("racing.jpg")
    as_of = datetime.now(UTC) + timedelta(days=settings.UPLOADS_RETENTION_DAYS, hours=1)

    report = retire_settled_uploads(
        prod_world.database,
        prod_world.store,
        _LandedAgainWhileRemoved(prod_world),
        originals_layout(),
        settled_before=as_of - timedelta(days=settings.UPLOADS_RETENTION_DAYS),
        now=as_of,
    )

    assert (report.retired, report.left_in_flight) == (0, 1)
    assert prod_world.instance.get_dynamic_partitions(UPLOADS_PARTITIONS_NAME) == [partition_key]
    assert prod_world.retired_at(partition_key) is None
