"""Logarithmic (power-of-two) weights (simulated): multiplications become shifts."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from qbench.methods.simulated import SimulatedWeightMethod
from qbench.params import Params
from qbench.plugins import methods


class Log2Params(Params):
    bits: int = Field(default=4, ge=2, le=8, description="bits: 1 sign + exponent index")
    granularity: Literal["per_tensor", "per_channel"] = Field(
        default="per_channel", description="where the largest exponent is chosen"
    )


@methods.register
class Log2(SimulatedWeightMethod):
    name = "log2"
    description = "power-of-two (logarithmic) weights: sign and exponent, zero kept exact"
    Params = Log2Params
    weight_scheme = "log2"

    def row_params(self, params: Params) -> dict[str, Any]:
        assert isinstance(params, Log2Params)
        return {"granularity": params.granularity, "symmetric_weights": True}

    def quantize(self, name: str, weight: np.ndarray, params: Params) -> Any:
        from qbench.quant.log2 import quantize_log2

        assert isinstance(params, Log2Params)
        return quantize_log2(weight, params.bits, params.granularity)
