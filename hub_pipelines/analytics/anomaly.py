"""Online anomaly detector for one metric: a score in [0, 1] per point from the past only, and findings.

Three raw signals say how unusual a point is: its value against the mean and deviation of a long trailing
window (two-sided Gaussian probability); whether the short sequence of quantised values ending at it
has ever been seen before (a context novelty signal, in the spirit of NAB's CAD OSE); and whether the
shape of the last few points is farther from its nearest earlier match than any recent shape was (in
the spirit of KNN-CAD: periodic metrics are judged against their own cycle, not a flat mean). Their average is
smoothed over a few points and judged against the detector's own history of raw scores (Numenta's
anomaly likelihood), so a metric that is always noisy does not alert all the time. The final score maps
the likelihood's tail probability onto [0, 1] logarithmically. Beside it, a value beyond everything the
metric has ever shown (its all-time range widened by a tolerance, as Numenta's NAB detector does) scores
1 at once: a single extreme point barely moves the smoothed likelihood. After an alert the detector rests,
since NAB (like a person on call) rewards the earliest detection of an event and penalises repeats.

Everything the detector remembers is plain numbers, lists and a dict, so `to_state()` is JSON-able and
`from_state()` continues exactly where it stopped. Every setting is a count of points or a probability
scale, none a unit of the metric, so one setting serves every metric; bench/nab.py chooses among a few
by leave-one-category-out on the NAB subset, including the alert threshold paging uses.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, Literal

import numpy as np

FindingType = Literal["spike", "drop", "level_shift"]
STATE_VERSION = 3
# Settings saved by an older version were that version's shipped ones, so such a detector continues with
# today's. Version 1 was saved before the shape signal, version 2 before the all-time range (it continues
# with the range of the values it still holds).
UPGRADABLE_STATE_VERSIONS = (1, 2, STATE_VERSION)


class AnomalyInputError(ValueError):
    """A value the detector cannot score (NaN or infinite)."""


class AnomalyStateError(ValueError):
    """A persisted detector state that cannot be restored (wrong version or missing fields)."""


@dataclass(frozen=True)
class Finding:
    type: FindingType
    metric: str
    value: float
    baseline: float
    score: float
    ts: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ts"] = self.ts.isoformat() if self.ts else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        ts = datetime.fromisoformat(data["ts"]) if data.get("ts") else None
        return cls(data["type"], data["metric"], data["value"], data["baseline"], data["score"], ts)


@dataclass(frozen=True)
class DetectorSettings:
    """The same for every metric; the threshold is the one bench/nab.py's left-out folds chose."""

    threshold: float = 0.98
    warmup: int = 60
    long_window: int = 1000
    context_warmup: int = 300
    bins: int = 8
    context_length: int = 3
    max_contexts: int = 20_000
    score_average: int = 5
    score_history: int = 3000
    min_score_std: float = 0.05
    tail_decades: float = 4.0
    range_tolerance: float = 0.1
    rest_period: int = 100
    shift_points: int = 5
    shift_sigmas: float = 3.0
    shape_length: int = 8
    shape_history: int = 1000
    shape_calibration: int = 300


def _upper_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


