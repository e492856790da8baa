"""Rate limits: a budget per key and window, in memory and shared by processes through Redis."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from hub_pipelines.core.rate_limit import RateLimited, RateLimiter

REPO_ROOT = Path(__file__).resolve().parents[2]

LimiterFactory = Callable[..., RateLimiter]


@pytest.fixture(params=["memory", "redis"])
def limiters(request: pytest.FixtureRequest) -> LimiterFactory:
    if request.param == "memory":
        namespace = f"test-{uuid.uuid4().hex[:12]}:"
        return lambda rate, **kw: RateLimiter(rate, "memory://", namespace=namespace, **kw)
    url = request.getfixturevalue("redis_server")
    namespace = request.getfixturevalue("redis_key_prefix")
    return lambda rate, **kw: RateLimiter(rate, url, namespace=namespace, **kw)


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window", "sliding-window-counter"])
def test_allows_the_budget_then_refuses_within_the_window(limiters: LimiterFactory, strategy: str) -> None:
    limiter = limiters("5/minute", strategy=strategy)
    assert [limiter.hit("stripe") for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.remaining("stripe") == 0
    assert limiter.test("stripe") is False


def test_each_key_has_its_own_budget(limiters: LimiterFactory) -> None:
    limiter = limiters("2/minute")
    assert [limiter.hit("customer-1") for _ in range(3)] == [True, True, False]
    assert limiter.hit("customer-2") is True


def test_test_and_remaining_do_not_spend_the_budget(limiters: LimiterFactory) -> None:
    limiter = limiters("3/minute")
    limiter.hit("geo-api")
    for _ in range(5):
        assert limiter.test("geo-api") is True
    assert limiter.remaining("geo-api") == 2


def test_a_refused_hit_spends_nothing(limiters: LimiterFactory) -> None:
    limiter = limiters("3/minute")
    limiter.hit("geo-api", cost=2)
    assert limiter.hit("geo-api", cost=2) is False
    assert limiter.remaining("geo-api") == 1
    assert limiter.hit("geo-api") is True


def test_acquire_raises_rate_limited_naming_the_key_and_the_rate(limiters: LimiterFactory) -> None:
    limiter = limiters("1/minute")
    limiter.acquire("exchange-rates")
    with pytest.raises(RateLimited, match=r"rate limit 1/minute for 'exchange-rates' is used up"):
        limiter.acquire("exchange-rates")


def test_window_resets_no_later_than_one_window_from_now(limiters: LimiterFactory) -> None:
    limiter = limiters("1/minute")
    limiter.hit("exchange-rates")
    assert time.time() - 1 < limiter.reset_at("exchange-rates") <= time.time() + 61


def test_clear_gives_the_key_its_full_budget_back(limiters: LimiterFactory) -> None:
    limiter = limiters("2/minute")
    limiter.hit("search")
    limiter.hit("search")
    limiter.clear("search")
    assert limiter.remaining("search") == 2
    assert limiter.hit("search") is True


def test_malformed_rate_is_refused_with_its_text() -> None:
    with pytest.raises(ValueError, match="'lots per minute'"):
        RateLimiter("lots per minute")


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="'leaky-bucket'"):
        RateLimiter("1/second", strategy="leaky-bucket")  # type: ignore[arg-type]


HIT_IN_CHILD = """
import sys
from hub_pipelines.core.rate_limit import RateLimiter

url, namespace, hits = sys.argv[1], sys.argv[2], int(sys.argv[3])
limiter = RateLimiter("10/minute", url, namespace=namespace)
print(" ".join(str(limiter.hit("stripe")) for _ in range(hits)))
"""


def test_two_processes_share_one_redis_budget(redis_server: str, redis_key_prefix: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", HIT_IN_CHILD, redis_server, redis_key_prefix, "6"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["True"] * 6
    here = RateLimiter("10/minute", redis_server, namespace=redis_key_prefix)
    assert [here.hit("stripe") for _ in range(5)] == [True] * 4 + [False]
