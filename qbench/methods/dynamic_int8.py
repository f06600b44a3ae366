"""Post-training dynamic (dynamic-range) int8: weights quantized ahead of time, activations
quantized at run time from their observed range. No calibration data.

ONNX: ONNX Runtime's `quantize_dynamic` (ConvInteger / MatMulInteger). Torch:
`torch.ao.quantization.quantize_dynamic`, which only covers Linear layers: convolutions stay
float32, and the quantized_nodes/compute_nodes columns show it. LiteRT (tflite):
ai-edge-quantizer's dynamic_wi8_afp32 recipe (int8 symmetric per-channel weights of every
CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED) on the fp32 conversion; LiteRT's hybrid kernels
quantize the float32 activations to int8 at run time.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from qbench.methods.base import (
    MakeContext,
    Method,
    fp32_tflite,
    packed_bytes,
    save_torch_artifact,
)
from qbench.methods.packing import int8_weight_bits
from qbench.params import Params
from qbench.plugins import methods


class DynamicInt8Params(Params):
    weight_type: Literal["uint8", "int8"] = Field(
        default="uint8", description="ONNX weight type (uint8 is the faster ConvInteger on x86)"
    )
    per_channel: bool = Field(default=False, description="ONNX: one weight scale per channel")


@methods.register
class DynamicInt8(Method):
    name = "dynamic_int8"
    description = "dynamic-range int8: int8 weights, activations quantized at run time"
    Params = DynamicInt8Params
    produces = ("onnx", "torch", "tflite")

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        assert isinstance(params, DynamicInt8Params)
        if fmt == "tflite":
            return {"bits_w": 8, "bits_a": 8, "calibrator": "dynamic",
                    "granularity": "per_channel", "symmetric_weights": True,
                    "act_dtype": "int8", "weight_dtype": "int8", "weight_scheme": "uniform",
                    "notes": ["LiteRT hybrid kernels: float32 activations quantized to int8 at "
                              "run time"]}  # fmt: skip
        per_channel = params.per_channel and fmt == "onnx"
        return {"bits_w": 8, "bits_a": 8, "calibrator": "dynamic",
                "granularity": "per_channel" if per_channel else "per_tensor",
                "symmetric_weights": fmt == "torch" or params.weight_type == "int8",
                "act_dtype": "uint8", "weight_dtype": params.weight_type if fmt == "onnx"
                else "int8", "weight_scheme": "uniform"}  # fmt: skip

    def unsupported(self, fmt: str, params: Params, source: Any) -> str | None:
        assert isinstance(params, DynamicInt8Params)
        reason = super().unsupported(fmt, params, source)
        if (
            reason is None
            and fmt == "torch"
            and (params.weight_type != "uint8" or params.per_channel)
        ):
            return "torch's quantize_dynamic takes no weight_type/per_channel (int8 per tensor)"
        # LiteRT's recipe has one scheme, int8 symmetric per-channel weights: the defaults and
        # that scheme spelled out (weight_type int8, per_channel) both name it
        if (
            reason is None
            and fmt == "tflite"
            and (params.weight_type, params.per_channel) not in (("uint8", False), ("int8", True))
        ):
            return ("LiteRT's dynamic-range recipe has one scheme: int8 symmetric per-channel "
                    "weights (leave weight_type/per_channel unset, or int8 and true)")  # fmt: skip
        return reason

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        assert isinstance(params, DynamicInt8Params)
        if fmt == "onnx":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.getLogger("root").setLevel(logging.ERROR)
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_dynamic(
                    str(ctx.fp32_onnx()), str(out), per_channel=params.per_channel,
                    weight_type=QuantType.QUInt8 if params.weight_type == "uint8"
                    else QuantType.QInt8,
                )  # fmt: skip
            return {"packed_bytes": packed_bytes(ctx, int8_weight_bits(8, params.per_channel))}
        if fmt == "tflite":
            from qbench.methods._litert_quant import (
                aeq_version,
                dynamic_range,
                rewrite_notes,
                weight_bits,
            )

            found = dynamic_range(fp32_tflite(ctx), out, bits=8)
            note = (f"LiteRT dynamic-range int8 (ai-edge-quantizer {aeq_version()} "
                    "dynamic_wi8_afp32)")  # fmt: skip
            # the prediction; prepare's audit (qbench.formats.audit) replaces it in the row
            # with what the artifact's constants take
            return {"packed_bytes": packed_bytes(ctx, weight_bits(8)),
                    "artifact_notes": [note, *rewrite_notes(found)]}  # fmt: skip
        module = self.rebuild_torch(ctx.model.module, None, params)
        save_torch_artifact(out, ctx, self.name, params, module.state_dict())
        linear_only = int8_weight_bits(8, False)

        def bits(name: str, layer: Any) -> int | None:
            import torch

            return linear_only(name, layer) if isinstance(layer, torch.nn.Linear) else None

        return {"packed_bytes": packed_bytes(ctx, bits)}

    def rebuild_torch(self, module: Any, example: Any, params: Params) -> Any:
        import copy

        import torch
        from torch.ao.quantization import quantize_dynamic

        torch.backends.quantized.engine = "x86"
        return quantize_dynamic(copy.deepcopy(module).eval(), {torch.nn.Linear}, torch.qint8)
