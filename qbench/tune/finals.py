"""Tune's finalists compared: a significance test on the per-round ratios of their interleaved
rounds (each round times every finalist once, in rotating order, so drift and a noisy
neighbour hit all alike: measure.latency.interleaved_rounds, on runners opened by
confirm.stage.open_runner, as `qbench run` confirms its summary's picks)."""

from __future__ import annotations

import statistics


def ratio(p50s: dict[str, list[float]], slow: str, fast: str) -> float:
    """How many times faster `fast` is than `slow`: the median of the per-round ratios."""
    return statistics.median(a / b for a, b in zip(p50s[slow], p50s[fast], strict=True))
