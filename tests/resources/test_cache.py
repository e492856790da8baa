"""One behavioural suite for the Cache port, run against InProcessCache and against a real Redis.

Time never passes by sleeping: the in-process cache reads an injected clock, and on Redis
`advance` shortens every test key's remaining PTTL by the same amount (a non-positive PEXPIRE
deletes the key, exactly as expiry would).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from hub_pipelines.core.ports import Cache, CacheBatch
from hub_pipelines.core.retry import RetryableError
from hub_pipelines.resources.cache import CacheUnavailable, CacheValueError, InProcessCache, RedisCache
from tests.services import free_port
from tests.services.cutting_proxy import cutting_proxy


@dataclass
class CacheUnderTest:
    cache: Cache
    advance: Callable[[float], None]


def _in_process() -> CacheUnderTest:
    now = [1_000.0]
    cache = InProcessCache()
    cache.use_clock(lambda: now[0])

    def advance(seconds: float) -> None:
        now[0] += seconds

    return CacheUnderTest(cache, advance)


def _on_redis(url: str, client: redis.Redis, prefix: str) -> CacheUnderTest:
    def advance(seconds: float) -> None:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            remaining = client.pttl(key)
            if remaining > 0:
                client.pexpire(key, remaining - round(seconds * 1000))

    return CacheUnderTest(RedisCache(url=url, key_prefix=prefix), advance)


@pytest.fixture(params=["in_process", "redis"])
def subject(request: pytest.FixtureRequest) -> CacheUnderTest:
    if request.param == "in_process":
        return _in_process()
    return _on_redis(
        request.getfixturevalue("redis_server"),
        request.getfixturevalue("redis_client"),
        request.getfixturevalue("redis_key_prefix"),
    )


def test_get_returns_what_set_stored_and_none_for_a_missing_key(subject: CacheUnderTest) -> None:
    subject.cache.set("greeting", b"hello")
    assert subject.cache.get("greeting") == b"hello"
    assert subject.cache.get("never-set") is None


def test_key_is_readable_until_its_ttl_passes_and_gone_after(subject: CacheUnderTest) -> None:
    subject.cache.set("session", b"s1", ttl=100)
    subject.advance(90)
    assert subject.cache.get("session") == b"s1"
    subject.advance(20)
    assert subject.cache.get("session") is None


def test_set_without_ttl_makes_an_expiring_key_permanent(subject: CacheUnderTest) -> None:
    subject.cache.set("config", b"v1", ttl=100)
    subject.cache.set("config", b"v2")
    subject.advance(1_000)
    assert subject.cache.get("config") == b"v2"


def test_set_if_absent_sets_only_when_the_key_is_missing(subject: CacheUnderTest) -> None:
    assert subject.cache.set_if_absent("batch:42", b"first", ttl=100) is True
    assert subject.cache.set_if_absent("batch:42", b"second", ttl=100) is False
    assert subject.cache.get("batch:42") == b"first"
    subject.advance(110)
    assert subject.cache.set_if_absent("batch:42", b"third") is True
    assert subject.cache.get("batch:42") == b"third"


def test_incr_counts_from_zero_and_returns_the_new_value(subject: CacheUnderTest) -> None:
    assert subject.cache.incr("views") == 1
    assert subject.cache.incr("views", 5) == 6
    assert subject.cache.incr("views", -2) == 4
    assert subject.cache.get("views") == b"4"


def test_incr_without_ttl_keeps_the_expiry_an_earlier_write_gave(subject: CacheUnderTest) -> None:
    subject.cache.incr("minute:12:05", ttl=100)
    subject.advance(60)
    assert subject.cache.incr("minute:12:05") == 2
    subject.advance(50)
    assert subject.cache.get("minute:12:05") is None


def test_incr_with_ttl_restarts_the_expiry(subject: CacheUnderTest) -> None:
    subject.cache.incr("active", ttl=100)
    subject.advance(60)
    subject.cache.incr("active", ttl=100)
    subject.advance(60)
    assert subject.cache.get("active") == b"2"


def test_incr_of_a_non_integer_value_raises_cache_value_error(subject: CacheUnderTest) -> None:
    subject.cache.set("name", b"alice")
    with pytest.raises(CacheValueError, match="name"):
        subject.cache.incr("name")


def test_delete_removes_keys_and_counts_only_those_that_existed(subject: CacheUnderTest) -> None:
    subject.cache.set("a", b"1")
    subject.cache.set("b", b"2")
    assert subject.cache.delete("a", "b", "missing") == 2
    assert subject.cache.get("a") is None
    assert subject.cache.delete() == 0


def test_hll_count_is_within_two_percent_of_the_exact_distinct_count(subject: CacheUnderTest) -> None:
    users = [f"user-{n}" for n in range(10_000)]
    subject.cache.hll_add("dau", users[:6_000])
    subject.cache.hll_add("dau", users[3_000:])
    assert abs(subject.cache.hll_count("dau") - 10_000) <= 200


def test_hll_count_of_several_keys_counts_their_union(subject: CacheUnderTest) -> None:
    subject.cache.hll_add("visitors:mon", [f"u{n}" for n in range(0, 6_000)])
    subject.cache.hll_add("visitors:tue", [f"u{n}" for n in range(4_000, 10_000)])
    assert abs(subject.cache.hll_count("visitors:mon", "visitors:tue") - 10_000) <= 200
    assert subject.cache.hll_count("visitors:never") == 0


def test_hll_merge_adds_the_sources_members_once_and_sets_the_ttl(subject: CacheUnderTest) -> None:
    subject.cache.hll_add("visitors:10:00", [f"u{n}" for n in range(0, 600)])
    subject.cache.hll_add("visitors:10:01", [f"u{n}" for n in range(400, 1_000)])
    with subject.cache.batch() as batch:
        batch.hll_merge("visitors:10h", ["visitors:10:00", "visitors:10:01", "visitors:never"], ttl=100)
        batch.hll_merge("visitors:10h", ["visitors:10:01"], ttl=100)
    assert abs(subject.cache.hll_count("visitors:10h") - 1_000) <= 20
    assert abs(subject.cache.hll_count("visitors:10:00") - 600) <= 12
    subject.advance(110)
    assert subject.cache.hll_count("visitors:10h") == 0


def test_hll_expires_with_its_ttl(subject: CacheUnderTest) -> None:
    subject.cache.hll_add("uniques:hour", ["a", "b"], ttl=100)
    subject.advance(110)
    assert subject.cache.hll_count("uniques:hour") == 0


def test_zincr_accumulates_scores_and_ztop_ranks_highest_first(subject: CacheUnderTest) -> None:
    subject.cache.zincr("top-products", {"mug": 2, "shirt": 5, "hat": 1})
    subject.cache.zincr("top-products", {"mug": 4.5, "hat": 1})
    assert subject.cache.ztop("top-products", 2) == [("mug", 6.5), ("shirt", 5.0)]
    assert subject.cache.ztop("top-products", 10) == [("mug", 6.5), ("shirt", 5.0), ("hat", 2.0)]


def test_ztop_breaks_ties_in_reverse_member_order(subject: CacheUnderTest) -> None:
    subject.cache.zincr("ties", {"apple": 1, "banana": 1, "cherry": 3})
    assert subject.cache.ztop("ties", 3) == [("cherry", 3.0), ("banana", 1.0), ("apple", 1.0)]


def test_ztop_of_a_missing_key_or_of_zero_members_is_empty(subject: CacheUnderTest) -> None:
    subject.cache.zincr("ranked", {"x": 1})
    assert subject.cache.ztop("unranked", 5) == []
    assert subject.cache.ztop("ranked", 0) == []


def test_sorted_set_expires_with_its_ttl(subject: CacheUnderTest) -> None:
    subject.cache.zincr("trending", {"x": 1}, ttl=100)
    subject.advance(110)
    assert subject.cache.ztop("trending", 5) == []


def test_batch_applies_every_queued_write_when_the_block_exits(subject: CacheUnderTest) -> None:
    with subject.cache.batch() as batch:
        batch.incr("orders", 3, ttl=100)
        batch.hll_add("buyers", ["ann", "bob", "ann"])
        batch.zincr("revenue", {"eu": 10.0, "us": 20.0})
        batch.set("last-batch", b"b-7")
        batch.delete("stale")
        assert subject.cache.get("last-batch") is None
    assert subject.cache.get("orders") == b"3"
    assert subject.cache.hll_count("buyers") == 2
    assert subject.cache.ztop("revenue", 1) == [("us", 20.0)]
    assert subject.cache.get("last-batch") == b"b-7"
    subject.advance(110)
    assert subject.cache.get("orders") is None


def test_batch_sends_nothing_when_the_block_raises(subject: CacheUnderTest) -> None:
    with pytest.raises(RuntimeError, match="abandoned"), subject.cache.batch() as batch:
        batch.incr("orders", 3)
        raise RuntimeError("abandoned")
    assert subject.cache.get("orders") is None


def _queue_visit(batch: CacheBatch) -> None:
    """A counters-like batch: a counter, a distinct counter merged up, and a sorted set."""
    batch.incr("views", 3, ttl=100)
    batch.hll_add("visitors:minute", ["ann", "bob"], ttl=100)
    batch.hll_merge("visitors:hour", ["visitors:minute"], ttl=100)
    batch.zincr("pages", {"/home": 2, "/cart": 1}, ttl=100)


def _visit_applied(cache: Cache) -> bool | None:
    """True when one visit batch is in whole, False when none of it is, None for anything else."""
    whole = (b"3", 2, 2, [("/home", 2.0), ("/cart", 1.0)])
    found = (
        cache.get("views"),
        cache.hll_count("visitors:minute"),
        cache.hll_count("visitors:hour"),
        cache.ztop("pages", 5),
    )
    return True if found == whole else False if found == (None, 0, 0, []) else None


def test_write_once_applies_the_writes_with_the_marker_and_only_once(subject: CacheUnderTest) -> None:
    assert subject.cache.write_once("counted:b1", _queue_visit, ttl=100) is True
    assert subject.cache.write_once("counted:b1", _queue_visit, ttl=100) is False
    assert subject.cache.get("counted:b1") is not None
    assert _visit_applied(subject.cache) is True


def test_write_once_applies_again_once_the_marker_expired(subject: CacheUnderTest) -> None:
    assert subject.cache.write_once("counted:b1", lambda batch: batch.incr("views", ttl=1_000), ttl=100)
    subject.advance(110)
    assert subject.cache.write_once("counted:b1", lambda batch: batch.incr("views", ttl=1_000), ttl=100)
    assert subject.cache.get("views") == b"2"


def test_write_once_applies_nothing_and_sets_no_marker_when_queueing_raises(subject: CacheUnderTest) -> None:
    def half_queued(batch: CacheBatch) -> None:
        batch.incr("views", 3)
        raise RuntimeError("abandoned")

    with pytest.raises(RuntimeError, match="abandoned"):
        subject.cache.write_once("counted:b1", half_queued, ttl=100)
    assert subject.cache.get("views") is None
    assert subject.cache.get("counted:b1") is None


def test_write_once_into_a_key_of_another_kind_keeps_the_other_writes_and_the_marker(
    subject: CacheUnderTest,
) -> None:
    subject.cache.set("views", b"not a number")
    with pytest.raises(CacheValueError, match="views"):
        subject.cache.write_once("counted:b1", _queue_visit, ttl=100)
    assert subject.cache.get("counted:b1") is not None
    assert subject.cache.ztop("pages", 5) == [("/home", 2.0), ("/cart", 1.0)]


def test_write_once_from_concurrent_writers_applies_the_writes_once(subject: CacheUnderTest) -> None:
    writers = 8
    start = threading.Barrier(writers)

    def write() -> bool:
        start.wait()
        return subject.cache.write_once("counted:b1", _queue_visit, ttl=100)

    with ThreadPoolExecutor(max_workers=writers) as pool:
        applied = list(pool.map(lambda _: write(), range(writers)))
    assert applied.count(True) == 1
    assert _visit_applied(subject.cache) is True


def test_redis_write_once_cut_at_any_byte_leaves_all_writes_with_the_marker_or_none(
    redis_server: str, redis_key_prefix: str
) -> None:
    """The connection is cut at bytes spread over the whole exchange (WATCH, EXISTS, then MULTI, the
    marker, the writes, EXEC): every cut leaves the batch whole with its marker or absent without it,
    and one more call then makes it whole exactly once."""
    target = urlsplit(redis_server)
    with cutting_proxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:

        def through_proxy(name: str) -> RedisCache:
            return RedisCache(
                url=f"redis://127.0.0.1:{proxy.port}/0", key_prefix=f"{redis_key_prefix}{name}:"
            )

        measured = through_proxy("c000")
        measured.get("warm-up")
        before = proxy.request_bytes
        assert measured.write_once("counted:b1", _queue_visit, ttl=100) is True
        exchange = proxy.request_bytes - before
        offsets = sorted({*range(1, exchange, max(1, exchange // 24)), exchange - 1, exchange})
        outcomes = set()
        for index, offset in enumerate(offsets, start=1):
            cache = through_proxy(f"c{index:03d}")
            cache.get("warm-up")
            proxy.cut_after_bytes(offset)
            with contextlib.suppress(CacheUnavailable):
                cache.write_once("counted:b1", _queue_visit, ttl=100)
            assert proxy.cuts == index
            direct = RedisCache(url=redis_server, key_prefix=f"{redis_key_prefix}c{index:03d}:")
            applied = _visit_applied(direct)
            assert applied == (direct.get("counted:b1") is not None), (
                f"cut after {offset} of {exchange} bytes"
            )
            outcomes.add(applied)
            cache.write_once("counted:b1", _queue_visit, ttl=100)
            assert _visit_applied(direct) is True, f"cut after {offset} of {exchange} bytes, then retried"
    assert outcomes == {True, False}


def test_non_positive_ttl_is_refused(subject: CacheUnderTest) -> None:
    with pytest.raises(ValueError, match="ttl for cache key 'k'"):
        subject.cache.set("k", b"v", ttl=0)


class _CountingSends:
    """Counts how many times redis-py writes to a socket: one per round trip."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sends = 0
        original = redis.connection.AbstractConnection.send_packed_command

        def counting(connection: redis.connection.AbstractConnection, *args: Any, **kwargs: Any) -> None:
            self.sends += 1
            original(connection, *args, **kwargs)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda cache: cache.set("k", b"v", ttl=10), id="set"),
        pytest.param(lambda cache: cache.incr("k", 2, ttl=10), id="incr"),
        pytest.param(lambda cache: cache.hll_add("k", ["a", "b"], ttl=10), id="hll_add"),
        pytest.param(lambda cache: cache.zincr("k", {"a": 1, "b": 2}, ttl=10), id="zincr"),
        pytest.param(lambda cache: cache.set_if_absent("k", b"v", ttl=10), id="set_if_absent"),
    ],
)
def test_redis_write_with_ttl_is_one_round_trip(
    redis_server: str,
    redis_key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    write: Callable[[Cache], object],
) -> None:
    cache = RedisCache(url=redis_server, key_prefix=redis_key_prefix)
    cache.get("warm-up")
    counter = _CountingSends(monkeypatch)
    write(cache)
    assert counter.sends == 1
    assert 0 < cache.client().pttl(f"{redis_key_prefix}k") <= 10_000


def test_redis_batch_of_many_writes_is_one_round_trip(
    redis_server: str, redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = RedisCache(url=redis_server, key_prefix=redis_key_prefix)
    cache.get("warm-up")
    counter = _CountingSends(monkeypatch)
    with cache.batch() as batch:
        for minute in range(100):
            batch.incr(f"events:{minute}", 1, ttl=3600)
            batch.hll_add(f"users:{minute}", [f"u{minute}"], ttl=3600)
    assert counter.sends == 1
    assert cache.get("events:99") == b"1"


def test_unreachable_redis_raises_retryable_cache_unavailable_naming_the_server() -> None:
    port = free_port()
    cache = RedisCache(url=f"redis://127.0.0.1:{port}/0", connect_timeout=1.0)
    with pytest.raises(CacheUnavailable, match=f"127.0.0.1:{port}.*'views'") as raised:
        cache.incr("views")
    assert isinstance(raised.value, RetryableError)


def test_redis_client_is_shared_and_speaks_bytes(redis_server: str) -> None:
    cache = RedisCache(url=redis_server)
    assert cache.client() is cache.client()
    assert cache.client().connection_pool.connection_kwargs.get("decode_responses", False) is False
