"""LiteRT quantization with ai-edge-quantizer: from the fp32 .tflite (qbench.methods.export_tflite)
to fp16-weight, dynamic-range, full-integer and weight-only flatbuffers.

Static (full-integer) recipes calibrate with a plain running min/max. ai-edge-quantizer's
`Quantizer.calibrate` keeps a 0.95 moving average of each sample's min/max (the first samples
dominate and later extremes barely move the range, which clips the logits) and takes no other
update rule, so its `Calibrator` is driven directly with `qsv_utils.min_max_update`, in
profiler mode (min/max tracked inside the interpreter; same ranges, about 4x faster). Other
calibrators (percentile, entropy, mse: qbench.methods._calibration's) then narrow those ranges
from histograms of the fp32 model's tensors (`calibrated_ranges`). `gptq_weights` re-rounds a
quantized model's int8/int4 weights with GPTQ on the same scales (weight_only's rounding=gptq).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qbench.methods.export_tflite import quiet

# Part of every LiteRT artifact's cache key (qbench/agent.py): bump it when this module writes
# different flatbuffers for the same inputs. 2: finite ranges for padded max pools. 3: float
# files with pre-3a op codes or no SignatureDef rewritten first (quantizer_ready).
LITERT_QUANT_VERSION = 3

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
    """(signature key, name of its first input) of a converted model (quantize() gives a file
    without SignatureDef one first: qbench.formats.tflite.quantizer_ready)."""
    model = _model(path)
    if model.SignatureDefsLength() == 0:
        raise ValueError(f"{Path(path).name} has no SignatureDef to calibrate through")
    sig = model.SignatureDefs(0)
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


def _tracing_interpreter(data: bytes) -> Any:
    """An interpreter of a float .tflite that keeps every intermediate tensor readable after
    invoke (builtin kernels: a delegate would fuse the tensors away)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with quiet():
        interpreter = Interpreter(
            model_content=data,
            num_threads=min(4, os.cpu_count() or 1),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            experimental_preserve_all_tensors=True,
        )
        interpreter.allocate_tensors()
    return interpreter


def traced_samples(interpreter: Any, calib: np.ndarray) -> Iterator[Any]:
    """`interpreter` (a _tracing_interpreter) after invoking each calibration input in turn
    (NCHW float32, one per invoke: batch 1); read any tensor with get_tensor."""
    source = interpreter.get_input_details()[0]["index"]
    for sample in np.asarray(calib, dtype=np.float32):
        interpreter.set_tensor(source, sample[None])
        interpreter.invoke()
        yield interpreter


