"""qbench.quant against independent references: torch's fake-quant kernels, scalar pure-Python
re-derivations from the textbook formulas, sklearn's k-means, and the optimality conditions
of k-means itself; plus the properties every quantizer promises (error falls with bits, level
counts, exact packed sizes, zero handling, validation, dtype and shape)."""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from qbench.quant import (
    QuantizedTensor,
    quantize_binary,
    quantize_fixed_point,
    quantize_kmeans,
    quantize_log2,
    quantize_product,
    quantize_ternary,
    quantize_uniform,
)

SHAPE = (64, 32, 3, 3)
ELEMENTS = math.prod(SHAPE)  # 18432
PER_CHANNEL = ELEMENTS // SHAPE[0]  # 288


@pytest.fixture(scope="module")
def gauss() -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 0.5, SHAPE).astype(np.float32)


def mse(q: QuantizedTensor, w: np.ndarray) -> float:
    return float(np.mean((q.dequantized.astype(np.float64) - w.astype(np.float64)) ** 2))


def falls_strictly(errors: list[float]) -> bool:
    return all(a > b for a, b in itertools.pairwise(errors))


def never_rises(errors: list[float]) -> bool:
    return all(a >= b for a, b in itertools.pairwise(errors))


def per_channel_rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1)


# ---------------------------------------------------------------- uniform vs references


def torch_reference_params(
    w: np.ndarray, bits: int, symmetric: bool, reduce_dims: tuple[int, ...]
) -> tuple[object, object, int, int]:
    """Textbook scale/zero point over `reduce_dims` (torch float32), independent of qbench."""
    import torch

    wt = torch.from_numpy(w)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = wt.abs().amax(dim=reduce_dims) / qmax
        return scale, torch.zeros_like(scale, dtype=torch.int32), -qmax, qmax
    qmax = 2**bits - 1
    low = torch.clamp(wt.amin(dim=reduce_dims), max=0.0)
    high = torch.clamp(wt.amax(dim=reduce_dims), min=0.0)
    scale = (high - low) / qmax
    zero_point = torch.clamp(torch.round(-low / scale), 0, qmax).to(torch.int32)
    return scale, zero_point, 0, qmax


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("axis", [0, 1])
def test_uniform_per_channel_matches_torch(
    gauss: np.ndarray, symmetric: bool, bits: int, axis: int
) -> None:
    import torch

    reduce_dims = tuple(d for d in range(gauss.ndim) if d != axis)
    scale, zp, qmin, qmax = torch_reference_params(gauss, bits, symmetric, reduce_dims)
    ref = torch.fake_quantize_per_channel_affine(
        torch.from_numpy(gauss), scale, zp, axis, qmin, qmax
    ).numpy()
    q = quantize_uniform(gauss, bits, "per_channel", symmetric=symmetric, axis=axis)
    # float64 (ours) and float32 (torch) scales differ in the last bits only.
    np.testing.assert_allclose(q.dequantized, ref, rtol=1e-5, atol=1e-6)
    assert q.meta["n_groups"] == gauss.shape[axis]


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_uniform_per_tensor_matches_torch(gauss: np.ndarray, symmetric: bool, bits: int) -> None:
    import torch

    scale, zp, qmin, qmax = torch_reference_params(gauss, bits, symmetric, tuple(range(4)))
    ref = torch.fake_quantize_per_tensor_affine(
        torch.from_numpy(gauss), float(scale), int(zp), qmin, qmax
    ).numpy()
    q = quantize_uniform(gauss, bits, "per_tensor", symmetric=symmetric)
    np.testing.assert_allclose(q.dequantized, ref, rtol=1e-5, atol=1e-6)
    assert q.meta["n_groups"] == 1


