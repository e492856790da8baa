"""Paging: incidents trigger once and resolve after quiet minutes; payloads reach a local HTTP receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hub_pipelines.analytics.alerting import QUIET_MINUTES_TO_RESOLVE, Pager
from hub_pipelines.analytics.anomaly import Finding
from hub_pipelines.resources.notifier import PagerDutySlackNotifier

START = datetime(2026, 3, 10, 12, 0)


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, json.loads(body)))
                self.send_response(202)
                self.end_headers()
                self.wfile.write(b'{"status":"success"}')

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def spike(minute: datetime) -> Finding:
    return Finding("spike", "error_rate", 0.4, 0.02, 0.99, minute)


def test_pager_triggers_once_per_incident_and_resolves_after_quiet_minutes():
    pager = Pager("error_rate")
    alerts = pager.observe(START, 0.99, [spike(START)])
    alerts += pager.observe(START + timedelta(minutes=1), 0.99, [spike(START)])
    quiet = [
        pager.observe(START + timedelta(minutes=2 + n), 0.1, []) for n in range(QUIET_MINUTES_TO_RESOLVE)
    ]
    alerts += [alert for batch in quiet for alert in batch]
    assert [a.action for a in alerts] == ["trigger", "resolve"]
    assert alerts[0].dedup_key == alerts[1].dedup_key == "analytics/error_rate/2026-03-10T12:00"


def test_trigger_and_resolve_reach_pagerduty_and_slack_with_the_api_payloads(receiver):
    notifier = PagerDutySlackNotifier(
        pagerduty_routing_key="routing-key-1",
        pagerduty_url=f"{receiver.url}/v2/enqueue",
        slack_webhook_url=f"{receiver.url}/slack/hook",
    )
    pager = Pager("error_rate")
    alerts = pager.observe(START, 0.99, [spike(START)])
    for n in range(QUIET_MINUTES_TO_RESOLVE):
        alerts += pager.observe(START + timedelta(minutes=1 + n), 0.0, [])
    assert notifier.send(alerts) == 2
    paged = [body for path, body in receiver.requests if path == "/v2/enqueue"]
    slack = [body for path, body in receiver.requests if path == "/slack/hook"]
    assert [p["event_action"] for p in paged] == ["trigger", "resolve"]
    trigger = paged[0]
    assert trigger["routing_key"] == "routing-key-1"
    assert trigger["payload"]["severity"] == "critical"
    assert (trigger["payload"]["group"], trigger["payload"]["source"]) == (
        "analytics",
        "hub-pipelines/analytics",
    )
    assert trigger["payload"]["custom_details"]["type"] == "spike"
    assert {p["dedup_key"] for p in paged} == {"analytics/error_rate/2026-03-10T12:00"}
    assert len(slack) == 2 and "error_rate" in slack[0]["text"]


def test_alerts_beyond_the_rate_limit_are_held_back(receiver):
    notifier = PagerDutySlackNotifier(
        pagerduty_routing_key="k", pagerduty_url=f"{receiver.url}/v2/enqueue", rate="2/minute"
    )
    alerts = [Pager(f"metric_{n}").observe(START, 0.99, [spike(START)])[0] for n in range(4)]
    assert notifier.send(alerts) == 2
    assert len(receiver.requests) == 2
