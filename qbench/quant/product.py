"""Product quantization: the rows of a weight matrix are cut into short sub-vectors, and each
column subspace gets its own codebook of K codewords shared by every row."""

from __future__ import annotations

import math

import numpy as np

from qbench.quant.result import (
    FLOAT_BITS,
    QuantizedTensor,
    as_float_array,
    channel_rows,
    from_rows,
)

# Subspaces clustered together: bounds the (subspaces, rows, K) float32 distance block
# to about 16 MiB, whatever the matrix.
_DISTANCE_BLOCK_ELEMENTS = 4 * 2**20


def quantize_product(
    w: np.ndarray,
    subvector: int = 4,
    centroids: int = 256,
    axis: int = 0,
    seed: int = 0,
    iters: int = 25,
) -> QuantizedTensor:
    """Product quantization of a weight tensor seen as an (out, in) matrix.

    `axis` (the output channel) comes first and the remaining dims are flattened into `in`,
    so conv weights (out, in, kh, kw) work like linear ones. `in` is zero-padded to a multiple
    of `subvector` and cut into in/subvector column subspaces; in each, the `out` row
    sub-vectors are clustered by k-means with K = min(centroids, out) codewords (K rows picked
    at random with `seed` as the start, then at most `iters` Lloyd rounds; an emptied cluster
    restarts on the point farthest from its codeword), and each sub-vector is replaced by its
    nearest codeword.

    packed_bits = ceil(log2 K) × out × subspaces + 32 × K × subvector × subspaces.
    """
    for name, value, least in (("subvector", subvector, 1), ("centroids", centroids, 1),
                               ("iters", iters, 0)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer ≥ {least}, got {value!r}")
    x = as_float_array(w)
    rows = channel_rows(x, axis)
    out, width = rows.shape
    n_sub = math.ceil(width / subvector)
    padded = np.zeros((out, n_sub * subvector), dtype=np.float32)
    padded[:, :width] = rows
    # (subspaces, rows, subvector): subspace s holds columns s*d .. s*d + d - 1 of every row.
    points = np.ascontiguousarray(padded.reshape(out, n_sub, subvector).transpose(1, 0, 2))
    k = min(centroids, out)
    rng = np.random.default_rng(seed)
    block = max(1, _DISTANCE_BLOCK_ELEMENTS // (out * k))
    quantized = np.empty_like(points)
    for start in range(0, n_sub, block):
        chunk = points[start : start + block]
        codebooks, labels = _kmeans_batched(chunk, k, iters, rng)
        quantized[start : start + block] = np.take_along_axis(codebooks, labels[..., None], 1)
    deq = quantized.transpose(1, 0, 2).reshape(out, -1)[:, :width]
    dequantized = from_rows(deq, x.shape, "per_channel", axis)
    index_bits = math.ceil(math.log2(k))
    return QuantizedTensor(
        dequantized=dequantized,
        packed_bits=index_bits * out * n_sub + FLOAT_BITS * k * subvector * n_sub,
        levels=k,
        meta={
            "subvector": subvector,
            "centroids": k,
            "n_subspaces": n_sub,
            "padded_columns": n_sub * subvector - width,
            "index_bits": index_bits,
        },
    )


def _kmeans_batched(
    points: np.ndarray, k: int, iters: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Independent k-means in each of S subspaces at once: points (S, N, d) float32 →
    codebooks (S, k, d) and labels (S, N) of the nearest codeword.

    A subspace whose assignment stops changing has reached a fixed point and drops out of
    later rounds, so the cost follows the slowest subspaces only as far as they go."""
    s, n, d = points.shape
    # k distinct rows per subspace, drawn at random: argsort of uniform noise is a permutation.
    start = np.argsort(rng.random((s, n)), axis=1)[:, :k]
    codebooks = np.take_along_axis(points, start[..., None], 1)
    labels = _nearest(points, codebooks)
    active = np.arange(s)
    for _ in range(iters):
        if len(active) == 0:
            break
        pts, lab = points[active], labels[active]
        flat = (lab + (np.arange(len(active)) * k)[:, None]).ravel()
        size = len(active) * k
        sizes = np.bincount(flat, minlength=size).reshape(-1, k, 1)
        sums = np.stack(
            [np.bincount(flat, pts[..., j].ravel(), size) for j in range(d)], axis=-1
        ).reshape(-1, k, d)
        means = np.where(sizes > 0, sums / np.maximum(sizes, 1), codebooks[active])
        means = means.astype(np.float32)
        for a in np.flatnonzero((sizes == 0).any(axis=(1, 2))):
            _relocate_empty(pts[a], means[a], lab[a], sizes[a, :, 0] == 0)
        codebooks[active] = means
        new = _nearest(pts, codebooks[active])
        changed = (new != lab).any(axis=1)
        labels[active] = new
        active = active[changed]
    return codebooks, labels


def _relocate_empty(
    points: np.ndarray, codebook: np.ndarray, labels: np.ndarray, empty: np.ndarray
) -> None:
    """Move the codewords of empty clusters (in place) onto the points farthest from their own
    codeword, as sklearn does: an empty cluster would otherwise waste a code for good."""
    distance = ((points - codebook[labels]) ** 2).sum(axis=-1)
    farthest = np.argsort(distance, kind="stable")[::-1][: int(empty.sum())]
    farthest = farthest[distance[farthest] > 0]  # a point on its codeword would gain nothing
    codebook[np.flatnonzero(empty)[: len(farthest)]] = points[farthest]


def _nearest(points: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """(S, N) index of the nearest codeword: |x − c|² = |x|² − 2x·c + |c|², and |x|² is the
    same for every codeword of a point, so it is left out of the argmin. In place: the
    (S, N, k) block is the only large temporary."""
    scores = np.matmul(points, codebooks.transpose(0, 2, 1))
    scores *= -2
    scores += (codebooks**2).sum(-1)[:, None, :]
    return scores.argmin(axis=-1)
