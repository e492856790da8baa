"""A failed run pages PagerDuty and posts to Slack with its link and error (local HTTP receiver)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dagster as dg
import pytest

from hub_pipelines.resources.notifier import LogNotifier, PagerDutySlackNotifier
from hub_pipelines.sensors.run_failures import run_failure_alerts, run_url

DAGSTER_URL = "https://dagster.hub.example.com"


class Receiver:
    """Records every JSON body POSTed to it, by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((self.path, json.loads(body)))
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status":"success"}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for received_path, body in self.received if received_path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@dg.asset(key=["media", "renditions"])
def renditions() -> None:
    raise ValueError("upload 'clip.mov' (sha256 9f2c): decoder rejected stream 0: invalid NAL unit")


def failed_run_context(instance: dg.DagsterInstance, pager: object) -> dg.RunFailureSensorContext:
    result = dg.materialize(
        [renditions], instance=instance, tags={"hub/workflow": "media"}, raise_on_error=False
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.event_type_value == "PIPELINE_FAILURE")
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"pager": pager},
    ).for_run_failure()


def test_failed_run_pages_pagerduty_and_posts_slack_with_link_and_error(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUB_DAGSTER_URL", DAGSTER_URL)
    pager = PagerDutySlackNotifier(
        pagerduty_routing_key="routing-key-for-tests",
        pagerduty_url=f"{receiver.url}/v2/enqueue",
        slack_webhook_url=f"{receiver.url}/slack/hook",
    )
    with dg.instance_for_test() as instance, failed_run_context(instance, pager) as context:
        run_failure_alerts(context)
        run_id = context.dagster_run.run_id

    link = f"{DAGSTER_URL}/runs/{run_id}"
    [event] = receiver.bodies("/v2/enqueue")
    assert event["routing_key"] == "routing-key-for-tests"
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == f"dagster-run/{run_id}"
    summary = event["payload"]["summary"]
    assert context.dagster_run.job_name in summary
    assert (
        "ValueError: upload 'clip.mov' (sha256 9f2c): decoder rejected stream 0: invalid NAL unit" in summary
    )
    assert link in summary
    assert "media workflow" in summary
    assert (event["payload"]["group"], event["payload"]["source"]) == ("media", "hub-pipelines/media")
    [slack] = receiver.bodies("/slack/hook")
    assert link in slack["text"]
    assert "invalid NAL unit" in slack["text"]


def test_local_pager_logs_the_alert_with_a_link_to_the_port_the_ui_serves_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HUB_DAGSTER_URL", raising=False)
    monkeypatch.delenv("HUB_UI_HOST", raising=False)
    monkeypatch.setenv("HUB_UI_PORT", "3111")
    with dg.instance_for_test() as instance, failed_run_context(instance, LogNotifier()) as context:
        with caplog.at_level(logging.WARNING, logger="hub_pipelines.resources.notifier"):
            run_failure_alerts(context)
        run_id = context.dagster_run.run_id

    [logged] = [r.getMessage() for r in caplog.records if r.name == "hub_pipelines.resources.notifier"]
    assert f"dagster-run/{run_id}" in logged
    assert f"http://127.0.0.1:3111/runs/{run_id}" in logged
    assert "step media__renditions: ValueError: upload 'clip.mov'" in logged


def test_alert_link_points_at_the_ui_port_make_run_serves_when_no_external_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HUB_DAGSTER_URL", raising=False)
    monkeypatch.setenv("HUB_UI_HOST", "10.1.2.3")
    monkeypatch.setenv("HUB_UI_PORT", "3111")
    assert run_url("run-1") == "http://10.1.2.3:3111/runs/run-1"
    monkeypatch.setenv("HUB_DAGSTER_URL", DAGSTER_URL + "/")
    assert run_url("run-1") == f"{DAGSTER_URL}/runs/run-1"
