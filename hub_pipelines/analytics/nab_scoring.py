"""Numenta Anomaly Benchmark scoring (NAB v1.1 sweeper semantics) for per-point anomaly scores.

Each series is labelled point by point the way NAB's sweeper does it: a point inside a labelled window
is worth the scaled sigmoid of its position (earliest is best), a point outside every window costs the
false-positive weight (less right after a window), and the first 15% of a series is probation. One
threshold is swept over the whole corpus; a point is a detection when its score is >= the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OUTSIDE_WINDOWS = -1
PROBATION = -2
PROBATION_PERCENT = 0.15
PROBATION_CAP_ROWS = 5000


class NabScoringError(ValueError):
    """Labels or scores that cannot be scored (mismatched lengths, bad windows)."""


@dataclass(frozen=True)
class CostProfile:
    tp_weight: float = 1.0
    fp_weight: float = 0.11
    fn_weight: float = 1.0


STANDARD_PROFILE = CostProfile()
# NAB's reward_low_FP_rate: a false alarm costs twice as much, as it does the person paged.
LOW_FP_PROFILE = CostProfile(fp_weight=0.22)


def scaled_sigmoid(relative_position: float) -> float:
    """NAB's reward curve: ~0.987 at a window's start (-1), 0 at its end (0), towards -1 after it."""
    if relative_position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * relative_position)) - 1.0


def probation_length(n_rows: int, probation_percent: float = PROBATION_PERCENT) -> float:
    return min(math.floor(probation_percent * n_rows), probation_percent * PROBATION_CAP_ROWS)


@dataclass(frozen=True)
class LabelledSeries:
    """What each point of one series is worth if it is a detection.

    `window_ids` holds the index of the point's window within the series, OUTSIDE_WINDOWS, or PROBATION;
    `sweep_scores` holds the reward (inside a window) or the cost (outside) of a detection at that point.
    """

    name: str
    sweep_scores: np.ndarray
    window_ids: np.ndarray
    n_windows: int

    @property
    def scored_windows(self) -> int:
        return len({int(w) for w in self.window_ids if w >= 0})


def label_series(
    name: str,
    n_rows: int,
    windows: Sequence[tuple[int, int]],
    profile: CostProfile = STANDARD_PROFILE,
    probation_percent: float = PROBATION_PERCENT,
) -> LabelledSeries:
    """Label one series of `n_rows` points whose anomaly windows are inclusive (start, end) row indices."""
    ordered = sorted(windows)
    for k, (start, end) in enumerate(ordered):
        if not 0 <= start <= end < n_rows:
            raise NabScoringError(f"{name}: window {k} ({start}, {end}) is not inside 0..{n_rows - 1}")
        if k and start <= ordered[k - 1][1]:
            raise NabScoringError(f"{name}: window {k} ({start}, {end}) overlaps the previous one")
    max_tp = scaled_sigmoid(-1.0)
    probation = probation_length(n_rows, probation_percent)
    sweep = np.empty(n_rows, dtype=np.float64)
    window_ids = np.full(n_rows, OUTSIDE_WINDOWS, dtype=np.int64)
    prev_right: int | None = None
    prev_width = 0.0
    next_window = 0
    current: tuple[int, int] | None = None
    for i in range(n_rows):
        if current is None and next_window < len(ordered) and i == ordered[next_window][0]:
            current = ordered[next_window]
            next_window += 1
        if current is not None:
            width = float(current[1] - current[0] + 1)
            position = -(current[1] - i + 1) / width
            sweep[i] = scaled_sigmoid(position) * profile.tp_weight / max_tp
            window_ids[i] = next_window - 1
        else:
            # A one-row window would make NAB divide by zero; treat its aftermath as a two-row window.
            past = 3.0 if prev_right is None else abs(prev_right - i) / max(prev_width - 1.0, 1.0)
            sweep[i] = scaled_sigmoid(past) * profile.fp_weight
        if i < probation:
            window_ids[i] = PROBATION
        if current is not None and i == current[1]:
            prev_right, prev_width, current = i, float(current[1] - current[0] + 1), None
    return LabelledSeries(name=name, sweep_scores=sweep, window_ids=window_ids, n_windows=len(ordered))


@dataclass(frozen=True)
class ThresholdScore:
    threshold: float
    score: float
    tp: int
    fp: int


def sweep_thresholds(
    labelled: Sequence[LabelledSeries],
    scores: Sequence[np.ndarray],
    profile: CostProfile = STANDARD_PROFILE,
) -> list[ThresholdScore]:
    """Raw corpus score for every distinct threshold, highest threshold first.

    The first entry (threshold +inf) is the no-detection score. tp/fp count detected points (not windows),
    as NAB's sweeper does.
    """
    if len(labelled) != len(scores):
        raise NabScoringError(f"{len(labelled)} labelled series but {len(scores)} score arrays")
    values, gains, window_keys = [], [], []
    key_offset = 0
    n_windows = 0
    for series, series_scores in zip(labelled, scores, strict=True):
        arr = np.asarray(series_scores, dtype=np.float64)
        if arr.shape != series.sweep_scores.shape:
            raise NabScoringError(
                f"{series.name}: {arr.shape[0]} scores for {series.sweep_scores.shape[0]} rows"
            )
        keep = series.window_ids != PROBATION
        values.append(arr[keep])
        gains.append(series.sweep_scores[keep])
        ids = series.window_ids[keep]
        window_keys.append(np.where(ids >= 0, ids + key_offset, OUTSIDE_WINDOWS))
        key_offset += series.n_windows
        n_windows += series.scored_windows
    value = np.concatenate(values) if values else np.empty(0)
    gain = np.concatenate(gains) if gains else np.empty(0)
    window = np.concatenate(window_keys) if window_keys else np.empty(0, dtype=np.int64)
    order = np.argsort(-value, kind="stable")
    value, gain, window = value[order], gain[order], window[order]

    # Each point changes the total by its own cost if outside a window, or by how much it raises its
    # window's best (earliest) reward so far; the running sum is the score at each threshold.
    delta = np.where(window == OUTSIDE_WINDOWS, gain, 0.0)
    best: dict[int, float] = {}
    for pos in np.flatnonzero(window != OUTSIDE_WINDOWS):
        key = int(window[pos])
        previous = best.get(key, -profile.fn_weight)
        if gain[pos] > previous:
            delta[pos] = gain[pos] - previous
            best[key] = float(gain[pos])
    total = -profile.fn_weight * n_windows + np.cumsum(delta)
    tp = np.cumsum(window != OUTSIDE_WINDOWS)
    fp = np.cumsum(window == OUTSIDE_WINDOWS)
    last_of_group = (
        np.flatnonzero(np.append(value[1:] != value[:-1], True)) if len(value) else np.empty(0, int)
    )
    result = [ThresholdScore(math.inf, -profile.fn_weight * n_windows, 0, 0)]
    result.extend(
        ThresholdScore(float(value[j]), float(total[j]), int(tp[j]), int(fp[j])) for j in last_of_group
    )
    return result


def raw_score_at(
    labelled: Sequence[LabelledSeries],
    scores: Sequence[np.ndarray],
    threshold: float,
    profile: CostProfile = STANDARD_PROFILE,
) -> float:
    """Raw corpus score when every point scoring >= `threshold` is a detection."""
    total = 0.0
    for series, series_scores in zip(labelled, scores, strict=True):
        detected = (np.asarray(series_scores) >= threshold) & (series.window_ids != PROBATION)
        outside = detected & (series.window_ids == OUTSIDE_WINDOWS)
        total += float(series.sweep_scores[outside].sum())
        for window in {int(w) for w in series.window_ids if w >= 0}:
            hits = detected & (series.window_ids == window)
            total += float(series.sweep_scores[hits].max()) if hits.any() else -profile.fn_weight
    return total


def null_and_perfect(
    labelled: Sequence[LabelledSeries], profile: CostProfile = STANDARD_PROFILE
) -> tuple[float, float]:
    """Raw scores of the detector that never fires and of the one firing at every window's start."""
    windows = sum(series.scored_windows for series in labelled)
    return -profile.fn_weight * windows, profile.tp_weight * windows


def normalised_score(raw: float, null: float, perfect: float) -> float:
    """100 * (raw - null) / (perfect - null); NaN for a corpus without windows."""
    if perfect == null:
        return math.nan
    return 100.0 * (raw - null) / (perfect - null)


def best_threshold(
    labelled: Sequence[LabelledSeries],
    scores: Sequence[np.ndarray],
    profile: CostProfile = STANDARD_PROFILE,
) -> ThresholdScore:
    """The threshold maximising the raw corpus score (the highest one among ties)."""
    sweep = sweep_thresholds(labelled, scores, profile)
    return max(sweep, key=lambda row: row.score)
