"""Theoretical packed sizes: what an artifact would take if every weight were stored at its
quantized width (bits × weights + codebooks + scales + zero points). Simulated methods store
float weights on disk, so only this figure makes their sizes comparable with native ones."""

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
    `weight_bits(name, array)` bits; other float initializers stay float32."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    weights = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")
               and len(n.input) > 1}  # fmt: skip
    total = 0
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        bits = weight_bits(init.name, array) if init.name in weights else None
        if bits is None and array.dtype.kind == "f":
            bits = array.size * FLOAT_BITS
        total += bits or 0
    return (total + 7) // 8
