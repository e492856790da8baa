"""The retry policy: which failures are retried, how long it waits, and what it raises in the end.

No test sleeps: the policy's `sleep` is a recorder, so the waits it asked for are the schedule.
"""

from __future__ import annotations

import logging

import httpx
import psycopg
import pytest
import sqlalchemy.exc

from hub_pipelines.core.retry import (
    RetryableError,
    RetryPolicy,
    retry,
    transient_database_error,
    transient_http_error,
)


class FlakyService:
    """Fails with the given errors in turn, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class SlowUpstream(RetryableError):
    pass


@pytest.fixture
def waits() -> list[float]:
    return []


def test_retryable_error_is_retried_until_the_call_succeeds(waits: list[float]) -> None:
    service = FlakyService(SlowUpstream("timeout 1"), SlowUpstream("timeout 2"))
    assert RetryPolicy(sleep=waits.append).call(service) == "ok"
    assert service.calls == 3


def test_non_retryable_error_propagates_at_once_without_waiting(waits: list[float]) -> None:
    service = FlakyService(KeyError("order 17 has no customer"))
    with pytest.raises(KeyError, match="order 17"):
        RetryPolicy(sleep=waits.append).call(service)
    assert service.calls == 1
    assert waits == []


def test_gives_up_after_three_attempts_raising_the_last_error_itself(waits: list[float]) -> None:
    service = FlakyService(
        SlowUpstream("first"), SlowUpstream("second"), SlowUpstream("third"), SlowUpstream("4")
    )
    with pytest.raises(SlowUpstream, match="third"):
        RetryPolicy(sleep=waits.append).call(service)
    assert service.calls == 3
    assert len(waits) == 2


def test_waits_double_from_one_second_with_at_most_one_second_of_jitter(waits: list[float]) -> None:
    service = FlakyService(*(SlowUpstream(f"attempt {n}") for n in range(4)))
    assert RetryPolicy(attempts=5, sleep=waits.append).call(service) == "ok"
    assert len(waits) == 4
    for wait, base in zip(waits, [1, 2, 4, 8], strict=True):
        assert base <= wait <= base + 1


def test_jitter_spreads_the_waits_of_concurrent_callers() -> None:
    first_waits: list[float] = []
    for _ in range(20):
        waits: list[float] = []
        RetryPolicy(sleep=waits.append).call(FlakyService(SlowUpstream("busy")))
        first_waits.append(waits[0])
    assert len(set(first_waits)) > 1


def test_no_wait_exceeds_the_cap(waits: list[float]) -> None:
    service = FlakyService(*(SlowUpstream(f"attempt {n}") for n in range(9)))
    assert RetryPolicy(attempts=10, sleep=waits.append).call(service) == "ok"
    assert max(waits) <= 30
    assert waits[-3:] == [30, 30, 30]


def test_an_injected_wait_replaces_the_schedule(waits: list[float]) -> None:
    policy = RetryPolicy(sleep=waits.append, wait=lambda state: 0.5 * state.attempt_number)
    policy.call(FlakyService(SlowUpstream("a"), SlowUpstream("b")))
    assert waits == [0.5, 1.0]


def test_decorator_retries_and_keeps_the_function_name(waits: list[float]) -> None:
    service = FlakyService(SlowUpstream("once"))

    @retry(sleep=waits.append)
    def fetch_exchange_rates() -> str:
        return service()

    assert fetch_exchange_rates() == "ok"
    assert fetch_exchange_rates.__name__ == "fetch_exchange_rates"
    assert service.calls == 2


def test_policy_decorates_and_passes_arguments_through(waits: list[float]) -> None:
    calls: list[tuple[int, str]] = []

    @RetryPolicy(sleep=waits.append)
    def record(order_id: int, *, status: str) -> int:
        calls.append((order_id, status))
        if len(calls) == 1:
            raise SlowUpstream("lock wait")
        return order_id

    assert record(7, status="paid") == 7
    assert calls == [(7, "paid"), (7, "paid")]


def test_predicates_make_other_errors_retryable(waits: list[float]) -> None:
    service = FlakyService(ConnectionResetError("peer reset"))
    policy = RetryPolicy(sleep=waits.append, retry_on=(lambda exc: isinstance(exc, ConnectionResetError),))
    assert policy.call(service) == "ok"
    assert service.calls == 2


def test_a_policy_without_predicates_does_not_retry_plain_errors() -> None:
    service = FlakyService(ConnectionResetError("peer reset"))
    with pytest.raises(ConnectionResetError):
        RetryPolicy().call(service)
    assert service.calls == 1


def test_each_retry_is_logged_with_the_error_and_the_wait(
    waits: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hub_pipelines.core.retry"):
        RetryPolicy(sleep=waits.append).call(FlakyService(SlowUpstream("upstream 503")))
    [record] = caplog.records
    assert "attempt 1 of 3" in record.getMessage()
    assert "SlowUpstream: upstream 503" in record.getMessage()
    assert f"waiting {waits[0]:.2f} s" in record.getMessage()


def _status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://rates.example/eur")
    return httpx.HTTPStatusError(
        f"status {status}", request=request, response=httpx.Response(status, request=request)
    )


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_http_throttling_and_server_errors_are_transient(status: int) -> None:
    assert transient_http_error(_status_error(status))


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_http_client_errors_are_not_transient(status: int) -> None:
    assert not transient_http_error(_status_error(status))


def test_http_timeouts_and_connection_failures_are_transient() -> None:
    request = httpx.Request("GET", "https://rates.example/eur")
    assert transient_http_error(httpx.ReadTimeout("read timed out", request=request))
    assert transient_http_error(httpx.ConnectError("connection refused", request=request))
    assert not transient_http_error(ValueError("bad json"))


@pytest.mark.parametrize(
    "error",
    [psycopg.errors.SerializationFailure("could not serialize"), psycopg.errors.DeadlockDetected("dl")],
)
def test_serialization_failures_and_deadlocks_are_transient_raw_or_wrapped(error: psycopg.Error) -> None:
    assert transient_database_error(error)
    assert transient_database_error(sqlalchemy.exc.OperationalError("UPDATE ledger", {}, error))


def test_other_database_errors_are_not_transient() -> None:
    duplicate = psycopg.errors.UniqueViolation("duplicate key")
    assert not transient_database_error(duplicate)
    assert not transient_database_error(sqlalchemy.exc.IntegrityError("INSERT", {}, duplicate))
    assert not transient_database_error(RuntimeError("no sqlstate"))


def test_zero_attempts_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)
