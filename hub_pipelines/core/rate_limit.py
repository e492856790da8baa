"""Rate limits shared by every process that uses the same storage, built on the `limits` library.

`RateLimiter(rate="100/minute", storage_uri="redis://host:6379/0")` gives every process pointed at
that Redis one budget per key; `storage_uri="memory://"` (the default) keeps the budget in this
process, for local runs and tests. The default strategy is the moving window: at most `rate` hits
in any window of that length, with no burst at window boundaries.

`spend_once(key, token)` is the moving window made idempotent: a token (a payment's event or order
id) spends from the budget at most once, however often it is presented, from however many processes
(a rerun after a crash, two overlapping runs). `limits` counts hits, not their ids, so this one
decision is ours: in Redis a Lua script keeps each key's window as a sorted set of tokens and
remembers every spending token for a day beyond the window, atomically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

# `limits` and redis-py load with the first limiter: resources that hold one are defined in every process.
if TYPE_CHECKING:
    from limits import RateLimitItem, strategies

    from hub_pipelines.core.ports import SpendOnceWindows

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


class RateLimitStoreUnavailable(RuntimeError):
    """The store holding the budgets (Redis) did not answer: no decision could be made."""


REMEMBER_SPENT_S = 86_400
"""How long a token that spent is remembered beyond its window (reruns come within hours)."""

# KEYS: the window (sorted set of tokens by time in ms), the token's marker. ARGV: window ms, limit,
# token, seconds to remember the marker. 1 when the token may pass (it spends now or spent before).
_SPEND_ONCE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], now, 'EX', ARGV[4])
return 1
"""


class _RedisOnceWindows:
    def __init__(self, uri: str, options: Mapping[str, float | str | bool]) -> None:
        import redis

        settings: dict[str, Any] = dict(options)
        client = redis.Redis.from_url(uri, **settings)
        self._script = client.register_script(_SPEND_ONCE)

    def spend_once(self, key: str, token: str, limit: int, window_s: int) -> bool:
        import redis

        keys = [f"{key}:once-window", f"{key}:once-spent:{token}"]
        try:
            return bool(
                self._script(keys=keys, args=[window_s * 1000, limit, token, window_s + REMEMBER_SPENT_S])
            )
        except redis.RedisError as failed:
            raise RateLimitStoreUnavailable(
                f"rate limit store did not answer for {key!r}: {failed}"
            ) from failed


class _MemoryOnceWindows:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, dict[str, float]] = {}
        self._spent: dict[str, float] = {}

    def spend_once(self, key: str, token: str, limit: int, window_s: int) -> bool:
        now = time.time()
        with self._lock:
            marker = f"{key}:{token}"
            if self._spent.get(marker, 0.0) > now:
                return True
            window = {t: at for t, at in self._windows.get(key, {}).items() if at > now - window_s}
            self._windows[key] = window
            if len(window) >= limit:
                return False
            window[token] = now
            self._spent[marker] = now + window_s + REMEMBER_SPENT_S
            return True


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
        self._storage = storage.storage_from_string(storage_uri, wrap_exceptions=True, **options)
        self._limiter = limiter_classes[strategy](self._storage)
        self._once: SpendOnceWindows | None = None
        if storage_uri.startswith(("redis://", "rediss://")):
            self._once = _RedisOnceWindows(storage_uri, options)
        elif storage_uri.startswith("memory://"):
            self._once = _MemoryOnceWindows()

    def hit(self, key: str, cost: int = 1) -> bool:
        """Spend `cost` from key's budget; False (and nothing spent) when it would exceed it."""
        from limits.errors import StorageError

        try:
            return self._limiter.hit(self.limit, self.namespace, key, cost=cost)
        except StorageError as failed:
            raise RateLimitStoreUnavailable(
                f"rate limit store did not answer for {key!r}: {failed}"
            ) from failed

    def spend_once(self, key: str, token: str) -> bool:
        """Spend one from key's budget for `token` unless it spent already: True when the token may
        pass (now or before), False (nothing spent) when the budget is used up. Always a moving window."""
        if self._once is None:
            raise ValueError("spend_once needs a redis:// or memory:// rate limit store")
        return self._once.spend_once(
            f"{self.namespace}:{key}", token, self.limit.amount, self.limit.get_expiry()
        )

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
