"""Loaded by every interpreter bench/run_start.py's deployment starts (PYTHONPATH); in a process
multiprocessing spawned (a run worker: the code server starts each run so) it writes the worker's own timeline to HUB_BENCH_TIMELINE_DIR/<pid>.jsonl:
when the process was exec'd (from /proc), when site ran, and when each watched module's import began
and ended, each with the CPU time the process had used by then. Only module loads are wrapped, so the
worker runs at its normal speed."""

import importlib.abc
import json
import os
import sys
import time

WATCHED = (
    "dagster",
    "sqlalchemy",
    "alembic",
    "hub_pipelines.definitions",
    "run_start_trivial",
)


def _exec_time() -> float:
    """The epoch second this process started, to the kernel's clock tick: its age (uptime less its start
    in ticks since boot) taken from now."""
    now = time.time()
    with open("/proc/self/stat") as stat:
        started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as uptime:
        up = float(uptime.read().split()[0])
    return now - (up - started_ticks / os.sysconf("SC_CLK_TCK"))


class _Timeline:
    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 (open for the process's life)

    def mark(self, what: str, at: float | None = None) -> None:
        """`what` happened at epoch second `at` (now by default), after this much of the process's CPU."""
        entry = {"what": what, "at": time.time() if at is None else at, "cpu": time.process_time()}
        self._file.write(json.dumps(entry) + "\n")


class _TimedLoader:
    """The module's own loader, its exec_module timed; everything else (resource readers: Dagster finds
    its Alembic scripts through them) is the inner loader's."""

    def __init__(self, inner, name: str, timeline: _Timeline) -> None:
        self._inner, self._name, self._timeline = inner, name, timeline

    def __getattr__(self, attribute):
        return getattr(self._inner, attribute)

    def exec_module(self, module) -> None:
        self._timeline.mark(f"import {self._name} begins")
        try:
            self._inner.exec_module(module)
        finally:
            self._timeline.mark(f"import {self._name} ends")


class _WatchingFinder(importlib.abc.MetaPathFinder):
    def __init__(self, timeline: _Timeline) -> None:
        self._timeline = timeline

    def find_spec(self, name, path, target=None):
        if name not in WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _TimedLoader(spec.loader, name, self._timeline)
                return spec
        return None


def _install() -> None:
    folder = os.environ.get("HUB_BENCH_TIMELINE_DIR")
    if not folder:
        return
    with open("/proc/self/cmdline", "rb") as cmdline:
        if b"--multiprocessing-fork" not in cmdline.read():
            return
    timeline = _Timeline(os.path.join(folder, f"{os.getpid()}.jsonl"))
    timeline.mark("exec", _exec_time())  # its CPU here is the interpreter's start-up
    timeline.mark("site")
    sys.meta_path.insert(0, _WatchingFinder(timeline))


_install()
