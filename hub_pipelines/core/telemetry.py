"""Traces, metrics and structured logs shared by every workflow.

Tracing exports over OTLP/HTTP only when an endpoint is configured; trace context crosses topics in
message headers as W3C `traceparent`. Run metrics go to a Prometheus Pushgateway, since a run ends
before anything could scrape it. Logs become one JSON object per line when HUB_LOG_FORMAT=json.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Setter

# The tracing SDK with its OTLP exporter, and the Prometheus client, load when a provider is built or
# a metric made: every process imports this module, few export traces, and only runs push metrics.
if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics import MetricWrapperBase

OTLP_TRACES_PATH = "/v1/traces"

_tracing_lock = threading.Lock()
_installed_provider: TracerProvider | None = None


def build_tracer_provider(
    service_name: str, otlp_endpoint: str | None, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """A provider batching spans to `exporter`, or to OTLP/HTTP at `otlp_endpoint`; None when neither.

    `otlp_endpoint` is the collector's base URL (http://collector:4318), as in
    OTEL_EXPORTER_OTLP_ENDPOINT; the traces path is added when missing.
    """
    if exporter is None:
        if not otlp_endpoint:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_traces_url(otlp_endpoint))
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def configure_tracing(
    service_name: str, otlp_endpoint: str | None, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Install the process-wide tracer provider once; later calls return the installed one.

    Without an endpoint (or exporter) nothing is installed and OpenTelemetry's API stays a no-op.
    OpenTelemetry refuses to replace a global provider, so the first configuration wins.
    """
    global _installed_provider
    with _tracing_lock:
        if _installed_provider is not None:
            return _installed_provider
        provider = build_tracer_provider(service_name, otlp_endpoint, exporter)
        if provider is not None:
            trace.set_tracer_provider(provider)
            _installed_provider = provider
        return provider


def otlp_traces_url(endpoint: str) -> str:
    base = endpoint.rstrip("/")
    return base if base.endswith(OTLP_TRACES_PATH) else base + OTLP_TRACES_PATH


class _BytesHeaderSetter(Setter[MutableMapping[str, bytes]]):
    def set(self, carrier: MutableMapping[str, bytes], key: str, value: str) -> None:
        carrier[key] = value.encode("ascii")


_SETTER = _BytesHeaderSetter()


def inject_trace_headers(
    headers: MutableMapping[str, bytes] | None = None, context: Context | None = None
) -> dict[str, bytes]:
    """Message headers carrying the current (or given) trace context, added to a copy of `headers`."""
    carrier: dict[str, bytes] = dict(headers or {})
    propagate.inject(carrier, context=context, setter=_SETTER)
    return carrier


class MetricsPushFailed(ConnectionError):
    """The Pushgateway could not be reached or refused the metrics."""


class RunMetrics:
    """Metrics of one run, kept in their own registry so each run pushes only what it measured.

    Metrics are created on first use by name and reused after; asking for an existing name as
    another kind of metric is an error.
    """

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "hub") -> None:
        from prometheus_client import CollectorRegistry

        self.registry = registry if registry is not None else CollectorRegistry()
        self.namespace = namespace
        self._metrics: dict[str, MetricWrapperBase] = {}
        self._lock = threading.Lock()

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        from prometheus_client import Counter

        return self._get(Counter, name, documentation, labelnames)

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        from prometheus_client import Gauge

        return self._get(Gauge, name, documentation, labelnames)

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        """`buckets` default to Prometheus's own (`Histogram.DEFAULT_BUCKETS`)."""
        from prometheus_client import Histogram

        chosen = Histogram.DEFAULT_BUCKETS if buckets is None else buckets
        return self._get(Histogram, name, documentation, labelnames, buckets=tuple(chosen))

    def _get(
        self,
        kind: type[Any],
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        **options: Any,
    ) -> Any:
        with self._lock:
            existing = self._metrics.get(name)
            if existing is None:
                existing = kind(
                    name,
                    documentation,
                    labelnames=tuple(labelnames),
                    namespace=self.namespace,
                    registry=self.registry,
                    **options,
                )
                self._metrics[name] = existing
            elif not isinstance(existing, kind):
                raise TypeError(
                    f"metric '{name}' already exists as a {type(existing).__name__}, not a {kind.__name__}"
                )
            return existing


def push_metrics(
    registry: CollectorRegistry,
    gateway_url: str | None,
    job: str,
    grouping_key: Mapping[str, str] | None = None,
    *,
    replace_group: bool = False,
    timeout: float = 10.0,
) -> bool:
    """Push the registry's metrics to the Pushgateway; False (and nothing sent) when none is configured.

    By default only the pushed metric names are replaced within the group (PUT would drop the
    group's other metrics, pushed by other steps of the same run); `replace_group` replaces the group.
    """
    if not gateway_url:
        return False
    from prometheus_client import push_to_gateway as replace_in_gateway
    from prometheus_client import pushadd_to_gateway

    push = replace_in_gateway if replace_group else pushadd_to_gateway
    try:
        push(gateway_url, job=job, registry=registry, grouping_key=dict(grouping_key or {}), timeout=timeout)
    except OSError as error:
        raise MetricsPushFailed(
            f"pushing metrics of job '{job}' {dict(grouping_key or {})} to {gateway_url} failed: {error}"
        ) from error
    return True


_CONTEXT_FIELDS = ("run_id", "asset_key", "partition", "step_key")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the run's context and the trace ids.

    Context comes from the record's `extra` fields (run_id, asset_key, partition, step_key) and,
    for records Dagster emits, from its `dagster_meta` attribute.
    """

    def format(self, record: logging.LogRecord) -> str:
        dagster_meta = getattr(record, "dagster_meta", None)
        meta: Mapping[str, Any] = dagster_meta if isinstance(dagster_meta, Mapping) else {}
        message = meta.get("orig_message") or record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        partition = (meta.get("job_tags") or {}).get("dagster/partition")
        for field_name in _CONTEXT_FIELDS:
            value = getattr(record, field_name, None) or meta.get(field_name)
            if field_name == "partition" and value is None:
                value = partition
            if value is not None:
                entry[field_name] = str(value)
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
