"""Statistics of raw latency samples (pure Python + numpy; scipy only where a test needs it)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics.

    The ranks come from the binomial(n, 1/2) distribution of the count of samples below the
    median, by its normal approximation (exact enough from n = 10 on).
    """
    xs = np.sort(np.asarray(samples, dtype=float))
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    if n < 3:
        return float(xs[0]), float(xs[-1])
    z = {0.90: 1.6449, 0.95: 1.96, 0.99: 2.5758}.get(confidence, 1.96)
    half = z * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half))
    high = min(n - 1, math.ceil(n / 2 + half) - 1)
    return float(xs[low]), float(xs[high])


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99, mean, std, min and the 95% CI of the median, in the samples' unit."""
    xs = np.asarray(samples_ms, dtype=float)
    if xs.size == 0:
        return {}
    low, high = median_ci(xs)
    p50, p90, p99 = np.percentile(xs, [50, 90, 99])
    return {
        "latency_p50_ms": float(p50),
        "latency_p90_ms": float(p90),
        "latency_p99_ms": float(p99),
        "latency_mean_ms": float(xs.mean()),
        "latency_std_ms": float(xs.std(ddof=1)) if xs.size > 1 else 0.0,
        "latency_min_ms": float(xs.min()),
        "latency_ci_low_ms": low,
        "latency_ci_high_ms": high,
    }


def slower_p_value(fast: list[float], slow: list[float]) -> float:
    """One-sided p-value that `slow` is slower than `fast`: a Wilcoxon signed-rank test on the
    per-round log ratios (paired: both were timed in the same round). 1.0 where every round
    ties."""
    from scipy.stats import wilcoxon

    logs = [math.log(b / a) for a, b in zip(fast, slow, strict=True)]
    if all(v == 0 for v in logs):
        return 1.0
    return float(wilcoxon(logs, alternative="greater").pvalue)
