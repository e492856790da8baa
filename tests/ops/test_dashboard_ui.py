"""The Dagster UI, served from workspace.yaml, shows the dashboard: read by a real headless Chromium.

Set HUB_SAVE_SCREENSHOTS=1 to also save the asset graph, the realtime counters' plots and the dashboard
tables into docs/screenshots/ (how the README's pictures are made).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import websockets.sync.client

from hub_pipelines import settings
from hub_pipelines.definitions import build_definitions, local_resources
from hub_pipelines.resources.analytics.warehouse import ChdbWarehouse
from tests.platform.conftest import LocalEnvironment
from tests.services import free_port, require_binary, start_process, stop_process, wait_until

COUNTERS = "analytics/realtime_counters"
SCREENSHOTS = settings.PROJECT_ROOT / "docs" / "screenshots"
LOCATION_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


@dataclass
class ServedUi:
    url: str
    chromium: str


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql", json.dumps({"query": query}).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


def _location_loaded(url: str) -> bool:
    entries = _graphql(url, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
    return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)


@pytest.fixture(scope="module")
def served_ui(tmp_path_factory: pytest.TempPathFactory, chdb_path: str) -> Iterator[ServedUi]:
    """Two analytics runs of demo events in an instance on disk, and dagster-webserver serving it."""
    chromium = require_binary("chromium", install="apt-get install -y chromium")
    tmp_path = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _serve(tmp_path, monkeypatch, chdb_path, chromium)


def _serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chdb_path: str, chromium: str
) -> Iterator[ServedUi]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    environment = {
        "DAGSTER_HOME": str(home),
        "HUB_ENV": "local",
        "HUB_DATA_DIR": str(tmp_path / "hub"),
        "HUB_ANALYTICS_DATABASE": f"test_{uuid.uuid4().hex[:12]}",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HUB_REDIS_URL", raising=False)
    monkeypatch.setattr(settings, "EVENTS_FOLLOW_SECONDS", 0.0)
    monkeypatch.setattr(settings, "ORDERS_FOLLOW_SECONDS", 0.0)
    resources = local_resources()
    resources["warehouse"] = ChdbWarehouse(path=chdb_path)
    with dg.DagsterInstance.get() as instance:
        env = LocalEnvironment(
            tmp_path / "hub", resources, build_definitions(resources, local=True), instance
        )
        feeder = env.demo_feeder(seed=23)
        cursor = None
        for _ in range(2):
            feeder.send_events(300)
            result, cursor = env.tick("events_topic_sensor", cursor)
            assert isinstance(result, dg.SensorResult), result
            for request in result.run_requests or []:
                assert env.run("events_topic_sensor", "analytics_pipeline", request).success

    port = free_port()
    webserver = start_process(
        [str(settings.PROJECT_ROOT / ".venv" / "bin" / "dagster-webserver"), "-w", "workspace.yaml",
         "-h", "127.0.0.1", "-p", str(port)],
        tmp_path / "webserver.log",
        cwd=settings.PROJECT_ROOT,
        env={**os.environ, **environment},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _location_loaded(url), "dagster-webserver", timeout=180, process=webserver)
        # The UI's own answer to its first-visit newsletter prompt, which would cover every page.
        _graphql(url, "mutation { setNuxSeen }")
        yield ServedUi(url, chromium)
    finally:
        stop_process(webserver)


def _chromium(ui: ServedUi, path: str, *output: str) -> str:
    """The page after its scripts ran, as Chromium rendered it (`output`: --dump-dom or --screenshot=...)."""
    done = subprocess.run(
        [ui.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--window-size=1600,1000", "--virtual-time-budget=20000", *output, f"{ui.url}{path}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_location_is_named_by_workspace_yaml(served_ui: ServedUi) -> None:
    entries = _graphql(served_ui.url, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
    assert [entry["name"] for entry in entries] == ["hub_pipelines"]


class DevTools:
    """One headless Chromium page driven over the DevTools protocol (to click the UI's Plots toggle)."""

    def __init__(self, chromium: str, profile: Path) -> None:
        self.process = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--window-size=1600,1000", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            # Chromium writes the port it listens on into the profile, in a file that may be seen empty first.
            active_port = profile / "DevToolsActivePort"
            wait_until(lambda: bool(active_port.read_text().split()), "chromium", process=self.process)
            port = active_port.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                [page] = [target for target in json.loads(response.read()) if target["type"] == "page"]
            self.socket = websockets.sync.client.connect(page["webSocketDebuggerUrl"], max_size=None)
        except BaseException:
            # Its own session outlives the test otherwise.
            stop_process(self.process)
            raise
        self.calls = itertools.count(1)

    def call(self, method: str, **params: object) -> dict:
        call_id = next(self.calls)
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == call_id:
                assert "error" not in message, message
                return message["result"]

    def holds(self, expression: str) -> bool:
        return bool(
            self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"]
        )

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.socket.close()
        stop_process(self.process)


CLICK_PLOTS = """(() => {
  const toggle = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Plots');
  if (toggle) toggle.click();
  return Boolean(toggle);
})()"""

SCROLL_TO_DASHBOARD_PLOTS = """(() => {
  const title = [...document.querySelectorAll('div, span')].find(
    e => e.childElementCount === 0 && e.textContent.trim() === 'dashboard.active_users_24h');
  if (title) title.scrollIntoView({block: 'start'});
  return Boolean(title);
})()"""


def test_ui_plots_the_dashboard_numbers_of_realtime_counters(served_ui: ServedUi, tmp_path: Path) -> None:
    browser = DevTools(served_ui.chromium, tmp_path / "chromium")
    try:
        browser.call("Page.navigate", url=f"{served_ui.url}/assets/{COUNTERS}")
        wait_until(lambda: browser.holds(CLICK_PLOTS), "the Plots toggle of the asset's metadata")
        for number in (
            "dashboard.active_users_24h",
            "dashboard.revenue_24h",
            "dashboard.error_rate_last_hour",
        ):
            wait_until(
                lambda number=number: browser.holds(
                    f"document.body.innerText.includes('{number}') && document.querySelectorAll('canvas').length > 0"
                ),
                f"a plot of {number}",
            )
        if os.environ.get("HUB_SAVE_SCREENSHOTS"):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            assert browser.holds(SCROLL_TO_DASHBOARD_PLOTS)
            browser.screenshot(SCREENSHOTS / "realtime-counters-plots.png")
    finally:
        browser.close()


def test_ui_shows_the_dashboard_tables_of_realtime_counters(served_ui: ServedUi) -> None:
    events = _chromium(served_ui, f"/assets/{COUNTERS}?view=events", "--dump-dom")
    for table in ("dashboard.funnel", "dashboard.revenue_per_hour", "dashboard.top_products_today"):
        assert table in events, table
    assert "page_view" in events and "add_to_cart" in events

    if os.environ.get("HUB_SAVE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name, path in (
            ("asset-graph", "/locations/hub_pipelines/asset-groups/analytics/lineage"),
            ("dashboard", f"/assets/{COUNTERS}?view=events"),
        ):
            _chromium(served_ui, path, f"--screenshot={SCREENSHOTS / name}.png")
            assert (SCREENSHOTS / f"{name}.png").stat().st_size > 0
