"""torch.onnx's dynamo exporter as qbench uses it: one function shared by the plain export
(qbench.methods.export) and the causal-LM export with its KV cache (export_causal_lm), which
both import it from here rather than from each other."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

OPSET = 20


def dynamo_export(module: Any, example: tuple[Any, ...], out: Path, input_names: list[str],
                  output_names: list[str], dynamic_shapes: Any) -> None:  # fmt: skip
    """torch.onnx's dynamo export of `module` at OPSET, weights inside the file, quietly; then
    ORT's pre-processing (shape inference, constant and BatchNorm folding) that its quantizers
    expect."""
    import torch
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw = out.with_name(out.stem + ".raw.onnx")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(raw),
            dynamo=True,
            external_data=False,
            input_names=input_names,
            output_names=output_names,
            opset_version=OPSET,
            dynamic_shapes=dynamic_shapes,
        )
    try:
        quant_pre_process(str(raw), str(out), skip_symbolic_shape=True)
    finally:
        raw.unlink(missing_ok=True)
