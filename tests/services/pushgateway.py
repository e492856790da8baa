"""Prometheus Pushgateway, the place run metrics are pushed to.

Fixture `pushgateway_url` yields the gateway's base URL (http://127.0.0.1:PORT). Set
HUB_TEST_PUSHGATEWAY to a running gateway's URL to use it instead; tests push under job names of
their own, so a shared gateway is fine.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator

import pytest

from tests.services import free_port, require_binary, start_process, stop_process, wait_until


def pushgateway_ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=1.0) as response:
        return bool(response.status == 200)


@pytest.fixture(scope="session")
def pushgateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("HUB_TEST_PUSHGATEWAY")
    if existing:
        yield existing.rstrip("/")
        return
    binary = require_binary("prometheus-pushgateway", install="apt-get install -y prometheus-pushgateway")
    folder = tmp_path_factory.mktemp("pushgateway")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_process([binary, f"--web.listen-address=127.0.0.1:{port}"], folder / "pushgateway.log")
    try:
        wait_until(lambda: pushgateway_ready(url), "prometheus-pushgateway", timeout=30, process=process)
        yield url
    finally:
        stop_process(process)
