"""Every interface in hub_pipelines, in one place: each `Protocol`, with the values and errors that cross it.

An external service (object storage, SQL database, warehouse, topics, cache, virus scanner, payment
gateway, customer channels, webhook, CDN, pager) has a local implementation (embedded, no servers) and
a real one (the production server) side by side in `hub_pipelines.resources`; the landing sinks,
the uploads' partitions and the rate limit's windows have theirs in `hub_pipelines.landing`,
`hub_pipelines.housekeeping` and `hub_pipelines.core.rate_limit`. Domain modules type against these
protocols only, so they never import Dagster or a client library. A new protocol goes here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

import msgspec

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from sqlalchemy import Connection, Engine

    from hub_pipelines.analytics.alerting import Alert
    from hub_pipelines.landing.counts import LandingCounts
    from hub_pipelines.landing.offsets import OffsetRange


@dataclass(frozen=True)
class ObjectInfo:
    """What object storage knows about one stored object."""

    key: str
    size: int
    etag: str
    last_modified: datetime
    content_type: str | None = None
    cache_control: str | None = None
    server_side_encryption: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


class ObjectNotFound(KeyError):
    """The object does not exist in the bucket."""


class BucketNotFound(LookupError):
    """The bucket does not exist: storage was not bootstrapped, or the name is wrong."""


@runtime_checkable
class ObjectStore(Protocol):
    """One bucket of object storage. Keys are '/'-separated; listing is in key order.

    Every call checks its keys (and a listing its prefix) against one rule,
    `hub_pipelines.resources.object_keys`, and raises its `InvalidObjectName` before touching storage.
    """

    bucket: str

    def put(
        self,
        key: str,
        data: bytes | IO[bytes],
        *,
        content_type: str | None = None,
        cache_control: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store bytes under key. `server_side_encryption` on the answer is the encryption the storage
        reports for the stored object (S3: requested on every write and verified), None when none."""
        ...

    def get(self, key: str) -> bytes: ...

    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object's bytes in chunks, without holding the whole object in memory."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """The object's info, or None when it does not exist."""
        ...

    def list_after(self, prefix: str, start_after: str | None = None, limit: int = 1000) -> list[ObjectInfo]:
        """Up to `limit` objects under prefix whose key sorts after `start_after`, in key order.

        Like S3's listing, each carries key, size, etag and last_modified only; `head` has the rest.
        """
        ...

    def copy(self, source_key: str, dest_key: str, dest_bucket: str | None = None) -> ObjectInfo:
        """Server-side copy, within this bucket or to another bucket of the same storage."""
        ...

    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing key is not an error."""
        ...


class ObjectStorage(Protocol):
    """The storage service: hands out one ObjectStore per bucket."""

    def bucket(self, name: str) -> ObjectStore: ...


