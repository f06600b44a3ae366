"""Uniform (linear) round-to-nearest quantization: integer codes times one scale per tensor,
output channel or group, plus an integer zero point in affine mode."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from qbench.quant.result import (
    FLOAT_BITS,
    QuantizedTensor,
    as_float_array,
    channel_rows,
    check_bits,
    from_rows,
    slice_rows,
)

Granularity = Literal["per_tensor", "per_channel", "per_group"]


def quantize_uniform(
    w: np.ndarray,
    bits: int,
    granularity: Granularity = "per_channel",
    group_size: int = 128,
    symmetric: bool = True,
    axis: int = 0,
) -> QuantizedTensor:
    """Round-to-nearest uniform quantization of `w` at 2–8 bits.

    symmetric: scale = max|w| / qmax, qmax = 2^(bits−1) − 1, codes in [−qmax, qmax] (2^bits − 1
        levels: the most negative code is left out so that the grid is symmetric about 0).
    affine: the range [min(w, 0), max(w, 0)] is split into 2^bits − 1 steps; zero_point =
        round(−min / scale) is an integer code, so 0.0 is exactly representable (zero padding
        and ReLU-dead weights stay exactly zero).
    per_group: per slice along `axis`, the remaining dims are flattened and cut into contiguous
        groups of `group_size`; the last group of each slice may be shorter.
    A group of zeros gets scale 0 and dequantizes to zeros.

    packed_bits = bits × elements + 32 × scales (+ bits × zero points when affine).
    """
    check_bits(bits, 2, 8)
    x = as_float_array(w)
    if granularity == "per_group":
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
        rows = channel_rows(x, axis)
        channels, per_channel = rows.shape
        groups_per_channel = math.ceil(per_channel / group_size)
        # Zero padding leaves max|w| and the range [min(w, 0), max(w, 0)] unchanged, so the
        # short last group gets exactly the scale it would get unpadded.
        padded = np.zeros((channels, groups_per_channel * group_size))
        padded[:, :per_channel] = rows
        groups = padded.reshape(channels * groups_per_channel, group_size)
        deq = _fake_quantize(groups, bits, symmetric).reshape(channels, -1)[:, :per_channel]
        dequantized = from_rows(deq, x.shape, "per_channel", axis)
        n_groups = channels * groups_per_channel
    else:
        rows = slice_rows(x, granularity, axis)
        dequantized = from_rows(_fake_quantize(rows, bits, symmetric), x.shape, granularity, axis)
        n_groups = rows.shape[0]
    zero_point_bits = 0 if symmetric else bits
    return QuantizedTensor(
        dequantized=dequantized,
        packed_bits=bits * x.size + n_groups * (FLOAT_BITS + zero_point_bits),
        levels=2**bits - 1 if symmetric else 2**bits,
        meta={
            "granularity": granularity,
            "symmetric": symmetric,
            "group_size": group_size if granularity == "per_group" else None,
            "n_groups": n_groups,
        },
    )


def _fake_quantize(groups: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    """Quantize then dequantize each row of `groups` (float64 in, float64 out)."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = np.abs(groups).max(axis=1, keepdims=True) / qmax
        safe = np.where(scale > 0, scale, 1.0)  # a zero scale means an all-zero group
        return np.clip(np.round(groups / safe), -qmax, qmax) * scale
    qmax = 2**bits - 1
    low = np.minimum(groups.min(axis=1, keepdims=True), 0.0)
    high = np.maximum(groups.max(axis=1, keepdims=True), 0.0)
    scale = (high - low) / qmax
    safe = np.where(scale > 0, scale, 1.0)
    zero_point = np.clip(np.round(-low / safe), 0, qmax)
    codes = np.clip(np.round(groups / safe) + zero_point, 0, qmax)
    return (codes - zero_point) * scale
