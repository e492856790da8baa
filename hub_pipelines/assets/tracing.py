"""One trace from a sensor tick through the run it requests, each step, and every call a step makes.

A run may execute in another process (or Kubernetes pod) than the sensor that requested it, so the
sensor's trace context travels as a W3C traceparent in the run's `hub/traceparent` tag; each step's
span continues it. Calls to SQL, Redis, HTTP, S3 and ClickHouse get spans of their own from the
OpenTelemetry library instrumentations `enable_tracing` switches on. Kafka messages carry their
producer's context in headers (see `inject_trace_headers`); the ledger continues it per order.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import dagster as dg
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from hub_pipelines.core.telemetry import configure_tracing

# The SDK and the instrumentations load only when tracing is switched on (an OTLP endpoint is set).
if TYPE_CHECKING:
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

TRACEPARENT_TAG = "hub/traceparent"
TRACEPARENT = "traceparent"
SERVICE_NAME = "hub-pipelines"


def tracer() -> trace.Tracer:
    # Looked up per use rather than held: a held proxy binds to the first provider it sees.
    return trace.get_tracer("hub_pipelines")


_instrumented = False
_instrument_lock = threading.Lock()

SensorFn = TypeVar("SensorFn", bound=Callable[..., Any])


def enable_tracing(
    otlp_endpoint: str | None, exporter: SpanExporter | None = None, service_name: str = SERVICE_NAME
) -> TracerProvider | None:
    """Export spans to the OTLP collector at `otlp_endpoint` (or to `exporter`) and instrument clients.

    Nothing happens without an endpoint or exporter: OpenTelemetry stays a no-op and no client is
    wrapped. The instrumentations wrap SQLAlchemy engines, Redis, httpx (webhooks, pager),
    botocore (S3, CloudFront) and urllib3 (clickhouse-connect) created after this call; the Stripe
    transport (libcurl) makes its own client spans.
    """
    provider = configure_tracing(service_name, otlp_endpoint, exporter)
    if provider is not None:
        instrument_clients()
    return provider


def _instrumentors() -> list[BaseInstrumentor]:
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    return [
        SQLAlchemyInstrumentor(),
        RedisInstrumentor(),
        HTTPXClientInstrumentor(),
        BotocoreInstrumentor(),
        URLLib3Instrumentor(),
    ]


def instrument_clients() -> None:
    """Switch on the client instrumentations (once per process)."""
    global _instrumented
    with _instrument_lock:
        if _instrumented:
            return
        for instrumentor in _instrumentors():
            # The SQLAlchemy instrumentation declares support up to 2.0; it hooks the engine's cursor
            # events, which 2.1 keeps (tests/ops/test_tracing.py shows its spans on our SQL).
            instrumentor.instrument(skip_dep_check=True)
        _instrumented = True


def uninstrument_clients() -> None:
    """Undo `instrument_clients` (for tests that trace only their own stretch of the process)."""
    global _instrumented
    with _instrument_lock:
        if not _instrumented:
            return
        for instrumentor in _instrumentors():
            instrumentor.uninstrument()
        _instrumented = False


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """The remote context a W3C traceparent names; None when it is missing or malformed."""
    if not traceparent:
        return None
    extracted = propagate.extract({TRACEPARENT: traceparent})
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


def traced_sensor(fn: SensorFn) -> SensorFn:
    """Give each tick of a sensor a span, and each run it requests a span whose context rides the run.

    Put it under `@dg.sensor`: the signature Dagster reads (context, resources) is the wrapped one.
    """

    @functools.wraps(fn)
    def tick(*args: Any, **kwargs: Any) -> Any:
        name = _sensor_name([*args, *kwargs.values()]) or fn.__name__
        with tracer().start_as_current_span(f"sensor tick {name}") as span:
            span.set_attribute("dagster.sensor_name", name)
            result = fn(*args, **kwargs)
            if isinstance(result, dg.SensorResult) and result.run_requests:
                span.set_attribute("dagster.run_requests", len(result.run_requests))
                return result._replace(run_requests=[_traced_request(r) for r in result.run_requests])
            if isinstance(result, dg.RunRequest):
                return _traced_request(result)
            return result

    return tick  # type: ignore[return-value]


def _sensor_name(arguments: list[Any]) -> str | None:
    for argument in arguments:
        if isinstance(argument, dg.SensorEvaluationContext):
            try:
                return argument.sensor_name
            # A context built for a test without a sensor name raises Dagster's internal CheckError,
            # which the public API does not export.
            except Exception:
                return None
    return None


def _traced_request(request: dg.RunRequest) -> dg.RunRequest:
    with tracer().start_as_current_span("run requested") as span:
        if request.run_key:
            span.set_attribute("dagster.run_key", request.run_key)
        if request.partition_key:
            span.set_attribute("dagster.partition_key", request.partition_key)
        traceparent = current_traceparent()
    if traceparent is None:
        return request
    return request.with_replaced_attrs(tags={**request.tags, TRACEPARENT_TAG: traceparent})


@contextmanager
def step_span(context: dg.AssetExecutionContext) -> Iterator[trace.Span]:
    """The span of one asset step, a child of the span that requested the run (if its tag is set)."""
    run = context.run
    parent = context_from_traceparent(run.tags.get(TRACEPARENT_TAG))
    attributes: dict[str, str] = {"dagster.run_id": run.run_id, "dagster.job_name": run.job_name}
    if context.has_partition_key:
        attributes["dagster.partition_key"] = context.partition_key
    key = context.asset_key.to_user_string()
    attributes["dagster.asset_key"] = key
    with tracer().start_as_current_span(key, context=parent, attributes=attributes) as span:
        yield span


@contextmanager
def continue_trace(
    headers: Mapping[str, str],
    name: str,
    link: trace.SpanContext | None = None,
    attributes: Mapping[str, str] | None = None,
) -> Iterator[trace.Span]:
    """A span continuing the trace a message's producer put in its (text) headers, linked to `link`
    (the step's span), so one order's trace runs from its producer through this step and onwards.

    Without a traceparent in the headers the span is a child of the current one.
    """
    parent = context_from_traceparent(headers.get(TRACEPARENT))
    links = [trace.Link(link)] if parent is not None and link is not None and link.is_valid else []
    with tracer().start_as_current_span(
        name, context=parent, attributes=dict(attributes or {}), links=links
    ) as span:
        yield span