def calibrated_ranges(fp32: Path, qsvs: dict[str, Any], calib: np.ndarray,
                      settings: Any) -> tuple[dict[str, Any], str]:  # fmt: skip
    """`qsvs` (min/max ranges) with each activation tensor's range chosen by the method
    registry's calibrator (qbench.methods._calibration.CalibrationSettings: percentile and
    entropy are ONNX Runtime's histogram calibrators, mse qbench's search on the grid of
    `settings.activations`, int8 asymmetric or int16 symmetric),
    from histograms of the fp32 flatbuffer's tensors over `calib` (builtin kernels, every
    intermediate tensor kept), the model's outputs included (quantize widens those after:
    widen_outputs). Returns (ranges, a summary)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    from qbench.methods._calibration import _TENSOR_TYPES, _floats, mse_range

    if settings.calibrator == "minmax":
        return qsvs, "min/max"
    data = Path(fp32).read_bytes()
    interpreter = _tracing_interpreter(data)
    index = {d["name"]: d["index"] for d in interpreter.get_tensor_details()}
    names = [n for n, q in qsvs.items()
             if "min" in q and n in index and np.size(q["min"]) == 1]  # fmt: skip
    percentile = settings.calibrator == "percentile"
    collector = HistogramCollector(
        method="percentile" if percentile else "entropy",
        symmetric=percentile,  # ORT's percentile calibrator: magnitudes, range [-t, t]
        num_bins=settings.histogram_bins,
        num_quantized_bins=settings.entropy_quantized_bins,
        percentile=settings.percentile,
        scenario="same",
    )
    with contextlib.redirect_stdout(io.StringIO()):
        for traced in traced_samples(interpreter, calib):
            values = {n: traced.get_tensor(index[n]) for n in names}
            # a padded max pool's PADV2 holds -inf padding (see finite_ranges): values only
            collector.collect({n: [v[np.isfinite(v)]] for n, v in values.items()})
        if settings.calibrator == "mse":
            qtype = _TENSOR_TYPES[settings.activations]
            chosen = {n: mse_range(h[0], h[1], h[2], h[3], qtype, settings.symmetric)
                      for n, h in collector.get_histogram_dict().items()}  # fmt: skip
        else:
            chosen = {n: _floats(r[:2]) for n, r in collector.compute_collection_result().items()}
    out = dict(qsvs)
    narrowed = []
    for n, (lo, hi) in chosen.items():
        old_lo, old_hi = float(np.min(qsvs[n]["min"])), float(np.max(qsvs[n]["max"]))
        lo, hi = max(lo, old_lo), min(hi, old_hi)  # never wider than what was seen
        full = max(old_hi, 0.0) - min(old_lo, 0.0)
        kept = (max(hi, 0.0) - min(lo, 0.0)) / full if full > 0 else 1.0
        narrowed.append(kept)
        shape = np.shape(qsvs[n]["min"])
        out[n] = {**qsvs[n], "min": np.full(shape, lo, np.float32),
                  "max": np.full(shape, hi, np.float32)}  # fmt: skip
    kept = sorted(narrowed)
    if not kept:
        return out, settings.calibrator
    summary = (f"{settings.calibrator}: {sum(k < 0.999 for k in kept)} of {len(kept)} activation "
               f"ranges narrower than min/max (median kept {np.median(kept):.0%}, least "
               f"{kept[0]:.0%})")  # fmt: skip
    return out, summary


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


def output_names(path: Path) -> list[str]:
    """Names of the model's output tensors (first subgraph)."""
    graph = _model(path).Subgraphs(0)
    return [graph.Tensors(graph.Outputs(i)).Name().decode() for i in range(graph.OutputsLength())]


def widen_outputs(path: Path, qsvs: dict[str, Any], scale: float) -> dict[str, Any]:
    """`qsvs` with each model output's range multiplied by `scale` (around zero). A calibrated
    range ends at the largest logit the calibration inputs produced; an input the model is
    more sure of (MobileNetV2 on an ImageNet photo: 29.8 against 19.96 over 64 calibration
    crops) would clip its top scores to one value and argmax would pick among ties."""
    if scale == 1:
        return qsvs
    out = dict(qsvs)
    for name in output_names(path):
        if name in qsvs and "min" in qsvs[name]:
            q = qsvs[name]
            out[name] = {**q, "min": np.asarray(q["min"], np.float32) * np.float32(scale),
                         "max": np.asarray(q["max"], np.float32) * np.float32(scale)}  # fmt: skip
    return out


