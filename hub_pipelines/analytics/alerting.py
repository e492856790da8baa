"""Paging on anomaly findings: when to trigger, when to resolve, and the payloads PagerDuty and Slack get.

An incident is one metric in one window: its dedup key names both, so the repeated findings of a
noisy hour page once (PagerDuty folds triggers with the same key), and a metric that stays normal for
a few minutes resolves its incident with the same key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

# Only a type here: the detector module loads NumPy, and the pager resources import this one.
if TYPE_CHECKING:
    from hub_pipelines.analytics.anomaly import Finding

logger = logging.getLogger(__name__)

QUIET_MINUTES_TO_RESOLVE = 5
ANALYTICS = "analytics"
LANDING = "landing"
"""The group of the pages about a topic's landing (upstream loss, a stuck range), whichever workflow
reads the topic: the data platform's on-call acts on them."""


@dataclass(frozen=True)
class Alert:
    action: Literal["trigger", "resolve"]
    dedup_key: str
    metric: str
    summary: str
    finding: Finding | None = None
    group: str = ANALYTICS
    """Who the page is for (PagerDuty's `group`, and the `source` beside it): the workflow or platform
    part whose on-call acts on it, so an event orchestration can route orders pages to commerce."""


def landing_alert(topic: str, dedup_key: str, summary: str) -> Alert:
    """A page about a topic's landing (a stuck range, a rewound partition, an unreadable topic)."""
    return Alert(
        action="trigger", dedup_key=dedup_key, metric=f"{topic} landing", summary=summary, group=LANDING
    )


def dedup_key(metric: str, window_start: datetime) -> str:
    return f"analytics/{metric}/{window_start:%Y-%m-%dT%H:%M}"


@dataclass
class IncidentState:
    """What a metric's pager remembers between runs (kept beside the detector's state)."""

    open_key: str | None = None
    quiet_minutes: int = 0

    def to_state(self) -> dict[str, Any]:
        return {"open_key": self.open_key, "quiet_minutes": self.quiet_minutes}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> IncidentState:
        state = state or {}
        return cls(state.get("open_key"), int(state.get("quiet_minutes", 0)))


@dataclass
class Pager:
    """Turns one metric's scores and findings, minute by minute, into trigger and resolve alerts."""

    metric: str
    incident: IncidentState = field(default_factory=IncidentState)
    threshold: float = 0.95

    def observe(self, minute: datetime, score: float, findings: list[Finding]) -> list[Alert]:
        if findings:
            self.incident.quiet_minutes = 0
            if self.incident.open_key is not None:
                return []
            finding = max(findings, key=lambda f: f.score)
            key = dedup_key(self.metric, minute.replace(minute=0, second=0, microsecond=0))
            self.incident.open_key = key
            summary = (
                f"{self.metric}: {finding.type} at {minute:%Y-%m-%d %H:%M} UTC, value {finding.value:.4g} "
                f"vs baseline {finding.baseline:.4g} (score {finding.score:.3f})"
            )
            return [Alert("trigger", key, self.metric, summary, finding)]
        if self.incident.open_key is None:
            return []
        self.incident.quiet_minutes = self.incident.quiet_minutes + 1 if score < self.threshold else 0
        if self.incident.quiet_minutes < QUIET_MINUTES_TO_RESOLVE:
            return []
        key, self.incident.open_key, self.incident.quiet_minutes = self.incident.open_key, None, 0
        summary = (
            f"{self.metric}: back to normal for {QUIET_MINUTES_TO_RESOLVE} minutes at {minute:%H:%M} UTC"
        )
        return [Alert("resolve", key, self.metric, summary)]


def pagerduty_event(alert: Alert, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event for the alert."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": alert.action,
        "dedup_key": alert.dedup_key,
    }
    if alert.action == "trigger":
        finding = alert.finding
        event["payload"] = {
            "summary": alert.summary[:1024],
            "source": f"hub-pipelines/{alert.group}",
            "severity": "critical",
            "component": alert.metric,
            "group": alert.group,
            "class": finding.type if finding else "anomaly",
            "custom_details": finding.to_dict() if finding else {},
        }
    return event


def slack_message(alert: Alert) -> dict[str, Any]:
    icon = ":rotating_light:" if alert.action == "trigger" else ":white_check_mark:"
    return {"text": f"{icon} {alert.summary} (incident {alert.dedup_key})"}
