"""The fp32 ONNX export shared by every ONNX-format method, cached per model."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

from qbench.cache import cached_file

OPSET = 20
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(module: Any, input_shape: tuple[int, ...], out: Path) -> None:
    """Export with a dynamic batch axis, weights inside the file, then ORT's pre-processing
    (shape inference and BatchNorm folding) that quantize_static expects."""
    import torch
    from onnxruntime.quantization.shape_inference import quant_pre_process

    example = torch.zeros((2, *input_shape))
    raw = out.with_name(out.stem + ".raw.onnx")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (example,),
            str(raw),
            dynamo=True,
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
        )
    try:
        quant_pre_process(str(raw), str(out), skip_symbolic_shape=True)
    finally:
        raw.unlink(missing_ok=True)


def fp32_onnx(
    model_sha: str, module: Any, input_shape: tuple[int, ...], onnx_path: Path | None = None
) -> Path:
    """Cached fp32 ONNX of a model (ONNX-file models are pre-processed the same way)."""

    def build(tmp: Path) -> None:
        if onnx_path is not None:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(onnx_path), str(tmp), skip_symbolic_shape=True)
            if not tmp.exists():
                shutil.copyfile(onnx_path, tmp)
        else:
            export_onnx(module, input_shape, tmp)

    path, _ = cached_file(
        "onnx_fp32", {"model_sha": model_sha, "opset": OPSET, "v": 1}, ".onnx", build
    )
    return path
