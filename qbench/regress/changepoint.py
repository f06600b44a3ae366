"""Step detection over a cell's whole history of one metric (one hardware fingerprint).

Comparing only the last run with the one before misses a regression that landed a week ago
and hides behind noise in every single pair. Here the whole series is segmented at once:

1. Work on log values, so a step is a ratio and one noise level fits fast and slow cells.
2. Estimate the cell's own noise from the series (history.step_sigma: first differences).
   A step moves only one difference, so the estimate barely notices the steps it must find.
   A floor keeps a perfectly flat series (deterministic accuracy, constant memory) from
   turning every last-digit wiggle into a step.
3. Optimal partitioning (exact dynamic programming over all segmentations, the same optimum
   PELT finds) on mean shift, with a BIC-like penalty per change point scaled by that noise
   and a minimum segment length, so one outlier run is never a segment of its own.
4. Prune: each change point's size is the ratio of the *medians* of its two neighbouring
   segments (an outlier inside a segment does not move a median), and change points smaller
   than `min_relative` or not clear of the noise are dropped one at a time, weakest first,
   re-measuring the merged segments after each drop.

Pure numpy and deterministic; numpy is imported inside the functions so that importing this
module stays cheap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qbench.regress.history import METRICS, step_sigma

# Defaults, chosen on simulated series (Gaussian and heavy-tailed noise, 8-200 runs, noise
# 0.5-10 %) so that pure noise gives no change point in well over 99 % of series while a step
# of 5 x the noise is found at its exact run.
MIN_RELATIVE = 0.05  # below this a step is not reported, however clear (facts: 5-17 % noise)
MIN_SEGMENT = 3  # runs on each side of a step
NOISE_FLOOR = 0.01  # log units: a flat series is treated as having 1 % noise
PENALTY = 4.0  # x noise variance x log(n) per change point (BIC would be 2)
MIN_SIGMAS = 3.0  # a step must also exceed this many standard errors of the median difference
SIGMA_SE = 1.17  # relative standard error of a MAD-based sigma x sqrt(number of differences)
WINSOR = 2.5  # outliers are clipped to this many noise sigmas before segmenting


@dataclass(frozen=True)
class ChangePoint:
    """One step in a series. `index` is the position (in the series given) of the first run
    after the step; `before`/`after` are the medians of the segments either side."""

    index: int
    run_id: str | None
    metric: str
    before: float
    after: float
    ratio: float  # after / before
    kind: str  # "regression" or "improvement", from METRICS[metric]["worse"]

    @property
    def change(self) -> float:
        """Relative change, e.g. +0.18 for 18 % higher after the step."""
        return self.ratio - 1.0


def noise_sigma(log_values: Any, floor: float = NOISE_FLOOR) -> float:
    """Robust noise (standard deviation, log units) of a series from its first differences."""
    import numpy as np

    y = np.asarray(log_values, dtype=float)
    if y.size < 3:
        return floor
    return max(step_sigma(y), floor)


def segment(y: Any, penalty: float, min_segment: int) -> list[int]:
    """Optimal partitioning of `y` on mean shift: the boundaries (start index of each segment
    after the first) minimising sum of within-segment squared error + penalty x boundaries."""
    import numpy as np

    y = np.asarray(y, dtype=float)
    n = y.size
    m = max(int(min_segment), 1)
    if n < 2 * m:
        return []
    s1 = np.concatenate([[0.0], np.cumsum(y)])
    s2 = np.concatenate([[0.0], np.cumsum(y * y)])
    best = np.full(n + 1, np.inf)
    best[0] = -penalty  # the first segment carries no boundary
    last = np.zeros(n + 1, dtype=int)
    for t in range(m, n + 1):
        starts = np.arange(0, t - m + 1)
        lengths = t - starts
        cost = (s2[t] - s2[starts]) - (s1[t] - s1[starts]) ** 2 / lengths
        total = best[starts] + np.maximum(cost, 0.0) + penalty
        k = int(np.argmin(total))  # first minimum: ties resolve the same way every time
        best[t], last[t] = total[k], int(starts[k])
    bounds = []
    t = n
    while t > 0:
        s = int(last[t])
        if s > 0:
            bounds.append(s)
        t = s
    return sorted(bounds)


def _segments(y: Any, bounds: list[int]) -> list[Any]:
    return [y[a:b] for a, b in itertools.pairwise([0, *bounds, len(y)])]


def _residual_sigma(y: Any, bounds: list[int]) -> float:
    """1.4826 x MAD of the runs around their segment's median."""
    import numpy as np

    resid = np.concatenate([s - np.median(s) for s in _segments(y, bounds)])
    return 1.4826 * float(np.median(np.abs(resid)))


