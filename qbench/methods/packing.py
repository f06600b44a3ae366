"""Theoretical packed sizes: what an artifact would take if every weight were stored at its
quantized width (bits × weights + codebooks + scales + zero points). Simulated methods store
float weights on disk, so only this figure makes their sizes comparable with native ones.
Methods that store quantized weights get theirs read back from the artifact instead
(qbench.formats.audit): a prediction cannot see a quantizer that quantized nothing."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

FLOAT_BITS = 32


def weight_layers(module: Any) -> Iterator[tuple[str, Any]]:
    """(name, module) of each Conv/Linear layer: the layers that quantization methods change."""
    import torch

    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Linear):
            yield name, sub


def packed_bytes_torch(module: Any, weight_bits: Callable[[str, Any], int | None]) -> int:
    """Bytes of `module` when each layer weight takes `weight_bits(name, layer)` bits in all
    (None: stays float32) and every other parameter and buffer stays float32."""
    total = 0
    counted: set[int] = set()
    for name, layer in weight_layers(module):
        bits = weight_bits(name, layer)
        if bits is not None:
            total += bits
            counted.add(id(layer.weight))
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in counted and tensor.is_floating_point():
            total += tensor.numel() * FLOAT_BITS
    return (total + 7) // 8


def int8_weight_bits(bits: int, per_channel: bool) -> Callable[[str, Any], int]:
    """Integer weights plus one fp32 scale per output channel (or per tensor); accepts a torch
    layer or an ONNX weight array."""

    def count(_: str, layer: Any) -> int:
        weight = getattr(layer, "weight", layer)
        scales = weight.shape[0] if per_channel else 1
        return int(math.prod(weight.shape)) * bits + scales * FLOAT_BITS

    return count


def packed_bytes_onnx(path: Any, weight_bits: Callable[[str, Any], int | None]) -> int:
    """The same count for an ONNX file: the weight inputs of Conv/Gemm/MatMul take
    `weight_bits(name, array)` bits; other float constants (initializers, Constant and
    ConstantOfShape outputs) stay float32."""
    import onnx

    model = onnx.load(str(path))
    weights = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")
               and len(n.input) > 1}  # fmt: skip
    total = 0
    from qbench.formats.onnx import constants

    for name, array in constants(model.graph).items():
        bits = weight_bits(name, array) if name in weights else None
        if bits is None and array.dtype.kind == "f":
            bits = array.size * FLOAT_BITS
        total += bits or 0
    return (total + 7) // 8


def stored_bytes_onnx(path: Any) -> int:
    """Bytes of every constant an ONNX file holds, at the types it stores them in (a model
    quantized elsewhere keeps its int8 weights as int8; int4 two to a byte)."""
    from pathlib import Path

    from qbench.formats.onnx import contents

    return contents(Path(path)).stored_bytes


class _Shaped:
    """A weight known by its shape only (weight_bits counters read `.shape`)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def packed_bytes_tflite(path: Any, weight_bits: Callable[[str, Any], int | None] | None) -> int:
    """The same count for a .tflite file: constant weights of the compute ops take
    `weight_bits(name, weight)` bits, other float constants float32. weight_bits None: every
    constant at the size the file stores it in (a file quantized elsewhere)."""
    from pathlib import Path

    from ai_edge_litert import schema_py_generated as schema

    from qbench.backends._tflite_graph import COMPUTE_OPS, WEIGHT_INPUT, read_tflite_graph
    from qbench.formats.tflite import buffer_bytes

    data = Path(path).read_bytes()
    model = schema.Model.GetRootAsModel(data, 0)
    sg = model.Subgraphs(0)
    graph = read_tflite_graph(data)
    weights = {op.inputs[WEIGHT_INPUT] for op in graph.ops
               if op.name in COMPUTE_OPS and len(op.inputs) > WEIGHT_INPUT}  # fmt: skip
    total = 0
    for t in range(sg.TensorsLength()):
        tensor = sg.Tensors(t)
        # inline, or after the flatbuffer where ai-edge-quantizer writes large files' buffers
        stored = buffer_bytes(model, tensor.Buffer())
        if stored == 0:
            continue  # an activation, or a tensor without data
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        count = int(math.prod(shape))
        if weight_bits is None:
            total += stored * 8
            continue
        bits = weight_bits(graph.tensor_names[t], _Shaped(shape)) if t in weights else None
        if bits is None:
            is_float = graph.tensor_types[t].startswith("FLOAT")
            bits = count * FLOAT_BITS if is_float else stored * 8
        total += bits
    return (total + 7) // 8
