"""The chaos run's report: operations and faults by kind, anomalies with evidence, latencies, throughput."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.checker import Anomaly, Findings
from chaos.nemesis import Nemesis
from chaos.workload import Produced

# What the same work does in one process with no orchestration, from docs/benchmarks.md's quiet runs.
BENCH_IN_PROCESS = {
    "orders paid": "203-224 (bench/orders.py, full ledger path, gateway 0 ms)",
    "events landed": "107,000-150,000 (bench/analytics.py, broker -> ClickHouse + Redis counters)",
    "uploads published": "36-70 MB/s (bench/media.py, origin + 3 regions, verified)",
}


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    if len(ordered) == 1:
        only = round(ordered[0], 2)
        return {"n": 1, "p50": only, "p95": only, "p99": only, "max": only}
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "n": len(ordered),
        "p50": round(cuts[49], 2),
        "p95": round(cuts[94], 2),
        "p99": round(cuts[98], 2),
        "max": round(ordered[-1], 2),
    }


@dataclass
class Report:
    config: dict[str, Any]
    operations: dict[str, int]
    faults: dict[str, int]
    # Faults drawn that could not be made, by kind (their reasons are in the fault log).
    faults_not_fired: dict[str, int]
    # Faults fired while the load ran, per minute of load (the issue asks for at least one a minute).
    faults_per_minute: float
    fault_log: list[dict[str, Any]]
    anomalies: list[Anomaly]
    outcomes: dict[str, dict[str, int]]
    latency_s: dict[str, dict[str, float]]
    throughput_per_s: dict[str, float]
    # The same work measured in process by bench/ (docs/benchmarks.md), beside the figures above.
    bench_in_process_per_s: dict[str, str]
    run_phases_s: dict[str, dict[str, float]]
    timings: dict[str, float]
    load_average: dict[str, Any]
    harness_errors: list[str] = field(default_factory=list)
    stock_samples: int = 0
    supervisor_restarts: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "anomalies": [asdict(a) for a in self.anomalies]}

    def render(self) -> str:
        lines = [
            f"chaos run: seed {self.config['seed']}, {self.config['minutes']} min, nemesis {'on' if self.config['nemesis'] else 'off'}"
        ]
        lines.append("operations: " + ", ".join(f"{k} {v}" for k, v in sorted(self.operations.items())))
        lines.append(
            "faults fired: " + (", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none")
        )
        lines.append(f"faults fired during the load per minute: {self.faults_per_minute}")
        if self.faults_not_fired:
            lines.append(
                "faults drawn but not fired: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.faults_not_fired.items()))
            )
        for name, counts in sorted(self.outcomes.items()):
            lines.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for name, figures in self.latency_s.items():
            lines.append(f"latency {name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
        lines.append(
            "throughput through Dagster per s (load and drain): "
            + ", ".join(f"{k} {v}" for k, v in self.throughput_per_s.items())
        )
        lines.append(
            "in process (bench/, docs/benchmarks.md): "
            + ", ".join(f"{k} {v}" for k, v in self.bench_in_process_per_s.items())
        )
        for name, figures in sorted(self.run_phases_s.items()):
            lines.append(f"run {name} s: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
        lines.append(f"stock sampled {self.stock_samples} times; load average {self.load_average}")
        if self.supervisor_restarts:
            lines.append(f"processes restarted by the supervisor: {self.supervisor_restarts}")
        lines.append(f"anomalies: {len(self.anomalies)}")
        lines += [f"  ANOMALY {a.kind}: {a.detail} {a.evidence}" for a in self.anomalies[:50]]
        if self.harness_errors:
            lines.append(
                f"harness saw {len(self.harness_errors)} errors (faults at work), first: {self.harness_errors[:3]}"
            )
        return "\n".join(lines)


def build_report(
    config_summary: dict[str, Any],
    produced: Produced,
    nemesis: Nemesis,
    found: Findings,
    seen_errors: list[str],
    stock_samples: int,
    timings: dict[str, float],
    load_average: dict[str, Any],
    restarts: list[str],
    faults_during_load: int,
) -> Report:
    operations = Counter({f"orders.{k}": v for k, v in Counter(m.kind for m in produced.orders).items()})
    operations.update({f"events.{k}": v for k, v in Counter(m.kind for m in produced.events).items()})
    operations.update({f"uploads.{k}": v for k, v in Counter(u.kind for u in produced.uploads).items()})
    busy = timings["load_s"] + timings["drain_s"]
    paid = sum(
        counts.get("paid", 0)
        for name, counts in found.outcomes.items()
        if name.startswith("orders.") and name != "orders.duplicate"
    )
    events = len(found.latencies.get("event produced -> warehouse and Redis", []))
    published = len(found.latencies.get("uploaded -> published", []))
    return Report(
        config=config_summary,
        operations=dict(operations),
        faults=nemesis.counts(),
        faults_not_fired=nemesis.not_fired_counts(),
        faults_per_minute=round(faults_during_load / (timings["load_s"] / 60), 2)
        if timings["load_s"]
        else 0.0,
        fault_log=[{**asdict(fault), "fired": True} for fault in nemesis.injected]
        + [{**asdict(fault), "fired": False} for fault in nemesis.not_fired]
        + [{"error": e} for e in nemesis.errors],
        anomalies=found.anomalies,
        outcomes={name: dict(counts) for name, counts in found.outcomes.items()},
        latency_s={name: percentiles(values) for name, values in found.latencies.items()},
        throughput_per_s={
            "orders paid": round(paid / busy, 2),
            "events landed": round(events / busy, 2),
            "uploads published": round(published / busy, 3),
        },
        bench_in_process_per_s=BENCH_IN_PROCESS,
        run_phases_s={name: percentiles(values) for name, values in found.run_phases.items()},
        timings={k: round(v, 1) for k, v in timings.items()},
        load_average=load_average,
        harness_errors=seen_errors,
        stock_samples=stock_samples,
        supervisor_restarts=restarts,
    )