def quantize(
    fp32: Path,
    out: Path,
    recipe: Any,
    calib: np.ndarray | None = None,
    calibration: Any = None,
    gptq: bool = False,
    output_range_scale: float = 1.0,
) -> dict[str, Any]:
    """Quantize `fp32` with an ai-edge-quantizer recipe into `out`; static recipes calibrate on
    `calib` with min/max, or with the calibrator of `calibration` (a CalibrationSettings),
    widen the model outputs' ranges by `output_range_scale` (widen_outputs), and with `gptq`
    get GPTQ-rounded int8 weights. Returns what the flatbuffer ended up with (ops, I/O
    quantization, and `calibration`: a summary of the ranges chosen)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qbench-litert-") as tmp:
        ready, rewrites = _quantizer_input(fp32, Path(tmp))
        found = _quantize(ready, out, recipe, calib, calibration, gptq, output_range_scale)
    if rewrites:
        found["rewrites"] = rewrites
    return found


def _quantizer_input(fp32: Path, folder: Path) -> tuple[Path, list[str]]:
    """`fp32`, or a copy in `folder` rewritten so ai-edge-quantizer reads it as LiteRT does
    (qbench.formats.tflite.quantizer_ready: pre-3a op codes, no SignatureDef), and what
    changed."""
    from qbench.formats.tflite import quantizer_ready

    data, rewrites = quantizer_ready(Path(fp32).read_bytes())
    if not rewrites:
        return Path(fp32), []
    ready = folder / "quantizer_input.tflite"
    ready.write_bytes(data)
    return ready, rewrites


def _quantize(fp32: Path, out: Path, recipe: Any, calib: np.ndarray | None, calibration: Any,
              gptq: bool, output_range_scale: float) -> dict[str, Any]:  # fmt: skip
    summary = None
    with quiet():
        from ai_edge_quantizer import quantizer

        qt = quantizer.Quantizer(str(fp32), recipe)
        ranges = None
        if qt.need_calibration:
            if calib is None or len(calib) == 0:
                raise ValueError("this LiteRT recipe needs calibration inputs")
            ranges = minmax_ranges(fp32, recipe, calib)
            if calibration is not None:
                ranges, summary = calibrated_ranges(fp32, ranges, calib, calibration)
            ranges = widen_outputs(fp32, ranges, output_range_scale)
        result = qt.quantize(ranges, enable_progress_bar=False, enable_progress_report=False)
        result.export_model(str(out), overwrite=True)
    rewritten = None
    if gptq:
        if calib is None or len(calib) == 0:
            raise ValueError("GPTQ weight rounding needs calibration inputs")
        rewritten = gptq_weights(fp32, out, calib)
    found = {"ops": dict(op_counts(out)), **io_quantization(out)}
    if summary is not None:
        found["calibration"] = summary
    if rewritten is not None:
        found["gptq_weights"] = rewritten
    return found


def rewrite_notes(found: dict[str, Any]) -> list[str]:
    """Row notes of what quantize() rewrote in the float file before quantizing it."""
    return [f"LiteRT: the float .tflite was rewritten for ai-edge-quantizer: {change}"
            for change in found.get("rewrites", [])]  # fmt: skip


def fp16_weights(fp32: Path, out: Path) -> dict[str, Any]:
    """float16 weights (float_casting), DEQUANTIZE to float32 in front of their ops."""
    return quantize(fp32, out, FP16_RECIPE)


def dynamic_range(
    fp32: Path, out: Path, bits: int = 8, calib: np.ndarray | None = None, gptq: bool = False
) -> dict[str, Any]:
    """int8/int4 symmetric per-channel weights, float32 activations that LiteRT's hybrid kernels
    quantize at run time (recipe.dynamic_wi{bits}_afp32); `gptq`: weights rounded by GPTQ on
    `calib` instead of to nearest."""
    from ai_edge_quantizer import recipe

    make = {8: recipe.dynamic_wi8_afp32, 4: recipe.dynamic_wi4_afp32}[bits]
    return quantize(fp32, out, make(), calib, gptq=gptq)


def weight_only(
    fp32: Path, out: Path, bits: int = 8, calib: np.ndarray | None = None, gptq: bool = False
) -> dict[str, Any]:
    """int8/int4 symmetric per-channel weights with a DEQUANTIZE to float32 in front of each op:
    float kernels (recipe.weight_only_wi{bits}_afp32); `gptq`: weights rounded by GPTQ on
    `calib` instead of to nearest."""
    from ai_edge_quantizer import recipe

    make = {8: recipe.weight_only_wi8_afp32, 4: recipe.weight_only_wi4_afp32}[bits]
    return quantize(fp32, out, make(), calib, gptq=gptq)


def full_integer(
    fp32: Path,
    out: Path,
    calib: np.ndarray,
    activation_bits: int = 8,
    calibration: Any = None,
    gptq: bool = False,
    output_range_scale: float = 1.0,
) -> dict[str, Any]:
    """int8 per-channel symmetric weights with int8 (asymmetric) or int16 (symmetric)
    activations and integer model I/O (recipe.static_wi8_ai8 / static_wi8_ai16), activation
    ranges from min/max calibration on `calib` or the calibrator of `calibration`, the model
    outputs' widened by `output_range_scale`; `gptq`: weights rounded by GPTQ on `calib`
    instead of to nearest."""
    from ai_edge_quantizer import recipe

    make = {8: recipe.static_wi8_ai8, 16: recipe.static_wi8_ai16}[activation_bits]
    return quantize(fp32, out, make(), calib, calibration=calibration, gptq=gptq,
                    output_range_scale=output_range_scale)  # fmt: skip


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


# --- GPTQ weight rounding ---------------------------------------------------------------------
#
# Round-to-nearest int8 weights (per output channel) alone cost MobileNetV2 a tenth of its top-1
# agreement with fp32 on the real photos. GPTQ (Frantar et al. 2022) keeps the same int8 grid (the
# scales ai-edge-quantizer wrote) but chooses each weight's integer so that the layer's output on
# the calibration inputs moves least: weights are rounded one input position at a time and each
# rounding error is spread over the weights not yet rounded, weighted by the inverse of the
# Hessian H = sum x xᵀ of the layer's input patches. The quantized flatbuffer's int8 weights are
# then overwritten in place; scales, zero points and int32 biases (scale = input × weight scale)
# stay as the quantizer wrote them, so the model's structure and kernels are unchanged.

_GPTQ_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite's SAME padding (before, after) of one spatial dimension."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _patches(x: np.ndarray, kh: int, kw: int, options: Any, same: bool) -> np.ndarray:
    """Input patches of a NHWC tensor (batch 1): [positions, kh, kw, C]."""
    sh, sw = options.StrideH(), options.StrideW()
    dh, dw = options.DilationHFactor(), options.DilationWFactor()
    img = x[0]
    if same:
        (t, b), (left, right) = (_same_pads(img.shape[0], kh, sh, dh),
                                 _same_pads(img.shape[1], kw, sw, dw))  # fmt: skip
        img = np.pad(img, ((t, b), (left, right), (0, 0)))
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    win = np.lib.stride_tricks.sliding_window_view(img, (span_h, span_w), axis=(0, 1))
    win = win[::sh, ::sw, :, ::dh, ::dw]  # [oh, ow, C, kh, kw]
    return np.ascontiguousarray(win.transpose(0, 1, 3, 4, 2)).reshape(-1, kh, kw, img.shape[2])


def _conv_options(op: Any, kind: str) -> Any:
    schema = _schema()
    cls = {"CONV_2D": schema.Conv2DOptions, "DEPTHWISE_CONV_2D": schema.DepthwiseConv2DOptions}
    options = cls[kind]()
    table = op.BuiltinOptions()
    options.Init(table.Bytes, table.Pos)
    return options


def layer_hessians(fp32: Path, calib: np.ndarray) -> dict[str, np.ndarray]:
    """Weight tensor name -> Hessian of its layer's inputs over the calibration inputs (run by
    the fp32 flatbuffer, builtin kernels so every intermediate tensor can be read): [K, K] with K
    a weight row's length (kernel h × w × input channels, or input features), shared by all rows;
    [C, kh·kw, kh·kw] for depthwise convolutions (one per channel)."""

    schema = _schema()
    data = Path(fp32).read_bytes()
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    layers = []  # (kind, input tensor, weight tensor name, weight shape, options)
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
        if kind not in _GPTQ_OPS:
            continue
        weight = graph.Tensors(op.Inputs(1))
        if weight.Buffer() == 0 or model.Buffers(weight.Buffer()).DataLength() == 0:
            continue  # a weight computed at run time: nothing to round here
        options = None if kind == "FULLY_CONNECTED" else _conv_options(op, kind)
        layers.append((kind, op.Inputs(0), weight.Name().decode(),
                       tuple(weight.ShapeAsNumpy()), options))  # fmt: skip
    hessians: dict[str, np.ndarray] = {}
    for interpreter in traced_samples(_tracing_interpreter(data), calib):
        for kind, index, name, shape, options in layers:
            x = interpreter.get_tensor(index).astype(np.float64)
            if kind == "FULLY_CONNECTED":
                rows = x.reshape(-1, shape[-1])
                h = rows.T @ rows
            else:
                same = options.Padding() == schema.Padding.SAME
                p = _patches(x, shape[1], shape[2], options, same)
                if kind == "CONV_2D":
                    rows = p.reshape(len(p), -1)
                    h = rows.T @ rows
                else:  # depthwise: [positions, kh·kw, C] -> one Hessian per channel
                    rows = p.reshape(len(p), -1, p.shape[-1])
                    h = np.einsum("pkc,pjc->ckj", rows, rows)
                    # depth multiplier m: output channel o reads input channel o // m
                    h = np.repeat(h, shape[-1] // p.shape[-1], axis=0)
            hessians[name] = hessians.get(name, 0) + h
    return hessians


def gptq_round(weights: np.ndarray, hessian: np.ndarray, scale: np.ndarray,
               qmax: int = 127, damp: float = 0.01) -> np.ndarray:  # fmt: skip
    """GPTQ integers of `weights` [rows, K] on the symmetric grid scale[row] · k, |k| ≤ qmax.
    `hessian` is [K, K] (shared) or [rows, K, K]. Inputs that never fire (zero diagonal) get
    nearest rounding: their weights have no effect on the calibration outputs."""
    w = np.array(weights, dtype=np.float64)
    rows, k = w.shape
    h = np.array(hessian, dtype=np.float64)
    h = h[None] if h.ndim == 2 else h
    diag = np.einsum("rkk->rk", h)  # a view: writes reach h
    dead = diag == 0
    diag[dead] = 1.0
    diag += damp * diag.mean(axis=1, keepdims=True)
    # Upper Cholesky factor of H⁻¹: row i holds the update of the columns after i.
    inverse = np.linalg.inv(np.linalg.cholesky(h))
    upper = np.linalg.cholesky(np.swapaxes(inverse, 1, 2) @ inverse)
    upper = np.swapaxes(upper, 1, 2)
    s = np.asarray(scale, dtype=np.float64).reshape(rows)
    s = np.where(s > 0, s, 1.0)
    out = np.zeros((rows, k), dtype=np.int8)
    live = ~np.broadcast_to(dead, (rows, k))
    nearest = np.clip(np.round(w / s[:, None]), -qmax, qmax)
    for i in range(k):
        q = np.clip(np.round(w[:, i] / s), -qmax, qmax)
        out[:, i] = q
        err = (w[:, i] - q * s) / upper[:, i, i] * live[:, i]
        if i + 1 < k:
            w[:, i + 1 :] -= err[:, None] * upper[:, i, i + 1 :]
    return np.where(live, out, nearest).astype(np.int8)


def _float_weights(fp32: Path) -> dict[str, np.ndarray]:
    """Constant float32 weights of the compute ops, by tensor name."""
    schema = _schema()
    model = _model(fp32)
    graph = model.Subgraphs(0)
    found = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if op.InputsLength() < 2 or op.Inputs(1) < 0:
            continue
        tensor = graph.Tensors(op.Inputs(1))
        buffer = model.Buffers(tensor.Buffer())
        if tensor.Type() == schema.TensorType.FLOAT32 and buffer.DataLength():
            shape = tuple(tensor.ShapeAsNumpy())
            found[tensor.Name().decode()] = (
                buffer.DataAsNumpy().view(np.float32).reshape(shape).copy()
            )
    return found


def _as_rows(array: np.ndarray, kind: str) -> np.ndarray:
    """A weight tensor as [output channel, K]: OHWI and [out, in] keep their order; a depthwise
    [1, kh, kw, C] filter becomes [C, kh·kw]."""
    if kind == "DEPTHWISE_CONV_2D":
        return array.reshape(-1, array.shape[-1]).T
    return array.reshape(array.shape[0], -1)


def _buffer_view(data: bytearray, buffer: Any) -> np.ndarray:
    """A writable int8 view into `data` of a flatbuffer Buffer, stored inline or (as
    ai-edge-quantizer writes them) after the flatbuffer at buffer.Offset()."""
    if buffer.DataLength():
        return buffer.DataAsNumpy().view(np.int8)
    if buffer.Offset() > 1 and buffer.Size():
        return np.frombuffer(data, np.int8, buffer.Size(), buffer.Offset())
    raise ValueError("weight buffer holds no data")


def pack_int4(values: np.ndarray) -> np.ndarray:
    """int4 values (-8..7) packed two per byte as TFLite and ai-edge-quantizer store them:
    element 2i in the low nibble of byte i, element 2i+1 in its high nibble."""
    flat = np.asarray(values).reshape(-1).astype(np.uint8) & 0x0F
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, count: int) -> np.ndarray:
    """The `count` signed int4 values of `pack_int4`'s bytes, as int8."""
    b = np.asarray(packed).view(np.uint8)
    nibbles = np.stack([b & 0x0F, b >> 4], axis=1).reshape(-1)[:count].astype(np.int8)
    return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


