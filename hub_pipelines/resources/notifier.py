"""Where anomaly alerts go: the log locally, PagerDuty (Events API v2) and Slack in production.

Both implementations take the same `Alert`s. The paging one is rate-limited per destination (a burst
of findings must not flood the on-call channel; PagerDuty folds repeats of a dedup key anyway), and a
held-back or failed delivery is logged with the alert's dedup key, never raised: an alert outage must
not fail the run that scored the data.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import PrivateAttr

from hub_pipelines.analytics.alerting import Alert, pagerduty_event, slack_message
from hub_pipelines.core.rate_limit import RateLimiter

# httpx loads with the first request: the local implementation beside this one never needs it.
if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


class LogNotifier(dg.ConfigurableResource):
    """Writes each alert to the log (and keeps them, for tests and the local UI's run logs)."""

    _sent: list[Alert] = PrivateAttr(default_factory=list)

    @property
    def sent(self) -> list[Alert]:
        return list(self._sent)

    def send(self, alerts: list[Alert]) -> int:
        for alert in alerts:
            logger.warning("anomaly alert %s %s: %s", alert.action, alert.dedup_key, alert.summary)
            self._sent.append(alert)
        return len(alerts)


class PagerDutySlackNotifier(dg.ConfigurableResource):
    """Triggers and resolves PagerDuty incidents and posts the same alerts to a Slack webhook."""

    pagerduty_routing_key: str
    slack_webhook_url: str = ""
    pagerduty_url: str = PAGERDUTY_EVENTS_URL
    rate: str = "20/minute"
    timeout_seconds: float = 5.0

    _client: httpx.Client | None = PrivateAttr(default=None)
    _limiter: RateLimiter | None = PrivateAttr(default=None)

    def _http(self) -> httpx.Client:
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_seconds)
        return self._client

    def _budget(self) -> RateLimiter:
        if self._limiter is None:
            self._limiter = RateLimiter(self.rate, namespace="analytics-alerts")
        return self._limiter

    def _post(self, destination: str, url: str, body: dict, alert: Alert) -> bool:
        import httpx

        if not self._budget().hit(destination):
            logger.warning(
                "alert %s %s to %s held back by the rate limit %s",
                alert.action,
                alert.dedup_key,
                destination,
                self.rate,
            )
            return False
        try:
            response = self._http().post(url, json=body)
            response.raise_for_status()
        except httpx.HTTPError as failure:
            logger.error("alert %s %s to %s failed: %s", alert.action, alert.dedup_key, destination, failure)
            return False
        return True

    def send(self, alerts: list[Alert]) -> int:
        delivered = 0
        for alert in alerts:
            paged = self._post(
                "pagerduty", self.pagerduty_url, pagerduty_event(alert, self.pagerduty_routing_key), alert
            )
            if self.slack_webhook_url:
                self._post("slack", self.slack_webhook_url, slack_message(alert), alert)
            delivered += paged
        return delivered

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
