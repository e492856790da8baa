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
from hypothesis import given, settings
from hypothesis import strategies as st

from hub_pipelines.core.ports import BucketNotFound, ObjectInfo, ObjectNotFound, ObjectStore
from hub_pipelines.resources.object_keys import check_object_key
from hub_pipelines.resources.object_storage import (
    SSE_S3,
    InvalidObjectName,
    LocalObjectStorage,
    ObjectNotEncrypted,
    S3ObjectStorage,
)
from tests.services.seaweedfs import S3Server

Storage = LocalObjectStorage | S3ObjectStorage
MIB = 1 << 20


def reported_encryption(storage: Storage) -> str | None:
    """S3 encrypts every write with SSE-S3; the local store encrypts nothing and must say so."""
    return SSE_S3 if isinstance(storage, S3ObjectStorage) else None


def new_bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:16]}"


def s3_object_storage(server: S3Server) -> S3ObjectStorage:
    return S3ObjectStorage(
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
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


def test_copy_within_the_bucket_keeps_content_type_cache_control_and_metadata(
    storage: Storage, store: ObjectStore
) -> None:
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
    assert copied.server_side_encryption == reported_encryption(storage)
    assert store.get("incoming/cat.jpg") == b"\xff\xd8jpeg"


def test_copy_to_another_bucket_keeps_content_type_and_metadata(
    storage: Storage, store: ObjectStore, make_store: Callable[[], ObjectStore]
) -> None:
    archive = make_store()
    store.put("orders/17.json", b'{"id": 17}', content_type="application/json", metadata={"tenant": "acme"})

    copied = store.copy("orders/17.json", "2024/orders/17.json", dest_bucket=archive.bucket)

    assert archive.get("2024/orders/17.json") == b'{"id": 17}'
    assert copied == archive.head("2024/orders/17.json")
    assert copied.content_type == "application/json"
    assert copied.metadata == {"tenant": "acme"}
    assert copied.server_side_encryption == reported_encryption(storage)
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


def test_every_put_reports_the_encryption_the_storage_performs(storage: Storage, store: ObjectStore) -> None:
    put = store.put("secret.bin", b"\x00" * 10)
    streamed = store.put("streamed.bin", io.BytesIO(b"\x01" * 10))

    for info in (put, streamed, head_of(store, "secret.bin"), head_of(store, "streamed.bin")):
        assert info.server_side_encryption == reported_encryption(storage)


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


def test_local_store_rejects_a_key_that_is_both_an_object_and_a_prefix_and_a_bad_bucket_name(
    local_storage: LocalObjectStorage,
) -> None:
    store = local_storage.bucket("media")
    store.put("a/b", b"x")

    with pytest.raises(InvalidObjectName, match="both an object and a prefix"):
        store.put("a", b"x")
    with pytest.raises(InvalidObjectName, match="bucket name"):
        local_storage.bucket("../etc")
    with pytest.raises(InvalidObjectName, match="a segment of 256 bytes"):
        store.put("a/" + "k" * 256, b"x")


def test_local_store_keeps_the_plaintext_on_disk_and_reports_no_encryption(
    local_storage: LocalObjectStorage,
) -> None:
    store = local_storage.bucket("media")
    canary = b"canary " + uuid.uuid4().hex.encode()

    put = store.put("private/canary.txt", canary)
    copied = store.copy("private/canary.txt", "private/copy.txt")

    folder = Path(local_storage.root) / "media" / "private"
    assert (folder / "canary.txt").read_bytes() == canary
    assert (folder / "copy.txt").read_bytes() == canary
    assert put.server_side_encryption is None
    assert copied.server_side_encryption is None
    assert head_of(store, "private/canary.txt").server_side_encryption is None


HOSTILE_KEYS = {
    "empty": "",
    "parent segment": "../escape",
    "traversal inside": "uploads/../../etc/passwd",
    "trailing parent": "uploads/..",
    "current segment": "uploads/./x.jpg",
    "leading slash": "/etc/passwd",
    "doubled slash": "uploads//x.jpg",
    "trailing slash": "uploads/",
    "backslash traversal": "uploads\\..\\..\\x",
    "NUL": "uploads/x.jpg\0.png",
    "newline": "uploads/x\ny.jpg",
    "carriage return": "uploads/x\r.jpg",
    "escape sequence": "uploads/\x1b[2Jx.jpg",
    "DEL": "uploads/x\x7f.jpg",
    "C1 control": "uploads/x\x85.jpg",
    "1025 bytes": "k" * 1025,
    "1026 bytes of two-byte characters": "é" * 513,
    "lone surrogate": "uploads/\ud800.jpg",
}

STORE_CALLS: dict[str, Callable[[ObjectStore, str], object]] = {
    "put bytes": lambda store, key: store.put(key, b"x"),
    "put a file object (multipart path)": lambda store, key: store.put(key, io.BytesIO(b"x")),
    "get": lambda store, key: store.get(key),
    "stream": lambda store, key: store.stream(key),
    "head": lambda store, key: store.head(key),
    "list prefix": lambda store, key: store.list_after(key + "/"),
    "copy from": lambda store, key: store.copy(key, "valid/destination"),
    "copy to": lambda store, key: store.copy("valid/source", key),
    "copy to another bucket": lambda store, key: store.copy("valid/source", key, dest_bucket=store.bucket),
    "delete": lambda store, key: store.delete(key),
}


@pytest.fixture(scope="module")
def hostile_key_stores(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> dict[str, ObjectStore]:
    """One bucket per storage holding only `valid/source`, shared by the many hostile-key cases."""
    storages: dict[str, Storage] = {
        "local": LocalObjectStorage(root=str(tmp_path_factory.mktemp("objects"))),
        "s3": s3_object_storage(s3_server),
    }
    stores = {}
    for name, storage in storages.items():
        bucket = new_bucket_name()
        storage.create_bucket(bucket)
        stores[name] = storage.bucket(bucket)
        stores[name].put("valid/source", b"source")
    return stores


@pytest.mark.parametrize("which", ["local", "s3"])
@pytest.mark.parametrize("call", list(STORE_CALLS))
@pytest.mark.parametrize("key", list(HOSTILE_KEYS.values()), ids=list(HOSTILE_KEYS))
def test_every_store_call_refuses_a_hostile_key_and_stores_nothing(
    hostile_key_stores: dict[str, ObjectStore], which: str, call: str, key: str
) -> None:
    store = hostile_key_stores[which]

    with pytest.raises(InvalidObjectName, match=rf"in bucket '{store.bucket}' is not valid: "):
        STORE_CALLS[call](store, key)

    assert [info.key for info in store.list_after("")] == ["valid/source"]


# 1024 bytes of UTF-8, the longest key, in segments no longer than a local file name may be (255 bytes).
LONGEST_KEYS = [("k" * 254 + "/") * 4 + "kkkk", ("é" * 127 + "/") * 4 + "éé"]


@pytest.mark.parametrize("key", ["uploads/2024/ünïcödé file (1).jpg", "a..b/.c/d.", *LONGEST_KEYS])
def test_unusual_but_valid_keys_round_trip_on_both_stores(store: ObjectStore, key: str) -> None:
    store.put(key, b"kept")

    assert store.get(key) == b"kept"
    assert head_of(store, key).key == key
    assert [info.key for info in store.list_after("")] == [key]
    store.delete(key)
    assert store.head(key) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "/", ".", "..", "\\", "\0", "\n", "é", "~"]), max_size=12).map("".join))