def slow_group_reference(w: np.ndarray, bits: int, group_size: int, symmetric: bool) -> np.ndarray:
    """Scalar loop over channels and groups, straight from the formulas."""
    out = []
    for channel in w.reshape(w.shape[0], -1).tolist():
        result: list[float] = []
        for start in range(0, len(channel), group_size):
            group = channel[start : start + group_size]
            if symmetric:
                qmax = 2 ** (bits - 1) - 1
                scale = max(abs(v) for v in group) / qmax
                for v in group:
                    code = 0 if scale == 0 else max(-qmax, min(qmax, round(v / scale)))
                    result.append(code * scale)
            else:
                qmax = 2**bits - 1
                low, high = min(min(group), 0.0), max(max(group), 0.0)
                scale = (high - low) / qmax
                zp = 0 if scale == 0 else max(0, min(qmax, round(-low / scale)))
                for v in group:
                    code = zp if scale == 0 else max(0, min(qmax, round(v / scale) + zp))
                    result.append((code - zp) * scale)
        out.append(result)
    return np.array(out).reshape(w.shape)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("group_size", [16, 45, 7])
def test_uniform_per_group_matches_slow_loop(symmetric: bool, bits: int, group_size: int) -> None:
    w = np.random.default_rng(1).normal(size=(8, 5, 3, 3)).astype(np.float32)  # 45 per channel
    w[2] = 0.0
    q = quantize_uniform(w, bits, "per_group", group_size=group_size, symmetric=symmetric)
    ref = slow_group_reference(w, bits, group_size, symmetric)
    np.testing.assert_allclose(q.dequantized, ref, rtol=1e-6, atol=1e-7)
    assert q.meta["n_groups"] == 8 * math.ceil(45 / group_size)


def test_uniform_group_count_and_levels(gauss: np.ndarray) -> None:
    for group_size in (32, 100, 128, 288, 1000):
        for symmetric in (True, False):
            q = quantize_uniform(gauss, 3, "per_group", group_size, symmetric)
            per_channel_groups = math.ceil(PER_CHANNEL / group_size)
            assert q.meta["n_groups"] == SHAPE[0] * per_channel_groups
            assert q.meta["group_size"] == group_size
            rows = per_channel_rows(q.dequantized)
            for start in range(0, PER_CHANNEL, group_size):
                for group in rows[:, start : start + group_size]:
                    assert len(np.unique(group)) <= q.levels


def test_uniform_two_bit_symmetric_is_ternary_grid(gauss: np.ndarray) -> None:
    q = quantize_uniform(gauss, 2, "per_channel")
    assert q.levels == 3
    for w_row, q_row in zip(per_channel_rows(gauss), per_channel_rows(q.dequantized), strict=True):
        scale = np.float32(np.abs(w_row).max())
        assert set(np.unique(q_row)) <= {-scale, np.float32(0), scale}


def test_uniform_affine_keeps_zero_exact() -> None:
    rng = np.random.default_rng(2)
    w = np.abs(rng.normal(size=(16, 40))).astype(np.float32) + 0.3  # range excludes 0 ...
    w[:, ::3] = 0.0  # ... yet zeros must stay exactly zero
    for bits in range(2, 9):
        for granularity in ("per_tensor", "per_channel", "per_group"):
            q = quantize_uniform(w, bits, granularity, group_size=8, symmetric=False)
            assert np.all(q.dequantized[:, ::3] == 0.0)
            assert q.levels == 2**bits


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel", "per_group"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_uniform_error_falls_with_bits(
    gauss: np.ndarray, granularity: str, symmetric: bool
) -> None:
    errors = [
        mse(quantize_uniform(gauss, b, granularity, 64, symmetric), gauss) for b in range(2, 9)
    ]
    assert falls_strictly(errors), errors


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel", "per_group"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_uniform_eight_bit_sqnr(gauss: np.ndarray, granularity: str, symmetric: bool) -> None:
    q = quantize_uniform(gauss, 8, granularity, 64, symmetric)
    signal = float(np.mean(gauss.astype(np.float64) ** 2))
    assert 10 * math.log10(signal / mse(q, gauss)) > 35.0


# ---------------------------------------------------------------- fixed point


