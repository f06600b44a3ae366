"""What every quantizer returns, and the tensor layout the quantizers share.

A quantizer here is simulated: it returns the dequantized float32 tensor (what a float kernel
computes with) together with the theoretical storage the quantized form would take, so that
rows can report a size that the float artifact on disk does not show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

# Scales and codebook entries are counted as they would be stored: IEEE float32.
FLOAT_BITS = 32

SliceGranularity = Literal["per_tensor", "per_channel"]


@dataclass(frozen=True)
class QuantizedTensor:
    """One quantized weight.

    dequantized: float32, the input's shape: the values the quantized form represents.
    packed_bits: bits × elements + codebooks + scales + zero points, each at its stored width
        (scales and codebooks float32; zero points at the code width).
    levels: distinct values one group/codebook can represent (an upper bound per group).
    meta: method-specific facts for tests and rows (group size, number of groups, ...).
    """

    dequantized: np.ndarray
    packed_bits: int
    levels: int
    meta: dict[str, object] = field(default_factory=dict)


def as_float_array(w: np.ndarray) -> np.ndarray:
    """`w` as float64 (quantizers compute in float64 and round once, to float32, at the end).

    Empty or non-finite input is refused: a NaN would silently poison a whole scale group.
    """
    x = np.asarray(w, dtype=np.float64)
    if x.size == 0:
        raise ValueError("cannot quantize an empty tensor")
    if not np.isfinite(x).all():
        raise ValueError("cannot quantize a tensor holding NaN or infinity")
    return x


def check_bits(bits: int, low: int, high: int) -> None:
    """ValueError unless `bits` is an int in [low, high] (bools and floats are refused too)."""
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not low <= bits <= high:
        raise ValueError(f"bits must be an integer from {low} to {high}, got {bits!r}")


def channel_rows(x: np.ndarray, axis: int) -> np.ndarray:
    """(channels, rest): one row per slice along `axis` (the output channel for conv/linear
    weights), the remaining dims flattened in C order."""
    if x.ndim == 0:
        raise ValueError("a scalar has no channel axis; use granularity='per_tensor'")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for a {x.ndim}-d tensor")
    moved = np.moveaxis(x, axis, 0)
    return moved.reshape(moved.shape[0], -1)


def slice_rows(x: np.ndarray, granularity: str, axis: int) -> np.ndarray:
    """(slices, elements per slice): one row per scale/codebook for `granularity`."""
    if granularity == "per_tensor":
        return x.reshape(1, -1)
    if granularity == "per_channel":
        return channel_rows(x, axis)
    raise ValueError(f"granularity must be 'per_tensor' or 'per_channel', got {granularity!r}")


def from_rows(rows: np.ndarray, shape: tuple[int, ...], granularity: str, axis: int) -> np.ndarray:
    """Undo `slice_rows` (per_channel also undoes `channel_rows`): float32 in `shape`."""
    if granularity == "per_tensor":
        return rows.reshape(shape).astype(np.float32)
    axis = axis % len(shape)
    moved_shape = (shape[axis], *shape[:axis], *shape[axis + 1 :])
    return np.moveaxis(rows.reshape(moved_shape), 0, axis).astype(np.float32)
