"""The Cache port: in process for local runs and tests, Redis in production.

Both follow Redis's semantics, so code tested locally behaves the same against the server: a write
with a ttl (re)sets the key's expiry, `set` without one makes the key permanent, counter writes
without one keep the key's expiry; `hll_count` of several keys counts their union; ties in `ztop`
come in reverse member order. The in-process HyperLogLog is an exact set (Redis's is within about
1% of exact).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import PrivateAttr

from hub_pipelines.core.ports import CacheBatch
from hub_pipelines.core.retry import RetryableError

# redis-py loads with the first RedisCache client: the local cache never needs it.
if TYPE_CHECKING:
    import redis

_SWEEP_EVERY_WRITES = 1024


class CacheValueError(ValueError):
    """A key holds a value of another kind than the operation needs (e.g. incr on non-numeric bytes)."""


class CacheUnavailable(RetryableError, ConnectionError):
    """The cache server could not be reached or did not answer in time; the call can be retried."""


@dataclass(frozen=True)
class CacheWrite:
    """One queued write, as `batch()` records it."""

    kind: Literal["set", "delete", "incr", "hll_add", "hll_merge", "zincr"]
    keys: tuple[str, ...]
    value: bytes = b""
    amount: int = 0
    members: tuple[str, ...] = ()
    increments: tuple[tuple[str, float], ...] = ()
    ttl: float | None = None


class QueuedWrites(CacheBatch):
    """The CacheBatch handed out by `batch()`: it only records writes, in order."""

    def __init__(self) -> None:
        self.writes: list[CacheWrite] = []

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.writes.append(CacheWrite("set", (key,), value=bytes(value), ttl=_checked_ttl(key, ttl)))

    def delete(self, *keys: str) -> None:
        self.writes.append(CacheWrite("delete", keys))

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> None:
        self.writes.append(CacheWrite("incr", (key,), amount=int(amount), ttl=_checked_ttl(key, ttl)))

    def hll_add(self, key: str, members: Sequence[str], ttl: float | None = None) -> None:
        self.writes.append(CacheWrite("hll_add", (key,), members=tuple(members), ttl=_checked_ttl(key, ttl)))

    def hll_merge(self, key: str, sources: Sequence[str], ttl: float | None = None) -> None:
        self.writes.append(CacheWrite("hll_merge", (key, *sources), ttl=_checked_ttl(key, ttl)))

    def zincr(self, key: str, increments: Mapping[str, float], ttl: float | None = None) -> None:
        pairs = tuple((member, float(score)) for member, score in increments.items())
        self.writes.append(CacheWrite("zincr", (key,), increments=pairs, ttl=_checked_ttl(key, ttl)))


def _queued_with_marker(
    marker: str, queue: Callable[[CacheBatch], None], ttl: float | None
) -> list[CacheWrite]:
    """The marker's write followed by the writes `queue` puts in a batch."""
    batch = QueuedWrites()
    batch.set(marker, b"1", ttl)
    queue(batch)
    return batch.writes


def _checked_ttl(key: str, ttl: float | None) -> float | None:
    if ttl is not None and not ttl > 0:
        raise ValueError(f"ttl for cache key {key!r} must be positive seconds or None, got {ttl!r}")
    return ttl


class _WritesThroughBatch:
    """The Cache write methods, each expressed as a one-write batch applied by `_apply`."""

    def _apply(self, writes: Sequence[CacheWrite]) -> list[Any]:
        raise NotImplementedError

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        batch = QueuedWrites()
        batch.set(key, value, ttl)
        self._apply(batch.writes)

    def delete(self, *keys: str) -> int:
        batch = QueuedWrites()
        batch.delete(*keys)
        return int(self._apply(batch.writes)[0] or 0)

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        batch = QueuedWrites()
        batch.incr(key, amount, ttl)
        return int(self._apply(batch.writes)[0])

    def hll_add(self, key: str, members: Sequence[str], ttl: float | None = None) -> None:
        batch = QueuedWrites()
        batch.hll_add(key, members, ttl)
        self._apply(batch.writes)

    def zincr(self, key: str, increments: Mapping[str, float], ttl: float | None = None) -> None:
        batch = QueuedWrites()
        batch.zincr(key, increments, ttl)
        self._apply(batch.writes)

    @contextlib.contextmanager
    def batch(self) -> Iterator[CacheBatch]:
        queued = QueuedWrites()
        yield queued
        if queued.writes:
            self._apply(queued.writes)


