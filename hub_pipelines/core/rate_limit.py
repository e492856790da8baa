"""Rate limits shared by every process that uses the same storage, built on the `limits` library.

`RateLimiter(rate="100/minute", storage_uri="redis://host:6379/0")` gives every process pointed at
that Redis one budget per key; `storage_uri="memory://"` (the default) keeps the budget in this
process, for local runs and tests. The default strategy is the moving window: at most `rate` hits
in any window of that length, with no burst at window boundaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

# `limits` loads with the first limiter: resources that hold one are defined in every process.
if TYPE_CHECKING:
    from limits import RateLimitItem, strategies

Strategy = Literal["moving-window", "fixed-window", "sliding-window-counter"]


def _limiter_classes() -> dict[str, type[strategies.RateLimiter]]:
    from limits import strategies

    return {
        "moving-window": strategies.MovingWindowRateLimiter,
        "fixed-window": strategies.FixedWindowRateLimiter,
        "sliding-window-counter": strategies.SlidingWindowCounterRateLimiter,
    }


class RateLimited(RuntimeError):
    """A call was refused because its key has used up its budget for the current window."""


class RateLimiter:
    """A budget of `rate` hits per window for each key (e.g. one per customer or per API)."""

    def __init__(
        self,
        rate: str = "100/minute",
        storage_uri: str = "memory://",
        *,
        namespace: str = "hub",
        strategy: Strategy = "moving-window",
        storage_options: Mapping[str, float | str | bool] | None = None,
    ) -> None:
        """`storage_options` go to the storage's client, e.g. {"socket_timeout": 1.0} for Redis."""
        from limits import parse, storage

        try:
            self.limit: RateLimitItem = parse(rate)
        except ValueError as bad:
            raise ValueError(f"rate limit {rate!r} is not of the form '<count>/<period>': {bad}") from bad
        limiter_classes = _limiter_classes()
        if strategy not in limiter_classes:
            raise ValueError(f"rate limit strategy {strategy!r} is not one of {sorted(limiter_classes)}")
        self.rate = rate
        self.namespace = namespace
        options = dict(storage_options or {})
        if storage_uri.startswith(("redis://", "rediss://")):
            # redis-py waits forever by default; a hung Redis must not hang every rate-limited call.
            options.setdefault("socket_timeout", 2.0)
            options.setdefault("socket_connect_timeout", 2.0)
        self._storage = storage.storage_from_string(storage_uri, **options)
        self._limiter = limiter_classes[strategy](self._storage)

    def hit(self, key: str, cost: int = 1) -> bool:
        """Spend `cost` from key's budget; False (and nothing spent) when it would exceed it."""
        return self._limiter.hit(self.limit, self.namespace, key, cost=cost)

    def acquire(self, key: str, cost: int = 1) -> None:
        """Spend `cost` from key's budget or raise RateLimited."""
        if not self.hit(key, cost):
            raise RateLimited(
                f"rate limit {self.rate} for {key!r} is used up; the window resets at "
                f"{self.reset_at(key):.0f} (Unix time)"
            )

    def test(self, key: str, cost: int = 1) -> bool:
        """Whether `cost` could be spent now, without spending it."""
        return self._limiter.test(self.limit, self.namespace, key, cost=cost)

    def remaining(self, key: str) -> int:
        """Hits left in key's current window."""
        return max(0, self._limiter.get_window_stats(self.limit, self.namespace, key).remaining)

    def reset_at(self, key: str) -> float:
        """Unix time at which key's window frees budget again."""
        return self._limiter.get_window_stats(self.limit, self.namespace, key).reset_time

    def clear(self, key: str) -> None:
        """Forget key's spending (an operator lifting a limit)."""
        self._limiter.clear(self.limit, self.namespace, key)