def test_fixed_point_matches_scalar_reference(gauss: np.ndarray) -> None:
    w = gauss * 3
    for m, n in ((0, 7), (1, 4), (2, 2), (3, 0)):
        top = 2 ** (m + n)
        ref = [max(-top, min(top - 1, round(v * 2**n))) / 2**n for v in w.ravel().tolist()]
        q = quantize_fixed_point(w, m, n)
        np.testing.assert_array_equal(q.dequantized.ravel(), np.array(ref, dtype=np.float32))
        assert q.levels == 2 ** (1 + m + n)


def test_fixed_point_saturates() -> None:
    w = np.array([100.0, -100.0, 1.8, -2.2, 1.74, -1.9, 0.1], dtype=np.float32)
    q = quantize_fixed_point(w, 1, 2)  # Q1.2: [-2, 1.75] in steps of 0.25
    np.testing.assert_array_equal(q.dequantized, [1.75, -2.0, 1.75, -2.0, 1.75, -2.0, 0.0])


def test_fixed_point_error_falls_with_frac_bits(gauss: np.ndarray) -> None:
    errors = [mse(quantize_fixed_point(gauss, 2, n), gauss) for n in range(0, 12)]
    assert falls_strictly(errors), errors


# ---------------------------------------------------------------- log2


def slow_log2_reference(w: np.ndarray, bits: int) -> np.ndarray:
    """Per channel: list the levels and pick the nearest in the log domain by search."""
    out = []
    for channel in w.reshape(w.shape[0], -1).tolist():
        peak = max(abs(v) for v in channel)
        if peak == 0:
            out.append([0.0] * len(channel))
            continue
        e_max = round(math.log2(peak))
        levels = [2.0 ** (e_max - k) for k in range(2 ** (bits - 1) - 1)]
        smallest = levels[-1]
        result = []
        for v in channel:
            if abs(v) < smallest / 2:
                result.append(0.0)
                continue
            best = min(levels, key=lambda level: abs(math.log2(abs(v)) - math.log2(level)))
            result.append(math.copysign(best, v))
        out.append(result)
    return np.array(out).reshape(w.shape)


@pytest.mark.parametrize("bits", [2, 3, 4, 6])
def test_log2_matches_level_search(bits: int) -> None:
    w = np.random.default_rng(3).laplace(0, 0.2, (6, 4, 3, 3)).astype(np.float32)
    w[1] = 0.0
    w[2, 0, 0, 0] = 0.0
    q = quantize_log2(w, bits, "per_channel")
    np.testing.assert_array_equal(q.dequantized, slow_log2_reference(w, bits).astype(np.float32))


def test_log2_levels_are_signed_powers_of_two(gauss: np.ndarray) -> None:
    for bits in range(2, 9):
        q = quantize_log2(gauss, bits, "per_channel")
        assert q.levels == 2**bits - 1
        for row in per_channel_rows(q.dequantized):
            values = np.unique(row)
            assert len(values) <= q.levels
            nonzero = np.abs(values[values != 0]).astype(np.float64)
            assert np.all(np.log2(nonzero) == np.round(np.log2(nonzero)))
        np.testing.assert_array_equal(np.sign(q.dequantized)[q.dequantized != 0],
                                      np.sign(gauss)[q.dequantized != 0])  # fmt: skip


def test_log2_error_falls_with_bits(gauss: np.ndarray) -> None:
    # Wide dynamic range (log-uniform magnitudes over 2^-40 .. 1): each extra exponent bit
    # doubles the octaves covered (3 at 3 bits, 31 at 6) and catches more weights, so the
    # error falls strictly; at 7 bits (63 octaves) everything is covered and it goes flat.
    rng = np.random.default_rng(4)
    wide = (np.exp2(rng.uniform(-40, 0, SHAPE)) * rng.choice([-1, 1], SHAPE)).astype(np.float32)
    errors = [mse(quantize_log2(wide, b, "per_tensor"), wide) for b in range(2, 9)]
    assert falls_strictly(errors[:5]), errors  # 2 → 6 bits
    assert never_rises(errors), errors
    # On the Gaussian tensor the 5-bit range already reaches 2^-14 of each channel's peak; no
    # weight of it lies lower, so from 5 bits on the error stays flat (ties, not a rise).
    errors = [mse(quantize_log2(gauss, b, "per_channel"), gauss) for b in range(2, 9)]
    assert falls_strictly(errors[:4]), errors  # 2 → 5 bits
    assert never_rises(errors), errors