def test_a_key_the_rule_accepts_never_leaves_the_bucket_folder(key: str) -> None:
    try:
        check_object_key("media", key)
    except InvalidObjectName:
        return
    root = "/srv/objects/media"
    resolved = os.path.normpath(os.path.join(root, key))

    assert resolved == f"{root}/{key}"


def s3_head(server: S3Server, bucket: str, key: str) -> dict[str, object]:
    """What the server itself answers for the object, read without the code under test."""
    return dict(server.client().head_object(Bucket=bucket, Key=key))


def test_s3_multipart_upload_is_encrypted_and_verified(s3_server: S3Server) -> None:
    storage = s3_object_storage(s3_server)
    bucket = new_bucket_name()
    storage.create_bucket(bucket)

    info = storage.bucket(bucket).put("videos/raw.mov", io.BytesIO(bytes(11 * MIB)))

    assert info.etag.endswith("-3")
    assert info.server_side_encryption == SSE_S3
    assert s3_head(s3_server, bucket, "videos/raw.mov")["ServerSideEncryption"] == SSE_S3


def test_s3_quarantine_move_to_another_bucket_is_encrypted_and_verified(s3_server: S3Server) -> None:
    storage = s3_object_storage(s3_server)
    uploads, quarantine = new_bucket_name(), new_bucket_name()
    storage.create_bucket(uploads)
    storage.create_bucket(quarantine)
    storage.bucket(uploads).put("uploads/2024/eicar.com", b"infected bytes")

    moved = storage.bucket(uploads).copy(
        "uploads/2024/eicar.com", "quarantine/uploads/2024/eicar.com", dest_bucket=quarantine
    )
    storage.bucket(uploads).delete("uploads/2024/eicar.com")

    assert moved.server_side_encryption == SSE_S3
    head = s3_head(s3_server, quarantine, "quarantine/uploads/2024/eicar.com")
    assert head["ServerSideEncryption"] == SSE_S3
    assert storage.bucket(uploads).head("uploads/2024/eicar.com") is None


