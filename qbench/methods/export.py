"""The fp32 ONNX export shared by every ONNX-format method, cached per model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from qbench.cache import cached_file
from qbench.inputs import InputSpec
from qbench.methods.onnx_dynamo import OPSET, dynamo_export

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def _specs(inputs: Any) -> list[InputSpec]:
    """Input specs from a list of them, or from one sample shape (a one-input model)."""
    if inputs and isinstance(inputs[0], InputSpec):
        return list(inputs)
    return [InputSpec(INPUT_NAME, tuple(inputs))]


def is_causal_lm(module: Any) -> bool:
    """A causal LM wrapper (hf_local's), exported with a KV cache (export_causal_lm)."""
    return bool(getattr(module, "kv_cache_graph", False))


def graph_kind(module: Any) -> str | None:
    """What the fp32 export of `module` holds beyond the module's own call: part of the
    cache keys of the export and of what is counted on it."""
    if not is_causal_lm(module):
        return None
    from qbench.methods.export_causal_lm import GRAPH_VERSION

    return f"kv_cache_v{GRAPH_VERSION}"


def export_onnx(module: Any, inputs: Any, out: Path) -> None:
    """Export with a dynamic batch axis, weights inside the file, then ORT's pre-processing
    (shape inference and BatchNorm folding) that quantize_static expects. `inputs`: the
    module's InputSpecs (its call order), or one sample shape of a one-input module. A causal
    LM is exported with its KV cache instead (export_causal_lm)."""
    if is_causal_lm(module):
        from qbench.methods.export_causal_lm import export_causal_lm

        export_causal_lm(module.model, out)
        return
    import torch

    specs = _specs(inputs)
    example = tuple(
        torch.zeros((2, *(d or 1 for d in s.shape)), dtype=getattr(torch, s.dtype)) for s in specs
    )
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamo_export(module.eval(), example, out, [s.name for s in specs], [OUTPUT_NAME],
                  tuple({0: batch} for _ in specs))  # fmt: skip


# The lowest opset whose QuantizeLinear/DequantizeLinear take an `axis` (per-channel scales):
# ORT's quantizer writes one for per-channel weights whatever the model's opset.
MIN_QUANT_OPSET = 13


def normalize_onnx(source: Path, out: Path) -> list[str]:
    """A user's ONNX file made ready for ORT's quantizers, computing the same function; the
    notes say what changed.

    - Initializers listed as graph inputs (IR < 4 files) are dropped from the inputs, as ORT's
      tools/remove_initializer_from_input.py does: a quantizer replaces the initializer and
      would leave an input every artifact then demands as a feed.
    - Opset below 13 is converted to 13 (onnx.version_converter), where per-channel
      QuantizeLinear/DequantizeLinear exist.
    - ORT's pre-processing: shape inference, and its basic optimisations, which fold constants:
      weights a graph computes (ConstantOfShape, Constant) become initializers that the
      quantizers see and the size counts.
    """
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes = []
    model = onnx.load(str(source))
    initializers = {i.name for i in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in initializers]
    if len(kept) != len(model.graph.input):
        dropped = len(model.graph.input) - len(kept)
        del model.graph.input[:]
        model.graph.input.extend(kept)
        notes.append(f"{dropped} initializer(s) listed as graph inputs (IR {model.ir_version}) "
                     "were dropped from the inputs")  # fmt: skip
    # IR < 4 requires every initializer to be an input; the converter reads initializers only
    # as inputs there
    model.ir_version = max(model.ir_version, 7)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset < MIN_QUANT_OPSET:
        try:
            model = version_converter.convert_version(model, MIN_QUANT_OPSET)
        except Exception as exc:  # the converter lacks an adapter for one of its ops
            notes.append(f"opset {opset} kept: onnx.version_converter failed "
                         f"({type(exc).__name__}: {exc}); per-channel int8 needs opset "
                         f"{MIN_QUANT_OPSET}")  # fmt: skip
        else:
            notes.append(f"opset {opset} converted to {MIN_QUANT_OPSET} (onnx.version_converter)")
    staged = out.with_name(out.stem + ".staged.onnx")
    try:
        onnx.save(model, str(staged))
        try:
            quant_pre_process(str(staged), str(out), skip_symbolic_shape=True)
        except Exception as exc:  # shape inference or ORT's optimiser refused the graph
            notes.append(f"ORT pre-processing skipped ({type(exc).__name__}: {exc})"[:300])
        if not out.exists():
            shutil.copyfile(staged, out)
    finally:
        staged.unlink(missing_ok=True)
    return notes


def fp32_onnx(model_sha: str, module: Any, inputs: Any, onnx_path: Path | None = None) -> Path:
    """Cached fp32 ONNX of a model: a torch module exported, or an ONNX file normalised
    (normalize_onnx: its notes are in the entry's metadata, read_meta(path)["notes"])."""

    def build(tmp: Path) -> dict[str, Any] | None:
        if onnx_path is not None:
            return {"notes": normalize_onnx(onnx_path, tmp)}
        export_onnx(module, inputs, tmp)
        return None

    key: dict[str, Any] = {"model_sha": model_sha, "opset": OPSET, "v": 2}
    if onnx_path is None:
        key["inputs"] = [s.to_json() for s in _specs(inputs)]
        if graph_kind(module):
            key["graph"] = graph_kind(module)
    path, _ = cached_file("onnx_fp32", key, ".onnx", build)
    return path
