"""Measurement: latency statistics, the timing loop, fidelity/accuracy and peak memory."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

from qbench.measure.fidelity import (
    accuracy,
    effective_samples,
    fidelity,
    mean_cosine,
    sqnr_db,
    topk_accuracy,
    wilson_interval,
)
from qbench.measure.latency import time_rounds
from qbench.measure.memory import peak_rss_mb
from qbench.measure.stats import median_ci, summarize
from tests.conftest import REPO

# --- stats ------------------------------------------------------------------------------------


def test_percentiles_known_answer_and_equal_numpy() -> None:
    xs = list(range(1, 101))  # 1..100
    s = summarize(xs)
    # Linear interpolation between order statistics, worked by hand.
    assert s["latency_p50_ms"] == pytest.approx(50.5)
    assert s["latency_p90_ms"] == pytest.approx(90.1)
    assert s["latency_p99_ms"] == pytest.approx(99.01)
    assert s["latency_min_ms"] == 1.0

    rng = np.random.default_rng(0)
    samples = rng.lognormal(0.0, 0.5, 997)
    s = summarize(samples.tolist())
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    assert (s["latency_p50_ms"], s["latency_p90_ms"], s["latency_p99_ms"]) == (p50, p90, p99)
    assert s["latency_min_ms"] == samples.min()


def test_mean_and_std_exact() -> None:
    xs = [1.0, 2.0, 4.0, 8.0, 16.0]
    s = summarize(xs)
    assert s["latency_mean_ms"] == pytest.approx(statistics.mean(xs), rel=1e-15)
    # Sample standard deviation (n - 1), as statistics.stdev computes it.
    assert s["latency_std_ms"] == pytest.approx(statistics.stdev(xs), rel=1e-12)
    assert s["latency_std_ms"] == pytest.approx(math.sqrt(sum((x - 6.2) ** 2 for x in xs) / 4))


def test_summary_of_one_and_no_samples() -> None:
    assert summarize([]) == {}
    one = summarize([3.0])
    assert one["latency_std_ms"] == 0.0
    assert one["latency_p50_ms"] == one["latency_ci_low_ms"] == one["latency_ci_high_ms"] == 3.0


def test_median_ci_brackets_the_sample_median() -> None:
    rng = np.random.default_rng(1)
    for n in (3, 4, 10, 11, 50, 101, 1000):
        xs = rng.exponential(1.0, n)
        low, high = median_ci(xs)
        assert low <= float(np.median(xs)) <= high
        assert low in xs and high in xs  # order statistics, not interpolated values
        assert low < high
    wide, narrow = median_ci(rng.normal(0, 1, 20)), median_ci(rng.normal(0, 1, 2000))
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_median_ci_small_samples() -> None:
    assert all(math.isnan(v) for v in median_ci([]))
    assert median_ci([5.0]) == (5.0, 5.0)
    assert median_ci([7.0, 5.0]) == (5.0, 7.0)


@pytest.mark.parametrize("n", [20, 100])
def test_median_ci_coverage(n: int) -> None:
    """The 95% interval holds the true median in roughly 95% of repeated experiments."""
    rng = np.random.default_rng(12345 + n)
    true_median, trials = 3.0, 2000
    hits = 0
    for _ in range(trials):
        low, high = median_ci(rng.normal(true_median, 1.0, n))
        hits += low <= true_median <= high
    assert 0.90 <= hits / trials <= 0.99


# --- timing loop ------------------------------------------------------------------------------


class Counting:
    def __init__(self, sleep_s: float = 0.0) -> None:
        self.calls = 0
        self.sleep_s = sleep_s

    def __call__(self) -> None:
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)


def test_time_rounds_honours_min_seconds() -> None:
    fn = Counting(sleep_s=0.001)
    [samples] = time_rounds(fn, warmup=3, min_iters=5, min_seconds=0.15)
    assert len(samples) >= 5
    assert sum(samples) >= 0.15 * 1000 * 0.9
    assert all(s >= 1.0 for s in samples)  # each sample is at least the 1 ms sleep, in ms
    assert fn.calls == 3 + len(samples)  # warm-up calls are not timed


def test_time_rounds_honours_min_iters() -> None:
    fn = Counting()
    [samples] = time_rounds(fn, warmup=2, min_iters=200, min_seconds=0.0)
    assert len(samples) == 200
    assert fn.calls == 202


def test_max_iters_caps_a_round() -> None:
    fn = Counting()
    started = time.perf_counter()
    rounds = time_rounds(fn, warmup=0, min_iters=1, min_seconds=30.0, repeats=2, max_iters=7)
    assert time.perf_counter() - started < 5
    assert [len(r) for r in rounds] == [7, 7]
    assert fn.calls == 14


def test_repeats_gives_that_many_rounds() -> None:
    fn = Counting(sleep_s=0.001)
    rounds = time_rounds(fn, warmup=1, min_iters=4, min_seconds=0.01, repeats=3)
    assert len(rounds) == 3
    assert all(len(r) >= 4 and sum(r) >= 0.01 * 1000 * 0.9 for r in rounds)
    assert fn.calls == 1 + sum(len(r) for r in rounds)


# --- fidelity and accuracy --------------------------------------------------------------------


def test_sqnr_of_identical_arrays_is_infinite() -> None:
    x = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    assert sqnr_db(x, x.copy()) == math.inf


def test_sqnr_matches_known_noise_power() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 2.0, (64, 100))
    noise = rng.normal(0, 1.0, reference.shape)
    target_db = 23.0
    # Scale the noise to an exact power: Σn² = Σref² / 10^(dB/10).
    noise *= math.sqrt(np.sum(reference**2) / 10 ** (target_db / 10) / np.sum(noise**2))
    assert sqnr_db(reference, reference + noise) == pytest.approx(target_db, abs=0.01)
    # float32 outputs, as a backend returns them, give the same figure.
    ref32, test32 = reference.astype(np.float32), (reference + noise).astype(np.float32)
    expected = 10 * math.log10(np.sum(ref32.astype(np.float64) ** 2) / np.sum(noise**2))
    assert sqnr_db(ref32, test32) == pytest.approx(expected, abs=0.01)


def test_mean_cosine() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 3, 4))
    assert mean_cosine(v, 3.5 * v) == pytest.approx(1.0, abs=1e-12)
    assert mean_cosine(v, -v) == pytest.approx(-1.0, abs=1e-12)
    a = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    b = np.array([[0.0, 5.0, 0.0], [0.0, 0.0, -1.0]])
    assert mean_cosine(a, b) == pytest.approx(0.0, abs=1e-12)
    # One parallel row and one orthogonal row: the mean is 0.5.
    assert mean_cosine(a, np.array([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]])) == pytest.approx(0.5)


def test_fidelity_agreement_counts_argmax_matches() -> None:
    reference = np.array(
        [[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], dtype=np.float32
    )
    test = reference.copy()
    test[2] = [0.7, 0.2, 0.1]  # top-1 changes from class 2 to class 0
    out = fidelity(reference, test)
    assert out["fp32_agreement"] == 0.75
    assert set(out) == {"fp32_agreement", "fp32_agreement_ci_low", "fp32_agreement_ci_high",
                        "accuracy_groups", "output_cosine", "output_cosine_p1",
                        "output_sqnr_db", "output_rel_rmse"}  # fmt: skip
    assert out["accuracy_groups"] == 4  # no groups given: every input its own
    # the worst 1% of inputs: below the mean where one input moved, never above it
    assert out["output_cosine_p1"] < out["output_cosine"]
    assert fidelity(reference, reference)["output_cosine_p1"] == pytest.approx(1.0)
    assert out["fp32_agreement_ci_low"] < 0.75 < out["fp32_agreement_ci_high"] <= 1.0
    assert 0 < out["output_cosine"] < 1
    assert out["output_sqnr_db"] == pytest.approx(sqnr_db(reference, test))
    assert fidelity(reference, reference)["fp32_agreement"] == 1.0


def test_topk_accuracy_hand_made() -> None:
    logits = np.array(
        [
            [0.1, 0.5, 0.3, 0.05, 0.05],  # order 1, 2, 0, ...
            [0.7, 0.1, 0.15, 0.04, 0.01],  # order 0, 2, 1, ...
            [0.2, 0.25, 0.3, 0.15, 0.1],  # order 2, 1, 0, 3, 4
        ]
    )
    labels = np.array([1, 2, 4])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, labels, 4) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, labels, 5) == 1.0


def test_accuracy_reports_top5_only_above_five_classes() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 2, 3])
    five = rng.normal(size=(4, 5))
    assert set(accuracy(five, labels)) == {"top1", "top1_ci_low", "top1_ci_high",
                                           "accuracy_groups"}  # fmt: skip
    six = rng.normal(size=(4, 6))
    out = accuracy(six, labels)
    assert set(out) == {"top1", "top1_ci_low", "top1_ci_high", "accuracy_groups", "top5"}
    assert out["top5"] == topk_accuracy(six, labels, 5)
    assert out["top1"] == topk_accuracy(six, labels, 1)


# --- accuracy intervals -----------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(50, 100), (153, 170), (1, 20), (0, 17), (17, 17)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    from scipy.stats import binomtest

    expected = binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert wilson_interval(k / n, n) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_effective_samples_rules() -> None:
    groups = np.repeat(np.arange(17), 10)
    mixed = np.tile([1, 1, 1, 1, 1, 1, 1, 1, 1, 0], 17)  # 9 of 10 in every group
    assert effective_samples(mixed, None) == (170.0, 170)
    # every group holds the same share: nothing clustered, all 170 count
    assert effective_samples(mixed, groups) == (170.0, 17)
    # whole groups agree or not (15 of 17): the crops add nothing beyond their photo;
    # the cluster-robust variance p(1-p)/(G-1) makes that G - 1 draws
    whole = np.repeat((np.arange(17) < 15).astype(int), 10)
    n_eff, count = effective_samples(whole, groups)
    assert count == 17 and n_eff == pytest.approx(16.0)
    # no spread to measure clustering by: every input counts, as one disagreement would show
    assert effective_samples(np.ones(170), groups) == (170.0, 17)
    one = np.ones(170)
    one[0] = 0
    assert effective_samples(one, groups)[0] == pytest.approx(170.0, rel=0.01)


@pytest.mark.parametrize(("true", "concentration"), [(0.99, 2.0), (0.995, 2.0), (0.97, 20.0)])
def test_clustered_interval_keeps_its_coverage_near_perfect_agreement(
    true: float, concentration: float
) -> None:
    """37 photos of 11 crops whose photo-level rates scatter (beta), often all agreeing: the
    interval still holds the true rate in about 95% of experiments."""
    from qbench.measure.fidelity import _with_interval

    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(37), 11)
    held, trials = 0, 600
    for _ in range(trials):
        rate = rng.beta(true * concentration, (1 - true) * concentration, 37)
        hits = (rng.random((37, 11)) < rate[:, None]).reshape(-1)
        out = _with_interval("a", hits, groups)
        held += out["a_ci_low"] <= true <= out["a_ci_high"]
    assert 0.92 <= held / trials <= 0.995


def test_clustered_interval_is_wider_and_keeps_its_coverage() -> None:
    """Hits drawn in 17 groups of 10 with a group-level rate (as crops of one photo): the
    interval over groups holds the true rate in about 95% of experiments; an interval that
    took the 170 inputs as independent would hold it far less often."""
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(17), 10)
    true, trials = 0.85, 1000
    held = held_naive = 0
    for _ in range(trials):
        rate = rng.beta(true * 2, (1 - true) * 2, 17)
        hits = (rng.random((17, 10)) < rate[:, None]).astype(float).reshape(-1)
        logits = np.stack([hits, 1 - hits], axis=1)  # class 0 where the input "agrees"
        # top-1 is class 0 on every input, scores differ (a constant reference says nothing)
        reference = np.stack([1.0 + rng.random(170), np.zeros(170)], axis=1)
        out = fidelity(reference, logits, groups)
        naive = fidelity(reference, logits)
        assert out["fp32_agreement"] == naive["fp32_agreement"] == hits.mean()
        assert (out["accuracy_groups"], naive["accuracy_groups"]) == (17, 170)
        held += out["fp32_agreement_ci_low"] <= true <= out["fp32_agreement_ci_high"]
        held_naive += naive["fp32_agreement_ci_low"] <= true <= naive["fp32_agreement_ci_high"]
    assert 0.90 <= held / trials <= 0.99
    assert held_naive / trials < 0.8


# --- memory -----------------------------------------------------------------------------------


def test_peak_rss_is_positive() -> None:
    peak = peak_rss_mb()
    assert isinstance(peak, float) and peak > 0


def test_peak_rss_grows_with_a_touched_allocation() -> None:
    # A fresh process: in this one an earlier test may already have set a higher peak.
    code = (
        "import numpy as np\n"
        "from qbench.measure.memory import peak_rss_mb\n"
        "before = peak_rss_mb()\n"
        "a = np.ones(200 * 2**20 // 8)\n"
        "after = peak_rss_mb()\n"
        "print(before, after, a[-1])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=REPO,
    )
    before, after, _ = (float(v) for v in proc.stdout.split())
    assert after - before >= 190
