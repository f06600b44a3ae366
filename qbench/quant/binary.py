"""Binary (sign × α, XNOR-Net) and ternary (−1/0/+1 × α, TWN) quantization, one α per tensor
or output channel."""

from __future__ import annotations

import numpy as np

from qbench.quant.result import (
    FLOAT_BITS,
    QuantizedTensor,
    SliceGranularity,
    as_float_array,
    from_rows,
    slice_rows,
)


def quantize_binary(
    w: np.ndarray, granularity: SliceGranularity = "per_channel", axis: int = 0
) -> QuantizedTensor:
    """sign(w) · α with α = mean|w| per slice, the L2-optimal scale for fixed signs
    (XNOR-Net); sign(0) = +1 so every weight takes one of exactly two values.

    packed_bits = 1 × elements + 32 × slices (α).
    """
    x = as_float_array(w)
    rows = slice_rows(x, granularity, axis)
    alpha = np.abs(rows).mean(axis=1, keepdims=True)
    deq = np.where(rows >= 0, alpha, -alpha)
    return QuantizedTensor(
        dequantized=from_rows(deq, x.shape, granularity, axis),
        packed_bits=x.size + FLOAT_BITS * rows.shape[0],
        levels=2,
        meta={"granularity": granularity, "n_groups": rows.shape[0]},
    )


def quantize_ternary(
    w: np.ndarray,
    threshold_ratio: float = 0.7,
    granularity: SliceGranularity = "per_channel",
    axis: int = 0,
) -> QuantizedTensor:
    """Ternary weight networks: per slice, Δ = threshold_ratio · mean|w|; weights with |w| > Δ
    become sign(w) · α with α = mean of |w| over them (0 if none), the rest become 0.

    0.7 is TWN's approximation of the optimal threshold for Gaussian-like weights.
    packed_bits = 2 × elements + 32 × slices (α; Δ is needed only while quantizing).
    """
    if not np.isfinite(threshold_ratio) or threshold_ratio < 0:
        raise ValueError(f"threshold_ratio must be finite and ≥ 0, got {threshold_ratio!r}")
    x = as_float_array(w)
    rows = slice_rows(x, granularity, axis)
    magnitude = np.abs(rows)
    delta = threshold_ratio * magnitude.mean(axis=1, keepdims=True)
    kept = magnitude > delta
    count = kept.sum(axis=1, keepdims=True)
    alpha = np.where(kept, magnitude, 0.0).sum(axis=1, keepdims=True) / np.maximum(count, 1)
    deq = np.sign(rows) * kept * alpha
    return QuantizedTensor(
        dequantized=from_rows(deq, x.shape, granularity, axis),
        packed_bits=2 * x.size + FLOAT_BITS * rows.shape[0],
        levels=3,
        meta={
            "granularity": granularity,
            "n_groups": rows.shape[0],
            "threshold_ratio": threshold_ratio,
        },
    )
