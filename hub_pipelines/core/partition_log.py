"""An append-only, durable log of one topic partition on disk, safe for several appending processes.

A partition is a folder of three files:

- `log`: the records, back to back. Each is framed as a 4-byte big-endian body length, a 4-byte
  big-endian CRC-32 of the body, then the body: a msgpack array
  `[offset, timestamp_ms, key | nil, value, [[header_name, header_value], ...]]`.
- `index`: one 8-byte big-endian integer per record, the position in `log` just past that record. The
  record at offset n spans `index[n-1] .. index[n]` (from 0 for n = 0), so the end offset is the index
  size / 8 and a range read is two index reads and one sequential read of the log: no scan.
- `lock`: held (fcntl.flock) by the appender for the whole append.

An append writes and fsyncs the records, then writes and fsyncs their index entries: a record exists
once its index entry does. A crash between the two leaves log bytes past the last indexed record,
which the next append cuts off; a torn index entry is cut off the same way. Readers take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import msgspec

_FRAME = struct.Struct(">II")
_POSITION = struct.Struct(">Q")


class TopicLogCorrupt(RuntimeError):
    """A record on disk does not match its checksum, index entry or offset."""


class StoredRecord(NamedTuple):
    """One record as the partition log keeps it."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


class NewRecord(NamedTuple):
    """One record to append; its offset is assigned by the append."""

    value: bytes
    key: bytes | None
    headers: Mapping[str, bytes]
    timestamp_ms: int


_Body = tuple[int, int, bytes | None, bytes, list[tuple[str, bytes]]]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Body)


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (and librdkafka's `murmur2_random`) gives a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 hash (seed 0x9747b28c), as a signed int like Java's."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    whole = length - length % 4
    for (k,) in struct.iter_unpack("<I", data[:whole]):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


class PartitionLog:
    """The files of one partition under `folder` (created on first append)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._log = folder / "log"
        self._index = folder / "index"
        self._lock = folder / "lock"

    def end_offset(self) -> int:
        try:
            return self._index.stat().st_size // _POSITION.size
        except FileNotFoundError:
            return 0

    @contextlib.contextmanager
    def _appending(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock.open("ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, records: Sequence[NewRecord]) -> int:
        """Append records durably, in order; returns the offset of the first one."""
        with self._appending():
            index_fd = os.open(self._index, os.O_RDWR | os.O_CREAT, 0o644)
            log_fd = os.open(self._log, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                first, log_end = self._recover(index_fd, log_fd)
                frames = bytearray()
                ends = bytearray()
                encode, frame, position, crc32 = _encoder.encode, _FRAME.pack, _POSITION.pack, zlib.crc32
                for offset, (value, key, headers, timestamp_ms) in enumerate(records, start=first):
                    body = encode((offset, timestamp_ms, key, value, list(headers.items())))
                    frames += frame(len(body), crc32(body))
                    frames += body
                    ends += position(log_end + len(frames))
                _write_all(log_fd, bytes(frames), log_end)
                os.fsync(log_fd)
                _write_all(index_fd, bytes(ends), first * _POSITION.size)
                os.fsync(index_fd)
                return first
            finally:
                os.close(log_fd)
                os.close(index_fd)

    def _recover(self, index_fd: int, log_fd: int) -> tuple[int, int]:
        """The next offset and the log's valid length, cutting off what a crashed append left behind."""
        index_size = os.fstat(index_fd).st_size
        count = index_size // _POSITION.size
        if index_size != count * _POSITION.size:
            os.ftruncate(index_fd, count * _POSITION.size)
        log_end = (
            _POSITION.unpack(os.pread(index_fd, _POSITION.size, (count - 1) * _POSITION.size))[0]
            if count
            else 0
        )
        if os.fstat(log_fd).st_size > log_end:
            os.ftruncate(log_fd, log_end)
        return count, log_end

    def read(self, start: int, end: int) -> list[StoredRecord]:
        """Records with start <= offset < end that exist, in offset order."""
        start = max(start, 0)
        end = min(end, self.end_offset())
        if start >= end:
            return []
        with self._index.open("rb") as index:
            first_entry = max(start - 1, 0)
            raw = os.pread(index.fileno(), (end - first_entry) * _POSITION.size, first_entry * _POSITION.size)
        positions = [position for (position,) in _POSITION.iter_unpack(raw)]
        begin = positions[0] if start > 0 else 0
        stop = positions[-1]
        with self._log.open("rb") as log:
            data = os.pread(log.fileno(), stop - begin, begin)
        if len(data) != stop - begin:
            raise TopicLogCorrupt(f"{self._log}: index says bytes {begin}..{stop} exist, the log has fewer")
        return list(_decode(data, start, self._log))


def _write_all(fd: int, data: bytes, position: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        view = view[written:]
        position += written


def _decode(data: bytes, first_offset: int, path: Path) -> Iterator[StoredRecord]:
    position = 0
    expected = first_offset
    while position < len(data):
        length, checksum = _FRAME.unpack_from(data, position)
        body = data[position + _FRAME.size : position + _FRAME.size + length]
        if len(body) != length or zlib.crc32(body) != checksum:
            raise TopicLogCorrupt(f"{path}: record at offset {expected} fails its checksum")
        offset, timestamp_ms, key, value, headers = _decoder.decode(body)
        if offset != expected:
            raise TopicLogCorrupt(f"{path}: expected offset {expected}, found {offset}")
        yield StoredRecord(offset, timestamp_ms, key, value, dict(headers))
        position += _FRAME.size + length
        expected += 1
