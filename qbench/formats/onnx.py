"""ONNX graphs (.onnx): what they hold, read from the file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

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

    from qbench.methods.packing import _onnx_constants

    model = onnx.load(str(path))
    dtypes: Counter[str] = Counter()
    stored_bits = 0
    for array in _onnx_constants(model.graph).values():
        name = _dtype_name(array)
        dtypes[name] += 1
        stored_bits += array.size * _SUBBYTE.get(name, array.dtype.itemsize * 8)
    ops = sum(n.op_type in _QUANTIZED_OPS or n.op_type.startswith("QLinear")
              for n in model.graph.node)  # fmt: skip
    return Contents(dtypes, (stored_bits + 7) // 8, ops)