def gptq_weights(fp32: Path, quantized: Path, calib: np.ndarray) -> int:
    """Overwrite the int8 or (packed) int4 weights of `quantized`'s CONV_2D /
    DEPTHWISE_CONV_2D / FULLY_CONNECTED ops (per-channel symmetric, as ai-edge-quantizer wrote
    them: on the op itself, or behind the DEQUANTIZE of a weight-only recipe) with GPTQ's
    rounding of the float weights of `fp32` on the same scales, Hessians from `calib`. Returns
    the number of weight tensors rewritten."""
    schema = _schema()
    floats = _float_weights(fp32)
    hessians = layer_hessians(fp32, calib)
    data = bytearray(Path(quantized).read_bytes())
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def kind_of(op: Any) -> str | None:
        code = model.OperatorCodes(op.OpcodeIndex())
        return op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))

    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    # weight-only recipes: constant int weight -> DEQUANTIZE -> float32 "<name>_dequant" -> op
    dequantized = {op.Outputs(0): op.Inputs(0) for op in ops
                   if kind_of(op) == "DEQUANTIZE" and op.OutputsLength()}  # fmt: skip
    qmax = {schema.TensorType.INT8: 127, schema.TensorType.INT4: 7}
    rewritten = 0
    for op in ops:
        kind = kind_of(op)
        if kind not in _GPTQ_OPS:
            continue
        tensor = graph.Tensors(dequantized.get(op.Inputs(1), op.Inputs(1)))
        name = tensor.Name().decode()
        if tensor.Type() not in qmax or name not in floats or name not in hessians:
            continue
        q = tensor.Quantization()
        channels = tensor.ShapeAsNumpy()[q.QuantizedDimension()]
        expected_dim = 3 if kind == "DEPTHWISE_CONV_2D" else 0
        if q.ScaleLength() != channels or q.QuantizedDimension() != expected_dim:
            raise ValueError(f"{kind} weight {name} is not quantized per output channel")
        if np.any(q.ZeroPointAsNumpy() != 0):
            raise ValueError(f"{kind} weight {name} is not symmetric")
        stored = _buffer_view(data, model.Buffers(tensor.Buffer()))
        size = int(np.prod(tensor.ShapeAsNumpy()))
        ints = gptq_round(_as_rows(floats[name], kind), hessians[name], q.ScaleAsNumpy(),
                          qmax=qmax[tensor.Type()])  # fmt: skip
        flat = (ints.T if kind == "DEPTHWISE_CONV_2D" else ints).reshape(-1)
        if tensor.Type() == schema.TensorType.INT4:
            packed = pack_int4(flat)
            if stored.size != packed.size:
                raise ValueError(f"{kind} weight {name}: {stored.size} bytes stored, "
                                 f"{packed.size} for {size} packed int4 values")  # fmt: skip
            stored[:] = packed.view(np.int8)
        else:
            assert stored.size == size
            stored[:] = flat
        rewritten += 1
    Path(quantized).write_bytes(bytes(data))
    return rewritten
