"""Anomaly scores per metric over the minute rollups, continuing each detector from its saved state.

Metrics, one value per minute: events per type (`events.<type>`), `error_rate` (errors / events),
`purchase_volume` (revenue) and `active_users` (distinct users). A minute is scored once the data
has moved past it (a later minute has events), so a minute still filling is not judged early; empty
minutes in between count as zero. Each detector's state and its pager's incident are saved per metric
with the last minute scored, and the next run continues from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa

from hub_pipelines.analytics.alerting import Alert, IncidentState, Pager
from hub_pipelines.analytics.anomaly import AnomalyDetector, DetectorSettings, Finding
from hub_pipelines.analytics.events import EVENT_TYPES
from hub_pipelines.analytics.schema import DISTINCT_MERGE, AnalyticsTables
from hub_pipelines.core.ports import Notifier, Warehouse

METRICS: tuple[str, ...] = (
    *(f"events.{t}" for t in EVENT_TYPES),
    "error_rate",
    "purchase_volume",
    "active_users",
)
MINUTE = timedelta(minutes=1)
# The score that pages and keeps an incident open: the detector's threshold, which bench/nab.py chose on
# left-out NAB categories (each fold picks it on the other three; this is their median).
PAGING_THRESHOLD = DetectorSettings().threshold


@dataclass
class ScoringOutcome:
    minutes_scored: int = 0
    findings: list[Finding] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    latest_scores: dict[str, float] = field(default_factory=dict)


def minute_values(
    warehouse: Warehouse, tables: AnalyticsTables, start: datetime, end: datetime
) -> dict[datetime, dict[str, float]]:
    """Every metric for each minute in [start, end), zeros where a minute had no events."""
    params = {"start": start, "end": end}
    window = "bucket >= {start:DateTime('UTC')} AND bucket < {end:DateTime('UTC')}"
    per_type = warehouse.query_df(
        "SELECT toUnixTimestamp(bucket) AS minute, type, sum(events) AS events, sum(errors) AS errors, "
        f"toFloat64(sum(revenue)) AS revenue FROM {tables.rollup_minute} WHERE {window} GROUP BY bucket, type",
        params,
    )
    users = warehouse.query_df(
        f"SELECT toUnixTimestamp(bucket) AS minute, {DISTINCT_MERGE}(users) AS users "
        f"FROM {tables.rollup_minute} WHERE {window} GROUP BY bucket",
        params,
    )
    values: dict[datetime, dict[str, float]] = {}
    minute = start
    while minute < end:
        values[minute] = {metric: 0.0 for metric in METRICS}
        minute += MINUTE
    totals: dict[datetime, tuple[float, float]] = {}
    for epoch, kind, events, errors, revenue in per_type.itertuples(index=False):
        bucket = _naive_utc(int(epoch))
        row = values[bucket]
        row[f"events.{kind}"] = float(events)
        row["purchase_volume"] += float(revenue)
        all_events, all_errors = totals.get(bucket, (0.0, 0.0))
        totals[bucket] = (all_events + float(events), all_errors + float(errors))
    for bucket, (all_events, all_errors) in totals.items():
        values[bucket]["error_rate"] = all_errors / all_events if all_events else 0.0
    for epoch, count in users.itertuples(index=False):
        values[_naive_utc(int(epoch))]["active_users"] = float(count)
    return values


def _naive_utc(epoch: int) -> datetime:
    """A UTC time without tzinfo, as ClickHouse's DateTime('UTC') parameters take it."""
    return datetime(1970, 1, 1) + timedelta(seconds=epoch)


def load_states(warehouse: Warehouse, tables: AnalyticsTables) -> dict[str, tuple[datetime, dict]]:
    found = warehouse.query_df(
        f"SELECT metric, toUnixTimestamp(last_bucket) AS last, state FROM {tables.detector_state} FINAL"
    )
    return {
        metric: (_naive_utc(int(last)), json.loads(state))
        for metric, last, state in found.itertuples(index=False)
    }


def save_states(
    warehouse: Warehouse, tables: AnalyticsTables, rows: list[tuple[str, datetime, dict]]
) -> None:
    if not rows:
        return
    table = pa.table(
        {
            "metric": [metric for metric, _, _ in rows],
            "last_bucket": pa.array([last for _, last, _ in rows], pa.timestamp("s", tz="UTC")),
            "state": [json.dumps(state) for _, _, state in rows],
        }
    )
    warehouse.insert_arrow(tables.detector_state, table)


def score_new_minutes(
    warehouse: Warehouse, tables: AnalyticsTables, threshold: float = PAGING_THRESHOLD
) -> ScoringOutcome:
    """Run every metric's detector over the minutes not scored yet; save states; return findings and alerts."""
    tables.ensure(warehouse)
    span = warehouse.query_df(
        f"SELECT toUnixTimestamp(max(bucket)) AS newest, count() AS n FROM {tables.rollup_minute}"
    )
    outcome = ScoringOutcome()
    if int(span["n"].iloc[0]) == 0:
        return outcome
    end = _naive_utc(int(span["newest"].iloc[0]))
    # A detector's first run starts where the last day's data starts, not at a stretch of empty minutes.
    earliest = warehouse.query_df(
        f"SELECT toUnixTimestamp(min(bucket)) AS first FROM {tables.rollup_minute} "
        "WHERE bucket >= {since:DateTime('UTC')}",
        {"since": end - timedelta(hours=24)},
    )
    first = _naive_utc(int(earliest["first"].iloc[0]))
    saved = load_states(warehouse, tables)
    starts = [saved[m][0] + MINUTE if m in saved else first for m in METRICS]
    start = min(starts)
    if start >= end:
        return outcome
    values = minute_values(warehouse, tables, start, end)
    rows = []
    for metric, metric_start in zip(METRICS, starts, strict=True):
        state = saved.get(metric, (None, {}))[1]
        detector = (
            AnomalyDetector.from_state(state["detector"]) if "detector" in state else AnomalyDetector(metric)
        )
        pager = Pager(metric, IncidentState.from_state(state.get("incident")), threshold)
        last = None
        for minute, row in values.items():
            if minute < metric_start:
                continue
            score = detector.update(row[metric], minute)
            findings = detector.drain_findings()
            outcome.findings.extend(findings)
            outcome.alerts.extend(pager.observe(minute, score, findings))
            outcome.latest_scores[metric] = score
            last = minute
        if last is not None:
            rows.append(
                (metric, last, {"detector": detector.to_state(), "incident": pager.incident.to_state()})
            )
    outcome.minutes_scored = len([m for m in values if m >= min(starts)])
    save_states(warehouse, tables, rows)
    return outcome


def score_and_page(
    warehouse: Warehouse, tables: AnalyticsTables, pager: Notifier
) -> tuple[ScoringOutcome, int]:
    """Score the minutes not scored yet and send their alerts to the on-call; returns the outcome and how
    many alerts the pager delivered."""
    outcome = score_new_minutes(warehouse, tables)
    return outcome, pager.send(outcome.alerts) if outcome.alerts else 0
