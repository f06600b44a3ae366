"""torchao's quantization of Linear layers (torch artifacts), for transformers and any torch
module with nn.Linear: what PyTorch users deploy LLMs and encoders with on CPUs today.

- int8_dynamic: int8 per-row symmetric weights, activations quantized per token at run time
  (`Int8DynamicActivationInt8WeightConfig`): int8 x int8 matmuls (torch._int_mm; inductor
  fuses the quantization around them, so `compile: true` is where it pays);
- int8_weight: int8 per-row weights, float activations (`Int8WeightOnlyConfig`): a weight
  dequantized inside the float matmul; saves memory traffic (decode), not arithmetic;
- int4_weight: 4-bit asymmetric weights in groups of `group_size` along the input dimension,
  bf16 activations (torchao's CPU int4 tensor, prototype `PrototypeInt4WeightOnlyConfig`,
  packed for ATen's `_weight_int4pack_mm_for_cpu`): the model runs in bf16 around it.

The quantized tensors are torchao tensor subclasses; the artifact's state dict holds them and
is read weights-only (torchao registers them as safe), loaded into the plain module by
assignment, so the measured process never quantizes anything itself. Convolutions are not
touched (quantized_nodes/compute_nodes say how much of a CNN this covers).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from qbench.methods.base import MakeContext, Method, packed_bytes, save_torch_artifact
from qbench.methods.packing import int8_weight_bits
from qbench.params import Params
from qbench.plugins import methods

INT4_ROWS = 16  # _convert_weight_to_int4pack_cpu packs output rows in tiles of 16


class TorchaoParams(Params):
    scheme: Literal["int8_dynamic", "int8_weight", "int4_weight"] = Field(
        default="int8_dynamic",
        description="int8_dynamic (int8 weights and per-token int8 activations), int8_weight "
        "(int8 weights, float activations) or int4_weight (4-bit grouped weights, bf16)",
    )
    group_size: Literal[32, 64, 128, 256] = Field(
        default=64,
        description="int4_weight: weights per scale/zero point along the input dimension (a "
        "layer whose input size it does not divide stays float: the notes count them)",
    )


def _config(params: TorchaoParams) -> Any:
    if params.scheme == "int8_dynamic":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        return Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    if params.scheme == "int8_weight":
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig(set_inductor_config=False)
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    return PrototypeInt4WeightOnlyConfig(group_size=params.group_size, set_inductor_config=False)


def quantize_linears(module: Any, params: TorchaoParams) -> tuple[Any, int, int]:
    """A quantized copy of `module` (bf16 for int4), with (quantized, all) Linear counts."""
    import torch
    from torchao.quantization import quantize_

    out = copy.deepcopy(module).eval()
    takes = None
    if params.scheme == "int4_weight":
        out = out.to(torch.bfloat16)  # the CPU int4 kernel takes bf16 activations

        def takes(layer: Any, _: str) -> bool:
            # ATen's CPU int4 packing needs output rows in multiples of 16, and groups that
            # divide the input: other Linear layers stay bf16 (the notes count them)
            return (
                isinstance(layer, torch.nn.Linear)
                and layer.out_features % INT4_ROWS == 0
                and layer.in_features % params.group_size == 0
            )

    quantize_(out, _config(params), filter_fn=takes)
    linears = [m for m in out.modules() if isinstance(m, torch.nn.Linear)]
    done = sum(type(m.weight).__module__.startswith("torchao") for m in linears)
    return out, done, len(linears)


@methods.register
class Torchao(Method):
    name = "torchao"
    description = (
        "torchao Linear quantization: int8 dynamic activations + int8 weights, int8 "
        "weight-only, int4 weight-only (CPU kernels)"
    )
    Params = TorchaoParams
    produces = ("torch",)
    loads_by_assignment = True

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        assert isinstance(params, TorchaoParams)
        if params.scheme == "int8_dynamic":
            return {
                "bits_w": 8,
                "bits_a": 8,
                "calibrator": "dynamic",
                "granularity": "per_channel",
                "symmetric_weights": True,
                "act_dtype": "int8",
                "weight_dtype": "int8",
                "weight_scheme": "uniform",
                "notes": [
                    "torchao int8 dynamic: per-token int8 activations x per-row int8 "
                    "weights (Linear layers only)"
                ],
            }
        if params.scheme == "int8_weight":
            return {
                "bits_w": 8,
                "bits_a": 32,
                "granularity": "per_channel",
                "symmetric_weights": True,
                "act_dtype": "float32",
                "weight_dtype": "int8",
                "weight_scheme": "uniform",
                "notes": [
                    "torchao int8 weight-only: weights dequantized inside float "
                    "matmuls (Linear layers only)"
                ],
            }
        return {
            "bits_w": 4,
            "bits_a": 16,
            "granularity": f"group{params.group_size}",
            "symmetric_weights": False,
            "act_dtype": "bfloat16",
            "weight_dtype": "uint4",
            "weight_scheme": "uniform",
            "notes": [
                f"torchao int4 weight-only (groups of {params.group_size}, ATen "
                "_weight_int4pack_mm_for_cpu); the rest of the model runs in bf16"
            ],
        }

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        assert isinstance(params, TorchaoParams)
        import torch

        quantized, done, total = quantize_linears(ctx.model.module, params)
        if done == 0:
            raise ValueError(
                f"torchao {params.scheme} quantized none of the model's {total} "
                "Linear layers (none, or shapes its kernels do not take)"
            )
        save_torch_artifact(out, ctx, self.name, params, quantized.state_dict())
        per_row = int8_weight_bits(8, True)  # int8 weights + one fp32 scale per row

        def weight_bits(name: str, layer: Any) -> int | None:
            if not isinstance(layer, torch.nn.Linear):
                return None
            if params.scheme != "int4_weight":
                return per_row(name, layer)
            # 4-bit weights + a bf16 scale and zero point per group
            numel = layer.weight.numel()
            return numel * 4 + (numel // params.group_size) * 32

        notes = [f"torchao {params.scheme}: {done} of {total} Linear layers quantized"]
        return {"packed_bytes": packed_bytes(ctx, weight_bits), "artifact_notes": notes}

    def rebuild_torch(self, module: Any, example: Any, params: Params) -> Any:
        # The saved state dict holds torchao's tensors: the backend assigns them into the
        # plain module (load_state_dict(assign=True)); int4's module runs in bf16.
        import torch

        assert isinstance(params, TorchaoParams)
        return module.to(torch.bfloat16) if params.scheme == "int4_weight" else module
