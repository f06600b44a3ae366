"""Signed fixed-point Qm.n weights (simulated): no scales, a fixed binary point."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from qbench.methods.simulated import SimulatedWeightMethod
from qbench.params import Params
from qbench.plugins import methods


class FixedPointParams(Params):
    int_bits: int = Field(default=0, ge=0, le=15, description="integer bits m (sign excluded)")
    frac_bits: int = Field(default=7, ge=0, le=30, description="fractional bits n")


@methods.register
class FixedPoint(SimulatedWeightMethod):
    name = "fixed_point"
    description = "signed fixed-point Qm.n weights (1 + m + n bits, no scale)"
    Params = FixedPointParams
    weight_scheme = "fixed_point"

    def weight_bits(self, params: Params) -> int | None:
        assert isinstance(params, FixedPointParams)
        return 1 + params.int_bits + params.frac_bits

    def row_params(self, params: Params) -> dict[str, Any]:
        return {"granularity": "per_tensor", "symmetric_weights": True}

    def quantize(self, name: str, weight: np.ndarray, params: Params) -> Any:
        from qbench.quant.fixed_point import quantize_fixed_point

        assert isinstance(params, FixedPointParams)
        return quantize_fixed_point(weight, params.int_bits, params.frac_bits)
