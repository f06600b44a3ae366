"""qbench.regress.changepoint: steps found where they are, and nowhere else."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from qbench.regress.changepoint import ChangePoint, find_change_points, noise_sigma, segment


def _series(n: int, noise: float, seed: int, steps: dict[int, float] | None = None) -> list[float]:
    """A latency-like series around 10 ms: log-normal noise, and at each index in `steps` the
    level is multiplied by the factor from that run on."""
    rng = np.random.default_rng(seed)
    level = np.ones(n)
    for index, factor in (steps or {}).items():
        level[index:] *= factor
    return (10.0 * level * np.exp(noise * rng.standard_normal(n))).tolist()


def test_known_step_found_at_its_exact_run() -> None:
    values = _series(30, 0.02, seed=1, steps={17: 1.25})
    runs = [f"run-{i:02d}" for i in range(30)]
    (cp,) = find_change_points(values, "latency_p50_ms", runs)
    assert isinstance(cp, ChangePoint)
    assert (cp.index, cp.run_id, cp.metric) == (17, "run-17", "latency_p50_ms")
    assert cp.before == pytest.approx(10.0, rel=0.03)
    assert cp.after == pytest.approx(12.5, rel=0.03)
    assert cp.ratio == pytest.approx(cp.after / cp.before)
    assert cp.change == pytest.approx(0.25, abs=0.04)
    assert cp.kind == "regression"


@pytest.mark.parametrize("seed", range(10))
def test_step_in_a_short_history_found_exactly(seed: int) -> None:
    """The nightly shape of the dashboard tests: 12 runs, +25 % from the 7th run on."""
    cps = find_change_points(_series(12, 0.02, seed, {6: 1.25}), "latency_p50_ms")
    assert [c.index for c in cps] == [6]


def test_two_steps_found() -> None:
    values = _series(40, 0.02, seed=2, steps={12: 1.3, 27: 0.8})
    cps = find_change_points(values, "latency_p50_ms")
    assert [c.index for c in cps] == [12, 27]
    assert [c.kind for c in cps] == ["regression", "improvement"]
    assert cps[0].ratio == pytest.approx(1.3, rel=0.04)
    assert cps[1].ratio == pytest.approx(0.8, rel=0.04)


@pytest.mark.parametrize("noise", [0.005, 0.03, 0.08])
def test_pure_noise_has_no_change_point(noise: float) -> None:
    # 30 seeded series per noise level, up to noise larger than the 5 % minimum step.
    found = {
        seed: find_change_points(_series(40, noise, seed), "latency_p50_ms") for seed in range(30)
    }
    assert {s: c for s, c in found.items() if c} == {}


def test_heavy_tailed_outliers_are_not_steps() -> None:
    """Isolated slow runs (a noisy neighbour) are outliers, not segments. (Two slow runs out
    of the last three would be a step as far as anyone can tell, hence the spacing.)"""
    for seed in range(30):
        values = _series(40, 0.01, seed)
        rng = np.random.default_rng(100 + seed)
        for i in rng.choice(np.arange(1, 40, 6), size=4, replace=False):
            values[i] *= 1.6
        assert find_change_points(values, "latency_p50_ms") == [], seed


def test_step_below_the_minimum_is_not_flagged() -> None:
    # A clean 3 % step on a 0.3 %-noise series is real but smaller than the 5 % minimum ...
    small = _series(30, 0.003, seed=3, steps={15: 1.03})
    assert find_change_points(small, "latency_p50_ms") == []
    # ... and is found once the minimum is lowered, so the filter is what hid it.
    lowered = find_change_points(small, "latency_p50_ms", min_relative=0.02)
    assert [c.index for c in lowered] == [15]
    # A slow drift of 4 % spread over 30 runs: no single step reaches the minimum.
    drift = [v * (1 + 0.04 * i / 29) for i, v in enumerate(_series(30, 0.003, seed=4))]
    assert find_change_points(drift, "latency_p50_ms") == []


@pytest.mark.parametrize(
    ("metric", "factor", "kind"),
    [
        ("latency_p50_ms", 1.3, "regression"),
        ("latency_p50_ms", 0.7, "improvement"),
        ("throughput_ips", 0.7, "regression"),
        ("throughput_ips", 1.3, "improvement"),
        ("accuracy", 0.8, "regression"),
        ("accuracy", 1.2, "improvement"),
        ("peak_rss_mb", 1.3, "regression"),
    ],
)
def test_direction_follows_the_metric(metric: str, factor: float, kind: str) -> None:
    (cp,) = find_change_points(_series(20, 0.01, seed=5, steps={10: factor}), metric)
    assert (cp.index, cp.kind) == (10, kind)


def test_flat_series_uses_the_noise_floor() -> None:
    # Deterministic accuracy: identical runs except a last-digit wiggle, then a real drop.
    values = [0.970] * 8 + [0.971, 0.970, 0.969] + [0.90] * 8
    assert noise_sigma(np.log([0.97] * 10)) == 0.01
    (cp,) = find_change_points(values, "accuracy")
    assert (cp.index, cp.kind) == (11, "regression")
    assert (cp.before, cp.after) == (pytest.approx(0.970), pytest.approx(0.90))
    wiggle = [0.970] * 8 + [0.971, 0.970, 0.969] + [0.970] * 8
    assert find_change_points(wiggle, "accuracy") == []


def test_missing_values_are_skipped_but_indices_kept() -> None:
    values: list[float | None] = list(_series(20, 0.01, seed=6, steps={10: 1.4}))
    values[3] = None
    values[10] = float("nan")  # the first run after the step failed to measure
    values[15] = 0.0
    runs = [f"r{i}" for i in range(20)]
    (cp,) = find_change_points(values, "latency_p50_ms", runs)
    assert (cp.index, cp.run_id) == (11, "r11")


def test_short_or_empty_series() -> None:
    assert find_change_points([], "latency_p50_ms") == []
    assert find_change_points([1.0, 2.0, 2.0, 2.0, 2.0], "latency_p50_ms") == []  # < 2 x 3 runs
    with pytest.raises(ValueError):
        find_change_points([1.0, 2.0], "latency_p50_ms", ["only-one"])


def test_segment_is_exact_and_respects_min_length() -> None:
    y = [0.0] * 5 + [1.0] * 5 + [0.0] * 5
    assert segment(y, penalty=0.1, min_segment=3) == [5, 10]
    # A two-run blip is a segment of its own only when two runs are enough for one.
    blip = [0.0] * 6 + [1.0] * 2 + [0.0] * 6
    assert segment(blip, penalty=0.1, min_segment=2) == [6, 8]
    bounds = segment(blip, penalty=0.1, min_segment=3)
    edges = [0, *bounds, len(blip)]
    assert bounds != [6, 8] and min(b - a for a, b in itertools.pairwise(edges)) >= 3
    assert segment([0.0] * 5, penalty=0.1, min_segment=3) == []


def test_deterministic() -> None:
    values = _series(50, 0.03, seed=7, steps={20: 1.2, 35: 1.2})
    assert find_change_points(values, "latency_p50_ms") == find_change_points(
        values, "latency_p50_ms"
    )


def test_import_is_cheap() -> None:
    code = (
        "import sys, qbench.regress.changepoint; "
        "assert not {'numpy', 'pandas', 'plotly'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dashboard_finds_a_one_point_accuracy_drop() -> None:
    """Accuracy is nearly deterministic: the dashboard flags a 1.5-point drop."""
    import pandas as pd

    from qbench.regress.dashboard import _series_changes

    acc = [0.950, 0.951, 0.950, 0.950, 0.949, 0.950, 0.935, 0.935, 0.936, 0.935, 0.935, 0.934]
    series = pd.DataFrame({"run_id": [f"r{i}" for i in range(len(acc))], "accuracy": acc})
    found = [c for c in _series_changes(series) if c.metric == "accuracy"]
    assert [(c.index, c.kind) for c in found] == [(6, "regression")]
    # The same drop of 0.15 points is noise
    small = [a if i < 6 else a - 0.0015 + 0.015 for i, a in enumerate(acc)]
    series = pd.DataFrame({"run_id": [f"r{i}" for i in range(len(acc))], "accuracy": small})
    assert not [c for c in _series_changes(series) if c.metric == "accuracy"]