@dataclass
class _Entry:
    value: bytes | set[str] | dict[str, float]
    expires_at: float | None


@dataclass
class _Data:
    entries: dict[str, _Entry] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    clock: Callable[[], float] = time.monotonic
    writes: Iterator[int] = field(default_factory=itertools.count)


_shared_data: dict[str, _Data] = {}
_shared_data_lock = threading.Lock()


class InProcessCache(_WritesThroughBatch, dg.ConfigurableResource):
    """A thread-safe cache in this process's memory, with Redis's semantics.

    Dagster builds a fresh copy of a resource for each run, so by default each copy starts empty.
    Instances (and copies) with the same `shared_name` share one store for the life of the process,
    e.g. the test's instance and the copy an asset got from `dg.materialize`. Expired keys are
    dropped when read and swept now and then on writes.
    """

    shared_name: str | None = None

    _own_data: _Data | None = PrivateAttr(default=None)

    @property
    def _data(self) -> _Data:
        with _shared_data_lock:
            if self.shared_name is not None:
                return _shared_data.setdefault(self.shared_name, _Data())
            if self._own_data is None:
                self._own_data = _Data()
            return self._own_data

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Measure TTLs with `clock` (seconds) instead of time.monotonic: tests move time forward."""
        with self._data.lock:
            self._data.clock = clock

    def get(self, key: str) -> bytes | None:
        with self._data.lock:
            entry = self._live(key)
            if entry is None:
                return None
            return self._bytes_of(key, entry)

    def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        _checked_ttl(key, ttl)
        with self._data.lock:
            if self._live(key) is not None:
                return False
            self._data.entries[key] = _Entry(bytes(value), self._expiry(ttl))
            return True

    def hll_count(self, *keys: str) -> int:
        with self._data.lock:
            union: set[str] = set()
            for key in keys:
                entry = self._live(key)
                if entry is not None:
                    union |= self._set_of(key, entry)
            return len(union)

    def write_once(self, marker: str, queue: Callable[[CacheBatch], None], ttl: float | None = None) -> bool:
        queued = _queued_with_marker(marker, queue, ttl)
        with self._data.lock:
            if self._live(marker) is not None:
                return False
            # As in a Redis transaction, a write refused for its key's kind does not undo the others.
            refused: list[CacheValueError] = []
            for write in queued:
                try:
                    self._write(write)
                except CacheValueError as error:
                    refused.append(error)
            if refused:
                raise refused[0]
            return True

    def ztop(self, key: str, n: int) -> list[tuple[str, float]]:
        with self._data.lock:
            entry = self._live(key)
            if entry is None or n <= 0:
                return []
            scores = self._scores_of(key, entry)
            ranked = sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)
            return ranked[:n]

    def _apply(self, writes: Sequence[CacheWrite]) -> list[Any]:
        with self._data.lock:
            results = [self._write(write) for write in writes]
            if next(self._data.writes) % _SWEEP_EVERY_WRITES == 0:
                self._sweep()
            return results

    def _write(self, write: CacheWrite) -> Any:
        if write.kind == "delete":
            found = [key for key in write.keys if self._live(key) is not None]
            for key in found:
                del self._data.entries[key]
            return len(found)
        key = write.keys[0]
        if write.kind == "set":
            self._data.entries[key] = _Entry(write.value, self._expiry(write.ttl))
            return None
        entry = self._live(key)
        if write.kind == "incr":
            current = 0 if entry is None else self._integer_of(key, entry)
            self._updated(key, entry, str(current + write.amount).encode(), write.ttl)
            return current + write.amount
        if write.kind in ("hll_add", "hll_merge"):
            members = set() if entry is None else self._set_of(key, entry)
            members.update(write.members)
            for source in write.keys[1:]:
                source_entry = self._live(source)
                if source_entry is not None:
                    members.update(self._set_of(source, source_entry))
            self._updated(key, entry, members, write.ttl)
            return None
        if entry is None and not write.increments:
            return None
        scores = {} if entry is None else self._scores_of(key, entry)
        for member, increment in write.increments:
            scores[member] = scores.get(member, 0.0) + increment
        self._updated(key, entry, scores, write.ttl)
        return None

    def _updated(
        self, key: str, entry: _Entry | None, value: bytes | set[str] | dict[str, float], ttl: float | None
    ) -> None:
        expires_at = self._expiry(ttl) if ttl is not None else (entry.expires_at if entry else None)
        self._data.entries[key] = _Entry(value, expires_at)

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._data.clock() + ttl

    def _live(self, key: str) -> _Entry | None:
        entry = self._data.entries.get(key)
        if entry is not None and entry.expires_at is not None and self._data.clock() >= entry.expires_at:
            del self._data.entries[key]
            return None
        return entry

    def _sweep(self) -> None:
        now = self._data.clock()
        expired = [
            k for k, e in self._data.entries.items() if e.expires_at is not None and now >= e.expires_at
        ]
        for key in expired:
            del self._data.entries[key]

    @staticmethod
    def _bytes_of(key: str, entry: _Entry) -> bytes:
        if not isinstance(entry.value, bytes):
            raise CacheValueError(f"cache key {key!r} holds a {_kind(entry)}, not bytes")
        return entry.value

    @classmethod
    def _integer_of(cls, key: str, entry: _Entry) -> int:
        raw = cls._bytes_of(key, entry)
        try:
            return int(raw)
        except ValueError:
            raise CacheValueError(f"cache key {key!r} holds {raw[:40]!r}, not an integer") from None

    @staticmethod
    def _set_of(key: str, entry: _Entry) -> set[str]:
        if not isinstance(entry.value, set):
            raise CacheValueError(f"cache key {key!r} holds a {_kind(entry)}, not a distinct counter")
        return entry.value

    @staticmethod
    def _scores_of(key: str, entry: _Entry) -> dict[str, float]:
        if not isinstance(entry.value, dict):
            raise CacheValueError(f"cache key {key!r} holds a {_kind(entry)}, not a sorted set")
        return entry.value


def _kind(entry: _Entry) -> str:
    return {bytes: "bytes value", set: "distinct counter", dict: "sorted set"}[type(entry.value)]


class RedisCache(_WritesThroughBatch, dg.ConfigurableResource):
    """The cache on a Redis server (redis-py over a connection pool).

    Every call is one round trip: a write with a ttl sends its command and PEXPIRE in one
    pipeline, and `batch()` sends all its writes in one pipeline. `write_once` takes three: WATCH
    and EXISTS on the marker, then MULTI, the marker, the writes and EXEC in one pipeline, which
    Redis applies whole or, when the connection dies before EXEC arrives, not at all.
    `key_prefix` is prepended to every key, so several deployments (or tests) can share a server. The client does not retry on
    its own (a repeated INCR after a lost reply would count twice); `CacheUnavailable` is a
    RetryableError for callers whose writes are safe to repeat.
    """

    url: str
    key_prefix: str = ""
    socket_timeout: float = 2.0
    connect_timeout: float = 2.0
    max_connections: int = 32
    health_check_interval: int = 30

    _client: redis.Redis | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def client(self) -> redis.Redis:
        """The shared redis-py client (bytes in, bytes out), e.g. for breakers and rate limits."""
        import redis

        with self._client_lock:
            if self._client is None:
                pool = redis.ConnectionPool.from_url(
                    self.url,
                    max_connections=self.max_connections,
                    socket_timeout=self.socket_timeout,
                    socket_connect_timeout=self.connect_timeout,
                    health_check_interval=self.health_check_interval,
                )
                self._client = redis.Redis(connection_pool=pool)
            return self._client

    def get(self, key: str) -> bytes | None:
        with self._translated("get", key):
            value = self.client().get(self.key_prefix + key)
        return None if value is None else bytes(value)

    def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        ttl_ms = _milliseconds(_checked_ttl(key, ttl))
        with self._translated("set_if_absent", key):
            return bool(self.client().set(self.key_prefix + key, value, nx=True, px=ttl_ms))

    def hll_count(self, *keys: str) -> int:
        if not keys:
            return 0
        with self._translated("hll_count", keys[0]):
            return int(self.client().pfcount(*(self.key_prefix + key for key in keys)))

    def ztop(self, key: str, n: int) -> list[tuple[str, float]]:
        if n <= 0:
            return []
        with self._translated("ztop", key):
            ranked = self.client().zrevrange(self.key_prefix + key, 0, n - 1, withscores=True)
        return [(member.decode(), float(score)) for member, score in ranked]

    def write_once(self, marker: str, queue: Callable[[CacheBatch], None], ttl: float | None = None) -> bool:
        import redis

        queued = _queued_with_marker(marker, queue, ttl)
        key = self.key_prefix + marker
        with self._translated("write_once", marker), self.client().pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                if pipe.exists(key):
                    return False
                pipe.multi()
                for write in queued:
                    self._queue(pipe, write)
                pipe.execute()
                return True
            except redis.WatchError:
                pass
        # Another writer set the marker after our look, or the connection died while watching (redis-py
        # reports both as WatchError): the marker tells whether the transaction, ours or theirs, went in.
        with self._translated("write_once", marker):
            if self.client().exists(key):
                return False
        raise CacheUnavailable(
            f"redis at {self._address()} lost the connection during write_once of {marker!r}; nothing was applied"
        )

    def _apply(self, writes: Sequence[CacheWrite]) -> list[Any]:
        pipe = self.client().pipeline(transaction=False)
        first_reply: list[int | None] = []
        for write in writes:
            queued_before = len(pipe)
            first_reply.append(queued_before if self._queue(pipe, write) else None)
        with self._translated(writes[0].kind, writes[0].keys[0] if writes[0].keys else ""):
            replies = pipe.execute() if len(pipe) else []
        return [None if index is None else replies[index] for index in first_reply]

    def _queue(self, pipe: Any, write: CacheWrite) -> bool:
        """Queue the commands for one write; False when it needs none."""
        keys = [self.key_prefix + key for key in write.keys]
        if write.kind == "delete":
            if not keys:
                return False
            pipe.delete(*keys)
            return True
        key = keys[0]
        ttl_ms = _milliseconds(write.ttl)
        if write.kind == "set":
            pipe.set(key, write.value, px=ttl_ms)
            return True
        if write.kind == "incr":
            pipe.incrby(key, write.amount)
        elif write.kind == "hll_add":
            pipe.pfadd(key, *write.members)
        elif write.kind == "hll_merge":
            pipe.pfmerge(key, *keys[1:])
        else:
            if not write.increments and ttl_ms is None:
                return False
            for member, increment in write.increments:
                pipe.zincrby(key, increment, member)
        if ttl_ms is not None:
            pipe.pexpire(key, ttl_ms)
        return True

    @contextlib.contextmanager
    def _translated(self, operation: str, key: str) -> Iterator[None]:
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as down:
            raise CacheUnavailable(
                f"redis at {self._address()} failed during {operation} of {key!r}: {down}"
            ) from down
        except redis.ResponseError as refused:
            if "WRONGTYPE" in str(refused) or "not an integer" in str(refused):
                raise CacheValueError(f"redis cache {operation} of {key!r} refused: {refused}") from refused
            raise

    def _address(self) -> str:
        options = self.client().connection_pool.connection_kwargs
        where = options.get("path") or f"{options.get('host', '?')}:{options.get('port', '?')}"
        return f"{where}/{options.get('db', 0)}"


def _milliseconds(ttl: float | None) -> int | None:
    return None if ttl is None else max(1, math.ceil(ttl * 1000))
