"""The media steps' domain functions, without Dagster: announcements, the staging area's layout and reuse."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_pipelines.core.webhook_signing import encode_payload
from hub_pipelines.media.announcements import WEBHOOK_DEAD_LETTER_SOURCE, announce
from hub_pipelines.media.manifests import StagedVariant, StagingManifest
from hub_pipelines.media.staging import Staging
from hub_pipelines.media.step_failures import StepBlocked
from hub_pipelines.resources.media.webhook import HttpWebhook
from hub_pipelines.resources.object_storage_local import LocalObjectStorage
from hub_pipelines.resources.sql_database import SqliteDatabase
from tests.fakes.webhook_receiver import WebhookReceiver, running_webhook_receiver
from tests.media.read_back import dead_letters_from

PAYLOAD = {"event": "media.published", "upload": {"partition_key": "cat.jpg"}}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_webhook_receiver() as running:
        yield running


@pytest.fixture
def database(tmp_path: Path) -> SqliteDatabase:
    return SqliteDatabase(path=str(tmp_path / "hub.sqlite3"), migrate_schema=True)


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    objects = LocalObjectStorage(root=str(tmp_path / "objects"))
    objects.create_bucket("media-staging")
    return Staging(objects.bucket("media-staging"), "staging/")


def webhook(receiver: WebhookReceiver) -> HttpWebhook:
    return HttpWebhook(url=receiver.url, secret="s", attempts=2, initial_wait_seconds=0.01)


def test_refused_announcement_is_dead_lettered_with_its_exact_body(
    receiver: WebhookReceiver, database: SqliteDatabase
) -> None:
    receiver.always_fail(400)
    announced = announce(webhook(receiver), database, "media.published", PAYLOAD, "cat.jpg@abc")
    assert (announced.status, announced.attempts) == ("dead_lettered", 0)
    (letter,) = dead_letters_from(database, WEBHOOK_DEAD_LETTER_SOURCE)
    assert letter["event_id"] == "cat.jpg@abc"
    assert bytes(letter["payload"]) == encode_payload(PAYLOAD)
    assert "400" in letter["reason"]


def test_delivered_announcement_leaves_no_dead_letter(
    receiver: WebhookReceiver, database: SqliteDatabase
) -> None:
    announced = announce(webhook(receiver), database, "media.published", PAYLOAD, "cat.jpg@abc")
    assert (announced.status, announced.attempts) == ("delivered", 1)
    assert dead_letters_from(database, WEBHOOK_DEAD_LETTER_SOURCE) == []


def staged_manifest(staging: Staging, folder: str, data: bytes) -> StagingManifest:
    staged_key = f"{folder}/w320-webp.webp"
    staging.store.put(staged_key, data, content_type="image/webp")
    variant = StagedVariant(label="w320", format="webp", kind="image", mime="image/webp", extension=".webp",
                            width=320, height=200, bytes=len(data), sha256="0" * 64, md5="0" * 32,
                            staged_key=staged_key, encode_seconds=0.1)  # fmt: skip
    manifest = StagingManifest(partition_key="cat.jpg", object_key="incoming/cat.jpg", source_sha256="f" * 64,
                               kind="image", mime="image/jpeg", bytes_in=1000, duration_seconds=None,
                               variants=[variant])  # fmt: skip
    staging.put_manifest(f"{folder}/manifest.json", manifest)
    return manifest


def test_staged_renditions_are_reused_while_every_file_is_there(staging: Staging) -> None:
    folder = staging.renditions_folder("cat.jpg", "f" * 64, "fingerprint")
    manifest = staged_manifest(staging, folder, b"webp bytes")
    assert staging.reusable(folder) == manifest


def test_staged_renditions_are_not_reused_when_a_file_is_gone_or_cut_short(staging: Staging) -> None:
    folder = staging.renditions_folder("cat.jpg", "f" * 64, "fingerprint")
    manifest = staged_manifest(staging, folder, b"webp bytes")
    staging.store.put(manifest.variants[0].staged_key, b"webp", content_type="image/webp")
    assert staging.reusable(folder) is None
    staging.store.delete(manifest.variants[0].staged_key)
    assert staging.reusable(folder) is None


def test_reading_what_an_earlier_step_has_not_written_blocks_the_step_naming_it(staging: Staging) -> None:
    with pytest.raises(
        StepBlocked, match=r"'cat\.jpg' has no staged renditions; materialize media/renditions"
    ):
        staging.staged("cat.jpg")
    with pytest.raises(StepBlocked, match=r"'cat\.jpg' has not been published; materialize media/published"):
        staging.publication("cat.jpg")
