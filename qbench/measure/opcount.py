"""Multiply-accumulates of one inference, counted from an ONNX graph's shapes (batch 1).

Counts the compute nodes that dominate a CNN or transformer: Conv (grouped and depthwise
included), ConvTranspose, Gemm and MatMul, plus their quantized forms (QLinearConv,
ConvInteger, QLinearMatMul, MatMulInteger). Other nodes (activations, pooling, adds) are left
out, as datasheet peak figures count only multiply-accumulates. Operations = 2 × MACs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

CONV_OPS = ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose")
MATMUL_OPS = ("MatMul", "MatMulInteger", "QLinearMatMul")


def _batch_one(model: Any) -> Any:
    """A copy with every symbolic input dim set to 1 and the old intermediate shapes dropped."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in inits:
            continue
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_param") or not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = 1
    del m.graph.value_info[:]
    for out in m.graph.output:
        for d in out.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.Clear()
    return onnx.shape_inference.infer_shapes(m, data_prop=True)


def _shapes(model: Any) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            # An unknown dim (symbolic) is taken as 1: only the batch axis is left symbolic.
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
    for init in model.graph.initializer:
        out[init.name] = list(init.dims)
    return out


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def node_macs(node: Any, shapes: dict[str, list[int]]) -> int | None:
    """MACs of one node, None when it is not counted or a shape is unknown."""
    op = node.op_type
    if op in CONV_OPS:
        # Inputs: X, W (QLinearConv: x, x_scale, x_zp, w, ...; ConvInteger: x, w, ...).
        w_name = node.input[3] if op == "QLinearConv" else node.input[1]
        w = shapes.get(w_name)
        y = shapes.get(node.output[0])
        if not w or not y or len(w) < 3:
            return None
        if op == "ConvTranspose":
            # Every input element meets every kernel element of its group: in × (C_out/g) × k.
            x = shapes.get(node.input[0])
            if not x:
                return None
            return math.prod(x) * math.prod(w[1:])
        # Each output element: C_in/groups × kernel MACs; W is [C_out, C_in/groups, k...].
        return math.prod(y) * math.prod(w[1:])
    if op == "Gemm":
        a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
        if not a or not b or len(a) != 2 or len(b) != 2:
            return None
        m = a[1] if _attr(node, "transA", 0) else a[0]
        k = a[0] if _attr(node, "transA", 0) else a[1]
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * k * n
    if op in MATMUL_OPS:
        a_name = node.input[0]
        b_name = node.input[3] if op == "QLinearMatMul" else node.input[1]
        a, y = shapes.get(a_name), shapes.get(node.output[0])
        if not a or not y or b_name not in shapes:
            return None
        # A [..., M, K] @ B [..., K, N] -> Y [..., M, N]: K MACs per output element.
        return math.prod(y) * a[-1]
    return None


def count_macs(model: Any) -> dict[str, Any]:
    """{"macs": total, "by_op": {op_type: macs}, "uncounted": [node names]} for batch 1.

    `model` is an onnx.ModelProto or a path. Nodes inside subgraphs (If/Loop) are not counted.
    """
    import onnx

    if isinstance(model, str | Path):
        model = onnx.load(str(model))
    inferred = _batch_one(model)
    shapes = _shapes(inferred)
    total, by_op, uncounted = 0, {}, []
    for node in inferred.graph.node:
        if node.op_type not in (*CONV_OPS, "Gemm", *MATMUL_OPS):
            continue
        macs = node_macs(node, shapes)
        if macs is None:
            uncounted.append(node.name or node.op_type)
            continue
        total += int(macs)
        by_op[node.op_type] = by_op.get(node.op_type, 0) + int(macs)
    return {"macs": total, "by_op": by_op, "uncounted": uncounted}


def ops(macs: int) -> int:
    """Operations (a multiply and an add each) of `macs` multiply-accumulates."""
    return 2 * int(macs)
