"""An upload copied from its bucket to a local file, hashed on the way, and read back in chunks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hub_pipelines.core.ports import ObjectStore
from hub_pipelines.media.content_type import SNIFF_BYTES

_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class DownloadedUpload:
    path: Path
    sha256: str
    head: bytes
    size: int


def download_upload(store: ObjectStore, key: str, target: Path) -> DownloadedUpload:
    """The object `key` written to `target` in chunks (never whole in memory), with its sha256 and
    the leading bytes content typing reads."""
    digest = hashlib.sha256()
    head = bytearray()
    size = 0
    with target.open("wb") as out:
        for chunk in store.stream(key):
            digest.update(chunk)
            size += len(chunk)
            if len(head) < SNIFF_BYTES:
                head.extend(chunk[: SNIFF_BYTES - len(head)])
            out.write(chunk)
    return DownloadedUpload(target, digest.hexdigest(), bytes(head), size)


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            yield chunk