def test_s3_manifest_sized_put_is_encrypted_and_verified(s3_server: S3Server) -> None:
    storage = s3_object_storage(s3_server)
    bucket = new_bucket_name()
    storage.create_bucket(bucket)
    manifest = b'{"variants": [' + b",".join(b'{"key": "v%d.webp"}' % n for n in range(40)) + b"]}"

    info = storage.bucket(bucket).put(
        "staging/manifests/upload-1.json", manifest, content_type="application/json"
    )

    assert info.server_side_encryption == SSE_S3
    assert s3_head(s3_server, bucket, "staging/manifests/upload-1.json")["ServerSideEncryption"] == SSE_S3


def files_containing(folder: Path, needle: bytes) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_s3_objects_are_encrypted_in_seaweedfs_volume_files(s3_server: S3Server) -> None:
    if s3_server.data_folder is None:
        pytest.fail("reading the bytes at rest needs the suite's own SeaweedFS, not HUB_TEST_S3_ENDPOINT")
    storage = s3_object_storage(s3_server)
    bucket = new_bucket_name()
    storage.create_bucket(bucket)
    plain_canary = b"plaintext-canary-" + uuid.uuid4().hex.encode()
    sealed_canary = b"sealed-canary-" + uuid.uuid4().hex.encode()
    noise = random.Random(5).randbytes
    # Between random bytes, so the server cannot compress the canary away.
    s3_server.client().put_object(
        Bucket=bucket, Key="control.bin", Body=noise(4096) + plain_canary + noise(4096)
    )

    storage.bucket(bucket).put("sealed.bin", noise(4096) + sealed_canary + noise(4096))
    storage.bucket(bucket).put(
        "sealed-multipart.bin", io.BytesIO(noise(6 * MIB) + sealed_canary + noise(MIB))
    )
    storage.bucket(bucket).copy("sealed.bin", "sealed-copy.bin")

    # The control proves the search reads the volumes: an object written without SSE is found there.
    assert files_containing(s3_server.data_folder, plain_canary)
    assert files_containing(s3_server.data_folder, sealed_canary) == []


def test_s3_write_the_server_stores_unencrypted_is_deleted_and_raises(s3_server: S3Server) -> None:
    storage = s3_object_storage(s3_server)
    bucket = new_bucket_name()
    storage.create_bucket(bucket)

    def drop_encryption_header(request: object, **_: object) -> None:
        # A proxy or server that ignores the header: the real server then stores plaintext.
        del request.headers["x-amz-server-side-encryption"]  # type: ignore[attr-defined]

    storage.client.meta.events.register("before-sign.s3.PutObject", drop_encryption_header)

    with pytest.raises(ObjectNotEncrypted, match=rf"'orders/1\.json' in bucket '{bucket}'.*None.*'AES256'"):
        storage.bucket(bucket).put("orders/1.json", b"{}")
    assert storage.bucket(bucket).head("orders/1.json") is None
