"""Tracing, trace propagation through message headers, pushed run metrics and JSON logs."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from hub_pipelines.assets.tracing import context_from_traceparent
from hub_pipelines.core import telemetry
from hub_pipelines.core.ops_metrics import ORDERS_LEDGER_METRIC_NAMES
from hub_pipelines.core.ports import TopicMessage
from hub_pipelines.core.telemetry import (
    JsonLogFormatter,
    MetricsPushFailed,
    RunMetrics,
    build_tracer_provider,
    configure_tracing,
    inject_trace_headers,
    push_metrics,
)
from hub_pipelines.landing.sql_inbox import headers_as_text
from hub_pipelines.orders.catalog import CacheStats
from hub_pipelines.orders.ledger_batch import push_batch_metrics
from hub_pipelines.orders.metrics import BatchReport, OrderOutcome
from hub_pipelines.settings import json_logs_enabled
from tests.services import free_port


@pytest.fixture
def local_tracer() -> Iterator[trace.Tracer]:
    """A tracer of its own provider, leaving the process-wide provider untouched."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    yield provider.get_tracer("tests")
    provider.shutdown()


def test_spans_reach_the_configured_exporter_with_the_service_name() -> None:
    exporter = InMemorySpanExporter()
    provider = build_tracer_provider("hub-media", otlp_endpoint=None, exporter=exporter)
    assert provider is not None

    with provider.get_tracer("tests").start_as_current_span("scan_upload") as span:
        span.set_attribute("upload.name", "cat.jpg")
    provider.force_flush()

    [exported] = exporter.get_finished_spans()
    assert exported.name == "scan_upload"
    assert exported.attributes is not None
    assert exported.attributes["upload.name"] == "cat.jpg"
    assert exported.resource.attributes["service.name"] == "hub-media"
    provider.shutdown()


def test_no_endpoint_builds_no_provider() -> None:
    assert build_tracer_provider("hub-media", otlp_endpoint=None) is None
    assert build_tracer_provider("hub-media", otlp_endpoint="") is None


