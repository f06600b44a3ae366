"""Binary (sign × scale, XNOR-Net) and ternary (−1/0/+1 × scale, TWN) weights (simulated)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from qbench.methods.simulated import SimulatedWeightMethod
from qbench.params import Params
from qbench.plugins import methods


class BinaryParams(Params):
    granularity: Literal["per_tensor", "per_channel"] = Field(
        default="per_channel", description="one scale (mean |w|) per tensor or output channel"
    )


class TernaryParams(BinaryParams):
    threshold: float = Field(default=0.7, gt=0, lt=2,
                             description="zero weights below threshold x mean |w|")  # fmt: skip


@methods.register
class Binary(SimulatedWeightMethod):
    name = "binary"
    description = "binary weights: sign(w) x mean|w| per channel (XNOR-Net)"
    Params = BinaryParams
    weight_scheme = "binary"

    def weight_bits(self, params: Params) -> int | None:
        return 1

    def row_params(self, params: Params) -> dict[str, Any]:
        assert isinstance(params, BinaryParams)
        return {"granularity": params.granularity, "symmetric_weights": True}

    def quantize(self, name: str, weight: np.ndarray, params: Params) -> Any:
        from qbench.quant.binary import quantize_binary

        assert isinstance(params, BinaryParams)
        return quantize_binary(weight, params.granularity)


@methods.register
class Ternary(Binary):
    name = "ternary"
    description = "ternary weights: -1/0/+1 x scale, threshold 0.7 mean|w| (TWN)"
    Params = TernaryParams
    weight_scheme = "ternary"

    def weight_bits(self, params: Params) -> int | None:
        return 2

    def quantize(self, name: str, weight: np.ndarray, params: Params) -> Any:
        from qbench.quant.binary import quantize_ternary

        assert isinstance(params, TernaryParams)
        return quantize_ternary(weight, params.threshold, params.granularity)
