"""The Pareto front of (latency, accuracy) points: lower latency and higher accuracy win."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points, ordered by increasing x.

    A point dominates another when its x is no larger and its y no smaller, and one of the two
    is strictly better. Points with a missing (None/NaN) coordinate are ignored; of identical
    points only the first is kept.
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length: {len(xs)} != {len(ys)}")
    valid = [i for i in range(len(xs)) if _finite(xs[i]) and _finite(ys[i])]
    # Lowest x first; among equal x, highest y first, so later equal-x points are dominated.
    valid.sort(key=lambda i: (float(xs[i]), -float(ys[i]), i))
    front: list[int] = []
    best_y = -math.inf
    for i in valid:
        if float(ys[i]) > best_y:
            front.append(i)
            best_y = float(ys[i])
    return front


def _finite(value: object) -> bool:
    try:
        return value is not None and math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