class _OtlpReceiver(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_otlp_http_exporter_posts_spans_to_the_endpoints_traces_path() -> None:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Receiver", (_OtlpReceiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        provider = build_tracer_provider("hub-orders", f"http://127.0.0.1:{server.server_port}/")
        assert provider is not None
        with provider.get_tracer("tests").start_as_current_span("ledger_write"):
            pass
        assert provider.force_flush()
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()

    [(path, content_type, body)] = received
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    assert service == "hub-orders"
    assert [s.name for scope in resource_spans.scope_spans for s in scope.spans] == ["ledger_write"]


def test_configure_tracing_installs_one_provider_and_returns_it_on_later_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed: list[object] = []
    monkeypatch.setattr(telemetry, "_installed_provider", None)
    monkeypatch.setattr(telemetry.trace, "set_tracer_provider", installed.append)

    assert configure_tracing("hub-media", otlp_endpoint=None) is None
    assert installed == []

    first = configure_tracing("hub-media", otlp_endpoint=None, exporter=InMemorySpanExporter())
    again = configure_tracing("hub-media", otlp_endpoint="http://127.0.0.1:1")

    assert first is not None
    assert again is first
    assert installed == [first]
    first.shutdown()


def test_trace_headers_round_trip_keeps_the_trace_and_parent_span(local_tracer: trace.Tracer) -> None:
    with local_tracer.start_as_current_span("produce_order_event") as producer_span:
        headers = inject_trace_headers({"event_type": b"order_created"})
    produced = producer_span.get_span_context()

    assert headers["event_type"] == b"order_created"
    assert isinstance(headers["traceparent"], bytes)
    # As production carries them: the landing stores the message's headers as text, the ledger's step
    # continues the trace from that text.
    landed = headers_as_text(TopicMessage("orders", 0, 0, b"{}", headers=headers))
    context = context_from_traceparent(landed["traceparent"])
    with local_tracer.start_as_current_span("consume_order_event", context=context) as consumer_span:
        consumed = consumer_span.get_span_context()
    assert consumed.trace_id == produced.trace_id
    assert consumer_span.parent is not None  # type: ignore[attr-defined]
    assert consumer_span.parent.span_id == produced.span_id  # type: ignore[attr-defined]


def test_headers_without_traceparent_continue_no_trace() -> None:
    headers = {"event_type": "order_created"}

    assert context_from_traceparent(headers.get("traceparent")) is None


def read_gateway_samples(url: str, job: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        # The gateway adds instance="", which Prometheus treats as no label at all.
        (sample.name, frozenset((k, v) for k, v in sample.labels.items() if v)): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("job") == job
    }


def test_pushed_run_metrics_can_be_read_back_from_the_gateway(pushgateway_url: str) -> None:
    job = f"test_push_{uuid.uuid4().hex[:8]}"
    metrics = RunMetrics()
    metrics.counter("uploads_scanned_total", "Uploads scanned.", ["result"]).labels(result="clean").inc(3)
    metrics.gauge("scan_backlog", "Uploads waiting for a scan.").set(7)
    metrics.histogram("scan_seconds", "Scan duration.", buckets=[0.1, 1.0]).observe(0.5)

    assert push_metrics(metrics.registry, pushgateway_url, job, {"run_id": "run-1"})

    samples = read_gateway_samples(pushgateway_url, job)
    group = {("job", job), ("run_id", "run-1")}
    assert samples[("hub_uploads_scanned_total", frozenset(group | {("result", "clean")}))] == 3
    assert samples[("hub_scan_backlog", frozenset(group))] == 7
    buckets = {
        float(dict(labels)["le"]): value
        for (name, labels), value in samples.items()
        if name == "hub_scan_seconds_bucket" and group <= labels
    }
    assert buckets == {0.1: 0, 1.0: 1, float("inf"): 1}


def test_push_keeps_metrics_other_steps_pushed_unless_told_to_replace_the_group(
    pushgateway_url: str,
) -> None:
    job = f"test_pushadd_{uuid.uuid4().hex[:8]}"
    first_step, second_step, rerun = RunMetrics(), RunMetrics(), RunMetrics()
    first_step.gauge("variants_rendered", "Variants rendered.").set(4)
    second_step.gauge("orders_posted", "Orders posted.").set(9)
    rerun.gauge("orders_posted", "Orders posted.").set(2)

    push_metrics(first_step.registry, pushgateway_url, job, {"run_id": "run-2"})
    push_metrics(second_step.registry, pushgateway_url, job, {"run_id": "run-2"})
    names = {name for name, _ in read_gateway_samples(pushgateway_url, job)}
    assert {"hub_variants_rendered", "hub_orders_posted"} <= names

    push_metrics(rerun.registry, pushgateway_url, job, {"run_id": "run-2"}, replace_group=True)
    names = {name for name, _ in read_gateway_samples(pushgateway_url, job)}
    assert "hub_orders_posted" in names
    assert "hub_variants_rendered" not in names


def test_push_without_a_gateway_sends_nothing_and_says_so() -> None:
    metrics = RunMetrics()
    metrics.counter("runs_total", "Runs.").inc()

    assert push_metrics(metrics.registry, None, "hub_media") is False


def test_push_to_an_unreachable_gateway_raises_metrics_push_failed_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    metrics = RunMetrics()
    metrics.counter("runs_total", "Runs.").inc()

    with pytest.raises(MetricsPushFailed, match=rf"'hub_media'.*{url}"):
        push_metrics(metrics.registry, url, "hub_media", timeout=5)


def test_run_metrics_reuses_a_metric_by_name_and_rejects_it_as_another_kind() -> None:
    metrics = RunMetrics()
    counter = metrics.counter("orders_total", "Orders.")

    assert metrics.counter("orders_total", "Orders.") is counter
    with pytest.raises(TypeError, match=r"orders_total.*Counter"):
        metrics.gauge("orders_total", "Orders.")


def test_json_log_line_carries_message_context_and_the_active_trace(local_tracer: trace.Tracer) -> None:
    stream = io.StringIO()
    logger = logging.getLogger(f"tests.telemetry.{uuid.uuid4().hex}")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    context = {"run_id": "run-3", "asset_key": "media/scanned_uploads", "partition": "cat.jpg"}

    with local_tracer.start_as_current_span("scan_upload") as span:
        logger.info("scanned %s", "cat.jpg", extra=context)
    span_context = span.get_span_context()

    entry = json.loads(stream.getvalue())
    assert entry["message"] == "scanned cat.jpg"
    assert entry["level"] == "INFO"
    assert entry["logger"] == logger.name
    assert entry["time"].endswith("+00:00")
    assert {key: entry[key] for key in context} == context
    assert entry["trace_id"] == format(span_context.trace_id, "032x")
    assert entry["span_id"] == format(span_context.span_id, "016x")


def test_json_log_line_without_a_span_or_context_has_only_the_basics() -> None:
    record = logging.LogRecord("hub", logging.WARNING, __file__, 1, "disk at %d%%", (91,), None)

    entry = json.loads(JsonLogFormatter().format(record))

    assert set(entry) == {"time", "level", "logger", "message"}
    assert entry["message"] == "disk at 91%"


def test_json_log_line_takes_run_step_and_partition_from_dagster_records() -> None:
    record = logging.LogRecord("dagster", logging.INFO, __file__, 1, "media - run-4 - step - hi", (), None)
    record.dagster_meta = {
        "run_id": "run-4",
        "step_key": "media__image_variants",
        "job_tags": {"dagster/partition": "uploads/cat.jpg"},
        "orig_message": "hi",
    }

    entry = json.loads(JsonLogFormatter().format(record))

    assert entry["message"] == "hi"
    assert entry["run_id"] == "run-4"
    assert entry["step_key"] == "media__image_variants"
    assert entry["partition"] == "uploads/cat.jpg"


def test_json_log_line_includes_the_exception() -> None:
    try:
        raise ValueError("bad order 42")
    except ValueError:
        record = logging.LogRecord("hub", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())

    entry = json.loads(JsonLogFormatter().format(record))

    assert "ValueError: bad order 42" in entry["exception"]


def test_json_logs_are_enabled_only_by_hub_log_format_json() -> None:
    assert json_logs_enabled({"HUB_LOG_FORMAT": "JSON"})
    assert not json_logs_enabled({"HUB_LOG_FORMAT": "text"})
    assert not json_logs_enabled({})


def test_a_ledger_batch_pushes_exactly_the_series_the_alerts_and_dashboard_know(pushgateway_url: str) -> None:
    paid = OrderOutcome(
        "paid", 0.02, order_id="o-1", amount_minor=1200, currency="EUR", items=2, payment_attempts=2
    )
    report = BatchReport.of([paid], [], cache=CacheStats(local_hits=3), breaker_state="closed", elapsed_s=0.1)

    push_batch_metrics(report, pushgateway_url)

    histogram_suffixes = ("_bucket", "_sum", "_count")
    # prometheus_client adds a `<name>_created` timestamp beside each counter and histogram.
    names = {
        name
        for name, _ in read_gateway_samples(pushgateway_url, "orders_ledger")
        if not name.endswith("_created")
    }
    pushed = {
        next((name.removesuffix(s) for s in histogram_suffixes if name.endswith(s)), name) for name in names
    }
    assert pushed - {"push_time_seconds", "push_failure_time_seconds"} == set(ORDERS_LEDGER_METRIC_NAMES)