def test_log2_top_exponent_is_rounded() -> None:
    # max|w| = 0.7: log2 = -0.51 rounds to -1, so 0.7 becomes 0.5 (ceil would give 1.0).
    q = quantize_log2(np.array([[0.7, 0.3, -0.2, 0.01]]), 3, "per_channel")
    np.testing.assert_array_equal(q.dequantized, [[0.5, 0.25, -0.25, 0.0]])


# ---------------------------------------------------------------- k-means


@pytest.mark.parametrize("bits", [1, 2, 4, 6])
def test_kmeans_matches_sklearn_lloyd(gauss: np.ndarray, bits: int) -> None:
    from sklearn.cluster import KMeans

    k = 2**bits
    x = gauss.astype(np.float64).reshape(-1, 1)
    start = np.quantile(x.ravel(), (np.arange(k) + 0.5) / k).reshape(-1, 1)
    ref = KMeans(k, init=start, n_init=1, max_iter=500, tol=0, algorithm="lloyd").fit(x)
    q = quantize_kmeans(gauss, bits, "per_tensor", iters=500)
    centroids = np.unique(q.dequantized)
    np.testing.assert_allclose(centroids, np.sort(ref.cluster_centers_.ravel()), rtol=1e-6)
    expected = ref.cluster_centers_.ravel()[ref.labels_].astype(np.float32)
    np.testing.assert_allclose(q.dequantized.ravel(), expected, rtol=1e-6)


def test_kmeans_is_a_lloyd_fixed_point(gauss: np.ndarray) -> None:
    q = quantize_kmeans(gauss, 3, "per_channel", iters=500)
    for w_row, q_row in zip(per_channel_rows(gauss), per_channel_rows(q.dequantized), strict=True):
        centroids = np.unique(q_row)
        distances = np.abs(w_row[:, None].astype(np.float64) - centroids[None, :])
        chosen = np.abs(w_row.astype(np.float64) - q_row)
        assert np.all(chosen <= distances.min(axis=1) + 1e-7)  # nearest centroid
        for c in centroids:
            assert np.isclose(w_row[q_row == c].astype(np.float64).mean(), c, rtol=1e-5)


def test_kmeans_levels_and_error(gauss: np.ndarray) -> None:
    errors = []
    for bits in range(1, 7):
        q = quantize_kmeans(gauss, bits, "per_tensor")
        assert len(np.unique(q.dequantized)) == 2**bits == q.levels
        qc = quantize_kmeans(gauss, bits, "per_channel")
        for row in per_channel_rows(qc.dequantized):
            assert len(np.unique(row)) == 2**bits
        assert qc.meta["centroids"] == SHAPE[0] * 2**bits
        errors.append(mse(q, gauss))
    assert falls_strictly(errors), errors


def test_kmeans_fewer_distinct_values_than_clusters() -> None:
    w = np.array([[0.0, 1.0, 2.0, 1.0], [5.0, 5.0, 5.0, 5.0]], dtype=np.float32)
    q = quantize_kmeans(w, 4, "per_tensor")
    np.testing.assert_array_equal(q.dequantized, w)
    assert q.levels == 4 and q.packed_bits == 4 * 8 + 32 * 4
    qc = quantize_kmeans(w, 4, "per_channel")
    np.testing.assert_array_equal(qc.dequantized, w)
    assert qc.meta["centroids"] == 3 + 1


