"""Ctrl-C on `make run` (scripts/run_local.sh) leaves no process behind within 10 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from hub_pipelines import settings
from tests.services import free_port, wait_until

STOP_SECONDS = 10.0
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


def processes_in_session(session: int) -> dict[int, str]:
    """Every live process of the session, with its command line (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name in field 2 may hold spaces and parentheses: fields count from the last ')'.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return found


def as_from_a_terminal() -> None:
    """Run in the child before exec: nothing blocked, INT and TERM at their defaults. A mask and an
    ignored disposition are both inherited across exec, and bash cannot trap a signal that was ignored
    when it started, so a test process that had either would make the interrupt go unanswered."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_DFL)


def signal_state(pid: int) -> str:
    """The process's pending, blocked, ignored and caught signal sets, from /proc, for a failure message."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except FileNotFoundError:
        return f"process {pid} has ended"
    return " ".join(
        line.replace("\t", "")
        for line in status
        if line.startswith(("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"))
    )


def location_loaded(url: str) -> bool:
    request = urllib.request.Request(
        f"{url}/graphql", json.dumps({"query": LOCATIONS}).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        entries = json.loads(response.read())["data"]["workspaceOrError"]["locationEntries"]
    return [(entry["name"], entry["loadStatus"]) for entry in entries] == [("hub_pipelines", "LOADED")]


def test_interrupt_stops_dagster_its_code_servers_redis_and_the_feeder_within_10_seconds(
    tmp_path: Path,
) -> None:
    port = free_port()
    environment = {
        **os.environ,
        "HUB_DATA_DIR": str(tmp_path / "hub"),
        "HUB_UI_PORT": str(port),
        "HUB_DEMO_INTERVAL": "1",
    }
    environment.pop("DAGSTER_HOME", None)
    with open(tmp_path / "run_local.log", "wb") as log:
        script = subprocess.Popen(
            [str(settings.PROJECT_ROOT / "scripts" / "run_local.sh")],
            cwd=settings.PROJECT_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=as_from_a_terminal,
        )
    try:
        wait_until(lambda: location_loaded(f"http://127.0.0.1:{port}"), "make run's UI", 240, script)
        started = processes_in_session(script.pid)
        commands = " ".join(started.values())
        for part in ("redis-server", "dagster dev", "dagster_webserver", "dagster._daemon", "demo --trickle"):
            assert part in commands, (part, started)

        os.kill(script.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_SECONDS
        while processes_in_session(script.pid) and time.monotonic() < deadline:
            time.sleep(0.2)

        assert processes_in_session(script.pid) == {}, (
            f"script {signal_state(script.pid)}; this test process {signal_state(os.getpid())}\n"
            + (tmp_path / "run_local.log").read_text()[-3000:]
        )
        assert not (tmp_path / "hub" / "redis" / "redis.sock").exists()
    finally:
        for pid in processes_in_session(script.pid):
            os.kill(pid, signal.SIGKILL)
        script.wait(timeout=10)
