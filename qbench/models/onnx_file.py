"""Any ONNX file by path: it is its own fp32 reference; only ONNX-loading backends run it.

The file's graph inputs (minus initializers, which IR-3 files list as inputs too) are the model's
inputs, matched by name with the dataset's fields. Each input's batch is decided on its own
(qbench.models._file.lay_out): axis 0 of the data inputs (a fixed size there, the ONNX Model
Zoo's norm, is the only batch the model runs); a fixed input beside them (an RNN state, a
scalar sample rate) is not a batch and is fed at its declared shape. Before quantization the
graph is normalised once (qbench.methods.export.normalize_onnx): initializers dropped from the
inputs, opset raised to 13 where it is lower, constants folded.
"""

from __future__ import annotations

from qbench.models._file import (
    FileFacts,
    ModelFile,
    OnnxFileParams,
    RawInput,
    cached_facts,
    lay_out,
)
from qbench.params import CheckError
from qbench.plugins import models

# Ops that only a quantized graph holds.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                           "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                           "MatMulNBits", "QGemm", "QAttention"})  # fmt: skip


def read_onnx_facts(path: str) -> FileFacts:
    """The graph's inputs (initializers left out), its fixed batch and quantized ops."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CheckError("path", f"{path}: not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise CheckError("path", f"{path}: not an ONNX model (its graph has no nodes)")
    initializers = {i.name for i in model.graph.initializer}
    raw: list[RawInput] = []
    for value in model.graph.input:
        if value.name in initializers:  # IR < 4: weights are listed as inputs too
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in tensor.shape.dim)  # fmt: skip
        raw.append((value.name, dims, str(tensor_dtype_to_np_dtype(tensor.elem_type))))
    if not raw:
        raise CheckError("path", f"{path}: the graph has no inputs to feed")
    specs, fixed_batch = lay_out(raw, {}, {})
    quantized = sorted({n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS})
    return FileFacts(
        specs,
        fixed_batch,
        f"its graph holds {', '.join(quantized)}" if quantized else None,
        tuple(raw),
    )


@models.register
class OnnxFileModel(ModelFile):
    name = "onnx_file"
    Params = OnnxFileParams
    description = "an ONNX file given by path (any inputs, matched to the data by name)"
    format = "onnx"
    suffixes = (".onnx",)
    kind = "an ONNX"
    loaded_as = "onnx_path"
    read_facts = staticmethod(cached_facts(read_onnx_facts))