def test_kmeans_repeated_values_still_get_all_clusters() -> None:
    # Half the weights are exactly zero: quantile starts would collide on 0.
    rng = np.random.default_rng(5)
    w = rng.normal(size=(2000,))
    w[:1000] = 0.0
    q = quantize_kmeans(w, 3)
    assert len(np.unique(q.dequantized)) == 8


def test_kmeans_is_deterministic(gauss: np.ndarray) -> None:
    a = quantize_kmeans(gauss, 4, "per_channel")
    b = quantize_kmeans(gauss, 4, "per_channel", seed=123)
    np.testing.assert_array_equal(a.dequantized, b.dequantized)


def test_kmeans_large_tensor_completes() -> None:
    w = np.random.default_rng(6).normal(size=(1280, 1000)).astype(np.float32)
    started = time.perf_counter()
    q = quantize_kmeans(w, 4, "per_tensor")
    elapsed = time.perf_counter() - started
    assert len(np.unique(q.dequantized)) == 16
    print(f"k-means 4-bit on 1280x1000: {elapsed:.2f} s")  # sanity, not an assertion


# ---------------------------------------------------------------- product quantization


def subvectors(a: np.ndarray, d: int) -> np.ndarray:
    """(subspaces, rows, d) sub-vectors of `a` seen as (out, in), `in` zero-padded."""
    rows = a.reshape(a.shape[0], -1)
    pad = (-rows.shape[1]) % d
    rows = np.pad(rows, ((0, 0), (0, pad)))
    return rows.reshape(rows.shape[0], -1, d).transpose(1, 0, 2)


@pytest.mark.parametrize(("d", "k"), [(4, 16), (5, 8), (2, 32)])
def test_product_codebooks_and_optimality(gauss: np.ndarray, d: int, k: int) -> None:
    q = quantize_product(gauss, subvector=d, centroids=k, iters=200)
    n_sub = math.ceil(PER_CHANNEL / d)
    assert q.meta["n_subspaces"] == n_sub and q.levels == k == q.meta["centroids"]
    original = subvectors(gauss, d).astype(np.float64)
    for w_sub, q_sub in zip(original, subvectors(q.dequantized, d), strict=True):
        codebook = np.unique(q_sub, axis=0).astype(np.float64)
        assert len(codebook) == k  # continuous data: every codeword in use
        # nearest codeword (k-means assignment step) ...
        distances = ((w_sub[:, None, :] - codebook[None]) ** 2).sum(-1)
        chosen = ((w_sub - q_sub) ** 2).sum(-1)
        assert np.all(chosen <= distances.min(axis=1) + 1e-5)
        # ... and each codeword the mean of its members (update step): a Lloyd fixed point.
        for c in codebook:
            members = np.all(q_sub == c.astype(np.float32), axis=1)
            np.testing.assert_allclose(w_sub[members].mean(axis=0), c, atol=1e-5)


def test_product_caps_codebook_at_rows_and_is_then_exact() -> None:
    w = np.random.default_rng(7).normal(size=(10, 12)).astype(np.float32)
    q = quantize_product(w, subvector=4, centroids=256)
    assert q.levels == 10
    np.testing.assert_array_equal(q.dequantized, w)
    assert q.packed_bits == math.ceil(math.log2(10)) * 10 * 3 + 32 * 10 * 4 * 3


def test_product_error_falls_with_codebook_size(gauss: np.ndarray) -> None:
    errors = [mse(quantize_product(gauss, 4, k), gauss) for k in (2, 4, 8, 16, 32, 64)]
    assert falls_strictly(errors), errors
    assert errors[-1] == 0.0  # K = 64 = rows: every sub-vector is its own codeword


def test_product_seeded_and_axis(gauss: np.ndarray) -> None:
    a = quantize_product(gauss, 4, 16, seed=1)
    np.testing.assert_array_equal(a.dequantized, quantize_product(gauss, 4, 16, seed=1).dequantized)
    moved = np.moveaxis(gauss, 0, 2)  # output channel on axis 2
    b = quantize_product(moved, 4, 16, axis=2, seed=1)
    np.testing.assert_array_equal(np.moveaxis(b.dequantized, 2, 0), a.dequantized)


