"""Records written to a broker byte for byte, as no well-behaved client would write them.

confluent-kafka turns header names into text before it sends them and never writes a record without a
timestamp, so the suite's hostile producer speaks the wire protocol itself: a Produce request (v3) with
one uncompressed RecordBatch (magic 2) per partition, whose header names and values, keys, values and
timestamps are whatever bytes the test gives. Answers are checked for the partition's error code.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import strategies as st

_PRODUCE = 0
_PRODUCE_VERSION = 3
_NO_TIMESTAMP = -1


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        if zigzag < 0x80:
            out.append(zigzag)
            return bytes(out)
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7


def _sized(data: bytes | None) -> bytes:
    return _varint(-1) if data is None else _varint(len(data)) + data


@dataclass(frozen=True)
class RawRecord:
    """One record as it goes on the wire; `timestamp_ms` None is Kafka's 'no timestamp' (-1)."""

    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[bytes, bytes | None]] = field(default_factory=tuple)
    timestamp_ms: int | None = None


def record_batch(records: Sequence[RawRecord]) -> bytes:
    """An uncompressed, non-transactional RecordBatch v2 holding `records` at offset deltas 0..n-1."""
    stamps = [_NO_TIMESTAMP if r.timestamp_ms is None else r.timestamp_ms for r in records]
    base_timestamp = stamps[0]
    encoded = b""
    for delta, (record, stamp) in enumerate(zip(records, stamps, strict=True)):
        body = (
            b"\x00"
            + _varint(stamp - base_timestamp)
            + _varint(delta)
            + _sized(record.key)
            + _sized(record.value)
            + _varint(len(record.headers))
            + b"".join(_varint(len(name)) + name + _sized(value) for name, value in record.headers)
        )
        encoded += _varint(len(body)) + body
    after_crc = (
        struct.pack(">hiqqqhii", 0, len(records) - 1, base_timestamp, max(stamps), -1, -1, -1, len(records))
        + encoded
    )
    after_length = struct.pack(">ib", -1, 2) + struct.pack(">I", crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def produce_raw(bootstrap: str, topic: str, partition: int, records: Sequence[RawRecord]) -> int:
    """Write `records` to the partition in one batch, acknowledged by all replicas; returns the base offset."""
    batch = record_batch(records)
    body = (
        struct.pack(">hhi", _PRODUCE, _PRODUCE_VERSION, 1)
        + _string("hub-hostile-producer")
        + struct.pack(">hhi", -1, -1, 10_000)
        + struct.pack(">i", 1)
        + _string(topic)
        + struct.pack(">iii", 1, partition, len(batch))
        + batch
    )
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _read_exactly(connection, 4))[0]
        answer = _read_exactly(connection, size)
    # correlation id, topics [1], name, partitions [1], partition, error code, base offset
    name_length = struct.unpack(">h", answer[8:10])[0]
    at = 10 + name_length + 4
    _, error_code, base_offset = struct.unpack(">ihq", answer[at : at + 14])
    if error_code:
        raise RuntimeError(
            f"broker refused the raw batch for {topic} partition {partition}: error {error_code}"
        )
    return int(base_offset)


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection mid-answer")
        data += chunk
    return data


def hostile_records(values: st.SearchStrategy[bytes | None]) -> st.SearchStrategy[RawRecord]:
    """Records a misbehaving producer may write around `values`: null, empty and non-UTF-8 keys;
    header names and values of any bytes (not UTF-8, empty, repeated, null values); no timestamp, a
    negative one or one far off."""
    names = st.one_of(
        st.sampled_from([b"x-signature", b"authorization", b"traceparent", b"", b"\xff\xfe", b"sig\x80"]),
        st.binary(max_size=12),
    )
    header_values = st.one_of(st.none(), st.binary(max_size=24), st.sampled_from([b"\xff", b"sha256=\xc3"]))
    return st.builds(
        RawRecord,
        value=values,
        key=st.one_of(st.none(), st.just(b""), st.just(b"\xff\xfe\x00"), st.binary(max_size=16)),
        headers=st.lists(st.tuples(names, header_values), max_size=4),
        timestamp_ms=st.one_of(st.none(), st.integers(-(2**40), 2**44)),
    )