class SqlDatabase(Protocol):
    """A SQL database reached through SQLAlchemy 2 (SQLite locally, PostgreSQL in production)."""

    @property
    def engine(self) -> Engine: ...

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        ...

    def transaction(
        self, isolation_level: str | None = None
    ) -> contextlib.AbstractContextManager[Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        ...


@dataclass(frozen=True)
class WarehouseLoan:
    """The warehouse lent to processes waiting for it, between two units of this process's work."""

    borrowers: tuple[str, ...]
    seconds: float

    def describe(self) -> str:
        return f"lent the warehouse for {self.seconds:.1f} s to {', '.join(self.borrowers)}"


class Warehouse(Protocol):
    """The analytics warehouse: ClickHouse's engine (chdb locally, a ClickHouse server in production)."""

    def lend_to_waiting_processes(self) -> WarehouseLoan | None:
        """Let the processes waiting to open the warehouse use it, and return once this one has it back;
        None when nobody waits (a server admits every process at once, so nobody ever does there)."""
        ...

    def execute(self, sql: str, parameters: Mapping[str, object] | None = None) -> None:
        """Run DDL or a statement that returns nothing."""
        ...

    def query_df(self, sql: str, parameters: Mapping[str, object] | None = None) -> pd.DataFrame: ...

    def query_arrow(self, sql: str, parameters: Mapping[str, object] | None = None) -> pa.Table:
        """The result as an Arrow table: for small results `to_pylist()` on it skips pandas altogether."""
        ...

    def query_arrow_with_rows(
        self, sql: str, rows: pa.Table, parameters: Mapping[str, object] | None = None
    ) -> pa.Table:
        """Run `sql` with `rows` sent along as a table it reads where it says `{sent_rows}` (ClickHouse's
        external data): how a query reads thousands of values without storing them first."""
        ...

    def insert_df(self, table: str, frame: pd.DataFrame, dedup_token: str | None = None) -> int:
        """Insert rows; a repeated insert with the same dedup_token is a no-op. Returns rows sent."""
        ...

    def insert_arrow(self, table: str, batch: pa.Table, dedup_token: str | None = None) -> int:
        """Insert rows as `insert_df` does; raises `WarehouseRowsRefused` when the rows themselves are refused."""
        ...


class WarehouseRowsRefused(RuntimeError):
    """The warehouse refused an insert for its rows' values (a CHECK constraint, a value it cannot store):
    the same rows are refused on every retry, unlike a connection or availability failure."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# Messages are msgspec structs, not dataclasses: a landing run creates one per message read, and a
# frozen dataclass's __init__ (object.__setattr__ per field) cost about 3 us each, more than decoding
# the event in it; a struct is built in C in a tenth of that.
class TopicMessage(msgspec.Struct, frozen=True, gc=False):
    """One message read from a topic partition. `unreadable_headers` says why its headers could not
    be read (then `headers` is empty): a sink that needs them dead-letters the message with it."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    headers: Mapping[str, bytes] = msgspec.field(default_factory=dict)
    timestamp_ms: int | None = None
    unreadable_headers: str | None = None


@dataclass(frozen=True)
class PartitionSpan:
    """What reading offsets start..end of a partition found.

    `messages` are the committed records in that range. `first_available` is the earliest offset the
    broker still held (retention or a delete may have moved it past `start`). `read_through` is the
    offset the reader got past: every offset below it and at or after `first_available` is in
    `messages` or holds nothing a consumer receives (a transaction marker, an aborted or compacted
    record). The range was read whole when `read_through >= end`.
    """

    messages: list[TopicMessage]
    first_available: int
    read_through: int


class OutgoingMessage(msgspec.Struct, frozen=True, gc=False):
    """One message to produce."""

    value: bytes
    key: bytes | None = None
    headers: Mapping[str, bytes] = msgspec.field(default_factory=dict)
    partition: int | None = None


class TopicUnavailable(ConnectionError):
    """The broker could not be reached or did not answer in time; the read can be retried."""


class UnknownTopic(KeyError):
    """The topic does not exist (create it first with `Topics.create_topic`)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown topic"


class Topics(Protocol):
    """A partitioned, append-only log with Kafka's semantics: partitions, offsets, consumer positions."""

    def create_topic(self, topic: str, partitions: int) -> None:
        """Create the topic if it does not exist."""
        ...

    def produce(self, topic: str, messages: Iterable[OutgoingMessage]) -> list[tuple[int, int]]:
        """Append messages durably (acks=all); returns (partition, offset) for each, in order."""
        ...

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset a read_committed consumer can read up to (the last stable offset:
        the high watermark, or the first offset of a transaction still open)."""
        ...

    def read_range(self, topic: str, partition: int, start: int, end: int) -> list[TopicMessage]:
        """Every committed message with start <= offset < end, in offset order."""
        ...

    def read_span(self, topic: str, partition: int, start: int, end: int) -> PartitionSpan:
        """Like read_range, and how far the reader got and where the partition now begins."""
        ...

    def commit(self, group: str, topic: str, positions: Mapping[int, int]) -> None:
        """Record a consumer group's next offset per partition."""
        ...

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """A consumer group's recorded next offset per partition (missing partitions start at 0)."""
        ...


class CacheBatch(Protocol):
    """Cache writes queued and sent together, in one round trip, when the batch block exits."""

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    def delete(self, *keys: str) -> None: ...

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> None: ...

    def hll_add(self, key: str, members: Sequence[str], ttl: float | None = None) -> None: ...

    def hll_merge(self, key: str, sources: Sequence[str], ttl: float | None = None) -> None:
        """Add the members of the `sources` distinct counters to `key`'s (missing sources count as empty)."""
        ...

    def zincr(self, key: str, increments: Mapping[str, float], ttl: float | None = None) -> None: ...


class Cache(Protocol):
    """Cache and real-time counters (in process locally, Redis in production). TTLs in seconds.

    A write with a ttl (re)sets the key's expiry; `set` without one makes the key permanent, while
    `incr`, `hll_add` and `zincr` without one keep whatever expiry the key already has.
    """

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Set only when the key is absent; True when this call set it (batch markers, locks)."""
        ...

    def delete(self, *keys: str) -> int: ...

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int: ...

    def hll_add(self, key: str, members: Sequence[str], ttl: float | None = None) -> None:
        """Add members to a HyperLogLog distinct counter."""
        ...

    def hll_count(self, *keys: str) -> int: ...

    def zincr(self, key: str, increments: Mapping[str, float], ttl: float | None = None) -> None:
        """Add to members' scores in a sorted set."""
        ...

    def ztop(self, key: str, n: int) -> list[tuple[str, float]]:
        """The n highest-scored members, highest first."""
        ...

    def batch(self) -> contextlib.AbstractContextManager[CacheBatch]:
        """Queue writes and send them together when the block exits; nothing is sent if it raises.

        Not a transaction in Redis: a concurrent reader may see part of a batch.
        """
        ...

    def write_once(self, marker: str, queue: Callable[[CacheBatch], None], ttl: float | None = None) -> bool:
        """Apply the writes `queue` puts in a batch and set `marker`, in one atomic step, unless `marker`
        is set already; True when this call applied them.

        Whatever happens to the connection, the writes are in exactly when the marker is: a call that
        raises applied all of them with the marker or none of them. False also covers a call whose
        writes went in but whose answer was lost.
        """
        ...


NOT_SCANNABLE = "not scannable: "


@dataclass(frozen=True)
class ScanVerdict:
    """A virus scanner's answer for one stream: clean only when scanned in full and nothing matched.

    When not clean, `signature` names the match (`Eicar-Test-Signature`) or, for a stream the scanner
    could not see in full, starts with "not scannable: " and names the limit (`not scannable: limit
    MaxFileSize`); both are rejected and quarantined alike.
    """

    clean: bool
    signature: str | None
    scanner: str
    scanned_bytes: int

    @property
    def reason(self) -> str:
        return "clean" if self.clean else rejection_reason(self.signature)


def rejection_reason(signature: str | None) -> str:
    """Why an unclean verdict was rejected: 'infected: <signature>' or the 'not scannable: ...' itself."""
    if signature and signature.startswith(NOT_SCANNABLE):
        return signature
    return f"infected: {signature}"


class ScannerUnavailable(ConnectionError):
    """The scanner could not be reached or timed out; the scan can be retried."""


class VirusScanner(Protocol):
    """Scans a stream of bytes and names the signature it matched."""

    def scan(self, chunks: Iterable[bytes], name: str) -> ScanVerdict: ...


PAID: Final = "paid"
DECLINED: Final = "declined"


@dataclass(frozen=True)
class ChargeRequest:
    order_id: str
    amount_minor: int
    currency: str
    customer_id: str
    payment_method: str | None = None

    @property
    def idempotency_key(self) -> str:
        return self.order_id


@dataclass(frozen=True)
class ChargeResult:
    """A definitive answer from the gateway: the money moved, or it never will for this attempt."""

    outcome: Literal["paid", "declined"]
    reference: str | None
    reason: str | None = None
    attempts: int = 1


class PaymentOutcomeUnknown(Exception):
    """The charge may or may not have happened (a timeout after sending, repeated 5xx, a concurrent
    request with the same key): the order waits in PAYMENT_UNKNOWN and is reconciled with the same key."""

    def __init__(self, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class ChargeOutcomeHidden(PaymentOutcomeUnknown):
    """The gateway keeps replaying a server error it saved for the order's key after it began executing,
    and finding the charge by the order id turned up none (yet: the gateway's search may lag). The
    order waits in PAYMENT_UNKNOWN and an operator is paged; only the same key is ever sent again, so
    the order is charged at most once."""


class GatewayUnavailable(Exception):
    """The charge was certainly not attempted (the circuit is open): the order stays RESERVED for later."""


class PaymentGateway(Protocol):
    """Charges an order (Stripe in production, a fake locally), keyed by the order id.

    A repeated charge with the same key must be the same charge (Stripe's idempotency keys are), which
    makes reconciliation safe: asking again with the same key returns the recorded outcome or makes the
    one and only charge.
    """

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge once per key; raises PaymentOutcomeUnknown or GatewayUnavailable when not definitive."""
        ...

    def find_charge(self, request: ChargeRequest) -> ChargeResult | None:
        """The final outcome of a charge already made for the order, found by its order id; None when
        the gateway shows none. Raises PaymentOutcomeUnknown when it cannot tell."""
        ...

    def breaker_state(self) -> str:
        """'closed', 'open' or 'half-open'."""
        ...


class NotificationNotSent(Exception):
    """The message certainly did not leave (refused before handing it over); a later run may retry."""


class NotificationChannel(Protocol):
    def send(self, recipient: str, subject: str, body: str) -> None: ...


class CustomerChannels(Protocol):
    """How customers are reached (the `customer_notifier` resource); the on-call pager is
    `Notifier`."""

    def channels(self) -> Mapping[str, NotificationChannel]:
        """The channels by name ('email', 'sms')."""
        ...


class WebhookUndeliverable(RuntimeError):
    """The receiver refused the delivery, or did not take it after the last try."""


@dataclass(frozen=True)
class WebhookDelivery:
    delivery_id: str
    status_code: int
    attempts: int


class Webhook(Protocol):
    """Announces what a workflow did to subscribers: signed HTTP POSTs, or a JSON-lines file locally."""

    def deliver(self, event: str, payload: Mapping[str, Any], delivery_id: str) -> WebhookDelivery:
        """Send one signed event; raises WebhookUndeliverable when it cannot be delivered."""
        ...


class Cdn(Protocol):
    """The CDN in front of the published buckets: URLs per variant, invalidation of replaced paths."""

    def urls_for(self, key: str, regions: Sequence[str]) -> dict[str, str]:
        """The public URLs of `key`: {"cdn": url} for one domain, else one per region."""
        ...

    def invalidate(self, keys: Sequence[str], caller_reference: str) -> list[str]:
        """Invalidate the paths of `keys`; returns the provider's invalidation ids (none for `none`)."""
        ...


class Notifier(Protocol):
    """Pages the on-call (PagerDuty and Slack in production, the log locally)."""

    def send(self, alerts: list[Alert]) -> int:
        """Deliver the alerts; returns how many were delivered (rate limits may hold some back)."""
        ...


class LandingSink(Protocol):
    """Where a topic's messages land, and the book of which offset ranges have landed."""

    def land_chunk(
        self, topic: str, chunk: OffsetRange, messages: Sequence[TopicMessage], run_id: str
    ) -> LandingCounts:
        """Land the messages of one chunk and record the chunk, atomically or idempotently.

        The chunk's offsets without a message are gaps. The parts of a chunk already recorded (by this
        or an overlapping landing) land nothing and count their messages as duplicates.
        """
        ...

    def book_lost(self, topic: str, lost: OffsetRange, run_id: str) -> LandingCounts:
        """Record offsets deleted upstream before they were read (the parts not recorded yet)."""
        ...

    def landed_positions(self, topic: str) -> dict[int, int]:
        """Per partition, where its booked offsets stop being contiguous: every offset from its first
        booked range up to the position is booked. A range booked ahead of a gap (a CLI run given
        explicit ranges) counts once the gap is booked, so a landing planned from here lands the gap."""
        ...

    def landed_ranges(self, topic: str) -> list[tuple[OffsetRange, LandingCounts]]:
        """The book, in offset order, each offset counted once."""
        ...


@runtime_checkable
class ChunkGroupSink(LandingSink, Protocol):
    """A sink that lands several chunks in one pass, each booked as `land_chunk` would book it.

    Decoding is apart from landing, so the next chunks can be decoded while these land.
    """

    def decode_chunks(self, chunks: Sequence[tuple[OffsetRange, Sequence[TopicMessage]]]) -> Any:
        """Everything about the chunks that does not depend on what has landed before them."""
        ...

    def land_decoded(self, topic: str, decoded: Any, run_id: str) -> list[LandingCounts]: ...


class UploadPartitions(Protocol):
    """The uploads' dynamic partitions as the Dagster instance holds them."""

    def in_flight(self) -> set[str]:
        """Partition keys of media runs queued or running now."""
        ...

    def remove(self, partition_key: str) -> None: ...

    def add(self, partition_key: str) -> None: ...


class SpendOnceWindows(Protocol):
    """A sliding window per key that spends each token at most once (Redis in production)."""

    def spend_once(self, key: str, token: str, limit: int, window_s: int) -> bool: ...
