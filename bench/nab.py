"""Score the analytics anomaly detector on the NAB subset in ../shared/nab (standard profile).

    uv run python bench/nab.py [--nab-dir PATH] [--workers N]

Every series is read once, in order, by a fresh detector with the default settings (nothing is tuned
per file, the detector never sees the labels); one threshold for the whole corpus is then chosen by
sweeping, as NAB does. Prints the per-category and total normalised scores, the threshold and the
detector's cost per point.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from hub_pipelines.analytics.anomaly import AnomalyDetector
from hub_pipelines.analytics.nab_scoring import (
    LabelledSeries,
    best_threshold,
    label_series,
    normalised_score,
    null_and_perfect,
    raw_score_at,
)

DEFAULT_NAB_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "nab"


@dataclass(frozen=True)
class NabSeries:
    category: str
    name: str
    timestamps: list[datetime]
    values: np.ndarray
    windows: list[tuple[int, int]]


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def load_corpus(nab_dir: Path) -> list[NabSeries]:
    labels = json.loads((nab_dir / "windows.json").read_text())
    corpus = []
    for key in sorted(labels):
        category, name = key.split("/", 1)
        with (nab_dir / "data" / key).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        timestamps = [_parse_time(row["timestamp"]) for row in rows]
        index = {ts: i for i, ts in enumerate(timestamps)}
        windows = []
        for start, end in labels[key]:
            try:
                windows.append((index[_parse_time(start)], index[_parse_time(end)]))
            except KeyError as missing:
                raise SystemExit(f"{key}: window bound {missing} is not a timestamp of the series") from None
        values = np.array([float(row["value"]) for row in rows])
        corpus.append(NabSeries(category, name, timestamps, values, windows))
    return corpus


def run_detector(series: NabSeries) -> tuple[np.ndarray, float]:
    """Scores of a fresh detector fed the series point by point, and the seconds it took."""
    detector = AnomalyDetector(metric=series.name)
    scores = np.empty(len(series.values))
    started = time.perf_counter()
    for i, (value, ts) in enumerate(zip(series.values.tolist(), series.timestamps, strict=True)):
        scores[i] = detector.update(value, ts)
    return scores, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nab-dir", type=Path, default=DEFAULT_NAB_DIR)
    parser.add_argument("--workers", type=int, default=1, help="processes running series in parallel")
    args = parser.parse_args()

    corpus = load_corpus(args.nab_dir)
    labelled: list[LabelledSeries] = [
        label_series(f"{s.category}/{s.name}", len(s.values), s.windows) for s in corpus
    ]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            runs = list(pool.map(run_detector, corpus))
    else:
        runs = [run_detector(s) for s in corpus]
    scores = [r[0] for r in runs]
    seconds = sum(r[1] for r in runs)
    points = sum(len(s.values) for s in corpus)

    best = best_threshold(labelled, scores)
    null, perfect = null_and_perfect(labelled)
    print(f"NAB standard profile, {len(corpus)} series, {points} points, {perfect:.0f} windows")
    print(f"{'category':<24}{'files':>6}{'windows':>9}{'raw':>10}{'score':>9}")
    for category in sorted({s.category for s in corpus}):
        picked = [i for i, s in enumerate(corpus) if s.category == category]
        cat_labelled = [labelled[i] for i in picked]
        raw = raw_score_at(cat_labelled, [scores[i] for i in picked], best.threshold)
        cat_null, cat_perfect = null_and_perfect(cat_labelled)
        normalised = normalised_score(raw, cat_null, cat_perfect)
        shown = "n/a" if math.isnan(normalised) else f"{normalised:.1f}"
        print(f"{category:<24}{len(picked):>6}{cat_perfect:>9.0f}{raw:>10.2f}{shown:>9}")
    total = normalised_score(best.score, null, perfect)
    print(f"{'total':<24}{len(corpus):>6}{perfect:>9.0f}{best.score:>10.2f}{total:>9.1f}")
    print(f"best threshold {best.threshold:.6f} (detected points: {best.tp} in windows, {best.fp} outside)")
    default = AnomalyDetector().settings.threshold
    at_default = normalised_score(raw_score_at(labelled, scores, default), null, perfect)
    print(f"score at the detector's default threshold {default}: {at_default:.1f}")
    print(f"detector {1e6 * seconds / points:.1f} us per point (update() incl. the Python call)")


if __name__ == "__main__":
    main()
