"""Logarithmic (power-of-two) quantization: a sign and an exponent per weight, so a multiply
becomes a shift."""

from __future__ import annotations

import numpy as np

from qbench.quant.result import (
    QuantizedTensor,
    SliceGranularity,
    as_float_array,
    check_bits,
    from_rows,
    slice_rows,
)

# Each slice stores its largest exponent as a signed 8-bit integer: [−128, 127] covers every
# float32 exponent, normal and subnormal alike.
EXPONENT_BITS = 8


def quantize_log2(
    w: np.ndarray,
    bits: int,
    granularity: SliceGranularity = "per_channel",
    axis: int = 0,
) -> QuantizedTensor:
    """Power-of-two quantization at 2–8 bits: 1 sign bit, bits − 1 bits of exponent index.

    Per slice, e_max = round(log2(max|w|)); the magnitudes are 2^(e_max − k) for
    k = 0 .. 2^(bits−1) − 2, and the last index code is an exact zero (2^bits − 1 levels with
    the sign). Each weight goes to the nearest level in the log domain: its exponent is
    round(log2|w|) clamped to [e_min, e_max]; weights below half the smallest level, 2^(e_min−1),
    become 0 (the midpoint between 0 and the smallest level).

    Why round and not ceil for e_max: the largest weight is then treated like every other one,
    rounded to the nearest power of two in the log domain. With ceil, the top level lies above
    max|w| and, whenever log2(max|w|) has a fraction below one half, no weight rounds to it — a
    whole level of the few there are would be wasted on a slice.

    packed_bits = bits × elements + 8 × slices (e_max, see EXPONENT_BITS).
    """
    check_bits(bits, 2, 8)
    x = as_float_array(w)
    rows = slice_rows(x, granularity, axis)
    magnitude = np.abs(rows)
    peak = magnitude.max(axis=1, keepdims=True)
    # log2 of 1 stands in for log2 of 0 (a zero slice, a zero weight) so no warning is raised;
    # those entries are masked to zero below.
    e_max = np.round(np.log2(np.where(peak > 0, peak, 1.0)))
    e_min = e_max - (2 ** (bits - 1) - 2)
    exponent = np.clip(np.round(np.log2(np.where(magnitude > 0, magnitude, 1.0))), e_min, e_max)
    keep = (magnitude >= np.exp2(e_min - 1)) & (peak > 0)
    deq = np.where(keep, np.sign(rows) * np.exp2(exponent), 0.0)
    return QuantizedTensor(
        dequantized=from_rows(deq, x.shape, granularity, axis),
        packed_bits=bits * x.size + EXPONENT_BITS * rows.shape[0],
        levels=2**bits - 1,
        meta={"granularity": granularity, "n_groups": rows.shape[0]},
    )
