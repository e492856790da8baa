"""The demo feeder drops uploads only while the media backlog in the Dagster instance is under its bound."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from hub_pipelines import settings
from hub_pipelines.assets.media.partitions import UPLOADS_PARTITIONS_NAME
from hub_pipelines.cli import main
from hub_pipelines.definitions import defs
from hub_pipelines.demo.pacing import UploadPacer
from hub_pipelines.jobs import MEDIA_PIPELINE
from hub_pipelines.landing.uploads import partition_key_for
from hub_pipelines.resources.object_storage import LocalObjectStorage
from hub_pipelines.resources.sql_database import SqliteDatabase
from hub_pipelines.sensors.media import media_uploads_sensor, unfinished_media_runs


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """The instance of DAGSTER_HOME, as `make run` serves it and the feeder reads it."""
    (tmp_path / "dagster_home").mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "hub"))
    monkeypatch.setenv("HUB_ENV", "local")
    with dg.DagsterInstance.get() as dagster_instance:
        yield dagster_instance


def queue_media_runs(instance: dg.DagsterInstance, count: int) -> list[dg.DagsterRun]:
    """Media runs created and not started yet (a queued run would also need the code server's origin)."""
    job = defs.resolve_job_def(MEDIA_PIPELINE)
    return [instance.create_run_for_job(job, status=dg.DagsterRunStatus.NOT_STARTED) for _ in range(count)]


def uploads(tmp_path: Path) -> list[str]:
    store = LocalObjectStorage(root=str(tmp_path / "hub" / "objects")).bucket(settings.UPLOADS_BUCKET)
    return [info.key for info in store.list_after(settings.UPLOADS_PREFIX, None, 100)]


def test_feeder_skips_uploads_while_more_media_runs_are_queued_than_the_bound(
    instance: dg.DagsterInstance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_media_runs(instance, 3)

    assert main(["demo", "--max-media-backlog", "2", "--orders", "1", "--events", "1"]) == 0
    assert "uploads skipped: media backlog 3 > 2" in capsys.readouterr().out
    assert uploads(tmp_path) == []

    assert main(["demo", "--max-media-backlog", "3", "--orders", "1", "--events", "1"]) == 0
    assert "demo: 3 uploads," in capsys.readouterr().out
    assert len(uploads(tmp_path)) == 3


def test_backlog_counts_uploads_until_the_sensor_registers_them_and_runs_until_they_finish(
    instance: dg.DagsterInstance,
) -> None:
    pacer = UploadPacer(
        bound=2,
        unfinished_media_runs=lambda: unfinished_media_runs(instance),
        registered=lambda key: instance.has_dynamic_partition(
            UPLOADS_PARTITIONS_NAME, partition_key_for(key, settings.UPLOADS_PREFIX)
        ),
    )
    keys = [f"{settings.UPLOADS_PREFIX}photo-{n}.jpg" for n in range(3)]
    pacer.uploaded(keys)
    assert pacer.uploads_due() == (False, 3)

    instance.add_dynamic_partitions(
        UPLOADS_PARTITIONS_NAME, [partition_key_for(key, settings.UPLOADS_PREFIX) for key in keys]
    )
    [run, *_] = queue_media_runs(instance, 3)
    assert pacer.uploads_due() == (False, 3)

    instance.report_run_canceled(run)
    assert pacer.uploads_due() == (True, 2)


def test_uploads_sensor_skip_reason_shows_the_media_backlog(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    objects = LocalObjectStorage(root=str(tmp_path / "hub" / "objects"))
    objects.create_bucket(settings.UPLOADS_BUCKET)
    queue_media_runs(instance, 4)

    database = SqliteDatabase(path=str(tmp_path / "hub.sqlite3"), migrate_schema=True)
    with dg.build_sensor_context(
        instance=instance, resources={"objects": objects, "database": database}
    ) as context:
        result = media_uploads_sensor(context)

    assert isinstance(result, dg.SkipReason)
    assert "media backlog: 4 runs queued or running" in (result.skip_message or "")
