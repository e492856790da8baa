"""Retrying calls to external services on transient failures only, with exponential backoff.

Built on tenacity. A failure is retried when it is a `RetryableError` or when one of the policy's
predicates says so (`transient_http_error`, `transient_database_error`, or the caller's own);
anything else propagates at once. After the last attempt the last error itself propagates, never a
wrapper. Waits grow 1 s, 2 s, 4 s, ... plus up to `jitter` seconds, and never exceed `max_wait`.

    EXTERNAL_CALL = RetryPolicy(retry_on=(transient_http_error,))

    @EXTERNAL_CALL
    def fetch_rates() -> dict: ...

    EXTERNAL_CALL.call(client.get, url)
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import tenacity

P = ParamSpec("P")
T = TypeVar("T")

RetryPredicate = Callable[[BaseException], bool]

logger = logging.getLogger(__name__)

RETRYABLE_HTTP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# serialization_failure and deadlock_detected: the transaction lost a race and can simply run again.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


class RetryableError(Exception):
    """A failure that may succeed when the same call is made again (a timeout, a lost race)."""


def transient_http_error(exc: BaseException) -> bool:
    """httpx timeouts and connection failures, and responses 408/425/429/5xx (raise_for_status)."""
    # Imported here, not with the module: retry policies are built by code that may never use httpx.
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in RETRYABLE_HTTP_STATUSES
    return isinstance(exc, httpx.TransportError)


def transient_database_error(exc: BaseException) -> bool:
    """PostgreSQL serialization failures and deadlocks, raw psycopg or wrapped by SQLAlchemy."""
    original = getattr(exc, "orig", None) or exc
    return getattr(original, "sqlstate", None) in RETRYABLE_SQLSTATES


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; usable as a decorator or through `call`.

    `sleep` is what waits between attempts (tests pass a recorder instead of time.sleep) and `wait`
    replaces the whole backoff schedule when given (any tenacity wait strategy).
    """

    attempts: int = 3
    initial_wait: float = 1.0
    max_wait: float = 30.0
    jitter: float = 1.0
    retry_on: Sequence[RetryPredicate] = ()
    sleep: Callable[[float], None] = time.sleep
    wait: Callable[[tenacity.RetryCallState], float] | None = None
    log: logging.Logger = field(default=logger, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"retry policy attempts must be at least 1, got {self.attempts}")

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, RetryableError) or any(predicate(exc) for predicate in self.retry_on)

    def backoff(self) -> Callable[[tenacity.RetryCallState], float]:
        if self.wait is not None:
            return self.wait
        return tenacity.wait_exponential_jitter(
            multiplier=self.initial_wait, max=self.max_wait, jitter=self.jitter
        )

    def retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=self.backoff(),
            retry=tenacity.retry_if_exception(self.is_retryable),
            sleep=self.sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )

    @functools.cached_property
    def _shared_retrying(self) -> tenacity.Retrying:
        # One for every call and thread: tenacity keeps a call's state in the call and its statistics
        # per thread. A ledger makes several calls per order, and building one each time was ~10 us.
        return self.retrying()

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """fn(*args, **kwargs), retried on retryable failures."""
        return self._shared_retrying(fn, *args, **kwargs)

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def retried(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.call(fn, *args, **kwargs)

        return retried

    def with_options(self, **changes: Any) -> RetryPolicy:
        """A copy with some settings changed, e.g. `policy.with_options(sleep=recorder)`."""
        return dataclasses.replace(self, **changes)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self.log.warning(
            "retrying %s after attempt %d of %d failed (%s: %s); waiting %.2f s",
            _name_of(state.fn),
            state.attempt_number,
            self.attempts,
            type(error).__name__,
            error,
            wait,
        )


def _name_of(fn: Callable[..., Any] | None) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def retry(
    *,
    retry_on: Sequence[RetryPredicate] = (),
    attempts: int = 3,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorator form with the default schedule: `@retry(retry_on=(transient_http_error,))`."""
    return RetryPolicy(attempts=attempts, retry_on=tuple(retry_on), sleep=sleep)