def test_product_large_matrix_completes() -> None:
    w = np.random.default_rng(8).normal(size=(1280, 1000)).astype(np.float32)
    started = time.perf_counter()
    q = quantize_product(w, subvector=4, centroids=256)
    elapsed = time.perf_counter() - started
    assert q.meta["n_subspaces"] == 250
    print(f"product quantization 1280x1000, d=4, K=256: {elapsed:.2f} s")


# ---------------------------------------------------------------- binary / ternary


def test_binary_matches_formula(gauss: np.ndarray) -> None:
    w = gauss.copy()
    w[0, 0, 0, 0] = 0.0  # sign(0) = +1
    alpha = np.abs(w).reshape(SHAPE[0], -1).mean(axis=1).reshape(-1, 1, 1, 1)
    ref = np.where(w >= 0, 1.0, -1.0) * alpha
    q = quantize_binary(w, "per_channel")
    np.testing.assert_allclose(q.dequantized, ref, rtol=1e-6)
    assert q.dequantized[0, 0, 0, 0] > 0
    for row in per_channel_rows(q.dequantized):
        values = np.unique(row)
        assert len(values) == 2 and values[0] == -values[1]
    t = quantize_binary(w, "per_tensor")
    np.testing.assert_allclose(t.dequantized, np.where(w >= 0, 1.0, -1.0) * np.abs(w).mean(),
                               rtol=1e-6)  # fmt: skip


def test_ternary_matches_scalar_reference(gauss: np.ndarray) -> None:
    for ratio in (0.0, 0.5, 0.7, 1.5):
        q = quantize_ternary(gauss, ratio, "per_channel")
        for w_row, q_row in zip(per_channel_rows(gauss).tolist(),
                                per_channel_rows(q.dequantized), strict=True):  # fmt: skip
            delta = ratio * sum(abs(v) for v in w_row) / len(w_row)
            kept = [abs(v) for v in w_row if abs(v) > delta]
            alpha = sum(kept) / len(kept) if kept else 0.0
            ref = [math.copysign(alpha, v) if abs(v) > delta else 0.0 for v in w_row]
            np.testing.assert_allclose(q_row, ref, rtol=1e-6)
            assert len(np.unique(q_row)) <= 3 == q.levels


# ---------------------------------------------------------------- shared properties

QUANTIZERS: dict[str, Callable[[np.ndarray], QuantizedTensor]] = {
    "uniform_sym": lambda w: quantize_uniform(w, 4, "per_channel"),
    "uniform_affine": lambda w: quantize_uniform(w, 4, "per_channel", symmetric=False),
    "uniform_group": lambda w: quantize_uniform(w, 4, "per_group", 128, symmetric=False),
    "uniform_tensor": lambda w: quantize_uniform(w, 4, "per_tensor"),
    "fixed_point": lambda w: quantize_fixed_point(w, 2, 5),
    "log2": lambda w: quantize_log2(w, 4, "per_channel"),
    "log2_tensor": lambda w: quantize_log2(w, 4, "per_tensor"),
    "kmeans": lambda w: quantize_kmeans(w, 4, "per_tensor"),
    "kmeans_channel": lambda w: quantize_kmeans(w, 4, "per_channel"),
    "product": lambda w: quantize_product(w, 4, 16),
    "product_padded": lambda w: quantize_product(w, 5, 16),
    "binary": lambda w: quantize_binary(w, "per_channel"),
    "ternary": lambda w: quantize_ternary(w, 0.7, "per_channel"),
}