def _rolling_median(y: Any, half: int) -> Any:
    import numpy as np

    padded = np.concatenate([np.full(half, y[0]), y, np.full(half, y[-1])])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    return np.median(windows, axis=1)


def _winsorize(y: Any, sigma: float, clip: float = WINSOR) -> Any:
    """Pull outlier runs to within `clip` noise sigmas of a running median. The squared-error
    cost would otherwise cut a segment around a single slow run; a running median follows a
    real step exactly (a median filter preserves edges), so steps are left untouched."""
    import numpy as np

    if y.size < 5:
        return y
    centre = _rolling_median(y, 2)
    return centre + np.clip(y - centre, -clip * sigma, clip * sigma)


def _kind(metric: str, ratio: float) -> str:
    worse = METRICS.get(metric, {}).get("worse", "higher")
    higher = ratio > 1.0
    return "regression" if higher == (worse == "higher") else "improvement"


def find_change_points(
    values: Sequence[float | None],
    metric: str,
    run_ids: Sequence[str | None] | None = None,
    *,
    min_relative: float = MIN_RELATIVE,
    min_segment: int = MIN_SEGMENT,
    noise_floor: float = NOISE_FLOOR,
    penalty: float = PENALTY,
    min_sigmas: float = MIN_SIGMAS,
) -> list[ChangePoint]:
    """Change points of one metric's series in run order (one cell, one fingerprint).

    Missing, NaN and non-positive values are skipped (a log needs a positive value); indices
    in the result still refer to positions in `values`. `run_ids`, when given, names the run
    at each position. Returned in series order.
    """
    import numpy as np

    if run_ids is not None and len(run_ids) != len(values):
        raise ValueError(f"{len(run_ids)} run ids for {len(values)} values")
    pos, logs = [], []
    for i, v in enumerate(values):
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and f > 0:
            pos.append(i)
            logs.append(math.log(f))
    y = np.asarray(logs, dtype=float)
    n = y.size
    if n < 2 * max(min_segment, 1):
        return []
    sigma = noise_sigma(y, noise_floor)
    # The noise estimate from a few runs is itself uncertain (a MAD from m differences has a
    # relative standard error of about 1.17 / sqrt(m)); judging steps against one standard
    # error above it keeps short histories from flagging noise they under-estimated.
    sigma *= 1.0 + SIGMA_SE / math.sqrt(n - 1)
    bounds = segment(_winsorize(y, sigma), penalty * sigma * sigma * math.log(n), min_segment)
    # Second look at the noise: the spread of the runs around their own segment's median uses
    # every run, where the differences alone can come out far too small by chance in a short
    # history (and then cut steps out of noise). Take the larger and segment again.
    resid = _residual_sigma(y, bounds)
    if resid > sigma:
        sigma = resid
        bounds = segment(_winsorize(y, sigma), penalty * sigma * sigma * math.log(n), min_segment)
    bounds = _prune(y, bounds, sigma, min_relative, min_sigmas)
    edges = [0, *bounds, n]
    out = []
    for j, b in enumerate(bounds):
        before = float(np.exp(np.median(y[edges[j] : b])))
        after = float(np.exp(np.median(y[b : edges[j + 2]])))
        ratio = after / before
        index = pos[b]
        out.append(
            ChangePoint(
                index=index,
                run_id=None if run_ids is None else run_ids[index],
                metric=metric,
                before=before,
                after=after,
                ratio=ratio,
                kind=_kind(metric, ratio),
            )
        )
    return out


def _prune(
    y: Any, bounds: list[int], sigma: float, min_relative: float, min_sigmas: float
) -> list[int]:
    """Drop, weakest first, change points whose median step is too small or not clear of the
    noise; the neighbours of a dropped point are re-measured over the merged segment."""
    import numpy as np

    bounds = list(bounds)
    # Standard error of a median is about sqrt(pi/2) times that of a mean.
    se_scale = math.sqrt(math.pi / 2.0) * sigma
    while bounds:
        edges = [0, *bounds, len(y)]
        medians = [float(np.median(s)) for s in _segments(y, bounds)]
        weakest, weakest_score = -1, math.inf
        for j in range(len(bounds)):
            step = medians[j + 1] - medians[j]
            n1, n2 = edges[j + 1] - edges[j], edges[j + 2] - edges[j + 1]
            se = se_scale * math.sqrt(1.0 / n1 + 1.0 / n2)
            big = abs(math.expm1(step)) >= min_relative
            clear = abs(step) >= min_sigmas * se
            if not (big and clear) and abs(step) < weakest_score:
                weakest, weakest_score = j, abs(step)
        if weakest < 0:
            break
        del bounds[weakest]
    return bounds
