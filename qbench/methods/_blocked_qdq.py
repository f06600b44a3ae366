"""Per-group int8 weights in a QDQ model: ONNX opset-21 blocked DequantizeLinear.

static_int8 with a group_size first builds ONNX Runtime's ordinary QDQ model (activation Q/DQ
pairs from qbench's calibration, int8 weights with one scale per output channel), then rewrites
each weight's DequantizeLinear here: the weight is quantized again from its fp32 values with one
symmetric int8 scale per group of `group_size` consecutive weights of an output channel — the
output channel's weights flattened in their stored order (input channel, then kernel position),
the same groups as qbench.quant.uniform's per_group, the last group of a channel possibly short.

A 2-D weight (Gemm, MatMul) is blocked along its input axis directly. A Conv weight [O, I, kh,
kw] is stored as [O, I·kh·kw], blocked along axis 1, and a Reshape after its DequantizeLinear
gives the Conv its 4-D kernel back. Biases keep ORT's int32 form (scale = input scale × ORT's
per-channel weight scale), which is far finer than the weights' grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FLOAT_BITS = 32
BLOCKED_OPSET = 21  # DequantizeLinear's block_size attribute
_MIN_IR_VERSION = 10  # opset 21 needs IR version 10


def blockwise_symmetric(
    rows: np.ndarray, group_size: int, qmin: int = -127, qmax: int = 127
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes of `rows` [C, K] with one scale per (row, group of `group_size`
    consecutive columns): scale = max|w| · 2 / (qmax − qmin), codes = clip(round(w / scale)).
    Returns codes int8 [C, K] and scales float32 [C, ceil(K / group_size)].

    The arithmetic is ORT's for a per-channel symmetric weight (compute_scale_zp and
    quantize_nparray: the range in float64, the scale stored as float32, w / scale in float32,
    round half to even), so a group as long as the row gives exactly ORT's per-channel codes;
    an all-zero group gets scale 1 and codes 0, as in ORT.
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    x = np.asarray(rows, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"rows must be 2-D [channels, weights], got shape {x.shape}")
    channels, length = x.shape
    groups = math.ceil(length / group_size)
    padded = np.zeros((channels, groups * group_size), np.float32)
    padded[:, :length] = x  # zeros change no group's max|w|
    absmax = np.abs(padded.reshape(channels, groups, group_size)).max(axis=2)
    scale = (absmax.astype(np.float64) * 2 / (qmax - qmin)).astype(np.float32)
    scale[scale < np.finfo(np.float32).tiny] = 1.0
    per_weight = np.repeat(scale, group_size, axis=1)[:, :length]
    codes = np.clip(np.round(x / per_weight), qmin, qmax).astype(np.int8)
    return codes, scale


def grouped_int8_weight_bits(bits: int, group_size: int) -> Callable[[str, Any], int]:
    """Integer weights plus one fp32 scale per group of `group_size` weights of each output
    channel (the first axis: a torch layer's weight or an ONNX Conv/Gemm(transB) weight); the
    per-group form of qbench.methods.packing.int8_weight_bits. Symmetric: no zero points."""

    def count(_: str, layer: Any) -> int:
        weight = getattr(layer, "weight", layer)
        shape = tuple(weight.shape)
        per_channel = math.prod(shape[1:]) if len(shape) > 1 else 1
        scales = shape[0] * math.ceil(per_channel / group_size)
        return int(math.prod(shape)) * bits + scales * FLOAT_BITS

    return count


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _set_int_attr(node: Any, name: str, value: int) -> None:
    import onnx

    for attribute in list(node.attribute):
        if attribute.name == name:
            node.attribute.remove(attribute)
    node.attribute.append(onnx.helper.make_attribute(name, value))


def _fresh(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _original_name(quantized: str) -> str:
    suffix = "_quantized"  # ORT's TENSOR_NAME_QUANT_SUFFIX
    return quantized[: -len(suffix)] if quantized.endswith(suffix) else quantized


def _blocked_codes(
    weight: np.ndarray, channel_axis: int, group_size: int, qmin: int, qmax: int
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(codes as stored, scales, blocked axis) of a weight with its output channels on
    `channel_axis`; codes of a Conv kernel are stored 2-D [O, I·kh·kw]. None: not blockable."""
    if weight.ndim == 2:
        rows = weight if channel_axis == 0 else weight.T
        codes, scale = blockwise_symmetric(rows, group_size, qmin, qmax)
        if channel_axis == 1:
            return codes.T, scale.T, 0
        return codes, scale, 1
    if weight.ndim > 2 and channel_axis == 0:
        codes, scale = blockwise_symmetric(weight.reshape(len(weight), -1), group_size, qmin, qmax)
        return codes, scale, 1
    return None


def block_weights(
    qdq_path: Path, fp32_path: Path, out: Path, group_size: int, reduce_range: bool = False
) -> dict[str, Any]:
    """Rewrite the int8 weight DequantizeLinear nodes of ORT's QDQ model `qdq_path` (built from
    `fp32_path` with per-channel weights) into blocked ones, write the model to `out` (default
    opset raised to 21 by onnx's version converter where it is older), and return a summary:
    blocked (fp32 names of the weights rewritten), kept (int8 initializers left as ORT made
    them: not a Conv/Gemm/MatMul weight, or a kernel whose output channels are not its first
    axis), opset.
    """
    import onnx
    from onnx import TensorProto, numpy_helper, version_converter

    model = onnx.load(str(qdq_path))
    default_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if default_opset < BLOCKED_OPSET:
        model = version_converter.convert_version(model, BLOCKED_OPSET)
    model.ir_version = max(model.ir_version, _MIN_IR_VERSION)
    graph = model.graph
    fp32 = {i.name: i for i in onnx.load(str(fp32_path)).graph.initializer}
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    weight_inputs: set[str] = set()  # names that Conv/Gemm/MatMul read as their weight
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1:
            weight_inputs.add(node.input[1])
    taken = {*inits, *(o for n in graph.node for o in n.output), *(i.name for i in graph.input)}
    qmin, qmax = (-64, 64) if reduce_range else (-127, 127)  # ORT's int8 weight ranges
    shared: set[str] = set()  # initializers others read too: dropped at the end if none does

    def store(name: str, array: np.ndarray) -> str:
        """Store `array` under `name`, or under a new name where others read `name` too."""
        if uses.get(name, 0) > 1:
            shared.add(name)
            name = _fresh(f"{name}_blocked", taken)
        elif name in inits:
            graph.initializer.remove(inits.pop(name))
        inits[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        graph.initializer.append(inits[name])
        return name

    blocked: list[str] = []
    kept: list[str] = []
    reshapes: list[tuple[Any, Any]] = []  # (DequantizeLinear, the Reshape to put after it)
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        source = inits.get(node.input[0])
        if source is None or source.data_type != TensorProto.INT8:
            continue  # activations (no initializer) and int32 biases
        original = fp32.get(_original_name(node.input[0]))
        scale_rank = len(inits[node.input[1]].dims) if node.input[1] in inits else -1
        if node.output[0] not in weight_inputs or original is None or scale_rank != 1:
            kept.append(node.input[0])
            continue
        if tuple(original.dims) != tuple(source.dims):
            raise ValueError(
                f"{node.input[0]}: shape {tuple(source.dims)} is not that of the "
                f"fp32 {original.name} {tuple(original.dims)}"
            )
        weight = numpy_helper.to_array(original).astype(np.float32)
        channel_axis = _attr(node, "axis", 1) % weight.ndim
        result = _blocked_codes(weight, channel_axis, group_size, qmin, qmax)
        if result is None:
            kept.append(node.input[0])
            continue
        codes, scale, block_axis = result
        node.input[0] = store(node.input[0], codes)
        node.input[1] = store(node.input[1], scale)
        zero_point = np.zeros(scale.shape, np.int8)  # symmetric
        if len(node.input) > 2 and node.input[2]:
            node.input[2] = store(node.input[2], zero_point)
        else:
            node.input.append(store(_fresh(f"{original.name}_zero_point", taken), zero_point))
        _set_int_attr(node, "axis", block_axis)
        _set_int_attr(node, "block_size", group_size)
        if codes.ndim != weight.ndim:  # a Conv kernel, stored 2-D
            kernel = node.output[0]
            node.output[0] = _fresh(f"{kernel}_flat", taken)
            shape = store(_fresh(f"{kernel}_shape", taken), np.array(weight.shape, np.int64))
            reshape = onnx.helper.make_node(
                "Reshape",
                [node.output[0], shape],
                [kernel],
                name=_fresh(f"{kernel}_Reshape", taken),
            )
            reshapes.append((node, reshape))
        blocked.append(original.name)
    for dq, reshape in reshapes:  # each Reshape right after its DequantizeLinear
        graph.node.insert(list(graph.node).index(dq) + 1, reshape)
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for name in shared - read:
        graph.initializer.remove(inits.pop(name))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return {"blocked": blocked, "kept": kept, "opset": BLOCKED_OPSET}