# bits × elements + what each stores beside the codes, for SHAPE (64 channels of 288).
PACKED_BITS = {
    "uniform_sym": 4 * ELEMENTS + 32 * 64,
    "uniform_affine": 4 * ELEMENTS + (32 + 4) * 64,
    "uniform_group": 4 * ELEMENTS + (32 + 4) * 64 * 3,  # 288 = 128 + 128 + 32
    "uniform_tensor": 4 * ELEMENTS + 32,
    "fixed_point": 8 * ELEMENTS,
    "log2": 4 * ELEMENTS + 8 * 64,
    "log2_tensor": 4 * ELEMENTS + 8,
    "kmeans": 4 * ELEMENTS + 32 * 16,
    "kmeans_channel": 4 * ELEMENTS + 32 * 16 * 64,
    "product": 4 * 64 * 72 + 32 * 16 * 4 * 72,  # 288 / 4 = 72 subspaces
    "product_padded": 4 * 64 * 58 + 32 * 16 * 5 * 58,  # 288 padded to 290: 58 subspaces
    "binary": ELEMENTS + 32 * 64,
    "ternary": 2 * ELEMENTS + 32 * 64,
}


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_packed_bits_dtype_and_shape(gauss: np.ndarray, name: str) -> None:
    q = QUANTIZERS[name](gauss)
    assert q.packed_bits == PACKED_BITS[name]
    assert isinstance(q.packed_bits, int)
    assert q.dequantized.dtype == np.float32 and q.dequantized.shape == SHAPE
    assert mse(q, gauss) < float(np.mean(gauss.astype(np.float64) ** 2))
    # float64 and list inputs give float32 too
    assert QUANTIZERS[name](gauss.astype(np.float64)).dequantized.dtype == np.float32


# A codebook shared across channels need not hold 0, so a zero channel maps to the codeword
# nearest 0 there; every other quantizer has a scale or 0 of the channel's own.
SHARED_CODEBOOK = {"kmeans", "product", "product_padded"}


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_zero_channel_and_zero_tensor(gauss: np.ndarray, name: str) -> None:
    w = gauss.copy()
    w[5] = 0.0
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        q = QUANTIZERS[name](w)
        zeros = QUANTIZERS[name](np.zeros(SHAPE, np.float32))
    assert np.all(np.isfinite(q.dequantized))
    if name not in SHARED_CODEBOOK:
        assert np.all(q.dequantized[5] == 0.0)
    assert np.all(zeros.dequantized == 0.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda w: quantize_uniform(w, 1),
        lambda w: quantize_uniform(w, 9),
        lambda w: quantize_uniform(w, 4.0),
        lambda w: quantize_uniform(w, True),
        lambda w: quantize_uniform(w, 4, "per_row"),
        lambda w: quantize_uniform(w, 4, "per_group", group_size=0),
        lambda w: quantize_uniform(w, 4, axis=4),
        lambda w: quantize_log2(w, 1),
        lambda w: quantize_log2(w, 9),
        lambda w: quantize_kmeans(w, 0),
        lambda w: quantize_kmeans(w, 9),
        lambda w: quantize_fixed_point(w, -1, 4),
        lambda w: quantize_fixed_point(w, 2, -1),
        lambda w: quantize_product(w, 0),
        lambda w: quantize_product(w, 4, 0),
        lambda w: quantize_ternary(w, -0.1),
        lambda w: quantize_binary(w, "per_group"),
        lambda w: quantize_uniform(np.array([1.0, np.nan]), 4, "per_tensor"),
        lambda w: quantize_uniform(np.zeros((0, 3)), 4),
    ],
)
def test_invalid_arguments_raise(gauss: np.ndarray, call: Callable[[np.ndarray], object]) -> None:
    with pytest.raises(ValueError):
        call(gauss)


def test_linear_and_1d_shapes() -> None:
    w = np.random.default_rng(9).normal(size=(10, 7)).astype(np.float32)
    for fn in QUANTIZERS.values():
        assert fn(w).dequantized.shape == (10, 7)
    bias = w[0]
    assert quantize_uniform(bias, 8, "per_tensor").dequantized.shape == (7,)
    assert quantize_kmeans(bias, 2).dequantized.shape == (7,)
