"""Circuit breakers: opening, failing fast, the half-open trial, and state shared across processes.

The behavioural tests run with the state in process memory and in a real Redis. Time never passes
by sleeping: to let the reset timeout elapse, a test moves the stored `opened_at` into the past.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hub_pipelines.core.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, CircuitOpenError, make_breaker
from hub_pipelines.core.retry import RetryPolicy
from tests.services import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


class PaymentsDown(ConnectionError):
    pass


class Service:
    """A fake upstream that fails while `down` is set and counts the calls that reach it."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.down:
            raise PaymentsDown(f"payments call {self.calls} refused")
        return "charged"


@dataclass
class BreakerFactory:
    build: Callable[..., Breaker]
    age_opening: Callable[[Breaker, float], None]


@pytest.fixture(params=["memory", "redis"])
def breakers(request: pytest.FixtureRequest) -> BreakerFactory:
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    if request.param == "memory":

        def age_in_memory(breaker: Breaker, seconds: float) -> None:
            # The storage only exists inside pybreaker; the setter takes any datetime.
            breaker.circuit._state_storage.opened_at = datetime.now(UTC) - timedelta(seconds=seconds)

        return BreakerFactory(lambda name, **kw: make_breaker(name, key_prefix=prefix, **kw), age_in_memory)

    client: redis.Redis = request.getfixturevalue("redis_client")
    prefix = request.getfixturevalue("redis_key_prefix")

    def age_in_redis(breaker: Breaker, seconds: float) -> None:
        # pybreaker's own setter only moves opened_at forward, so write the key directly.
        client.set(f"{prefix}breaker:{breaker.name}:pybreaker:opened_at", int(time.time() - seconds))

    return BreakerFactory(
        lambda name, **kw: make_breaker(name, client, key_prefix=prefix, **kw), age_in_redis
    )


def _fail(breaker: Breaker, service: Service, times: int) -> None:
    for _ in range(times):
        with pytest.raises(PaymentsDown):
            breaker.call(service)


def _opened(breakers: BreakerFactory, service: Service) -> Breaker:
    breaker = breakers.build("payments")
    _fail(breaker, service, 5)
    return breaker


def test_circuit_opens_on_the_fifth_consecutive_failure(breakers: BreakerFactory) -> None:
    breaker, service = breakers.build("payments"), Service()
    _fail(breaker, service, 4)
    assert breaker.state == CLOSED
    assert breaker.failures == 4
    _fail(breaker, service, 1)
    assert breaker.state == OPEN


def test_open_circuit_fails_fast_without_calling_the_service(breakers: BreakerFactory) -> None:
    service = Service()
    breaker = _opened(breakers, service)
    with pytest.raises(CircuitOpenError, match="circuit 'payments' is open"):
        breaker.call(service)
    assert service.calls == 5


def test_a_success_resets_the_failure_count(breakers: BreakerFactory) -> None:
    breaker, service = breakers.build("payments"), Service()
    _fail(breaker, service, 4)
    service.down = False
    assert breaker.call(service) == "charged"
    service.down = True
    _fail(breaker, service, 4)
    assert breaker.state == CLOSED


def test_circuit_stays_open_until_the_reset_timeout_has_passed(breakers: BreakerFactory) -> None:
    service = Service()
    breaker = _opened(breakers, service)
    service.down = False
    breakers.age_opening(breaker, 50)
    with pytest.raises(CircuitOpenError):
        breaker.call(service)
    assert service.calls == 5


def test_successful_trial_call_after_the_reset_timeout_closes_the_circuit(breakers: BreakerFactory) -> None:
    service = Service()
    breaker = _opened(breakers, service)
    service.down = False
    breakers.age_opening(breaker, 61)
    assert breaker.call(service) == "charged"
    assert breaker.state == CLOSED
    assert breaker.call(service) == "charged"


def test_failed_trial_call_reopens_the_circuit_at_once(breakers: BreakerFactory) -> None:
    service = Service()
    breaker = _opened(breakers, service)
    breakers.age_opening(breaker, 61)
    _fail(breaker, service, 1)
    assert breaker.state == OPEN
    with pytest.raises(CircuitOpenError):
        breaker.call(service)
    assert service.calls == 6


