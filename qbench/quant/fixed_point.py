"""Signed fixed-point Qm.n quantization: a fixed binary point, no scale to store."""

from __future__ import annotations

import numpy as np

from qbench.quant.result import QuantizedTensor, as_float_array

# float64 holds every Qm.n value exactly up to 53 significant bits.
MAX_TOTAL_BITS = 53


def quantize_fixed_point(w: np.ndarray, int_bits: int, frac_bits: int) -> QuantizedTensor:
    """Signed Qm.n with m = `int_bits`, n = `frac_bits` and 1 + m + n bits in all:
    value = clip(round(w · 2^n), −2^(m+n), 2^(m+n) − 1) / 2^n, so the range is
    [−2^m, 2^m − 2^−n] in steps of 2^−n and values outside it saturate.

    packed_bits = (1 + m + n) × elements: the binary point is fixed, nothing else is stored.
    """
    for name, value in (("int_bits", int_bits), ("frac_bits", frac_bits)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    total = 1 + int_bits + frac_bits
    if total > MAX_TOTAL_BITS:
        raise ValueError(f"1 + int_bits + frac_bits must be at most {MAX_TOTAL_BITS}, got {total}")
    x = as_float_array(w)
    step = 2.0**frac_bits
    top = 2.0 ** (int_bits + frac_bits)
    codes = np.clip(np.round(x * step), -top, top - 1)
    return QuantizedTensor(
        dequantized=(codes / step).astype(np.float32),
        packed_bits=total * x.size,
        levels=2**total,
        meta={"int_bits": int_bits, "frac_bits": frac_bits, "total_bits": total},
    )
