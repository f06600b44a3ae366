"""Uniform round-to-nearest weight quantization at 2–8 bits, optionally with activations at
2–16 bits (simulated)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from qbench.methods.simulated import SimulatedWeightMethod
from qbench.params import Params
from qbench.plugins import methods


class UniformParams(Params):
    bits: int = Field(default=4, ge=2, le=8, description="weight bits")
    granularity: Literal["per_tensor", "per_channel", "per_group"] = Field(
        default="per_channel", description="one scale per tensor, output channel or group"
    )
    group_size: int = Field(default=64, ge=1, description="weights per scale, with per_group")
    symmetric: bool = Field(default=True, description="scale only (True) or scale + zero point")
    activation_bits: int | None = Field(
        default=None,
        ge=2,
        le=16,
        description="also quantize each Conv/Linear layer's input to this many bits (per "
        "tensor, affine: unsigned codes and an integer zero point, min-max range on the "
        "suite's calibration inputs); None keeps activations float",
    )


@methods.register
class Uniform(SimulatedWeightMethod):
    name = "uniform"
    description = "uniform round-to-nearest weights at 2-8 bits, per tensor/channel/group"
    Params = UniformParams
    weight_scheme = "uniform"

    def activation_bits(self, params: Params) -> int | None:
        assert isinstance(params, UniformParams)
        return params.activation_bits

    def row_params(self, params: Params) -> dict[str, Any]:
        assert isinstance(params, UniformParams)
        return {
            "granularity": params.granularity,
            "symmetric_weights": params.symmetric,
            "group_size": params.group_size if params.granularity == "per_group" else None,
        }

    def quantize(self, name: str, weight: np.ndarray, params: Params) -> Any:
        from qbench.quant.uniform import quantize_uniform

        assert isinstance(params, UniformParams)
        return quantize_uniform(
            weight, params.bits, params.granularity, params.group_size, params.symmetric
        )
