"""Cross-layer equalization of a float .tflite before full-integer quantization.

Per-tensor int8 activations share one scale across all channels of a tensor. In MobileNetV2
the first convolution's 32 output channels reach from 0.03 to 6 on real photos while the
depthwise convolution after it multiplies some of the small channels by weights summing to 47:
the shared int8 step (6/255) is coarse for those channels and their rounding noise is amplified.
Quantizing that one tensor alone costs a third of the whole model's int8 activation error.

Equalization (Nagel et al. 2019, "Data-Free Quantization", section 4.1) rescales such pairs
without changing what the float model computes: for a convolution A with a ReLU or ReLU6 fused
into it, whose output feeds exactly one convolution B (through PAD ops at most), output channel
c of A is multiplied by k_c > 0 (its weights and bias) and the weights B applies to input
channel c are divided by k_c. ReLU commutes with a positive scale; ReLU6 only below 6, so k_c is
chosen from A's per-channel maximum on the calibration inputs so that the scaled channel stays
below `headroom` × 6 there (and below `headroom` × the tensor's largest channel, so equalization
never widens the tensor's range). A channel that already reaches 6, or that never fires, keeps
k_c = 1; no k_c exceeds `max_scale` (a channel nearly silent on the calibration inputs could
otherwise be pushed past 6 by a brighter input). Per-channel int8 weight scales absorb the change
in A and in depthwise B; in a regular B the input channel's weights shrink within each output
channel's row (GPTQ rounding recovers most of what that costs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# TFLite's ActivationFunctionType: NONE 0, RELU 1, RELU_N1_TO_1 2, RELU6 3
_RELU, _RELU6 = 1, 3
_CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_PASS_THROUGH = ("PAD", "PADV2")  # zero padding: scales with its input, channel by channel


@dataclass(frozen=True)
class Pair:
    """A (RELU/RELU6) -> B; tensors are indices in the main subgraph."""

    a_kind: str
    a_weight: int
    a_bias: int
    a_output: int
    relu6: bool
    b_kind: str
    b_weight: int


def _ops(model: Any) -> list[dict[str, Any]]:
    from qbench.methods._litert_quant import _conv_options, _schema

    schema = _schema()
    graph = model.Subgraphs(0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
        act = _conv_options(op, kind).FusedActivationFunction() if kind in _CONVS else None
        ops.append({
            "kind": kind,
            "inputs": [op.Inputs(k) for k in range(op.InputsLength())],
            "outputs": [op.Outputs(k) for k in range(op.OutputsLength())],
            "act": act,
        })  # fmt: skip
    return ops


def equalization_pairs(model: Any) -> list[Pair]:
    """Conv/depthwise ops with a fused ReLU/ReLU6 whose output reaches exactly one conv or
    depthwise op (as its data input, through PAD ops at most), both with constant float32
    weights and (for A) bias that no other op shares. Depthwise B with a depth multiplier
    other than 1 is left out."""
    from qbench.methods._litert_quant import _schema

    schema = _schema()
    graph = model.Subgraphs(0)
    ops = _ops(model)
    consumers: dict[int, list[int]] = {}
    buffer_users: dict[int, int] = {}
    for index, op in enumerate(ops):
        for t in op["inputs"]:
            if t >= 0:
                consumers.setdefault(t, []).append(index)
                buffer = graph.Tensors(t).Buffer()
                buffer_users[buffer] = buffer_users.get(buffer, 0) + 1

    def constant_float(t: int) -> bool:
        tensor = graph.Tensors(t)
        buffer = model.Buffers(tensor.Buffer())
        return (tensor.Type() == schema.TensorType.FLOAT32 and buffer.DataLength() > 0
                and buffer_users.get(tensor.Buffer()) == 1)  # fmt: skip

    pairs = []
    for op in ops:
        if op["kind"] not in _CONVS or op["act"] not in (_RELU, _RELU6) or len(op["inputs"]) < 3:
            continue
        out = op["outputs"][0]
        users = consumers.get(out, [])
        while len(users) == 1 and ops[users[0]]["kind"] in _PASS_THROUGH:
            users = consumers.get(ops[users[0]]["outputs"][0], [])
        if len(users) != 1 or ops[users[0]]["kind"] not in _CONVS:
            continue
        b = ops[users[0]]
        a_weight, a_bias, b_weight = op["inputs"][1], op["inputs"][2], b["inputs"][1]
        if not all(t >= 0 and constant_float(t) for t in (a_weight, a_bias, b_weight)):
            continue
        channels = int(graph.Tensors(a_bias).ShapeAsNumpy()[0])
        if int(graph.Tensors(b_weight).ShapeAsNumpy()[-1]) != channels:
            continue  # B's input channels (OHWI / depthwise [1,h,w,C]) are not A's outputs
        pairs.append(Pair(op["kind"], a_weight, a_bias, out, op["act"] == _RELU6,
                          b["kind"], b_weight))  # fmt: skip
    return pairs


def channel_maxima(data: bytes, pairs: list[Pair], calib: np.ndarray) -> dict[int, np.ndarray]:
    """Per-channel maximum of each pair's A output over the calibration inputs (float model,
    builtin kernels, every intermediate tensor kept)."""
    from qbench.methods._litert_quant import _tracing_interpreter, traced_samples

    maxima: dict[int, np.ndarray] = {}
    for interpreter in traced_samples(_tracing_interpreter(data), calib):
        for pair in pairs:
            x = interpreter.get_tensor(pair.a_output)
            m = x.reshape(-1, x.shape[-1]).max(axis=0).astype(np.float64)
            old = maxima.get(pair.a_output)
            maxima[pair.a_output] = m if old is None else np.maximum(old, m)
    return maxima


def channel_scales(maxima: np.ndarray, relu6: bool, headroom: float,
                   max_scale: float) -> np.ndarray:  # fmt: skip
    """k_c for one pair: lift each channel towards `headroom` × the tensor's largest channel,
    below `headroom` × 6 for ReLU6; channels at 6 (saturated) or silent keep 1."""
    m = np.asarray(maxima, dtype=np.float64)
    top = float(m.max()) if m.size else 0.0
    k = np.ones_like(m)
    live = m > 1e-6 * max(top, 1e-30)
    if relu6:
        live &= m < 6.0 * 0.999
        top = min(top, 6.0)
    k[live] = np.clip(headroom * top / m[live], 1.0, max_scale)
    return k


def _float_view(data: bytearray, model: Any, tensor_index: int) -> np.ndarray:
    from qbench.methods._litert_quant import _buffer_view

    tensor = model.Subgraphs(0).Tensors(tensor_index)
    view = _buffer_view(data, model.Buffers(tensor.Buffer())).view(np.float32)
    return view.reshape(tuple(tensor.ShapeAsNumpy()))


def equalize(fp32: Path, out: Path, calib: np.ndarray, headroom: float = 0.5,
             max_scale: float = 16.0) -> str:  # fmt: skip
    """Write `fp32` with its ReLU/ReLU6 conv pairs equalized (see the module doc) to `out`;
    returns a one-line summary."""
    from qbench.methods._litert_quant import _schema

    data = bytearray(Path(fp32).read_bytes())
    model = _schema().Model.GetRootAsModel(data, 0)
    pairs = equalization_pairs(model)
    maxima = channel_maxima(bytes(data), pairs, calib) if pairs else {}
    scaled, largest = 0, 1.0
    for pair in pairs:
        k = channel_scales(maxima[pair.a_output], pair.relu6, headroom, max_scale)
        k32 = k.astype(np.float32)
        weight_a = _float_view(data, model, pair.a_weight)
        if pair.a_kind == "CONV_2D":  # OHWI: output channel first
            weight_a *= k32[:, None, None, None]
        else:  # depthwise [1, h, w, C]: output channel last
            weight_a *= k32
        _float_view(data, model, pair.a_bias)[:] *= k32
        # B's input channel is the last axis of OHWI and of depthwise [1, h, w, C] alike
        _float_view(data, model, pair.b_weight)[:] /= k32
        scaled += int(np.sum(k > 1.0))
        largest = max(largest, float(k.max()))
    Path(out).write_bytes(bytes(data))
    return (f"cross-layer equalization: {len(pairs)} ReLU/ReLU6 conv pairs, {scaled} channels "
            f"scaled up (at most x{largest:.3g}; headroom {headroom:g}, max_scale "
            f"{max_scale:g}), on {len(calib)} calibration inputs")  # fmt: skip
