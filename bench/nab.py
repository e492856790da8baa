"""Score the analytics anomaly detector on the NAB subset in ../shared/nab, in sample and left out.

    uv run python bench/nab.py [--nab-dir PATH] [--workers N]

Every series is read once, in order, by a fresh detector (nothing is tuned per file, the detector never
sees the labels). A candidate is a detector setting plus the alert threshold it rests after; the grid
below is every candidate the bench judges. Two scores per NAB profile (standard and reward_low_FP_rate):

- in sample: the shipped settings, and the best candidate chosen on all four categories (optimistic:
  the choice saw the data it is scored on);
- leave one category out (LOCO): for each category, the candidate that scores best on the other three
  is scored on it; the combined LOCO score sums those left-out raw scores. This is the honest figure:
  a change that raises the in-sample score and lowers LOCO is a loss.

Also prints the threshold each fold chose for the shipped variant (paging uses their median,
`DetectorSettings.threshold`) and the detector's cost per point.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from hub_pipelines.analytics.anomaly import AnomalyDetector, DetectorSettings
from hub_pipelines.analytics.nab_scoring import (
    LOW_FP_PROFILE,
    STANDARD_PROFILE,
    CostProfile,
    LabelledSeries,
    label_series,
    normalised_score,
    null_and_perfect,
    raw_score_at,
)

PROFILES: dict[str, CostProfile] = {"standard": STANDARD_PROFILE, "low_fp": LOW_FP_PROFILE}
THRESHOLDS = (0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
# Setting variants judged beside the shipped one (name -> DetectorSettings overrides); each is run at
# every threshold above. Few on purpose: every extra variant is another chance to fit the subset.
VARIANTS: dict[str, dict[str, float | int]] = {
    "shipped": {},
    "score_average_10": {"score_average": 10},
    "score_history_8640": {"score_history": 8640},
    "htm_likelihood": {"score_average": 10, "score_history": 8640},
    "range_tolerance_0.05": {"range_tolerance": 0.05},
    "shape_calibration_1000": {"shape_calibration": 1000},
}


def default_nab_dir() -> Path:
    """`shared/nab` beside the checkout, whether it is the main clone or a worktree nested deeper."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "nab" / "windows.json").exists():
            return parent / "shared" / "nab"
    return Path("shared") / "nab"


@dataclass(frozen=True)
class NabSeries:
    category: str
    name: str
    timestamps: list[datetime]
    values: np.ndarray
    windows: list[tuple[int, int]]


@dataclass(frozen=True)
class Candidate:
    variant: str
    settings: DetectorSettings

    @property
    def label(self) -> str:
        return f"{self.variant}@{self.settings.threshold:g}"


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


def run_detector(series: NabSeries, settings: DetectorSettings) -> tuple[np.ndarray, float]:
    """Scores of a fresh detector fed the series point by point, and the seconds it took."""
    detector = AnomalyDetector(metric=series.name, settings=settings)
    scores = np.empty(len(series.values))
    started = time.process_time()
    for i, (value, ts) in enumerate(zip(series.values.tolist(), series.timestamps, strict=True)):
        scores[i] = detector.update(value, ts)
    return scores, time.process_time() - started


def _run_task(task: tuple[NabSeries, DetectorSettings]) -> tuple[np.ndarray, float]:
    return run_detector(*task)


def candidates() -> list[Candidate]:
    shipped = DetectorSettings()
    grid = [
        Candidate(name, replace(shipped, **overrides, threshold=threshold))  # type: ignore[arg-type]
        for name, overrides in VARIANTS.items()
        for threshold in THRESHOLDS
    ]
    if not any(c.settings == shipped for c in grid):
        grid.append(Candidate("shipped", shipped))
    return grid


Raws = dict[str, dict[str, float]]  # profile -> category -> raw score at the candidate's own threshold


def category_raws(
    corpus: list[NabSeries],
    labelled: dict[str, list[LabelledSeries]],
    scores: list[np.ndarray],
    threshold: float,
) -> Raws:
    raws: Raws = {}
    for profile_name, profile in PROFILES.items():
        raws[profile_name] = {}
        for category in sorted({s.category for s in corpus}):
            picked = [i for i, s in enumerate(corpus) if s.category == category]
            raws[profile_name][category] = raw_score_at(
                [labelled[profile_name][i] for i in picked], [scores[i] for i in picked], threshold, profile
            )
    return raws


