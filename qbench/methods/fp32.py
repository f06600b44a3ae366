"""fp32: the reference every other method is compared with."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from qbench.methods.base import (
    MakeContext,
    Method,
    fp32_tflite,
    packed_bytes,
    save_torch_artifact,
)
from qbench.params import Params
from qbench.plugins import methods


@methods.register
class Fp32(Method):
    name = "fp32"
    description = "float32 weights and activations, unchanged (the reference)"
    produces = ("onnx", "torch", "tflite")
    loads_by_assignment = True

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        return {"bits_w": 32, "bits_a": 32, "act_dtype": "float32", "weight_dtype": "float32"}

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        meta: dict[str, Any] = {"packed_bytes": packed_bytes(ctx, lambda *_: None)}
        if fmt == "onnx":
            shutil.copyfile(ctx.fp32_onnx(), out)
        elif fmt == "tflite":
            from qbench.methods._litert_quant import conversion_note

            shutil.copyfile(fp32_tflite(ctx), out)
            given = ctx.model.tflite_path is not None
            meta["artifact_notes"] = ["the .tflite file as given" if given else conversion_note()]
        else:
            save_torch_artifact(out, ctx, self.name, params, ctx.model.module.state_dict())
        return meta
