"""The online anomaly detector on synthetic series, and the NAB scorer on hand-made corpora."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub_pipelines.analytics.anomaly import (
    AnomalyDetector,
    AnomalyInputError,
    AnomalyStateError,
    DetectorSettings,
)
from hub_pipelines.analytics.nab_scoring import (
    best_threshold,
    label_series,
    normalised_score,
    null_and_perfect,
    raw_score_at,
    scaled_sigmoid,
)

WARMED_UP = 400
INJECT_AT = 1200


def noisy_series(seed: int, n: int = 1600) -> np.ndarray:
    return 100.0 + np.random.default_rng(seed).normal(0.0, 2.0, n)


def bounded_noise(seed: int, n: int = 1600) -> np.ndarray:
    """Noise that never leaves its range: no value is beyond everything seen before."""
    return 100.0 + np.random.default_rng(seed).uniform(-3.0, 3.0, n)


def findings_for(values: np.ndarray) -> tuple[np.ndarray, list]:
    detector = AnomalyDetector("checkout.error_rate")
    scores = detector.score_series(values)
    return scores, detector.drain_findings()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_injected_spike_is_flagged_as_spike_at_its_point(seed: int) -> None:
    values = noisy_series(seed)
    values[INJECT_AT] += 30.0
    scores, findings = findings_for(values)
    assert scores[INJECT_AT] >= 0.95
    assert [f.type for f in findings] == ["spike"]
    assert findings[0].value == pytest.approx(values[INJECT_AT])
    assert findings[0].baseline == pytest.approx(100.0, abs=1.0)
    assert findings[0].metric == "checkout.error_rate"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_injected_drop_is_flagged_as_drop_at_its_point(seed: int) -> None:
    values = noisy_series(seed)
    values[INJECT_AT] -= 30.0
    scores, findings = findings_for(values)
    assert scores[INJECT_AT] >= 0.95
    assert [f.type for f in findings] == ["drop"]
    assert findings[0].value < findings[0].baseline


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_injected_level_shift_is_flagged_as_level_shift(seed: int) -> None:
    values = noisy_series(seed)
    values[INJECT_AT:] += 20.0
    scores, findings = findings_for(values)
    assert scores[INJECT_AT : INJECT_AT + 10].max() >= 0.95
    shifts = [f for f in findings if f.type == "level_shift"]
    assert len(shifts) == 1
    assert shifts[0].value == pytest.approx(120.0, abs=3.0)
    assert shifts[0].baseline == pytest.approx(100.0, abs=1.0)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_bounded_stationary_noise_never_alerts_after_warm_up(seed: int) -> None:
    scores, findings = findings_for(bounded_noise(seed))
    assert scores[WARMED_UP:].max() < DetectorSettings().threshold
    assert findings == []


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
def test_gaussian_noise_alerts_only_on_values_beyond_everything_seen_before(seed: int) -> None:
    values = noisy_series(seed)
    scores, _ = findings_for(values)
    tolerance = DetectorSettings().range_tolerance
    for i in np.flatnonzero(scores >= DetectorSettings().threshold):
        low, high = values[:i].min(), values[:i].max()
        margin = tolerance * (high - low)
        assert values[i] > high + margin or values[i] < low - margin, f"alert at {i} inside the range"


def test_value_beyond_the_all_time_range_scores_one_once_the_range_is_learned() -> None:
    cycle = 50.0 + 10.0 * np.sin(np.arange(1000) * 2 * np.pi / 96)
    young, learned = cycle.copy(), cycle.copy()
    young[200] = learned[600] = 63.0  # 15% of the range (40..60) above its top

    young_scores = AnomalyDetector("m").score_series(young)
    learned_scores = AnomalyDetector("m").score_series(learned)

    assert learned_scores[600] == 1.0
    assert young_scores[200] < DetectorSettings().threshold


def test_scores_are_between_zero_and_one_on_wild_input() -> None:
    rng = np.random.default_rng(9)
    values = np.concatenate([rng.normal(0, 1, 500), rng.lognormal(0, 3, 500), np.zeros(300), [1e12, -1e12]])
    scores = AnomalyDetector().score_series(values)
    assert scores.min() >= 0.0
    assert scores.max() <= 1.0


def test_non_finite_value_is_rejected_with_metric_name() -> None:
    with pytest.raises(AnomalyInputError, match=r"orders\.revenue"):
        AnomalyDetector("orders.revenue").update(float("nan"))


def test_state_round_trip_through_json_gives_identical_subsequent_scores() -> None:
    values = noisy_series(11, 1400)
    values[1000:] += 15.0
    uninterrupted = AnomalyDetector("m")
    expected = uninterrupted.score_series(values)

    first = AnomalyDetector("m")
    head = first.score_series(values[:700])
    restored = AnomalyDetector.from_state(json.loads(json.dumps(first.to_state())))
    tail = restored.score_series(values[700:])

    assert np.array_equal(np.concatenate([head, tail]), expected)
    assert restored.drain_findings() == uninterrupted.drain_findings()


def periodic_series_with_events(seed: int, n: int = 1500) -> np.ndarray:
    """A daily-like cycle with noise, a spike and a level shift: every signal and the rest period fire."""
    rng = np.random.default_rng(seed)
    values = 50.0 + 10.0 * np.sin(np.arange(n) * 2 * np.pi / 96) + rng.normal(0.0, 1.0, n)
    values[900] += 40.0
    values[1200:] += 25.0
    return values


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), cut=st.integers(1, 1499))
def test_scores_of_a_prefix_do_not_change_when_points_are_appended(seed: int, cut: int) -> None:
    values = periodic_series_with_events(seed)
    whole = AnomalyDetector("m").score_series(values)
    prefix = AnomalyDetector("m").score_series(values[:cut])
    assert whole.max() >= 0.95
    assert np.array_equal(prefix, whole[:cut])


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), cut=st.integers(1, 1499))
def test_state_saved_and_restored_mid_series_gives_identical_scores_and_findings(seed: int, cut: int) -> None:
    values = periodic_series_with_events(seed)
    uninterrupted = AnomalyDetector("m")
    expected = uninterrupted.score_series(values)

    first = AnomalyDetector("m")
    head = first.score_series(values[:cut])
    head_findings = first.drain_findings()
    restored = AnomalyDetector.from_state(json.loads(json.dumps(first.to_state())))
    tail = restored.score_series(values[cut:])

    assert np.array_equal(np.concatenate([head, tail]), expected)
    assert head_findings + restored.drain_findings() == uninterrupted.drain_findings()


def test_state_of_another_version_is_refused() -> None:
    state = AnomalyDetector("m").to_state() | {"version": 0}
    with pytest.raises(AnomalyStateError, match="version 0"):
        AnomalyDetector.from_state(state)


def test_state_saved_before_the_shape_signal_continues_with_todays_settings() -> None:
    values = bounded_noise(12)
    values[INJECT_AT] += 30.0
    before = AnomalyDetector("m")
    before.score_series(values[:800])
    version_1 = before.to_state() | {"version": 1}
    del version_1["shape"]
    version_1["settings"] = version_1["settings"] | {"threshold": 0.5, "rest_period": 7}

    restored = AnomalyDetector.from_state(json.loads(json.dumps(version_1)))
    scores = restored.score_series(values[800:])

    assert restored.settings == DetectorSettings()
    assert [f.type for f in restored.drain_findings()] == ["spike"]
    assert scores[INJECT_AT - 800] >= restored.settings.threshold


def test_state_saved_before_the_all_time_range_continues_with_the_range_of_the_values_it_holds() -> None:
    values = bounded_noise(13)
    values[INJECT_AT] += 30.0
    before = AnomalyDetector("m")
    before.score_series(values[:800])
    version_2 = before.to_state() | {"version": 2}
    del version_2["range"]
    version_2["settings"] = version_2["settings"] | {"threshold": 0.95, "point_decades": 16.0}

    restored = AnomalyDetector.from_state(json.loads(json.dumps(version_2)))
    held_range = restored.to_state()["range"]
    scores = restored.score_series(values[800:])

    assert restored.settings == DetectorSettings()
    assert held_range == [values[:800].min(), values[:800].max()]
    assert [f.type for f in restored.drain_findings()] == ["spike"]
    assert scores[INJECT_AT - 800] == 1.0


def test_state_of_a_detector_that_has_seen_nothing_is_plain_json() -> None:
    state = AnomalyDetector("m").to_state()
    restored = AnomalyDetector.from_state(json.loads(json.dumps(state, allow_nan=False)))
    assert restored.score_series([1.0, 2.0]).tolist() == [0.0, 0.0]


def toy_corpus():
    return [
        label_series("a.csv", 100, [(40, 49)]),
        label_series("b.csv", 100, [(20, 29), (70, 79)]),
        label_series("quiet.csv", 100, []),
    ]


def test_scorer_gives_100_to_the_perfect_detector_and_0_to_the_null_detector() -> None:
    corpus = toy_corpus()
    null, perfect = null_and_perfect(corpus)
    perfect_scores = [np.zeros(100) for _ in corpus]
    perfect_scores[0][40] = 1.0
    perfect_scores[1][[20, 70]] = 1.0
    never = [np.zeros(100) for _ in corpus]

    assert normalised_score(best_threshold(corpus, perfect_scores).score, null, perfect) == pytest.approx(
        100.0
    )
    assert normalised_score(best_threshold(corpus, never).score, null, perfect) == pytest.approx(0.0)


def test_scorer_matches_a_hand_computed_case() -> None:
    # File of 100 rows, probation 15 rows, one window rows 40..49 (width 10).
    # Detections: row 10 (probation: ignored), row 30 (before any window: -0.11), row 45 (inside:
    # position -(49-45+1)/10 = -0.5), row 47 (later in the same window: ignored), row 52 (3 rows after the
    # window: charged at position 3/9 on the continued sigmoid).
    series = label_series("f.csv", 100, [(40, 49)])
    scores = np.zeros(100)
    scores[[10, 30, 45, 47, 52]] = 0.9
    max_tp = 2 / (1 + math.exp(-5)) - 1
    expected = -0.11 + (2 / (1 + math.exp(-2.5)) - 1) / max_tp + 0.11 * (2 / (1 + math.exp(5 / 3)) - 1)

    assert raw_score_at([series], [scores], 0.9) == pytest.approx(expected)
    assert best_threshold([series], [scores]).score == pytest.approx(expected)
    assert expected == pytest.approx(0.6747, abs=1e-4)


def test_missed_window_costs_one_and_fp_far_from_windows_costs_fp_weight() -> None:
    series = label_series("g.csv", 200, [(150, 159)])
    scores = np.zeros(200)
    scores[100] = 1.0
    assert raw_score_at([series], [scores], 0.5) == pytest.approx(-1.0 - 0.11)
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
