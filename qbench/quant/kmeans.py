"""Weight sharing by 1-D k-means: each weight is replaced by the nearest of 2^bits centroids
fitted to the tensor (or to each output channel)."""

from __future__ import annotations

import numpy as np

from qbench.quant.result import (
    FLOAT_BITS,
    QuantizedTensor,
    SliceGranularity,
    as_float_array,
    check_bits,
    from_rows,
    slice_rows,
)


def quantize_kmeans(
    w: np.ndarray,
    bits: int,
    granularity: SliceGranularity = "per_tensor",
    axis: int = 0,
    seed: int = 0,
    iters: int = 50,
) -> QuantizedTensor:
    """k-means weight sharing with 2^bits centroids (1 ≤ bits ≤ 8) per tensor or channel.

    Lloyd's algorithm from centroids at evenly spaced quantiles, at most `iters` rounds, stopping
    early at a fixed point; a cluster left empty is restarted on the weight farthest from its
    centroid. The fit is deterministic, so `seed` is unused: it is accepted so
    that k-means and product quantization share one calling convention. A slice with at most
    2^bits distinct values gets one centroid per distinct value (zero error), and a centroid
    that no weight chose is dropped.

    packed_bits = bits × elements + 32 × centroids (summed over slices when per_channel).
    """
    check_bits(bits, 1, 8)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be a non-negative integer, got {iters!r}")
    x = as_float_array(w)
    rows = slice_rows(x, granularity, axis)
    codebooks = fit_kmeans_1d(rows, 2**bits, iters)
    deq = np.empty_like(rows)
    for i, (row, centroids) in enumerate(zip(rows, codebooks, strict=True)):
        deq[i] = centroids[assign(row, centroids)]
    counts = [len(c) for c in codebooks]
    return QuantizedTensor(
        dequantized=from_rows(deq, x.shape, granularity, axis),
        packed_bits=bits * x.size + FLOAT_BITS * sum(counts),
        levels=max(counts),
        meta={
            "granularity": granularity,
            "n_groups": rows.shape[0],
            "centroids": sum(counts),
            "clusters": 2**bits,
        },
    )


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted `centroids` for each value: in 1-D the clusters are
    the intervals between consecutive midpoints, so a binary search replaces a distance matrix.
    A value on a midpoint goes to the lower centroid."""
    return np.searchsorted((centroids[:-1] + centroids[1:]) / 2, values)


def fit_kmeans_1d(rows: np.ndarray, k: int, iters: int) -> list[np.ndarray]:
    """Sorted centroids for each row of `rows` (R, n): at most `k`, fewer where a row has fewer
    distinct values or a cluster ends empty.

    All rows are fitted together. Each row is sorted once; then a cluster is a contiguous run
    of it, found by binary search for the midpoints, and its sum comes from prefix sums, so a
    round costs O(R·k·log n) rather than O(R·n·log k).
    """
    ordered = np.sort(rows, axis=1)
    n_distinct = 1 + (ordered[:, 1:] > ordered[:, :-1]).sum(axis=1)
    codebooks: list[np.ndarray] = [np.empty(0)] * len(rows)
    few = n_distinct <= k
    for i in np.flatnonzero(few):
        codebooks[i] = np.unique(ordered[i])
    many = np.flatnonzero(~few)
    if len(many) == 0:
        return codebooks
    ordered = ordered[many]
    prefix = np.concatenate([np.zeros((len(many), 1)), np.cumsum(ordered, axis=1)], axis=1)
    quantiles = (np.arange(k) + 0.5) / k
    centroids = np.quantile(ordered, quantiles, axis=1).T  # (rows, k)
    for i in np.flatnonzero((np.diff(centroids, axis=1) <= 0).any(axis=1)):
        # Repeated values put several start centroids on one value: spread those rows'
        # starts over their distinct values instead (there are more than k of them).
        centroids[i] = np.quantile(np.unique(ordered[i]), quantiles)
    bounds = _bounds(ordered, centroids)
    for _ in range(iters):
        sizes = np.diff(bounds, axis=1)
        sums = np.take_along_axis(prefix, bounds[:, 1:], 1)
        sums -= np.take_along_axis(prefix, bounds[:, :-1], 1)
        centroids = np.where(sizes > 0, sums / np.maximum(sizes, 1), centroids)
        for i in np.flatnonzero((sizes == 0).any(axis=1)):
            _relocate_empty(ordered[i], centroids[i], sizes[i])
        centroids = np.sort(centroids, axis=1)
        new_bounds = _bounds(ordered, centroids)
        if np.array_equal(new_bounds, bounds):
            break  # same clusters, same means: a fixed point
        bounds = new_bounds
    used = np.diff(bounds, axis=1) > 0  # a centroid no weight chose costs space for nothing
    for i, row in enumerate(many):
        codebooks[row] = centroids[i][used[i]]
    return codebooks


def _relocate_empty(ordered: np.ndarray, centroids: np.ndarray, sizes: np.ndarray) -> None:
    """Move the centroids of empty clusters (in place) onto the values farthest from their
    own centroid, as sklearn does: an empty cluster would otherwise waste a code for good."""
    empty = np.flatnonzero(sizes == 0)
    distance = np.abs(ordered - np.repeat(centroids, sizes))
    farthest = np.argsort(distance, kind="stable")[::-1][: len(empty)]
    farthest = farthest[distance[farthest] > 0]  # a value on its centroid would gain nothing
    centroids[empty[: len(farthest)]] = ordered[farthest]


def _bounds(ordered: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(R, k + 1): cluster j of row r is ordered[r, bounds[r, j]:bounds[r, j + 1]]. Values on a
    midpoint go to the lower centroid, as in `assign`."""
    midpoints = (centroids[:, :-1] + centroids[:, 1:]) / 2
    inner = _count_at_most(ordered, midpoints)
    edges = np.zeros((len(ordered), 1), dtype=inner.dtype)
    return np.concatenate([edges, inner, edges + ordered.shape[1]], axis=1)


def _count_at_most(ordered: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each row r and query q: how many of ordered[r] are ≤ q (searchsorted side="right"),
    by a binary search run on all rows and queries at once (numpy has no batched searchsorted).
    """
    n = ordered.shape[1]
    rows = np.arange(len(ordered))[:, None]
    low = np.zeros(queries.shape, dtype=np.intp)
    high = np.full(queries.shape, n, dtype=np.intp)
    for _ in range(int(n).bit_length()):  # ⌈log2(n + 1)⌉ halvings close every interval
        middle = (low + high) // 2
        right = ordered[rows, np.minimum(middle, n - 1)] <= queries
        open_ = low < high
        low = np.where(open_ & right, middle + 1, low)
        high = np.where(open_ & ~right, middle, high)
    return low