class _WindowStats:
    """Mean and deviation of the last `size` values, kept as running sums around a fixed origin."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.origin: float | None = None
        self.values: deque[float] = deque()
        self.total = 0.0
        self.total_sq = 0.0
        self.pushed = 0

    def push(self, value: float) -> None:
        if self.origin is None:
            self.origin = value
        shifted = value - self.origin
        self.values.append(shifted)
        self.total += shifted
        self.total_sq += shifted * shifted
        if len(self.values) > self.size:
            old = self.values.popleft()
            self.total -= old
            self.total_sq -= old * old
        self.pushed += 1
        if self.pushed % self.size == 0:
            # Running sums drift over millions of points; refresh them from the window itself.
            self.total = math.fsum(self.values)
            self.total_sq = math.fsum(v * v for v in self.values)

    def mean_std(self) -> tuple[float, float]:
        n = len(self.values)
        mean = self.total / n
        var = max(self.total_sq / n - mean * mean, 0.0)
        return mean + (self.origin or 0.0), math.sqrt(var)

    def last(self, k: int) -> list[float]:
        origin = self.origin or 0.0
        return [v + origin for v in list(self.values)[-k:]] if k > 0 else []

    def to_state(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "values": list(self.values),
            "total": self.total,
            "total_sq": self.total_sq,
            "pushed": self.pushed,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.origin = state["origin"]
        self.values = deque(state["values"])
        self.total = state["total"]
        self.total_sq = state["total_sq"]
        self.pushed = state["pushed"]


class _ValueRing:
    """The last `size` values as a contiguous numpy view: each value is written twice, `size` apart."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buffer = np.zeros(2 * size)
        self.pos = 0
        self.count = 0

    def push(self, value: float) -> None:
        self.buffer[self.pos] = value
        self.buffer[self.pos + self.size] = value
        self.pos = (self.pos + 1) % self.size
        self.count = min(self.count + 1, self.size)

    def last(self) -> np.ndarray:
        end = self.pos + self.size
        return self.buffer[end - self.count : end]

    def to_state(self) -> list[float]:
        return [float(v) for v in self.last()]

    def restore(self, values: list[float]) -> None:
        for value in values:
            self.push(value)


class _ShapeNovelty:
    """1 when the last few points' shape is unlike anything in the recent past, else 0 (after KNN-CAD).

    The distance from the newest `length` values to their nearest earlier sequence of the last
    `history` values (sequences overlapping the newest are skipped: they would match themselves) is
    novel when it exceeds every one of the last `calibration` such distances. A comparison with its own
    past is scale-free, so one setting serves a metric in bytes and one in percent; a graded rank
    instead of the 0/1 verdict added noise to every point and lost 2 NAB points on the subset.
    """

    def __init__(self, length: int, history: int, calibration: int) -> None:
        self.length = length
        self.ones = np.ones(length)
        self.values = _ValueRing(history)
        self.distances = _ValueRing(calibration)

    def update(self, value: float) -> float:
        self.values.push(value)
        recent = self.values.last()
        m = self.length
        if len(recent) < 4 * m:
            return 0.0
        # Squared distances to every earlier sequence as |x|^2 - 2 x.q + |q|^2 from two sliding sums
        # (a few C loops instead of a points-by-length array), taken about the newest value so that
        # large offsets (bytes, counts) do not cancel away the differences.
        centred = recent - value
        newest, earlier = centred[-m:], centred[:-m]
        energy = np.convolve(earlier * earlier, self.ones, "valid")
        cross = np.correlate(earlier, newest, "valid")
        distance = float(np.min(energy - 2.0 * cross)) + float(newest @ newest)
        seen = self.distances.last()
        novel = len(seen) >= 2 * m and distance > float(seen.max())
        self.distances.push(distance)
        return 1.0 if novel else 0.0

    def to_state(self) -> dict[str, Any]:
        return {"values": self.values.to_state(), "distances": self.distances.to_state()}

    def restore(self, state: dict[str, Any]) -> None:
        self.values.restore(state["values"])
        self.distances.restore(state["distances"])


