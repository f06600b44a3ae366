"""Product quantization (simulated): sub-vectors of each weight matrix share per-subspace
codebooks, so a weight costs log2(K)/subvector bits plus the codebooks."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from qbench.methods.simulated import SimulatedWeightMethod
from qbench.params import Params
from qbench.plugins import methods


class ProductParams(Params):
    subvector: int = Field(default=4, ge=1, le=64, description="sub-vector length d")
    centroids: int = Field(default=256, ge=2, le=65536, description="codewords K per subspace")
    seed: int = Field(default=0, description="k-means seed")


@methods.register
class Product(SimulatedWeightMethod):
    name = "product"
    description = "product quantization: per-subspace codebooks over weight sub-vectors"
    Params = ProductParams
    weight_scheme = "product"

    def weight_bits(self, params: Params) -> int | None:
        return None  # log2(K)/d bits plus codebooks: varies per layer (layer_bits_json)

    def row_params(self, params: Params) -> dict[str, Any]:
        assert isinstance(params, ProductParams)
        return {
            "clusters": params.centroids,
            "subvector_size": params.subvector,
            "granularity": f"subspace of {params.subvector}",
        }

    def quantize(self, name: str, weight: np.ndarray, params: Params) -> Any:
        from qbench.quant.product import quantize_product

        assert isinstance(params, ProductParams)
        return quantize_product(weight, params.subvector, params.centroids, seed=params.seed)
