"""A process holding a chdb data folder lends it to the processes waiting for it and gets it back at its
own turn: first come first served, across real processes (`warehouse_turn_worker.py`), with waiters and
holders SIGKILLed along the way. The folder's `turns` table records who had it in which order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hub_pipelines.resources.analytics.waiting_line import WaitingLine
from tests.services import wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# A worker imports chdb and Dagster's resource classes: tens of seconds on a loaded machine.
START_TIMEOUT_S = 240.0
pytestmark = pytest.mark.timeout(900)


@dataclass
class Folder:
    """A chdb data folder, its waiting line, and the worker processes taking turns at it."""

    path: Path
    processes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    @property
    def line(self) -> WaitingLine:
        return WaitingLine.of(self.path)

    def start(self, role: str, name: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.resources.warehouse_turn_worker", role, name, str(self.path)],
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.processes[name] = process
        return process

    def waiting(self) -> list[str]:
        """The names of the processes in the line, first come first."""
        names = {process.pid: name for name, process in self.processes.items()}
        return [names.get(waiter.pid, waiter.describe()) for waiter in self.line.waiting()]

    def join(self, name: str) -> subprocess.Popen[str]:
        """A waiter started and standing in the line."""
        process = self.start("waiter", name)
        wait_until(lambda: name in self.waiting(), f"{name} in the line", START_TIMEOUT_S, process)
        return process

    def tell(self, name: str, command: str) -> None:
        stdin = self.processes[name].stdin
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()

    def hear(self, name: str) -> str:
        stdout = self.processes[name].stdout
        assert stdout is not None
        return stdout.readline().strip()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Folder]:
    shared = Folder(tmp_path / "warehouse")
    try:
        yield shared
    finally:
        shared.stop()


def _held(folder: Folder, name: str) -> subprocess.Popen[str]:
    holder = folder.start("holder", name)
    assert folder.hear(name) == "held"
    return holder


def test_waiter_gets_the_folder_while_its_holder_lives_and_the_holder_gets_it_back(folder: Folder):
    holder = _held(folder, "holder")
    folder.join("waiter")

    folder.tell("holder", "lend")
    assert folder.hear("waiter") == "opened"
    assert holder.poll() is None
    assert folder.waiting() == ["holder"]
    folder.tell("waiter", "close")
    assert folder.hear("waiter") == "closed"
    loan = json.loads(folder.hear("holder"))

    assert loan["borrowers"] == [f"pid {folder.processes['waiter'].pid}"]
    folder.tell("holder", "turns")
    assert json.loads(folder.hear("holder")) == ["holder", "waiter", "holder"]
    assert folder.waiting() == []


def test_waiters_and_the_lending_holder_take_turns_first_come_first_served(folder: Folder):
    _held(folder, "holder")
    folder.join("first")
    folder.join("second")

    folder.tell("holder", "lend")
    assert folder.hear("first") == "opened"
    # The holder stands behind those who came before it lent the folder, before those who came after.
    folder.join("later")
    assert folder.waiting() == ["second", "holder", "later"]
    folder.tell("first", "close")
    assert folder.hear("second") == "opened"
    assert folder.waiting() == ["holder", "later"]
    folder.tell("second", "close")
    first_loan = json.loads(folder.hear("holder"))
    folder.tell("holder", "lend")
    assert folder.hear("later") == "opened"
    folder.tell("later", "close")
    second_loan = json.loads(folder.hear("holder"))

    assert len(first_loan["borrowers"]) == 2 and len(second_loan["borrowers"]) == 1
    folder.tell("holder", "turns")
    assert json.loads(folder.hear("holder")) == ["holder", "first", "second", "holder", "later", "holder"]


def test_a_waiter_killed_in_the_line_leaves_a_marker_the_holder_ignores_and_clears(folder: Folder):
    _held(folder, "holder")
    killed = folder.join("killed")
    killed.kill()
    assert killed.wait() == -9
    assert len([name for name in os.listdir(folder.line.directory) if not name.startswith(".")]) == 1

    folder.tell("holder", "lend")

    assert json.loads(folder.hear("holder")) is None
    assert os.listdir(folder.line.directory) == []
    folder.join("waiter")
    folder.tell("holder", "lend")
    assert folder.hear("waiter") == "opened"
    folder.tell("waiter", "close")
    assert json.loads(folder.hear("holder")) is not None
    folder.tell("holder", "turns")
    assert json.loads(folder.hear("holder")) == ["holder", "waiter", "holder"]


def test_a_holder_killed_while_lending_leaves_the_folder_to_the_waiters_behind_it(folder: Folder):
    holder = _held(folder, "holder")
    folder.join("borrower")
    folder.tell("holder", "lend")
    assert folder.hear("borrower") == "opened"
    folder.join("behind")
    assert folder.waiting() == ["holder", "behind"]

    holder.kill()
    assert holder.wait() == -9
    folder.tell("borrower", "close")

    assert folder.hear("behind") == "opened"
    assert folder.waiting() == []
    folder.tell("behind", "close")
    assert folder.hear("behind") == "closed"
    _held(folder, "reader")
    folder.tell("reader", "turns")
    assert json.loads(folder.hear("reader")) == ["holder", "borrower", "behind", "reader"]
