"""ONNX graphs (.onnx): what they hold, read from the file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from qbench.formats import Contents

SUFFIX = ".onnx"
# Ops that quantize, dequantize or compute on integer / packed low-bit data (QDQ, QOperator
# and dynamic-quantization forms, ORT's contrib kernels).
_QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
    "MatMulInteger", "MatMulNBits", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM", "QGemm", "QAttention", "QOrderedMatMul", "GatherBlockQuantized",
})  # fmt: skip
_SUBBYTE = {"int4": 4, "uint4": 4, "int2": 2, "uint2": 2, "float4_e2m1": 4}


def _dtype_name(array: object) -> str:
    name = str(getattr(array, "dtype", "unknown"))
    return {"float4_e2m1fn": "f4e2m1"}.get(name, name)


def contents(path: Path) -> Contents:
    """The main graph's constants (initializers, Constant and computed ConstantOfShape values)
    by element type, their bytes at those types (int4 two to a byte), and its QDQ / integer
    nodes (QLinear*, *Integer, QuantizeLinear, DequantizeLinear, MatMulNBits, ...)."""
    import onnx

    model = onnx.load(str(path))
    dtypes: Counter[str] = Counter()
    stored_bits = 0
    for array in constants(model.graph).values():
        name = _dtype_name(array)
        dtypes[name] += 1
        stored_bits += array.size * _SUBBYTE.get(name, array.dtype.itemsize * 8)
    ops = sum(n.op_type in _QUANTIZED_OPS or n.op_type.startswith("QLinear")
              for n in model.graph.node)  # fmt: skip
    return Contents(dtypes, (stored_bits + 7) // 8, ops)


def constants(graph: Any) -> dict[str, Any]:
    """name -> array of every constant tensor a graph holds: initializers, Constant nodes'
    values and ConstantOfShape outputs whose shape is itself constant (weights a graph
    computes: the ONNX Model Zoo's light graphs hold all their weights that way)."""
    import numpy as np
    from onnx import numpy_helper

    found = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and "value" in attrs and node.output:
            found[node.output[0]] = numpy_helper.to_array(attrs["value"].t)
        elif node.op_type == "ConstantOfShape" and node.input and node.input[0] in found:
            shape = tuple(int(d) for d in found[node.input[0]].reshape(-1))
            value = numpy_helper.to_array(attrs["value"].t) if "value" in attrs else None
            dtype = value.dtype if value is not None else np.float32
            # a view of one value: its size and shape count, not its memory
            found[node.output[0]] = np.broadcast_to(np.zeros((), dtype), shape)
    return found
