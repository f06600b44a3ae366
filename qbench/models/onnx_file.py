"""Any ONNX file by path: it is its own fp32 reference; only ONNX-loading backends run it.

The file's graph inputs (minus initializers, which IR-3 files list as inputs too) are the model's
inputs, matched by name with the dataset's fields; axis 0 is the batch (a fixed size there, the
ONNX Model Zoo's norm, is the only batch the model runs). Before quantization the graph is
normalised once (qbench.methods.export.normalize_onnx): initializers dropped from the inputs,
opset raised to 13 where it is lower, constants folded.
"""

from __future__ import annotations

from qbench.inputs import InputSpec
from qbench.models._file import FileFacts, ModelFile, cached_facts
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
    specs, batches = [], []
    for value in model.graph.input:
        if value.name in initializers:  # IR < 4: weights are listed as inputs too
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in tensor.shape.dim]  # fmt: skip
        if not dims:
            raise CheckError(
                "path",
                f"{path}: input {value.name} has no batch axis (rank 0); qbench feeds "
                "batches along axis 0",
            )
        dtype = str(tensor_dtype_to_np_dtype(tensor.elem_type))
        specs.append(InputSpec(value.name, tuple(dims[1:]), dtype))
        batches.append(dims[0])
    if not specs:
        raise CheckError("path", f"{path}: the graph has no inputs to feed")
    fixed = {b for b in batches if b is not None}
    quantized = sorted({n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS})
    return FileFacts(
        tuple(specs),
        min(fixed) if fixed else None,
        f"its graph holds {', '.join(quantized)}" if quantized else None,
    )


@models.register
class OnnxFileModel(ModelFile):
    name = "onnx_file"
    description = "an ONNX file given by path (any inputs, matched to the data by name)"
    format = "onnx"
    suffixes = (".onnx",)
    kind = "an ONNX"
    loaded_as = "onnx_path"
    read_facts = staticmethod(cached_facts(read_onnx_facts))
