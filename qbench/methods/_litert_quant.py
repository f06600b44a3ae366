"""LiteRT quantization with ai-edge-quantizer: from the fp32 .tflite (qbench.methods.export_tflite)
to fp16-weight, dynamic-range, full-integer and weight-only flatbuffers.

Static (full-integer) recipes calibrate with a plain running min/max. ai-edge-quantizer's
`Quantizer.calibrate` keeps a 0.95 moving average of each sample's min/max (the first samples
dominate and later extremes barely move the range, which clips the logits) and takes no other
update rule, so its `Calibrator` is driven directly with `qsv_utils.min_max_update`, in
profiler mode (min/max tracked inside the interpreter; same ranges, about 4x faster).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from qbench.methods.export_tflite import quiet

# Part of every LiteRT artifact's cache key (qbench/agent.py): bump it when this module writes
# different flatbuffers for the same inputs. 2: finite ranges for padded max pools.
LITERT_QUANT_VERSION = 2

# ai-edge-quantizer has no fp16 helper in recipe.py; this is the recipe of its own tests:
# every op's float weights cast to float16, a DEQUANTIZE (fp16 -> fp32) in front of each user.
FP16_RECIPE = [
    {
        "regex": ".*",
        "operation": "*",
        "algorithm_key": "float_casting",
        "op_config": {
            "weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
            "compute_precision": "FLOAT",
            "explicit_dequantize": True,
        },
    }
]


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _model(path: Path) -> Any:
    return _schema().Model.GetRootAsModel(Path(path).read_bytes(), 0)


def signature_input(path: Path) -> tuple[str, str]:
    """(signature key, name of its first input) of a converted model."""
    sig = _model(path).SignatureDefs(0)
    return sig.SignatureKey().decode(), sig.Inputs(0).Name().decode()


def op_counts(path: Path) -> Counter[str]:
    """Operators of the main subgraph by name, read from the flatbuffer."""
    from qbench.backends._tflite_graph import read_tflite_graph

    return Counter(read_tflite_graph(Path(path)).op_names)


_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def weight_dtypes(path: Path) -> Counter[str]:
    """Element types of the CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED weights (input 1),
    followed back through a DEQUANTIZE where the recipe inserted one."""
    from qbench.backends._tflite_graph import read_tflite_graph

    graph = read_tflite_graph(Path(path))
    dequantized = {op.outputs[0]: op.inputs[0] for op in graph.ops
                   if op.name == "DEQUANTIZE" and op.outputs}  # fmt: skip
    found: Counter[str] = Counter()
    for op in graph.ops:
        if op.name in _WEIGHT_OPS and len(op.inputs) > 1:
            index = dequantized.get(op.inputs[1], op.inputs[1])
            found[graph.tensor_types[index].lower()] += 1
    return found


def io_quantization(path: Path) -> dict[str, dict[str, Any]]:
    """dtype and (per-tensor) scale / zero point of the model's first input and output."""
    schema = _schema()
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = _model(path).Subgraphs(0)
    found = {}
    for side, index in (("input", graph.Inputs(0)), ("output", graph.Outputs(0))):
        tensor = graph.Tensors(index)
        q = tensor.Quantization()
        scale = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else None
        zero = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else None
        found[side] = {
            "dtype": types.get(tensor.Type(), str(tensor.Type())),
            "shape": tensor.ShapeAsNumpy().tolist(),
            "scale": None if scale is None else float(scale[0]),
            "zero_point": None if zero is None else int(zero[0]),
        }
    return found


def io_note(path: Path) -> str:
    """'input int8 scale 0.0187 zp -14; output int8 scale 0.129 zp -37' (quantized I/O only)."""
    parts = []
    for side, d in io_quantization(path).items():
        if d["scale"] is not None:
            parts.append(f"{side} {d['dtype']} scale {d['scale']:.4g} zp {d['zero_point']}")
        else:
            parts.append(f"{side} {d['dtype']}")
    return "; ".join(parts)