def test_excluded_errors_neither_count_nor_open_the_circuit(breakers: BreakerFactory) -> None:
    breaker = breakers.build("payments", exclude=[KeyError])

    def card_declined() -> None:
        raise KeyError("card declined")

    for _ in range(10):
        with pytest.raises(KeyError):
            breaker.call(card_declined)
    assert breaker.state == CLOSED
    assert breaker.failures == 0


def test_state_changes_reach_the_listener_and_the_gauge_value(breakers: BreakerFactory) -> None:
    changes: list[tuple[str, str, str]] = []
    service = Service()
    breaker = breakers.build("payments", on_state_change=lambda *change: changes.append(change))
    assert breaker.state_value == 0
    _fail(breaker, service, 5)
    assert breaker.state_value == 2
    service.down = False
    breakers.age_opening(breaker, 61)
    breaker.call(service)
    assert changes == [
        ("payments", CLOSED, OPEN),
        ("payments", OPEN, HALF_OPEN),
        ("payments", HALF_OPEN, CLOSED),
    ]


def test_decorated_function_is_guarded(breakers: BreakerFactory) -> None:
    breaker, service = breakers.build("payments"), Service()

    @breaker
    def charge() -> str:
        return service()

    for _ in range(5):
        with pytest.raises(PaymentsDown):
            charge()
    with pytest.raises(CircuitOpenError):
        charge()
    assert charge.__name__ == "charge"


def test_breakers_of_the_same_name_share_their_state(breakers: BreakerFactory) -> None:
    first, second = breakers.build("payments"), breakers.build("payments")
    _fail(first, Service(), 5)
    assert second.state == OPEN
    with pytest.raises(CircuitOpenError):
        second.call(Service())


def test_call_timeout_is_three_seconds_for_the_callee_client(breakers: BreakerFactory) -> None:
    assert breakers.build("payments").call_timeout == 3.0
    assert breakers.build("search", call_timeout=0.5).call_timeout == 0.5


FAIL_IN_CHILD = """
import sys
import redis
from hub_pipelines.core.breaker import make_breaker
from hub_pipelines.core.retry import RetryPolicy

url, prefix, failures = sys.argv[1], sys.argv[2], int(sys.argv[3])
breaker = make_breaker("payments", redis.Redis.from_url(url), key_prefix=prefix)

def refused():
    raise ConnectionError("payments refused in child")

for _ in range(failures):
    try:
        breaker.call(refused)
    except ConnectionError:
        pass
print(breaker.state)
"""


def _fail_in_another_process(url: str, prefix: str, failures: int) -> str:
    child = subprocess.run(
        [sys.executable, "-c", FAIL_IN_CHILD, url, prefix, str(failures)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    return child.stdout.strip()


def test_circuit_opened_in_another_process_is_open_here(
    redis_server: str, redis_client: redis.Redis, redis_key_prefix: str
) -> None:
    here = make_breaker("payments", redis_client, key_prefix=redis_key_prefix)
    assert here.state == CLOSED
    assert _fail_in_another_process(redis_server, redis_key_prefix, 5) == OPEN
    service = Service()
    with pytest.raises(CircuitOpenError):
        here.call(service)
    assert service.calls == 0
    assert here.state == OPEN


def test_failures_in_two_processes_add_up_to_open_the_circuit(
    redis_server: str, redis_client: redis.Redis, redis_key_prefix: str
) -> None:
    here = make_breaker("payments", redis_client, key_prefix=redis_key_prefix)
    _fail(here, Service(), 3)
    assert _fail_in_another_process(redis_server, redis_key_prefix, 2) == OPEN
    with pytest.raises(CircuitOpenError):
        here.call(Service())


def test_breaker_built_while_redis_is_down_keeps_working_in_process() -> None:
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    breaker = make_breaker(f"payments-{uuid.uuid4().hex[:8]}", unreachable)
    service = Service()
    service.down = False
    assert breaker.call(service) == "charged"
    service.down = True
    _fail(breaker, service, 5)
    assert breaker.state == OPEN


def test_retries_stop_as_soon_as_the_circuit_opens() -> None:
    waits: list[float] = []
    policy = RetryPolicy(
        attempts=10, sleep=waits.append, retry_on=(lambda exc: isinstance(exc, PaymentsDown),)
    )
    breaker, service = make_breaker(f"payments-{uuid.uuid4().hex[:8]}"), Service()
    with pytest.raises(CircuitOpenError):
        policy.call(breaker.call, service)
    assert service.calls == 5
    assert len(waits) == 5
