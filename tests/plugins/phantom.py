"""A method that means to quantize and quantizes nothing: it hands out the fp32 model as its
"int8" artifact. For tests of prepare's artifact audit (qbench.formats.audit), which must fail
its cells however the method describes itself.

Loaded in every process of a run through QBENCH_PLUGINS=tests.plugins.phantom.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from qbench.methods.base import MakeContext, Method, fp32_tflite
from qbench.params import Params
from qbench.plugins import methods


@methods.register
class PhantomInt8(Method):
    name = "phantom_int8"
    description = "claims int8 weights, writes the fp32 model unchanged (tests only)"
    produces = ("onnx", "tflite")

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        return {"bits_w": 8, "bits_a": 8, "weight_dtype": "int8", "act_dtype": "int8"}

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        source = fp32_tflite(ctx) if fmt == "tflite" else ctx.fp32_onnx()
        shutil.copyfile(source, out)
        return {"packed_bytes": 1000, "artifact_notes": ["int8 weights (not really)"]}
