"""How many calls may be in flight at once, learned from their latency (TCP Vegas, as in Netflix's
concurrency-limits `VegasLimit`).

A fixed pool size fits one latency only: when the work behind a call is CPU-bound, calls beyond what
the cores serve only queue (latency up, no throughput); when it waits on a slow remote, in-flight
calls must grow with its latency (Little's law). The limiter compares each call's latency with the
lowest seen (the no-load latency) and estimates how many calls are queueing:
`queue = limit * (1 - no_load / latency)`. Few queueing -> raise the limit; many -> lower it.
The no-load latency is forgotten every `probe_every_limits * limit` samples and learned again, so a
remote that became slower for good raises the baseline instead of pinning the limit at its floor.

Written here rather than taken from PyPI: what is there (aimd-limiter, aioadaptive) limits asyncio
tasks only, or (ace-concurrency) steers by CPU and memory gauges rather than call latency; each is a
single 0.1 release. Deterministic: the caller measures latency and passes it in, so tests feed it
synthetic latencies.
"""

from __future__ import annotations

import math
import threading


class ConcurrencyLimitError(ValueError):
    """The limiter's bounds or thresholds are inconsistent."""


class VegasLimiter:
    """Admits up to `limit` calls at once, `min_limit <= limit <= max_limit`; `acquire()` blocks
    until a call may start, `release(latency_s)` ends one and feeds its latency (None: it failed
    or is not representative, and only frees the slot)."""

    def __init__(
        self,
        min_limit: int = 2,
        max_limit: int = 256,
        *,
        initial_limit: int | None = None,
        alpha: float = 3.0,
        beta: float = 6.0,
        probe_every_limits: int = 30,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ConcurrencyLimitError(f"limits {min_limit}..{max_limit}: need 1 <= min <= max")
        if not 0 < alpha < beta:
            raise ConcurrencyLimitError(f"queue thresholds alpha={alpha} beta={beta}: need 0 < alpha < beta")
        self.min_limit, self.max_limit = min_limit, max_limit
        self.alpha, self.beta = alpha, beta
        self.probe_every_limits = probe_every_limits
        self._limit = float(min(max_limit, max(min_limit, initial_limit or min_limit)))
        self.peak_limit = int(self._limit)
        self._in_flight = 0
        self._no_load_s = math.inf
        self._samples_since_probe = 0
        self._changed = threading.Condition()

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def acquire(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._in_flight < int(self._limit))
            self._in_flight += 1

    def release(self, latency_s: float | None) -> None:
        with self._changed:
            in_flight = self._in_flight
            self._in_flight -= 1
            if latency_s is not None and latency_s > 0:
                self._learn(latency_s, in_flight)
            self._changed.notify_all()

    def _learn(self, latency_s: float, in_flight: int) -> None:
        self._samples_since_probe += 1
        if self._samples_since_probe > self.probe_every_limits * self._limit:
            self._samples_since_probe = 0
            self._no_load_s = latency_s
        self._no_load_s = min(self._no_load_s, latency_s)
        # A limit far above what is used says nothing about the next increase: don't grow it.
        if 2 * in_flight < self._limit:
            return
        queue = math.ceil(self._limit * (1 - self._no_load_s / latency_s))
        step = max(1.0, math.log10(self._limit))
        if queue <= step:
            target = self._limit + self.beta
        elif queue < self.alpha:
            target = self._limit + step
        elif queue > self.beta:
            target = self._limit - step
        else:
            return
        self._limit = min(float(self.max_limit), max(float(self.min_limit), target))
        self.peak_limit = max(self.peak_limit, int(self._limit))
