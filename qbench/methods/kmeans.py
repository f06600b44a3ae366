"""k-means weight clustering (weight sharing) with 2^b centroids per layer (simulated).

Lloyd's algorithm from evenly spaced quantiles: deterministic, so it takes no seed."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from qbench.methods.simulated import SimulatedWeightMethod
from qbench.params import Params
from qbench.plugins import methods


class KMeansParams(Params):
    bits: int = Field(default=4, ge=1, le=8, description="index bits: 2^bits centroids")
    granularity: Literal["per_tensor", "per_channel"] = Field(
        default="per_tensor", description="one codebook per layer or per output channel"
    )


@methods.register
class KMeans(SimulatedWeightMethod):
    name = "kmeans"
    description = "k-means weight sharing: 2^bits centroids per layer (or channel)"
    Params = KMeansParams
    weight_scheme = "kmeans"

    def row_params(self, params: Params) -> dict[str, Any]:
        assert isinstance(params, KMeansParams)
        return {"granularity": params.granularity, "clusters": 2**params.bits}

    def quantize(self, name: str, weight: np.ndarray, params: Params) -> Any:
        from qbench.quant.kmeans import quantize_kmeans

        assert isinstance(params, KMeansParams)
        return quantize_kmeans(weight, params.bits, params.granularity)
