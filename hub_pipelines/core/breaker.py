"""Circuit breakers around external services, built on pybreaker.

After `fail_max` consecutive failures the circuit opens: calls fail at once with `CircuitOpenError`
without reaching the service. Once `reset_timeout` seconds have passed since it opened, the next
call is a trial (half-open): success closes the circuit, failure opens it for another
`reset_timeout`.

State is shared through Redis in production (`pybreaker.CircuitRedisStorage`, keys
`<key_prefix>breaker:<name>:pybreaker:{state,fail_counter,success_counter,opened_at}`), so a circuit
opened by one process is open for every process: each call reads the state key and `opened_at` (a
Unix timestamp in whole seconds, only ever moved forward) from Redis. Locally the storage lives in
process memory, shared by every breaker of the same name. When Redis cannot be reached, pybreaker
logs it and treats the circuit as closed, and a breaker built while Redis is down keeps its state
in process: losing Redis does not stop the workflows.

The call timeout is not enforced by the breaker: Python cannot safely stop a running thread.
Instead `Breaker.call_timeout` (3 s) is the setting the guarded call hands to its own client,
e.g. `httpx.Client(timeout=breaker.call_timeout)`, or for Stripe
`stripe.StripeClient(key, http_client=stripe.HTTPXClient(timeout=breaker.call_timeout,
allow_sync_methods=True), max_network_retries=0)` (retries belong to `core.retry`, outside the
breaker); the client's timeout error then counts as a failure like any other.

pybreaker holds a lock for the whole guarded call, so threads sharing one `Breaker` call the
service one at a time (and that is what keeps the half-open trial to one call per process). Threads
that must call concurrently should each build their own with `make_breaker`: breakers of the same
name share their state through the storage. Across processes, several may each make one trial call
when the timeout expires.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import ParamSpec, TypeVar

import pybreaker
import redis

P = ParamSpec("P")
T = TypeVar("T")

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN
# For a gauge: higher is worse.
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

StateListener = Callable[[str, str, str], None]
"""Called with (breaker name, old state, new state) whenever a breaker notices a change."""

logger = logging.getLogger(__name__)

_memory_storages: dict[str, pybreaker.CircuitMemoryStorage] = {}
_memory_storages_lock = threading.Lock()


class CircuitOpenError(pybreaker.CircuitBreakerError):
    """The circuit for a service is open: the call was refused without reaching the service."""


class _StateChangeListener(pybreaker.CircuitBreakerListener):
    def __init__(self, on_state_change: StateListener | None) -> None:
        self._on_state_change = on_state_change

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        old = old_state.name if old_state else CLOSED
        logger.warning("circuit breaker %r: %s -> %s", cb.name, old, new_state.name)
        if self._on_state_change is not None:
            self._on_state_change(str(cb.name), old, new_state.name)


class Breaker:
    """A named circuit breaker; call through `call(fn, ...)` or use it as a decorator."""

    def __init__(self, circuit: pybreaker.CircuitBreaker, call_timeout: float) -> None:
        self.circuit = circuit
        self.call_timeout = call_timeout

    @property
    def name(self) -> str:
        return str(self.circuit.name)

    @property
    def state(self) -> str:
        """'closed', 'open' or 'half-open', as the shared storage records it.

        An open circuit whose reset timeout has passed still reads 'open' until a call tries it.
        """
        return self.circuit.current_state

    @property
    def state_value(self) -> int:
        """The state as 0 (closed), 1 (half-open) or 2 (open), for a metrics gauge."""
        return STATE_VALUES[self.state]

    @property
    def failures(self) -> int:
        """Consecutive failures counted so far."""
        return self.circuit.fail_counter

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """fn(*args, **kwargs), unless the circuit is open.

        The call that reaches `fail_max` failures raises its own error (and opens the circuit);
        the calls after it raise CircuitOpenError.
        """
        try:
            return self.circuit.call(fn, *args, **kwargs)
        except CircuitOpenError:
            raise
        except pybreaker.CircuitBreakerError as refused:
            raise CircuitOpenError(
                f"circuit {self.name!r} is open after {self.circuit.fail_max} consecutive failures; "
                f"calls are refused for {self.circuit.reset_timeout:g} s after it opened"
            ) from refused

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.call(fn, *args, **kwargs)

        return guarded

    def open(self) -> None:
        """Open the circuit by hand (an operator who knows the service is down)."""
        self.circuit.open()

    def close(self) -> None:
        """Close the circuit by hand."""
        self.circuit.close()


def make_breaker(
    name: str,
    redis_client: redis.Redis | None = None,
    *,
    fail_max: int = 5,
    reset_timeout: float = 60.0,
    call_timeout: float = 3.0,
    exclude: Iterable[type[BaseException] | Callable[[BaseException], bool]] = (),
    key_prefix: str = "",
    on_state_change: StateListener | None = None,
) -> Breaker:
    """A breaker named `name`, its state in Redis when a client is given, else in this process.

    `exclude` lists exceptions (types or predicates) that are the caller's fault, not the
    service's (a 404, a card declined): they neither count as failures nor open the circuit.
    The Redis client must return bytes (decode_responses=False), as `RedisCache.client()` does.
    """
    if not name:
        raise ValueError("a circuit breaker needs a name: it keys the shared state")
    namespace = f"{key_prefix}breaker:{name}"
    storage: pybreaker.CircuitBreakerStorage
    if redis_client is None:
        storage = _memory_storage(namespace)
    else:
        try:
            storage = pybreaker.CircuitRedisStorage(CLOSED, redis_client, namespace=namespace)
        except redis.RedisError as unreachable:
            logger.warning(
                "circuit breaker %r keeps its state in this process: Redis is unreachable (%s)",
                name,
                unreachable,
            )
            storage = _memory_storage(namespace)
    circuit = pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_timeout,
        exclude=list(exclude),
        listeners=[_StateChangeListener(on_state_change)],
        state_storage=storage,
        name=name,
        # The failure that trips the circuit surfaces as itself, so callers see the real cause.
        throw_new_error_on_trip=False,
    )
    return Breaker(circuit, call_timeout)


def _memory_storage(namespace: str) -> pybreaker.CircuitMemoryStorage:
    with _memory_storages_lock:
        storage = _memory_storages.get(namespace)
        if storage is None:
            storage = _memory_storages[namespace] = pybreaker.CircuitMemoryStorage(CLOSED)
        return storage