class AnomalyDetector:
    """Scores each new value of one metric against that metric's own past (see the module docstring)."""

    def __init__(self, metric: str = "value", settings: DetectorSettings | None = None) -> None:
        self.metric = metric
        self.settings = settings or DetectorSettings()
        cfg = self.settings
        self._values = _WindowStats(cfg.long_window)
        self._raw_history = _WindowStats(cfg.score_history)
        self._recent_raw: deque[float] = deque(maxlen=cfg.score_average)
        self._bin_low = 0.0
        self._bin_width = 0.0
        self._context: deque[int] = deque(maxlen=cfg.context_length)
        self._contexts: dict[str, int] = {}
        self._since_alert = cfg.rest_period + 1
        self._pending: list[Finding] = []
        self._shift_watch: dict[str, Any] | None = None
        self._shape = _ShapeNovelty(cfg.shape_length, cfg.shape_history, cfg.shape_calibration)
        self._low = math.inf
        self._high = -math.inf

    def update(self, value: float, ts: datetime | None = None) -> float:
        """Score `value` against the past, then learn it; 0 until warmed up and while resting after an alert."""
        value = float(value)
        if not math.isfinite(value):
            raise AnomalyInputError(
                f"metric {self.metric!r}: cannot score non-finite value {value!r} at {ts}"
            )
        cfg = self.settings
        shape = self._shape.update(value)
        score = 0.0
        if len(self._values.values) >= cfg.warmup:
            baseline, std = self._values.mean_std()
            std = max(std, 1e-9 * max(abs(baseline), 1.0))
            point_tail = 2.0 * _upper_tail(abs(value - baseline) / std)
            raw = (1.0 - point_tail + self._context_novelty(value) + shape) / 3.0
            score = self._likelihood_score(raw)
            if self._outside_range(value):
                score = 1.0
            if len(self._values.values) < cfg.context_warmup:
                # Cold start: until the bins are learned, every few points widen the young range and
                # the likelihood judges raw scores that lack the context signal.
                score = 0.0
            self._follow_shift(value, ts)
            self._since_alert += 1
            if self._since_alert <= cfg.rest_period:
                score = 0.0
            elif score >= cfg.threshold:
                self._since_alert = 0
                self._pending.append(self._finding(value, baseline, std, score, ts))
        self._values.push(value)
        self._low, self._high = min(self._low, value), max(self._high, value)
        return score

    def drain_findings(self) -> list[Finding]:
        """Findings produced since the last call (each alert once)."""
        findings, self._pending = self._pending, []
        return findings

    def score_series(self, values: Iterable[float]) -> np.ndarray:
        """Scores of `values` fed in order; the detector keeps learning from them."""
        return np.array([self.update(v) for v in values], dtype=np.float64)

    def _context_novelty(self, value: float) -> float:
        cfg = self.settings
        if self._bin_width <= 0.0:
            if len(self._values.values) < cfg.context_warmup:
                return 0.0
            # Bins are fixed once learned so remembered contexts keep their meaning; values beyond the
            # learned range fall into new bins, which is itself novel.
            seen = self._values.last(cfg.long_window)
            low, high = min(seen), max(seen)
            self._bin_low = low
            self._bin_width = (high - low) / cfg.bins if high > low else max(abs(low), 1.0) / cfg.bins
            # Raw scores so far lacked this signal; judging new ones against them would alert on its arrival.
            self._raw_history = _WindowStats(cfg.score_history)
            self._recent_raw.clear()
        self._context.append(math.floor((value - self._bin_low) / self._bin_width))
        key = ",".join(map(str, self._context))
        count = self._contexts.get(key, 0)
        self._contexts[key] = count + 1
        if len(self._contexts) > cfg.max_contexts:
            self._contexts = {k: c for k, c in self._contexts.items() if c > 1}
        return 1.0 if count == 0 else 0.0

    def _outside_range(self, value: float) -> bool:
        # Relative to the range itself, so the tolerance means the same for bytes and for percent.
        margin = self.settings.range_tolerance * (self._high - self._low)
        return self._high > self._low and not self._low - margin <= value <= self._high + margin

    def _likelihood_score(self, raw: float) -> float:
        cfg = self.settings
        self._recent_raw.append(raw)
        average = sum(self._recent_raw) / len(self._recent_raw)
        score = 0.0
        if len(self._raw_history.values) >= cfg.warmup:
            mean, std = self._raw_history.mean_std()
            tail = _upper_tail((average - mean) / max(std, cfg.min_score_std))
            score = min(1.0, -math.log10(max(tail, 1e-300)) / cfg.tail_decades)
        self._raw_history.push(average)
        return score

    def _finding(
        self, value: float, baseline: float, std: float, score: float, ts: datetime | None
    ) -> Finding:
        cfg = self.settings
        recent = [*self._values.last(cfg.shift_points - 1), value]
        band = cfg.shift_sigmas * max(std, 1e-9 * max(abs(baseline), 1.0))
        above = all(v > baseline + band for v in recent)
        below = all(v < baseline - band for v in recent)
        if len(recent) >= cfg.shift_points and (above or below):
            level = sum(recent) / len(recent)
            return Finding("level_shift", self.metric, level, baseline, score, ts)
        extreme = max(recent, key=lambda v: abs(v - baseline))
        kind: FindingType = "spike" if extreme >= baseline else "drop"
        trailing: list[float] = []
        for v in reversed(recent):
            if not self._beyond(v, baseline, band, kind == "spike"):
                break
            trailing.insert(0, v)
        self._shift_watch = {
            "baseline": baseline,
            "band": band,
            "up": kind == "spike",
            "points": trailing,
            "score": score,
        }
        return Finding(kind, self.metric, extreme, baseline, score, ts)

    @staticmethod
    def _beyond(value: float, baseline: float, band: float, up: bool) -> bool:
        return value > baseline + band if up else value < baseline - band

    def _follow_shift(self, value: float, ts: datetime | None) -> None:
        """Turn a spike or drop whose deviation persists for `shift_points` points into a level shift."""
        watch = self._shift_watch
        if watch is None:
            return
        if not self._beyond(value, watch["baseline"], watch["band"], watch["up"]):
            self._shift_watch = None
            return
        watch["points"].append(value)
        if len(watch["points"]) >= self.settings.shift_points:
            level = sum(watch["points"]) / len(watch["points"])
            self._pending.append(
                Finding("level_shift", self.metric, level, watch["baseline"], watch["score"], ts)
            )
            self._shift_watch = None

    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue later, as JSON-able plain data."""
        return {
            "version": STATE_VERSION,
            "metric": self.metric,
            "settings": asdict(self.settings),
            "values": self._values.to_state(),
            "raw_history": self._raw_history.to_state(),
            "recent_raw": list(self._recent_raw),
            "bin_low": self._bin_low,
            "bin_width": self._bin_width,
            "context": list(self._context),
            "contexts": dict(self._contexts),
            "since_alert": self._since_alert,
            "pending": [f.to_dict() for f in self._pending],
            "shift_watch": self._shift_watch,
            "shape": self._shape.to_state(),
            # JSON has no infinity: a detector that has seen no value yet saves no range.
            "range": [self._low, self._high] if self._low <= self._high else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AnomalyDetector:
        version = state.get("version")
        if version not in UPGRADABLE_STATE_VERSIONS:
            raise AnomalyStateError(
                f"anomaly detector state version {version!r} is not one of {UPGRADABLE_STATE_VERSIONS}"
            )
        try:
            known = {f.name for f in fields(DetectorSettings)}
            settings = (
                DetectorSettings(**{k: v for k, v in state["settings"].items() if k in known})
                if version == STATE_VERSION
                else DetectorSettings()
            )
            detector = cls(state["metric"], settings)
            detector._values.restore(state["values"])
            detector._raw_history.restore(state["raw_history"])
            detector._recent_raw.extend(state["recent_raw"])
            detector._bin_low = state["bin_low"]
            detector._bin_width = state["bin_width"]
            detector._context.extend(state["context"])
            detector._contexts = dict(state["contexts"])
            detector._since_alert = state["since_alert"]
            detector._pending = [Finding.from_dict(f) for f in state["pending"]]
            detector._shift_watch = state["shift_watch"]
            if version == 1:
                seed = {"values": detector._values.last(settings.shape_history), "distances": []}
                detector._shape.restore(seed)
            else:
                detector._shape.restore(state["shape"])
            if version == STATE_VERSION:
                if state["range"] is not None:
                    detector._low, detector._high = state["range"]
            else:
                held = detector._values.last(settings.long_window)
                detector._low, detector._high = min(held, default=math.inf), max(held, default=-math.inf)
        except KeyError as missing:
            raise AnomalyStateError(
                f"anomaly detector state for {state.get('metric')!r} lacks field {missing}"
            ) from None
        return detector