def _fmt(score: float) -> str:
    return "n/a" if score != score else f"{score:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nab-dir", type=Path, default=default_nab_dir())
    parser.add_argument("--workers", type=int, default=1, help="processes running series in parallel")
    args = parser.parse_args()

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    corpus = load_corpus(args.nab_dir)
    categories = sorted({s.category for s in corpus})
    labelled = {
        name: [label_series(f"{s.category}/{s.name}", len(s.values), s.windows, profile) for s in corpus]
        for name, profile in PROFILES.items()
    }
    grid = candidates()
    tasks = [(s, c.settings) for c in grid for s in corpus]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            runs = list(pool.map(_run_task, tasks, chunksize=4))
    else:
        runs = [_run_task(t) for t in tasks]
    points = sum(len(s.values) for s in corpus)
    results: list[Raws] = []
    seconds: list[float] = []
    for k, candidate in enumerate(grid):
        chunk = runs[k * len(corpus) : (k + 1) * len(corpus)]
        results.append(category_raws(corpus, labelled, [r[0] for r in chunk], candidate.settings.threshold))
        seconds.append(sum(r[1] for r in chunk))
    shipped = next(k for k, c in enumerate(grid) if c.settings == DetectorSettings())

    windows = {
        c: null_and_perfect(
            [lab for lab, s in zip(labelled["standard"], corpus, strict=True) if s.category == c]
        )
        for c in categories
    }
    null = sum(w[0] for w in windows.values())
    perfect = sum(w[1] for w in windows.values())
    print(
        f"NAB subset: {len(corpus)} series, {points} points, {perfect:.0f} windows; "
        f"{len(grid)} candidates ({len(VARIANTS)} variants x {len(THRESHOLDS)} thresholds)"
    )
    fold_thresholds: list[float] = []
    shipped_variant = [k for k, c in enumerate(grid) if c.variant == "shipped"]
    for profile_name in PROFILES:

        def total(k: int, cats: list[str], profile: str = profile_name) -> float:
            return sum(results[k][profile][c] for c in cats)

        best_all = max(range(len(grid)), key=lambda k: total(k, categories))
        print(f"\nprofile {profile_name}")
        print(
            f"{'category':<24}{'windows':>8}{'shipped':>9}{'best-in':>9}{'LOCO':>8}  chosen on the other three"
        )
        loco_raw = 0.0
        for category in categories:
            others = [c for c in categories if c != category]
            chosen = max(range(len(grid)), key=lambda k: total(k, others))
            if profile_name == "standard":
                # A threshold means something only on its own variant's scores: paging takes the
                # shipped variant's, each chosen on the other three categories.
                own = max(shipped_variant, key=lambda k: total(k, others))
                fold_thresholds.append(grid[own].settings.threshold)
            loco_raw += results[chosen][profile_name][category]
            cat_null, cat_perfect = windows[category]
            row = [
                normalised_score(results[k][profile_name][category], cat_null, cat_perfect)
                for k in (shipped, best_all, chosen)
            ]
            raw = results[chosen][profile_name][category]
            print(
                f"{category:<24}{cat_perfect:>8.0f}{_fmt(row[0]):>9}{_fmt(row[1]):>9}{_fmt(row[2]):>8}  "
                f"{grid[chosen].label} (left-out raw {raw:+.2f})"
            )
        print(
            f"{'total':<24}{perfect:>8.0f}"
            f"{_fmt(normalised_score(total(shipped, categories), null, perfect)):>9}"
            f"{_fmt(normalised_score(total(best_all, categories), null, perfect)):>9}"
            f"{_fmt(normalised_score(loco_raw, null, perfect)):>8}  "
            f"in sample best: {grid[best_all].label}"
        )
    print(
        f"\nshipped: {grid[shipped].label}; shipped variant's thresholds chosen by the standard-profile folds "
        f"{fold_thresholds}, median {statistics.median(fold_thresholds):g}"
    )
    print(
        f"detector {1e6 * seconds[shipped] / points:.1f} us per point (shipped settings, update() incl. the "
        f"Python call; all candidates {1e6 * sum(seconds) / (points * len(grid)):.1f})"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