def minmax_ranges(fp32: Path, recipe: Any, calib: np.ndarray) -> dict[str, Any]:
    """Per-tensor min/max over the calibration inputs (NCHW float32, one per invoke: the
    converted model has batch 1), as ai-edge-quantizer's QSVs {tensor: {min, max}}."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    key, name = signature_input(fp32)
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    cal = calibrator.Calibrator(
        Path(fp32).read_bytes(),
        num_threads=min(4, os.cpu_count() or 1),
        mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED,
        qsv_update_func=qsv_utils.min_max_update,
    )
    data = np.ascontiguousarray(calib, dtype=np.float32)
    cal.calibrate({key: [{name: data[i : i + 1]} for i in range(len(data))]}, manager)
    return finite_ranges(fp32, cal.get_model_qsvs())


_PAD_OPS = ("PAD", "PADV2", "MIRROR_PAD")


def finite_ranges(path: Path, qsvs: dict[str, Any]) -> dict[str, Any]:
    """Ranges with no infinite bound. A max pool with padding converts to PADV2 with -inf
    padding then MAX_POOL_2D: the pad's output holds -inf, so its min/max (and that of the
    tensors the quantizer ties to it) is infinite and the int8 scale becomes inf, which
    LiteRT refuses. The padding never survives the max pool, so such a pad output takes its
    input's range. Any other infinite range is an error that names the tensor."""
    from qbench.backends._tflite_graph import read_tflite_graph

    graph = read_tflite_graph(Path(path))
    name = graph.tensor_names
    pad_input = {name[op.outputs[0]]: name[op.inputs[0]]
                 for op in graph.ops if op.name in _PAD_OPS}  # fmt: skip

    def finite(qsv: dict[str, Any]) -> bool:
        return bool(np.all(np.isfinite(qsv["min"])) and np.all(np.isfinite(qsv["max"])))

    out = dict(qsvs)
    for tensor, qsv in qsvs.items():
        if "min" not in qsv or finite(qsv):
            continue
        source = pad_input.get(tensor)
        if source is not None and source in qsvs and finite(qsvs[source]):
            out[tensor] = {**qsv, "min": qsvs[source]["min"], "max": qsvs[source]["max"]}
        else:
            raise ValueError(f"calibration range of tensor {tensor} is not finite "
                             f"(min {qsv['min']}, max {qsv['max']})")  # fmt: skip
    return out


def quantize(fp32: Path, out: Path, recipe: Any, calib: np.ndarray | None = None) -> dict[str, Any]:
    """Quantize `fp32` with an ai-edge-quantizer recipe into `out`; static recipes calibrate on
    `calib` with min/max. Returns what the flatbuffer ended up with (ops, I/O quantization)."""
    with quiet():
        from ai_edge_quantizer import quantizer

        qt = quantizer.Quantizer(str(fp32), recipe)
        ranges = None
        if qt.need_calibration:
            if calib is None or len(calib) == 0:
                raise ValueError("this LiteRT recipe needs calibration inputs")
            ranges = minmax_ranges(fp32, recipe, calib)
        result = qt.quantize(ranges, enable_progress_bar=False, enable_progress_report=False)
        result.export_model(str(out), overwrite=True)
    return {"ops": dict(op_counts(out)), **io_quantization(out)}


def fp16_weights(fp32: Path, out: Path) -> dict[str, Any]:
    """float16 weights (float_casting), DEQUANTIZE to float32 in front of their ops."""
    return quantize(fp32, out, FP16_RECIPE)


def dynamic_range(fp32: Path, out: Path, bits: int = 8) -> dict[str, Any]:
    """int8/int4 symmetric per-channel weights, float32 activations that LiteRT's hybrid kernels
    quantize at run time (recipe.dynamic_wi{bits}_afp32)."""
    from ai_edge_quantizer import recipe

    make = {8: recipe.dynamic_wi8_afp32, 4: recipe.dynamic_wi4_afp32}[bits]
    return quantize(fp32, out, make())


def weight_only(fp32: Path, out: Path, bits: int = 8) -> dict[str, Any]:
    """int8/int4 symmetric per-channel weights with a DEQUANTIZE to float32 in front of each op:
    float kernels (recipe.weight_only_wi{bits}_afp32)."""
    from ai_edge_quantizer import recipe

    make = {8: recipe.weight_only_wi8_afp32, 4: recipe.weight_only_wi4_afp32}[bits]
    return quantize(fp32, out, make())


def full_integer(
    fp32: Path, out: Path, calib: np.ndarray, activation_bits: int = 8
) -> dict[str, Any]:
    """int8 per-channel symmetric weights with int8 (asymmetric) or int16 (symmetric)
    activations and integer model I/O (recipe.static_wi8_ai8 / static_wi8_ai16), activation
    ranges from min/max calibration on `calib`."""
    from ai_edge_quantizer import recipe

    make = {8: recipe.static_wi8_ai8, 16: recipe.static_wi8_ai16}[activation_bits]
    return quantize(fp32, out, make(), calib)


def conversion_note() -> str:
    from qbench.methods.export_tflite import package_version

    return (f"LiteRT: converted by litert-torch {package_version('litert-torch')} at batch 1 "
            "with the NCHW input kept (a TRANSPOSE to NHWC leads the graph)")  # fmt: skip


def aeq_version() -> str:
    from qbench.methods.export_tflite import package_version

    return package_version("ai-edge-quantizer")


def _depthwise(layer: Any) -> bool:
    """A torch conv that LiteRT runs as DEPTHWISE_CONV_2D (one group per input channel; a
    single-input-channel conv converts to one as well)."""
    groups = getattr(layer, "groups", None)
    return groups is not None and groups == getattr(layer, "in_channels", None)


def weight_bits(bits: int) -> Any:
    """packed_bytes counter of ai-edge-quantizer's integer weights: `bits` per weight and one
    float32 scale per output channel (symmetric, no zero points). Its 4-bit policies leave
    DEPTHWISE_CONV_2D out (float32)."""
    from qbench.methods.packing import int8_weight_bits

    per_channel = int8_weight_bits(bits, True)

    def count(name: str, layer: Any) -> int | None:
        if bits == 4 and _depthwise(layer):
            return None
        return per_channel(name, layer)

    return count
