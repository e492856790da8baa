"""One behavioural suite for both object storages: folders on local disk and S3 (a real SeaweedFS)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster_aws.s3 import S3Resource

from hub_pipelines.core.ports import BucketNotFound, ObjectInfo, ObjectNotFound, ObjectStore
from hub_pipelines.resources.object_storage import (
    InvalidObjectName,
    LocalObjectStorage,
    S3ObjectStorage,
)
from tests.services.seaweedfs import S3Server

Storage = LocalObjectStorage | S3ObjectStorage
MIB = 1 << 20


def new_bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:16]}"


def s3_object_storage(server: S3Server) -> S3ObjectStorage:
    return S3ObjectStorage(
        s3=S3Resource(
            endpoint_url=server.endpoint_url,
            region_name=server.region,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
        ),
        # The smallest part size S3 allows, so a multipart upload needs only a few MiB.
        multipart_threshold_mb=5,
        multipart_chunk_mb=5,
    )


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalObjectStorage(root=str(tmp_path / "objects"))
    return s3_object_storage(request.getfixturevalue("s3_server"))


def head_of(store: ObjectStore, key: str) -> ObjectInfo:
    info = store.head(key)
    assert info is not None, f"{key!r} is missing from bucket {store.bucket!r}"
    return info


@pytest.fixture
def make_store(storage: Storage) -> Callable[[], ObjectStore]:
    def make() -> ObjectStore:
        name = new_bucket_name()
        storage.create_bucket(name)
        return storage.bucket(name)

    return make


@pytest.fixture
def store(make_store: Callable[[], ObjectStore]) -> ObjectStore:
    return make_store()


class FailingReader(io.RawIOBase):
    """A file object that breaks after `good_bytes`, like an upload whose client disconnects."""

    def __init__(self, good_bytes: int) -> None:
        self._left = good_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            raise ConnectionResetError("upload interrupted")
        size = min(len(buffer), self._left)
        buffer[:size] = b"x" * size
        self._left -= size
        return size


def test_bucket_object_implements_the_object_store_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_put_then_get_returns_the_bytes_and_head_the_attributes(store: ObjectStore) -> None:
    data = b"%PDF-1.7 not really a pdf"
    before = datetime.now(UTC) - timedelta(seconds=1)
    put = store.put(
        "uploads/2024/report.pdf",
        data,
        content_type="application/pdf",
        metadata={"Uploaded-By": "user-17", "sha256": hashlib.sha256(data).hexdigest()},
    )
    after = datetime.now(UTC) + timedelta(seconds=1)

    assert store.get("uploads/2024/report.pdf") == data
    head = store.head("uploads/2024/report.pdf")
    assert head == put
    assert head.size == len(data)
    assert head.etag == hashlib.md5(data).hexdigest()
    assert head.content_type == "application/pdf"
    assert head.metadata == {"uploaded-by": "user-17", "sha256": hashlib.sha256(data).hexdigest()}
    assert head.last_modified.utcoffset() == timedelta(0)
    assert before <= head.last_modified <= after


def test_stream_yields_the_object_in_chunks_no_larger_than_asked(store: ObjectStore) -> None:
    data = random.Random(7).randbytes(3 * MIB + 123)
    store.put("videos/clip.mp4", data, content_type="video/mp4")

    chunks = list(store.stream("videos/clip.mp4", chunk_size=256 * 1024))

    assert len(chunks) > 1
    assert max(len(chunk) for chunk in chunks) <= 256 * 1024
    assert b"".join(chunks) == data


def test_put_of_a_file_object_larger_than_a_part_round_trips(store: ObjectStore) -> None:
    data = random.Random(11).randbytes(11 * MIB)

    put = store.put("videos/raw.mov", io.BytesIO(data), content_type="video/quicktime")

    assert put.size == len(data)
    assert put.content_type == "video/quicktime"
    assert store.get("videos/raw.mov") == data


def test_failed_put_leaves_the_previous_object_untouched(store: ObjectStore) -> None:
    store.put("avatars/17.png", b"old avatar", content_type="image/png")

    with pytest.raises(ConnectionResetError):
        store.put("avatars/17.png", io.BufferedReader(FailingReader(good_bytes=6 * MIB)))

    assert store.get("avatars/17.png") == b"old avatar"
    assert [info.key for info in store.list_after("")] == ["avatars/17.png"]


def test_head_of_a_missing_key_is_none(store: ObjectStore) -> None:
    store.put("present", b"here")

    assert store.head("absent") is None
    assert store.head("present/absent") is None


def test_get_and_stream_of_a_missing_key_raise_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="absent"):
        store.get("absent")
    with pytest.raises(ObjectNotFound, match="absent"):
        store.stream("absent")


def test_get_from_a_missing_bucket_raises_bucket_not_found(storage: Storage) -> None:
    missing = storage.bucket(new_bucket_name())

    with pytest.raises(BucketNotFound):
        missing.get("anything")


def test_list_after_returns_keys_in_key_order_with_size_and_etag(store: ObjectStore) -> None:
    # No sibling names that differ at a character below '/' (such as '-' or '.'): SeaweedFS lists in
    # path-segment order, which differs from S3's byte order only for those (see S3ObjectStorage).
    keys = ["a0", "a/b", "a/B", "a/c/d", "a_z", "b", "A", "media/2024/05/01/x.jpg"]
    for key in random.Random(3).sample(keys, len(keys)):
        store.put(key, key.encode() * 3)

    listed = store.list_after("")

    assert [info.key for info in listed] == sorted(keys)
    for info in listed:
        assert info.size == len(info.key) * 3
        assert info.etag == hashlib.md5(info.key.encode() * 3).hexdigest()


def test_list_after_pages_through_every_key_exactly_once(store: ObjectStore) -> None:
    keys = [f"events/2024-05-{day:02d}.parquet" for day in range(1, 8)]
    for key in reversed(keys):
        store.put(key, b"rows")

    pages = []
    start_after = None
    while page := store.list_after("events/", start_after=start_after, limit=3):
        pages.append([info.key for info in page])
        start_after = page[-1].key

    assert pages == [keys[0:3], keys[3:6], keys[6:7]]


def test_list_after_only_returns_keys_under_the_prefix(store: ObjectStore) -> None:
    for key in ["media/1.jpg", "media/2.jpg", "media_old/logo.svg", "mediakit/x", "orders/1.json", "medi"]:
        store.put(key, b"x")

    assert [info.key for info in store.list_after("media/")] == ["media/1.jpg", "media/2.jpg"]
    assert [info.key for info in store.list_after("media")] == [
        "media/1.jpg",
        "media/2.jpg",
        "media_old/logo.svg",
        "mediakit/x",
    ]
    assert [info.key for info in store.list_after("media/", start_after="media/1.jpg")] == ["media/2.jpg"]
    assert store.list_after("nothing-here/") == []


def test_copy_within_the_bucket_keeps_content_type_cache_control_and_metadata(store: ObjectStore) -> None:
    store.put(
        "incoming/cat.jpg",
        b"\xff\xd8jpeg",
        content_type="image/jpeg",
        cache_control="public, max-age=31536000, immutable",
        metadata={"owner": "user-3"},
    )

    copied = store.copy("incoming/cat.jpg", "public/cat.jpg")

    assert store.get("public/cat.jpg") == b"\xff\xd8jpeg"
    assert copied == store.head("public/cat.jpg")
    assert copied.content_type == "image/jpeg"
    assert copied.cache_control == "public, max-age=31536000, immutable"
    assert copied.metadata == {"owner": "user-3"}
    assert copied.server_side_encryption == "AES256"
    assert store.get("incoming/cat.jpg") == b"\xff\xd8jpeg"


def test_copy_to_another_bucket_keeps_content_type_and_metadata(
    store: ObjectStore, make_store: Callable[[], ObjectStore]
) -> None:
    archive = make_store()
    store.put("orders/17.json", b'{"id": 17}', content_type="application/json", metadata={"tenant": "acme"})

    copied = store.copy("orders/17.json", "2024/orders/17.json", dest_bucket=archive.bucket)

    assert archive.get("2024/orders/17.json") == b'{"id": 17}'
    assert copied == archive.head("2024/orders/17.json")
    assert copied.content_type == "application/json"
    assert copied.metadata == {"tenant": "acme"}
    assert copied.server_side_encryption == "AES256"
    assert store.head("2024/orders/17.json") is None


def test_copy_of_a_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="absent"):
        store.copy("absent", "anywhere")


def test_delete_removes_the_object_and_deleting_again_is_not_an_error(store: ObjectStore) -> None:
    store.put("tmp/upload.part", b"partial")

    store.delete("tmp/upload.part")
    store.delete("tmp/upload.part")
    store.delete("never/existed")

    assert store.head("tmp/upload.part") is None
    assert store.list_after("") == []


def test_deleted_prefix_can_be_reused_as_a_key(store: ObjectStore) -> None:
    store.put("reports/daily/1.csv", b"a,b")
    store.delete("reports/daily/1.csv")

    store.put("reports", b"now a key")

    assert [info.key for info in store.list_after("")] == ["reports"]


def test_every_put_is_reported_encrypted_on_head(store: ObjectStore) -> None:
    store.put("secret.bin", b"\x00" * 10)
    store.put("streamed.bin", io.BytesIO(b"\x01" * 10))

    assert head_of(store, "secret.bin").server_side_encryption == "AES256"
    assert head_of(store, "streamed.bin").server_side_encryption == "AES256"


def test_cache_control_round_trips(store: ObjectStore) -> None:
    store.put("cdn/a.webp", b"webp", content_type="image/webp", cache_control="public, max-age=600")
    store.put("cdn/b.webp", b"webp", content_type="image/webp")

    assert head_of(store, "cdn/a.webp").cache_control == "public, max-age=600"
    assert head_of(store, "cdn/b.webp").cache_control is None


def test_etag_changes_when_the_content_changes(store: ObjectStore) -> None:
    first = store.put("doc.txt", b"version one")
    same = store.put("doc.txt", b"version one")
    second = store.put("doc.txt", b"version two")

    assert same.etag == first.etag
    assert second.etag != first.etag
    assert head_of(store, "doc.txt").etag == second.etag


def test_overwriting_a_key_keeps_one_object_with_the_new_content(store: ObjectStore) -> None:
    store.put("profile.json", b'{"name": "old"}', content_type="application/json", metadata={"v": "1"})
    store.put(
        "profile.json", b'{"name": "new, longer"}', content_type="application/json", metadata={"v": "2"}
    )

    listed = store.list_after("")
    assert [info.key for info in listed] == ["profile.json"]
    assert listed[0].size == len(b'{"name": "new, longer"}')
    assert store.get("profile.json") == b'{"name": "new, longer"}'
    assert head_of(store, "profile.json").metadata == {"v": "2"}


def test_create_bucket_twice_is_not_an_error(storage: Storage) -> None:
    name = new_bucket_name()

    storage.create_bucket(name)
    storage.bucket(name).put("kept", b"data")
    storage.create_bucket(name)

    assert storage.bucket(name).get("kept") == b"data"


def test_s3_put_of_a_large_file_object_is_a_multipart_upload(s3_server: S3Server) -> None:
    storage = s3_object_storage(s3_server)
    name = new_bucket_name()
    storage.create_bucket(name)

    info = storage.bucket(name).put("big.bin", io.BytesIO(bytes(11 * MIB)))

    assert info.etag.endswith("-3")


@pytest.fixture
def local_storage(tmp_path: Path) -> Iterator[LocalObjectStorage]:
    storage = LocalObjectStorage(root=str(tmp_path / "objects"))
    storage.create_bucket("media")
    yield storage


def test_local_file_dropped_in_by_hand_is_listed_with_the_md5_of_its_bytes(
    local_storage: LocalObjectStorage,
) -> None:
    store = local_storage.bucket("media")
    store.put("a.txt", b"written through the store")
    (Path(local_storage.root) / "media" / "a.txt").write_bytes(b"replaced by hand")
    (Path(local_storage.root) / "media" / "b.txt").write_bytes(b"dropped in")

    heads = {key: head_of(store, key) for key in ("a.txt", "b.txt")}

    assert heads["a.txt"].etag == hashlib.md5(b"replaced by hand").hexdigest()
    assert heads["a.txt"].content_type is None
    assert heads["b.txt"].etag == hashlib.md5(b"dropped in").hexdigest()
    assert [info.key for info in store.list_after("")] == ["a.txt", "b.txt"]


def test_local_store_leaves_no_staged_files_behind(local_storage: LocalObjectStorage) -> None:
    store = local_storage.bucket("media")
    store.put("x/1", b"one")
    store.copy("x/1", "x/2")
    with pytest.raises(ConnectionResetError):
        store.put("x/3", io.BufferedReader(FailingReader(good_bytes=10)))

    assert os.listdir(Path(local_storage.root) / ".staging") == []


def test_local_store_rejects_keys_a_folder_cannot_hold(local_storage: LocalObjectStorage) -> None:
    store = local_storage.bucket("media")
    store.put("a/b", b"x")

    for key in ["", "/abs", "a//b", "a/../escape", "trailing/"]:
        with pytest.raises(InvalidObjectName, match="not valid"):
            store.put(key, b"x")
    with pytest.raises(InvalidObjectName, match="both an object and a prefix"):
        store.put("a", b"x")
    with pytest.raises(InvalidObjectName, match="bucket name"):
        local_storage.bucket("../etc")
