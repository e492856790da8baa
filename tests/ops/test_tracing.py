"""One order's trace runs from the demo producer through the ledger step to the outbox relay's message,
the run's steps continue the trace of the sensor tick that requested the run, and a Stripe call is a
client span of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from hub_pipelines import settings
from hub_pipelines.assets.tracing import (
    TRACEPARENT_TAG,
    context_from_traceparent,
    enable_tracing,
    uninstrument_clients,
)
from hub_pipelines.core import telemetry
from hub_pipelines.core.ports import PAID, ChargeRequest
from hub_pipelines.orders.outbox import TRACEPARENT_HEADER
from hub_pipelines.resources.orders.payment_gateway import StripeGateway
from tests.fakes.stripe_server import FakeStripe, Faults
from tests.ops.conftest import ORDERS_JOB, ORDERS_SENSOR, feeder, run_orders_pipeline
from tests.platform.conftest import LocalEnvironment


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The process-wide tracer provider, exporting to memory, installed the way definitions.py does it.

    OpenTelemetry sets its global provider once per process; the globals are put back afterwards
    (as OpenTelemetry's own test helpers do) so that no other test exports into this one.
    """
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(telemetry, "_installed_provider", None)
    exporter = InMemorySpanExporter()
    provider = enable_tracing(None, exporter=exporter)
    assert provider is not None
    try:
        yield exporter
    finally:
        uninstrument_clients()
        provider.shutdown()


def trace_id(traceparent: str) -> int:
    context = context_from_traceparent(traceparent)
    assert context is not None, traceparent
    return trace.get_current_span(context).get_span_context().trace_id


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def published_order_events(env: LocalEnvironment) -> list[dict[str, bytes]]:
    topics = env.resources["topics"]
    ends = topics.end_offsets(settings.ORDER_EVENTS_OUT_TOPIC)
    headers = []
    for partition, end in ends.items():
        for message in topics.read_range(settings.ORDER_EVENTS_OUT_TOPIC, partition, 0, end):
            headers.append(dict(message.headers))
    return headers


def test_one_trace_spans_the_producer_the_ledger_step_and_the_relayed_order_event(
    spans: InMemorySpanExporter, orders_environment: LocalEnvironment
) -> None:
    assert feeder(orders_environment).send_orders(1) == 1
    run_orders_pipeline(orders_environment)
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    finished = list(spans.get_finished_spans())

    [produced] = named(finished, f"send {settings.ORDERS_TOPIC}")
    [placed] = named(finished, "place order")
    [ledger_step] = named(finished, "orders/order_ledger")
    order_trace = produced.context.trace_id
    assert placed.context.trace_id == order_trace
    assert placed.parent is not None and placed.parent.span_id == produced.context.span_id
    assert [link.context.span_id for link in placed.links] == [ledger_step.context.span_id]

    relayed = [
        h for h in published_order_events(orders_environment) if h.get("event-type") == b"order.created"
    ]
    assert len(relayed) == 1
    assert trace_id(relayed[0][TRACEPARENT_HEADER].decode()) == order_trace

    # The order's own SQL (reserving it, writing the outbox row) is traced inside its span.
    order_sql = [s for s in finished if s.parent is not None and s.parent.span_id == placed.context.span_id]
    assert order_sql and all(s.attributes and s.attributes.get("db.system") == "sqlite" for s in order_sql)


def test_run_steps_continue_the_trace_of_the_sensor_tick_that_requested_the_run(
    spans: InMemorySpanExporter, orders_environment: LocalEnvironment
) -> None:
    feeder(orders_environment).send_orders(2)
    request = run_orders_pipeline(orders_environment, downstream=False)
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    finished = list(spans.get_finished_spans())

    [tick] = named(finished, f"sensor tick {ORDERS_SENSOR}")
    [requested] = named(finished, "run requested")
    assert requested.parent is not None and requested.parent.span_id == tick.context.span_id
    assert trace_id(request.tags[TRACEPARENT_TAG]) == tick.context.trace_id

    steps = {
        span.name: span
        for span in finished
        if span.attributes and span.attributes.get("dagster.job_name") == ORDERS_JOB
    }
    assert {"orders/order_events", "orders/order_ledger"} <= steps.keys()
    for step in steps.values():
        assert step.context.trace_id == tick.context.trace_id
        assert step.parent is not None and step.parent.span_id == requested.context.span_id
        assert step.attributes is not None and step.attributes["dagster.run_id"]

    landing = steps["orders/order_events"]
    landing_sql = [
        s for s in finished if s.parent is not None and s.parent.span_id == landing.context.span_id
    ]
    assert landing_sql, "the landing step's SQL has no spans"


def test_a_stripe_charge_is_a_client_span_inside_the_callers_span(spans: InMemorySpanExporter) -> None:
    stripe = FakeStripe(Faults()).start()
    try:
        gateway = StripeGateway(
            api_key="sk_test_hub", api_base=stripe.base_url, breaker_name=f"stripe-{uuid.uuid4().hex[:8]}"
        )
        with trace.get_tracer(__name__).start_as_current_span("place order") as placing:
            result = gateway.charge(ChargeRequest(f"o-{uuid.uuid4()}", 1250, "USD", "c-1", None))
    finally:
        stripe.stop()
    assert result.outcome == PAID
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    [call] = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.CLIENT and s.name == "POST"]
    assert call.parent is not None and call.parent.span_id == placing.get_span_context().span_id
    assert call.attributes is not None
    assert call.attributes["url.full"] == f"{stripe.base_url}/v1/payment_intents"
    assert call.attributes["http.response.status_code"] == 200
