"""VegasLimiter fed synthetic latencies: where its limit goes, and that it never leaves its bounds."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from hub_pipelines.core.concurrency_limit import ConcurrencyLimitError, VegasLimiter


def full_waves(limiter: VegasLimiter, latency_s: float, waves: int) -> list[int]:
    """`waves` rounds of as many calls as the limit admits, all ending at `latency_s`; the limit
    after each round."""
    limits = []
    for _ in range(waves):
        admitted = limiter.limit
        for _ in range(admitted):
            limiter.acquire()
        for _ in range(admitted):
            limiter.release(latency_s)
        limits.append(limiter.limit)
    return limits


def test_limit_grows_geometrically_while_latency_stays_at_its_minimum() -> None:
    """Eight round trips from 2: one more per round trip would give 10."""
    limiter = VegasLimiter(2, 256)
    limits = full_waves(limiter, 0.010, 8)
    assert limits == sorted(limits)
    assert limits[-1] >= 30


def test_after_the_first_queue_the_limit_grows_by_one_per_round_trip() -> None:
    limiter = VegasLimiter(2, 256)
    full_waves(limiter, 0.010, 3)
    full_waves(limiter, 0.010 * 1.5, 1)
    before = limiter.limit
    limits = full_waves(limiter, 0.010, 6)
    assert limits == sorted(limits)
    assert before < limits[-1] <= before + 6


def test_limit_keeps_growing_against_a_slow_remote_while_latency_stays_within_tolerance() -> None:
    """40 in flight at 1.2x the no-load latency: ~7 calls queueing, more than `beta`, but tolerated."""
    limiter = VegasLimiter(2, 256, initial_limit=40)
    full_waves(limiter, 0.300, 1)
    limits = full_waves(limiter, 0.360, 10)
    assert limits == sorted(limits)
    assert limits[-1] > 40


def test_limit_shrinks_when_latency_doubles_at_the_same_load() -> None:
    limiter = VegasLimiter(2, 256)
    full_waves(limiter, 0.010, 5)
    grown = limiter.limit
    limits = full_waves(limiter, 0.020, 5)
    assert limits == sorted(limits, reverse=True)
    assert limits[-1] < grown


def test_limit_settles_where_few_calls_queue_when_latency_grows_with_load() -> None:
    """Latency of a CPU-bound server: 10 ms of work, the rest queueing behind 4 that run at once."""
    limiter = VegasLimiter(2, 256)
    for _ in range(50):
        full_waves(limiter, 0.010 * max(1.0, limiter.limit / 4), 1)
    assert 4 <= limiter.limit <= 4 + 2 * limiter.beta


def test_limit_never_leaves_its_bounds() -> None:
    limiter = VegasLimiter(3, 12, alpha=1, beta=2)
    seen = set()
    for latency in (0.010, 0.010, 0.100, 0.010, 1.0, 0.001, 0.5) * 5:
        seen.update(full_waves(limiter, latency, 3))
    assert min(seen) == 3
    assert max(seen) == 12
    assert limiter.peak_limit == 12


def test_samples_from_an_idle_limiter_do_not_raise_the_limit() -> None:
    limiter = VegasLimiter(2, 256, initial_limit=20)
    for _ in range(100):
        limiter.acquire()
        limiter.release(0.010)
    assert limiter.limit == 20


def test_release_without_latency_frees_the_slot_and_leaves_the_limit() -> None:
    limiter = VegasLimiter(2, 8)
    limiter.acquire()
    limiter.acquire()
    limiter.release(None)
    limiter.release(None)
    assert (limiter.limit, limiter.in_flight) == (2, 0)


def test_a_new_baseline_is_learned_after_a_probe_so_a_slower_remote_does_not_pin_the_floor() -> None:
    limiter = VegasLimiter(2, 64)
    full_waves(limiter, 0.010, 10)
    limits = full_waves(limiter, 0.300, 40)
    assert limits[-1] > limiter.min_limit


def test_no_call_is_admitted_beyond_the_limit_until_one_is_released() -> None:
    limiter = VegasLimiter(2, 2)
    assert limiter.acquire(timeout_s=0)
    assert limiter.acquire(timeout_s=0)
    assert not limiter.acquire(timeout_s=0)
    limiter.release(None)
    assert limiter.acquire(timeout_s=0)
    assert limiter.in_flight == 2


def test_a_waiting_caller_is_admitted_when_a_call_ends() -> None:
    limiter = VegasLimiter(1, 1)
    limiter.acquire()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(limiter.acquire)
        limiter.release(0.010)
        assert waiting.result(timeout=10) is True
    assert limiter.in_flight == 1


@pytest.mark.parametrize(("low", "high", "alpha", "beta"), [(0, 4, 3, 6), (5, 4, 3, 6), (2, 4, 6, 3)])
def test_inconsistent_settings_are_refused(low: int, high: int, alpha: float, beta: float) -> None:
    with pytest.raises(ConcurrencyLimitError):
        VegasLimiter(low, high, alpha=alpha, beta=beta)
