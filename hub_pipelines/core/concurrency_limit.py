"""How many calls may be in flight at once, learned from their latency (TCP Vegas, as in Netflix's
concurrency-limits `VegasLimit`).

A fixed pool size fits one latency only: when the work behind a call is CPU-bound, calls beyond what
the cores serve only queue (latency up, no throughput); when it waits on a slow remote, in-flight
calls must grow with its latency (Little's law). The limiter compares each call's latency with the
lowest seen (the no-load latency) and estimates how many calls are queueing:
`queue = limit * (1 - no_load / latency)`. Until the first answer that shows any queue, the limit
grows by one per answer (doubling per round trip, TCP's slow start); after it, fewer than `alpha`
queueing -> one more per round trip (1/limit per answer), more than `beta` -> one fewer. Latency
within `tolerance` x the no-load latency counts as no queue at all: against a slow remote, `beta`
queueing calls are a few percent of a large limit, and holding the limit there would leave
throughput unused (Netflix's Gradient2 tolerates its ratio the same way).
Netflix steps by one or more per answer throughout, which measured here overshot a CPU-bound
ledger to 2-3x its final limit before the first slow answers came back (the p99 paid for it).
Every `probe_every_limits * limit` answers the limit is halved for one round trip and the no-load
latency learned again from the answers at half load, so a remote that became slower for good
raises the baseline instead of pinning the limit at its floor (BBR's "probe RTT"; a baseline
reset under full load would be too high and let the limit drift up).

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
        alpha: float = 2.0,
        beta: float = 4.0,
        tolerance: float = 1.3,
        probe_every_limits: int = 100,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ConcurrencyLimitError(f"limits {min_limit}..{max_limit}: need 1 <= min <= max")
        if not 0 < alpha < beta:
            raise ConcurrencyLimitError(f"queue thresholds alpha={alpha} beta={beta}: need 0 < alpha < beta")
        self.min_limit, self.max_limit = min_limit, max_limit
        self.alpha, self.beta = alpha, beta
        self.tolerance, self.probe_every_limits = tolerance, probe_every_limits
        self._limit = float(min(max_limit, max(min_limit, initial_limit or min_limit)))
        self.peak_limit = int(self._limit)
        self._in_flight = 0
        self._no_load_s = math.inf
        self._samples_since_probe = 0
        self._slow_start = True
        self._probe_resume: tuple[float, int] | None = None
        self._changed = threading.Condition()

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def acquire(self, timeout_s: float | None = None) -> bool:
        """Wait until a call may start (at most `timeout_s`) and count it in; False if none may."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._in_flight < int(self._limit), timeout_s):
                return False
            self._in_flight += 1
            return True

    def release(self, latency_s: float | None) -> None:
        with self._changed:
            in_flight = self._in_flight
            self._in_flight -= 1
            if latency_s is not None and latency_s > 0:
                self._learn(latency_s, in_flight)
            self._changed.notify_all()

    def _learn(self, latency_s: float, in_flight: int) -> None:
        self._no_load_s = min(self._no_load_s, latency_s)
        if self._probe_resume is not None:
            limit, answers_left = self._probe_resume
            self._probe_resume = (limit, answers_left - 1) if answers_left > 1 else None
            if self._probe_resume is None:
                self._set_limit(limit)
            return
        self._samples_since_probe += 1
        if self._samples_since_probe > self.probe_every_limits * self._limit:
            # The calls in flight drain (limit/2 answers), then limit/2 run at half load: the
            # no-load latency is learned from those, and the limit restored.
            self._samples_since_probe = 0
            self._no_load_s = latency_s
            self._probe_resume = (self._limit, int(self._limit))
            self._set_limit(self._limit / 2)
            return
        # Answers while far fewer calls are in flight than allowed say nothing about the limit.
        if 2 * in_flight < self._limit:
            return
        queue = self._limit * (1 - self._no_load_s / latency_s)
        tolerated = latency_s <= self.tolerance * self._no_load_s
        self._slow_start = self._slow_start and queue < 1
        step = max(1.0, math.log10(self._limit))
        if self._slow_start:
            self._set_limit(self._limit + step)
        elif queue < self.alpha or tolerated:
            self._set_limit(self._limit + step / self._limit)
        elif queue > self.beta:
            self._set_limit(self._limit - step / self._limit)

    def _set_limit(self, target: float) -> None:
        self._limit = min(float(self.max_limit), max(float(self.min_limit), target))
        self.peak_limit = max(self.peak_limit, int(self._limit))
