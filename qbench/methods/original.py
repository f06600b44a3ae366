"""original: a model file run exactly as it was given, unchanged.

For a user's ONNX or .tflite file that is already quantized (by another tool, for another
device) this is the only way to measure it: there is no float model to quantize. For a float
file it measures the same graph as fp32, without the normalisation qbench applies before
quantizing an ONNX file (its fp32 cell runs the normalised graph).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

from qbench.methods.base import MakeContext, Method
from qbench.models.base import format_name
from qbench.params import Params
from qbench.plugins import methods


@methods.register
class Original(Method):
    name = "original"
    description = "the model file as given, unchanged (runs an already-quantized .onnx/.tflite)"
    produces = ("onnx", "tflite")
    needs_float_model: ClassVar[bool] = False

    def unsupported(self, fmt: str, params: Params, source: Any) -> str | None:
        if source.format == "torch":
            return (f"model {source.name} is a torch module: `original` runs model files as "
                    "given (fp32 measures the module unchanged)")  # fmt: skip
        if source.format != fmt:
            return f"model {source.name} is {format_name(source)}; it is run as it is"
        return None

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        from qbench.methods.packing import packed_bytes_tflite, stored_bytes_onnx

        if fmt == "onnx":
            assert ctx.model.onnx_path is not None
            shutil.copyfile(ctx.model.onnx_path, out)
            stored = stored_bytes_onnx(out)
        else:
            assert ctx.model.tflite_path is not None
            shutil.copyfile(ctx.model.tflite_path, out)
            stored = packed_bytes_tflite(out, None)
        quantized = ctx.source.quantized(ctx.model_params)
        what = f"already quantized: {quantized}" if quantized else "float"
        return {
            "packed_bytes": stored,
            "artifact_notes": [
                f"the model file as given ({what}); packed_bytes: its constants at the types "
                "it stores them in"
            ],
        }
