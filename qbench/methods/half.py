"""Half-precision floats: fp16 and bf16 weights (and activations where the runtime has them).

ONNX: the graph converted to float16 with float32 inputs/outputs kept. ONNX Runtime's CPU
execution provider has no fp16 convolution kernels on x86 and inserts casts back to float32
(shared/facts.md), so those cells are labelled `simulated`; bf16 ONNX is not built (no CPU
kernels at all). Torch: the module cast to fp16/bf16; torch's CPU kernels take those types.
OpenVINO: the fp32 model's IR marked with the precision (qbench.methods._openvino_ir), which the
openvino backend runs with INFERENCE_PRECISION_HINT bf16/f16 (native where the probe finds
the CPU's bf16/fp16 arithmetic; elsewhere the backend skips the cell with the reason).
LiteRT (tflite): fp16 weights from ai-edge-quantizer's float_casting, each behind a DEQUANTIZE
to float32; LiteRT's CPU (XNNPACK) folds them into float32 weights at load, so the cells are
`simulated`; bf16 is not built (float_casting writes float16 only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from qbench.methods.base import (
    MakeContext,
    Method,
    fp32_tflite,
    packed_bytes,
    save_torch_artifact,
)
from qbench.params import Params
from qbench.plugins import methods


class _HalfFloat(Method):
    # "openvino" before "onnx": the openvino backend loads both, and runs this method from an
    # IR marked with its inference precision (the ONNX graph would be ORT's cast-back form)
    produces = ("torch", "openvino", "onnx", "tflite")
    loads_by_assignment = True
    torch_dtype: ClassVar[str]

    def execution(self, fmt: str, params: Params) -> str:
        return "simulated" if fmt in ("onnx", "tflite") else "native"

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        if fmt == "openvino":
            precision = self.name.replace("fp", "f")
            return {"bits_w": 16, "bits_a": 16, "act_dtype": self.torch_dtype,
                    "weight_dtype": self.torch_dtype, "weight_scheme": "float",
                    "notes": [f"OpenVINO CPU plugin, INFERENCE_PRECISION_HINT {precision}: "
                              f"{self.name} kernels (AMX where the CPU has them)"]}  # fmt: skip
        if fmt == "onnx":
            notes = ["ONNX Runtime CPU: fp16 weights are cast to float32 kernels (no fp16 compute)"]
        elif fmt == "tflite":
            notes = ["LiteRT CPU: fp16 weights are dequantized to float32 (XNNPACK converts them "
                     "at load); no fp16 arithmetic on x86"]  # fmt: skip
        else:
            notes = [
                f"torch CPU {self.name} kernels (oneDNN: AMX or AVX-512 {self.name} where the CPU "
                "has them, else converted to float32; onednn_kernels says which ran)"
            ]
        float_acts = fmt in ("onnx", "tflite")
        act = "float32" if float_acts else self.torch_dtype
        return {"bits_w": 16, "bits_a": 32 if float_acts else 16, "act_dtype": act,
                "weight_dtype": self.torch_dtype, "weight_scheme": "float",
                "notes": notes}  # fmt: skip

    def unsupported(self, fmt: str, params: Params, source: Any) -> str | None:
        if fmt == "openvino" and source.format == "tflite":
            return (f"model {source.name} is a .tflite file; OpenVINO artifacts are built from "
                    "the fp32 ONNX export of torch modules and ONNX files")  # fmt: skip
        return super().unsupported(fmt, params, source)

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        meta: dict[str, Any] = {"packed_bytes": packed_bytes(ctx, lambda _, w: _numel(w) * 16)}
        if fmt == "openvino":
            from qbench.methods._openvino_ir import make_precision_ir

            meta.update(make_precision_ir(ctx, out, self.name))
        elif fmt == "onnx":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(onnx.load(str(ctx.fp32_onnx())), keep_io_types=True)
            onnx.save(model, str(out))
        elif fmt == "tflite":
            from qbench.methods._litert_quant import aeq_version, fp16_weights, rewrite_notes

            info = fp16_weights(fp32_tflite(ctx), out)
            meta["artifact_notes"] = [
                f"LiteRT fp16 weights (ai-edge-quantizer {aeq_version()} float_casting): "
                f"{info['ops'].get('DEQUANTIZE', 0)} DEQUANTIZE (float16 -> float32) ops",
                *rewrite_notes(info),
            ]
        else:
            module = self.rebuild_torch(ctx.model.module, None, params)
            save_torch_artifact(out, ctx, self.name, params, module.state_dict())
        return meta

    def rebuild_torch(self, module: Any, example: Any, params: Params) -> Any:
        import copy

        import torch

        return copy.deepcopy(module).to(getattr(torch, self.torch_dtype))


def _numel(weight: Any) -> int:
    import math

    return int(math.prod(getattr(weight, "weight", weight).shape))


@methods.register
class Fp16(_HalfFloat):
    name = "fp16"
    description = "float16 weights (torch: and activations; ORT CPU: casts back to float32)"
    torch_dtype = "float16"


@methods.register
class Bf16(_HalfFloat):
    name = "bf16"
    description = "bfloat16 weights and activations (torch); no ONNX Runtime/LiteRT CPU kernels"
    torch_dtype = "bfloat16"

    def unsupported(self, fmt: str, params: Params, source: Any) -> str | None:
        if fmt == "onnx":
            return "ONNX Runtime's CPU execution provider has no bfloat16 Conv/Gemm kernels"
        if fmt == "tflite":
            return ("LiteRT: ai-edge-quantizer's float_casting writes float16 weights only, and "
                    "LiteRT's CPU kernels take no bfloat16")  # fmt: skip
        return super().unsupported(fmt, params, source)

    def stores_quantized(self, fmt: str, params: Params) -> bool:
        # its OpenVINO IR keeps float32 weights: the CPU plugin converts them at compile
        return fmt != "openvino" and super().stores_quantized(fmt, params)
