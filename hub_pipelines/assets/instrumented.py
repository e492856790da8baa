"""What every asset step reports about itself: a span (see tracing.py) and its step metrics, pushed.

`@instrumented(...)` goes under `@dg.asset`. The step runs inside its span; afterwards its outcome,
duration and record counts (read from the named materialization metadata) are recorded with
`record_step` and pushed to the Pushgateway at HUB_PUSHGATEWAY_URL, when set, under the step's
workflow (its group) and asset key. A step adds metrics of its own (consumer lag, breaker state,
quarantine) to `step_metrics()`, which the same push carries.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import dagster as dg

from hub_pipelines import settings
from hub_pipelines.assets.tracing import step_span
from hub_pipelines.core.ops_metrics import push_step_metrics, record_step
from hub_pipelines.core.telemetry import MetricsPushFailed, RunMetrics

AssetFn = TypeVar("AssetFn", bound=Callable[..., Any])

_step_metrics: contextvars.ContextVar[RunMetrics | None] = contextvars.ContextVar(
    "hub_step_metrics", default=None
)


def step_metrics() -> RunMetrics:
    """The metrics the running step will push; outside an instrumented step, a registry nobody pushes."""
    metrics = _step_metrics.get()
    return metrics if metrics is not None else RunMetrics()


def instrumented(
    records: str | int = 0, failed_records: tuple[str, ...] = ()
) -> Callable[[AssetFn], AssetFn]:
    """Wrap an asset's function: its step's span, and its step metrics pushed when it ends.

    `records` names the metadata entry counting what the step handled (or is the count itself, as
    1 for a step over one upload); `failed_records` names the entries (summed) counting what it
    rejected or dead-lettered.
    """

    def decorate(fn: AssetFn) -> AssetFn:
        @functools.wraps(fn)
        def step(*args: Any, **kwargs: Any) -> Any:
            context = dg.AssetExecutionContext.get()
            metrics = RunMetrics()
            token = _step_metrics.set(metrics)
            started = time.perf_counter()
            try:
                with step_span(context):
                    result = fn(*args, **kwargs)
            except BaseException:
                record_step(metrics, succeeded=False, seconds=time.perf_counter() - started, records=0)
                _push(context, metrics)
                raise
            finally:
                _step_metrics.reset(token)
            metadata = result.metadata if isinstance(result, dg.MaterializeResult) else None
            record_step(
                metrics,
                succeeded=True,
                seconds=time.perf_counter() - started,
                records=records if isinstance(records, int) else _count(metadata, (records,)),
                failed_records=_count(metadata, failed_records),
            )
            _push(context, metrics)
            return result

        return step  # type: ignore[return-value]

    return decorate


def _count(metadata: Mapping[str, Any] | None, names: tuple[str, ...]) -> int:
    total = 0
    for name in names:
        value = (metadata or {}).get(name)
        value = getattr(value, "value", value)
        if isinstance(value, int | float):
            total += int(value)
    return total


def _push(context: dg.AssetExecutionContext, metrics: RunMetrics) -> None:
    gateway = settings.pushgateway_url()
    if not gateway:
        return
    key = context.asset_key
    workflow = context.assets_def.group_names_by_key.get(key) or key.path[0]
    try:
        push_step_metrics(metrics, gateway, workflow, key.to_user_string())
    except MetricsPushFailed as error:
        # A Pushgateway outage must not fail the data work; the missing series trip their own alert.
        context.log.warning(str(error))
