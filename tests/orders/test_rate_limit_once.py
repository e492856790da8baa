"""The per-customer rate limit spent once per order: in memory and in Redis alike."""

from __future__ import annotations

import uuid

import pytest

from hub_pipelines.core.rate_limit import RateLimiter


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest) -> RateLimiter:
    if request.param == "memory":
        return RateLimiter("3/minute", "memory://", namespace=f"test-{uuid.uuid4().hex[:12]}")
    url = request.getfixturevalue("redis_server")
    return RateLimiter("3/minute", url, namespace=request.getfixturevalue("redis_key_prefix"))


def test_a_token_spends_the_budget_once_however_often_it_is_presented(limiter: RateLimiter) -> None:
    assert [limiter.spend_once("c-1", "order-a") for _ in range(5)] == [True] * 5
    assert [limiter.spend_once("c-1", f"order-{n}") for n in "bcd"] == [True, True, False]
    assert limiter.spend_once("c-1", "order-a") is True
    assert limiter.spend_once("c-2", "order-d") is True


def test_a_refused_token_spends_nothing_and_is_asked_again(limiter: RateLimiter) -> None:
    for token in ("a", "b", "c"):
        assert limiter.spend_once("c-1", token)
    assert [limiter.spend_once("c-1", "d") for _ in range(3)] == [False] * 3
    assert limiter.spend_once("c-3", "d") is True
