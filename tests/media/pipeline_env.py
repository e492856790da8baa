"""The media workflow's world for tests: real SeaweedFS buckets, real clamd, SQLite, a webhook receiver.

`MediaWorld` holds one set of generated bucket names (uploads, quarantine, origin, three regions; the
staging area sits under `staging/` in the uploads bucket), builds the resources the assets need, and
runs the workflow for one upload partition. `FlakyStorage` wraps the storage to make copies into
chosen buckets fail, a given number of times or always.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import dagster as dg
import pytest
from botocore.exceptions import ClientError

from hub_pipelines import settings
from hub_pipelines.assets.media import media_record, published, renditions, scan, uploads
from hub_pipelines.assets.media.partitions import uploads_partitions
from hub_pipelines.core.ports import ObjectInfo, ObjectStore
from hub_pipelines.core.schema import upgrade_schema
from hub_pipelines.landing.uploads import partition_key_for
from hub_pipelines.resources.media.cdn import NoCdn
from hub_pipelines.resources.media.media_settings import MediaSettings
from hub_pipelines.resources.media.virus_scanner import ClamdScanner
from hub_pipelines.resources.media.webhook import HttpWebhook
from hub_pipelines.resources.object_storage import S3ObjectStorage
from hub_pipelines.resources.sql_database import SqliteDatabase
from tests.fakes.webhook_receiver import WebhookReceiver, running_webhook_receiver
from tests.services.clamd import ClamdAddress
from tests.services.seaweedfs import S3Server

WEBHOOK_SECRET = "media-test-secret"
REGIONS = ("us-east", "eu-west", "ap-southeast")
MEDIA_MODULES = [uploads, scan, renditions, published, media_record]
MEDIA_ASSETS = list(dg.load_assets_from_modules(MEDIA_MODULES))
MEDIA_CHECKS = list(dg.load_asset_checks_from_modules(MEDIA_MODULES))


@dataclass(frozen=True)
class MediaBuckets:
    uploads: str
    quarantine: str
    origin: str
    regions: Mapping[str, str]


def storage_for(server: S3Server) -> S3ObjectStorage:
    return S3ObjectStorage(
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
    )


def create_media_buckets(storage: S3ObjectStorage) -> MediaBuckets:
    suffix = secrets.token_hex(3)
    buckets = MediaBuckets(
        uploads=f"up-{suffix}",
        quarantine=f"quarantine-{suffix}",
        origin=f"origin-{suffix}",
        regions={region: f"{region}-{suffix}" for region in REGIONS},
    )
    for name in (buckets.uploads, buckets.quarantine, buckets.origin, *buckets.regions.values()):
        storage.create_bucket(name)
    return buckets


class _FlakyStore:
    def __init__(self, store: ObjectStore, storage: FlakyStorage) -> None:
        self._store = store
        self._storage = storage
        self.bucket = store.bucket

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def put(self, key: str, data: bytes | IO[bytes], **options: Any) -> ObjectInfo:
        return self._store.put(key, data, **options)

    def copy(self, source_key: str, dest_key: str, dest_bucket: str | None = None) -> ObjectInfo:
        self._storage.maybe_fail(dest_bucket or self.bucket)
        return self._store.copy(source_key, dest_key, dest_bucket)


@dataclass
class FlakyStorage:
    """Copies into `failing` buckets raise S3's 503 SlowDown: the first `times` of them, or all when None."""

    storage: S3ObjectStorage
    failing: Sequence[str]
    times: int | None = None
    failures: dict[str, int] = field(default_factory=dict)

    def bucket(self, name: str) -> ObjectStore:
        return _FlakyStore(self.storage.bucket(name), self)

    def maybe_fail(self, bucket: str) -> None:
        if bucket not in self.failing:
            return
        done = self.failures.get(bucket, 0)
        if self.times is None or done < self.times:
            self.failures[bucket] = done + 1
            raise ClientError(
                {
                    "Error": {"Code": "SlowDown", "Message": "injected"},
                    "ResponseMetadata": {"HTTPStatusCode": 503},
                },
                "CopyObject",
            )


@dataclass
class MediaWorld:
    storage: S3ObjectStorage
    buckets: MediaBuckets
    clamd: ClamdAddress
    database: SqliteDatabase
    receiver: WebhookReceiver
    instance: dg.DagsterInstance

    def media_settings(self, **overrides: Any) -> MediaSettings:
        values: dict[str, Any] = {
            "staging_bucket": self.buckets.uploads,
            "staging_prefix": "staging/",
            "quarantine_bucket": self.buckets.quarantine,
            "origin_bucket": self.buckets.origin,
            "region_buckets": dict(self.buckets.regions),
            "retry_initial_wait_seconds": 0.01,
            "retry_max_wait_seconds": 0.05,
            **overrides,
        }
        return MediaSettings(**values)

    def resources(self, **overrides: Any) -> dict[str, Any]:
        return {
            "objects": self.storage,
            "database": self.database,
            "scanner": ClamdScanner(host=self.clamd.host, port=self.clamd.port),
            "webhook": HttpWebhook(
                url=self.receiver.url, secret=WEBHOOK_SECRET, attempts=3, initial_wait_seconds=0.01
            ),
            "cdn": NoCdn(base_url="https://cdn.example.test"),
            "media_settings": self.media_settings(),
            **overrides,
        }

    def upload(self, name: str, data: bytes, content_type: str | None = None) -> str:
        """Drop an upload into the uploads bucket; returns its partition key (registered)."""
        key = f"{settings.UPLOADS_PREFIX}{secrets.token_hex(3)}/{name}"
        self.storage.bucket(self.buckets.uploads).put(key, data, content_type=content_type)
        partition_key = partition_key_for(key, settings.UPLOADS_PREFIX)
        self.instance.add_dynamic_partitions(uploads_partitions.name, [partition_key])
        return partition_key

    def run(self, partition_key: str, **resource_overrides: Any) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [*MEDIA_ASSETS, *MEDIA_CHECKS],
            partition_key=partition_key,
            resources=self.resources(**resource_overrides),
            instance=self.instance,
            raise_on_error=False,
        )


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    messages = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_failure_data:
            data = event.step_failure_data
            described = data.user_failure_data.description if data.user_failure_data else None
            messages.append(described or (data.error.message if data.error else ""))
    return messages


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        "/".join(event.asset_key.path)
        for event in result.get_asset_materialization_events()
        if event.asset_key
    }


@pytest.fixture(scope="module")
def media_storage(s3_server: S3Server) -> S3ObjectStorage:
    return storage_for(s3_server)


@pytest.fixture(scope="module")
def media_buckets(media_storage: S3ObjectStorage) -> MediaBuckets:
    return create_media_buckets(media_storage)


@pytest.fixture
def media_world(
    media_storage: S3ObjectStorage,
    media_buckets: MediaBuckets,
    clamd_server: ClamdAddress,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[MediaWorld]:
    monkeypatch.setattr(settings, "UPLOADS_BUCKET", media_buckets.uploads)
    database = SqliteDatabase(path=str(tmp_path / "hub.sqlite3"))
    upgrade_schema(database.engine)
    with running_webhook_receiver() as receiver, dg.DagsterInstance.ephemeral() as instance:
        yield MediaWorld(media_storage, media_buckets, clamd_server, database, receiver, instance)
    database.dispose()
