"""NNCF (Intel's Neural Network Compression Framework) on OpenVINO IR.

Both methods start from OpenVINO's conversion of the model's fp32 ONNX export
(`ov.convert_model`) and write format "openvino" (qbench.methods._openvino_ir: the IR's .xml
and .bin in one file), which the openvino backend runs.

nncf_int8: `nncf.quantize`, post-training static int8 for the CPU target. FakeQuantize on the
inputs of Convolution/MatMul: weights int8 symmetric per output channel (min/max), activations
per tensor from the calibration inputs (mean over samples of each sample's min/max), then
fast bias correction. Preset performance: symmetric activations (zero point 0; a tensor that is
non-negative on the calibration inputs, after a ReLU, takes the unsigned grid [0, 255]); mixed:
asymmetric activations. OpenVINO's CPU plugin fuses each FakeQuantize pair into u8/i8
Convolution/FullyConnected kernels (VNNI, AMX).

nncf_weights: `nncf.compress_weights`, data-free weight-only compression. MatMul/Linear weights
become int8 (per output channel) or int4 (groups of `group_size` along the input dimension; a
`ratio` of them in int4, the rest in int8), with float16 scales (and zero points when
asymmetric); activations stay float. NNCF compresses Convolution weights too, in int8 only (in
the int4 modes they take the int8_asym backup), and keeps the first and last MatMul in int8 in
the int4 modes unless all_layers. OpenVINO's CPU plugin decompresses integer weights inside its
FullyConnected kernels, but folds compressed Convolution weights back into float weights at
compile: on a CNN only the file shrinks (the backend's inspect shows what runs integer).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from qbench.methods.base import MakeContext, Method, packed_bytes
from qbench.methods.packing import int8_weight_bits
from qbench.models.base import format_name
from qbench.params import Params
from qbench.plugins import methods
from qbench.quant.saturation import resolve_auto

# bits of the element types NNCF stores weights, scales and zero points in
_TYPE_BITS = {"u8": 8, "i8": 8, "u4": 4, "i4": 4, "f16": 16, "bf16": 16, "f32": 32}


class _NncfMethod(Method):
    produces = ("openvino",)

    def unsupported(self, fmt: str, params: Params, source: Any) -> str | None:
        if fmt == "openvino" and source.format == "tflite":
            return (
                f"model {source.name} is {format_name(source)}; OpenVINO artifacts are "
                "converted from the fp32 ONNX graph (torch modules and ONNX files)"
            )
        return super().unsupported(fmt, params, source)


@contextlib.contextmanager
def _quiet() -> Any:
    """NNCF's progress bars and INFO tables kept out of the stage's output."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def _fp32_model(ctx: MakeContext) -> Any:
    import openvino as ov

    return ov.convert_model(str(ctx.fp32_onnx()))


def _versions() -> str:
    import nncf
    import openvino as ov

    return f"NNCF {nncf.__version__}, OpenVINO {ov.__version__.split('-')[0]}"


class NncfInt8Params(Params):
    preset: Literal["performance", "mixed"] = Field(
        default="performance",
        description="nncf.QuantizationPreset: performance = symmetric weights and activations; "
        "mixed = symmetric weights, asymmetric activations (better for activations not centred "
        "on zero, e.g. after GELU/Swish or un-normalised inputs)",
    )
    subset_size: int = Field(
        default=300,
        ge=1,
        le=10000,
        description="calibration samples NNCF takes (at most the calibration inputs the suite "
        "gives: calibration.samples)",
    )
    fast_bias_correction: bool = Field(
        default=True,
        description="NNCF's fast bias correction (True) or its full bias correction (False, "
        "slower: re-runs the model per layer)",
    )
    model_type: Literal["default", "transformer"] = Field(
        default="default",
        description="nncf.ModelType: transformer keeps the ops NNCF's transformer scheme keeps "
        "in float (softmax, layer norm inputs, ...)",
    )
    overflow_fix: Literal["auto", "enable", "first_layer", "disable"] = Field(
        default="auto",
        description="NNCF's overflow fix (7-bit weights against the int16 saturation of u8s8 "
        "kernels on x86 CPUs without VNNI/AMX): enable = every layer, first_layer = the first "
        "only (NNCF's default), disable = none; auto: enable where the CPU that prepares the "
        "cell (the device) saturates (qbench.quant.saturation), else NNCF's default",
    )


_OVERFLOW_FIX = {"enable": "ENABLE", "first_layer": "FIRST_LAYER", "disable": "DISABLE"}


@methods.register
class NncfInt8(_NncfMethod):
    name = "nncf_int8"
    description = "NNCF post-training static int8 (nncf.quantize) on OpenVINO IR"
    Params = NncfInt8Params
    uses_calibration = True
    calibrates_exported_graph = ("openvino",)

    def for_cpu(self, fmt: str, params: Params, cpu_flags: list[str]) -> tuple[Params, list[str]]:
        assert isinstance(params, NncfInt8Params)
        if params.overflow_fix != "auto":
            return params, []
        seven, why = resolve_auto("auto", cpu_flags)
        if not seven:
            return params.model_copy(update={"overflow_fix": "first_layer"}), []
        note = (
            f"overflow_fix auto: enable (7-bit weights in every layer), because {why} "
            "(NNCF's and OpenVINO's documented workaround)"
        )
        return params.model_copy(update={"overflow_fix": "enable"}), [note]

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        assert isinstance(params, NncfInt8Params)
        symmetric = params.preset == "performance"
        notes = [
            "NNCF FakeQuantize int8 on Convolution/MatMul inputs: weights symmetric per output "
            "channel, activations per tensor (mean over samples of each sample's min/max), "
            + ("fast bias correction" if params.fast_bias_correction else "bias correction"),
            "symmetric activations (zero point 0): tensors non-negative on the calibration "
            "inputs use the unsigned grid [0, 255]"
            if symmetric
            else "asymmetric activations (uint8 with a zero point per tensor)",
        ]
        return {
            # enable: 7-bit weights everywhere; first_layer: the first layer's only
            "bits_w": {"enable": 7, "first_layer": 8, "disable": 8}.get(params.overflow_fix),
            "bits_a": 8,
            "granularity": "per_channel",
            "calibrator": "mean_minmax",
            "symmetric_weights": True,
            "act_dtype": "int8" if symmetric else "uint8",
            "weight_dtype": "int8",
            "weight_scheme": "uniform",
            "notes": notes,
        }

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        import nncf

        from qbench.inputs import count
        from qbench.methods._openvino_ir import compute_weights, save_model

        assert isinstance(params, NncfInt8Params)
        model = _fp32_model(ctx)
        calibration = ctx.calibration
        samples = _samples(model, calibration)
        subset = min(params.subset_size, len(samples))
        with _quiet():
            quantized = nncf.quantize(
                model,
                nncf.Dataset(samples),
                preset=nncf.QuantizationPreset.PERFORMANCE
                if params.preset == "performance"
                else nncf.QuantizationPreset.MIXED,
                target_device=nncf.TargetDevice.CPU,
                subset_size=subset,
                fast_bias_correction=params.fast_bias_correction,
                model_type=nncf.ModelType.TRANSFORMER
                if params.model_type == "transformer"
                else None,
                advanced_parameters=_advanced(params),
            )
        fq = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops())
        weights = compute_weights(quantized)
        int8 = sum(t in ("i8", "u8", "fq") for t in weights.values())
        if fq == 0:
            raise ValueError(f"NNCF quantized nothing in model {ctx.model_name} (no "
                             "Convolution/MatMul input to quantize)")  # fmt: skip
        save_model(quantized, out, {"inference_precision": "f32", "producer": self.name})
        note = (f"{_versions()}: nncf.quantize ({params.preset} preset, overflow fix "
                f"{params.overflow_fix}, {subset} of "
                f"{count(calibration)} calibration samples), {fq} FakeQuantize on activations, "
                f"{int8} of {len(weights)} Convolution/MatMul weights int8")  # fmt: skip
        return {
            "packed_bytes": packed_bytes(ctx, int8_weight_bits(8, True)),
            "artifact_notes": [note],
        }


def _advanced(params: NncfInt8Params) -> Any:
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    # for_cpu decided `auto` before the build; a direct make() call takes NNCF's default
    fix = "first_layer" if params.overflow_fix == "auto" else params.overflow_fix
    return AdvancedQuantizationParameters(overflow_fix=OverflowFix[_OVERFLOW_FIX[fix]])


class NncfWeightsParams(Params):
    mode: Literal["int8_sym", "int8_asym", "int4_sym", "int4_asym"] = Field(
        default="int8_asym",
        description="nncf.CompressWeightsMode: int8 per output channel, or int4 in groups "
        "(ratio of the MatMul weights; the rest int8_asym); sym = scale only, asym = scale and "
        "zero point",
    )
    group_size: int = Field(
        default=128,
        ge=-1,
        description="int4 modes: weights per scale along the input dimension (-1: one scale per "
        "output channel); must divide every int4 layer's input channels. int8 modes are per "
        "channel and take the default",
    )
    ratio: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="int4 modes: fraction of the MatMul weights (of those NNCF may put in int4) "
        "in int4, chosen by quantization error; the rest int8_asym. int8 modes take 1",
    )
    all_layers: bool = Field(
        default=False,
        description="int4 modes: the first and last MatMul (embeddings, classifier) in int4 too; "
        "NNCF keeps them in int8 by default",
    )

    omitted_at_default: ClassVar[dict[str, Any]] = {"all_layers": False}


def _int4(params: NncfWeightsParams) -> bool:
    return params.mode.startswith("int4")


@methods.register
class NncfWeights(_NncfMethod):
    name = "nncf_weights"
    description = "NNCF weight-only compression (nncf.compress_weights) int8/int4 on OpenVINO IR"
    Params = NncfWeightsParams

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        assert isinstance(params, NncfWeightsParams)
        int4, symmetric = _int4(params), params.mode.endswith("_sym")
        bits = 4 if int4 else 8
        grouped = int4 and params.group_size != -1
        notes = [
            "weight-only: activations stay float; OpenVINO's CPU decompresses integer MatMul "
            "weights inside its FullyConnected kernels and folds compressed Convolution weights "
            "back to float at compile (smaller file, float convolutions)",
        ]
        if int4:
            notes.append(
                "int4 modes: Convolution weights and the weights NNCF keeps out of int4 (first "
                "and last MatMul unless all_layers, the rest of ratio) are int8_asym per channel; "
                "layer_bits_json lists each weight's bits"
            )
        row: dict[str, Any] = {
            "bits_w": bits,
            "bits_a": 32,
            "granularity": "per_group" if grouped else "per_channel",
            "symmetric_weights": symmetric,
            "act_dtype": "float32",
            "weight_dtype": f"{'int' if symmetric else 'uint'}{bits}",
            "weight_scheme": "uniform",
            "notes": notes,
        }
        if grouped:
            row["group_size"] = params.group_size
        return row

    def unsupported(self, fmt: str, params: Params, source: Any) -> str | None:
        assert isinstance(params, NncfWeightsParams)
        defaults = NncfWeightsParams()
        if not _int4(params):
            changed = [k for k in ("group_size", "ratio", "all_layers")
                       if getattr(params, k) != getattr(defaults, k)]  # fmt: skip
            if changed:
                return (f"{params.mode} compresses every weight per output channel in 8 bits; "
                        f"{', '.join(changed)} applies to the int4 modes")  # fmt: skip
        elif params.group_size == 0:
            return "group_size: -1 (per output channel) or a positive number of weights"
        return super().unsupported(fmt, params, source)

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        import nncf

        from qbench.methods._openvino_ir import save_model, weight_sources

        assert isinstance(params, NncfWeightsParams)
        model = _fp32_model(ctx)
        names = _weight_names(ctx.fp32_onnx(), weight_sources(model, gather=True))
        kwargs: dict[str, Any] = {"mode": getattr(nncf.CompressWeightsMode, params.mode.upper())}
        if _int4(params):
            kwargs.update(group_size=params.group_size, ratio=params.ratio,
                          all_layers=params.all_layers)  # fmt: skip
        try:
            with _quiet():
                compressed = nncf.compress_weights(model, **kwargs)
        except nncf.InvalidGroupSizeError as exc:
            reason = " ".join(str(exc).split())[:300]
            raise ValueError(f"NNCF cannot compress model {ctx.model_name} in groups of "
                             f"{params.group_size}: {reason}") from None  # fmt: skip
        layers = compressed_weights(compressed, names)
        taken = {name: info for name, info in layers.items() if info["bits"] < 16}
        if not taken:
            raise ValueError(
                f"model {ctx.model_name} has no Convolution/MatMul/embedding weight that "
                "nncf.compress_weights compresses: nothing to measure"
            )
        save_model(compressed, out, {"inference_precision": "f32", "producer": self.name})
        kinds: dict[str, int] = {}
        for info in taken.values():
            kinds[info["type"]] = kinds.get(info["type"], 0) + 1
        spread = ", ".join(f"{n} {t}" for t, n in sorted(kinds.items()))
        note = (
            f"{_versions()}: nncf.compress_weights({params.mode}) compressed {len(taken)} of "
            f"{len(layers)} Convolution/MatMul/Gather weights ({spread})"
        )
        return {
            "packed_bytes": packed_bytes(ctx, _compressed_bits(taken)),
            "layer_bits_json": json.dumps(
                {name: info["bits"] for name, info in layers.items()}, sort_keys=True
            ),
            "artifact_notes": [note],
        }


def _samples(model: Any, calibration: Any) -> list[dict[str, Any]]:
    """The calibration inputs one sample at a time (a graph of a fixed batch of 1 takes no
    other), keyed by the OpenVINO model's input names."""
    from qbench.backends.base import feed_by_name
    from qbench.inputs import count

    names = [port.get_any_name() for port in model.inputs]
    feed = feed_by_name(names, calibration)
    return [{k: v[i : i + 1] for k, v in feed.items()} for i in range(count(calibration))]


def _weight_names(onnx_path: Path, sources: dict[str, Any]) -> dict[str, str]:
    """OpenVINO op name -> the ONNX initializer its weight is. OpenVINO names an op after its
    ONNX node (or the node's output), `/suffix`ed where it splits one, but may fold a weight
    into a new constant (a MatMul weight transposed: `Transpose_123`): the ONNX graph says
    which initializer each Conv/Gemm/MatMul/Gather takes. Else the constant's own name."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    by_node: dict[str, str] = {}
    for node in graph.node:
        port = {"Conv": 1, "Gemm": 1, "MatMul": 1, "Gather": 0}.get(node.op_type)
        if port is None or len(node.input) <= port or node.input[port] not in initializers:
            continue
        for key in (node.name, *node.output):
            if key:
                by_node[key] = node.input[port]

    def onnx_name(op: str) -> str | None:
        while op:  # "/MatMulAddFusion/WithoutBiases" is ONNX node "/MatMulAddFusion"
            if op in by_node:
                return by_node[op]
            op = op.rpartition("/")[0]
        return None

    return {op: onnx_name(op) or const.get_friendly_name() for op, const in sources.items()}


def compressed_weights(model: Any, names: dict[str, str]) -> dict[str, dict[str, Any]]:
    """weight name -> {type, bits, numel, extra_bits} of each Convolution/MatMul/Gather weight
    of an NNCF-compressed model, named as in the fp32 model (`names`: op name -> its weight's
    name there): its element type and, for integer weights, the bits its scales and zero
    points take as stored (float weights: their own bits, nothing extra)."""
    from qbench.methods._openvino_ir import weight_sources

    found: dict[str, dict[str, Any]] = {}
    for op, const in weight_sources(model, gather=True).items():
        if const.get_type_name() != "Constant":
            continue
        kind = const.get_element_type().get_type_name()
        bits = _TYPE_BITS.get(kind, 32)
        extra = _decompression_bits(const) if bits < 16 else 0
        name = names.get(op, const.get_friendly_name())
        found[name] = {"type": kind, "bits": bits, "numel": _numel(const), "extra_bits": extra}
    return found


def _decompression_bits(const: Any) -> int:
    """Bits of the scales and zero points on the weight's way to its compute op."""
    extra = 0
    node = const
    for _ in range(6):
        users = [t.get_node() for t in node.output(0).get_target_inputs()]
        if len(users) != 1:
            break
        node = users[0]
        kind = node.get_type_name()
        if kind in ("Subtract", "Multiply"):
            other = node.input_value(1).get_node()
            while other.get_type_name() == "Convert":
                other = other.input_value(0).get_node()
            if other.get_type_name() == "Constant":
                kind = other.get_element_type().get_type_name()
                extra += _numel(other) * _TYPE_BITS.get(kind, 32)
        elif kind not in ("Convert", "Reshape"):
            break
    return extra


def _numel(const: Any) -> int:
    import math

    return int(math.prod(int(d) for d in const.get_output_partial_shape(0).to_shape()))


def _compressed_bits(taken: dict[str, dict[str, Any]]) -> Any:
    """weight_bits(name, layer) for packed_bytes: a torch layer `features.0` is ONNX/OpenVINO
    weight `features.0.weight`; layers NNCF left float count as float32 (None)."""

    def bits(name: str, _layer: Any) -> int | None:
        info = taken.get(name) or taken.get(f"{name}.weight")
        if info is None:
            return None
        return int(info["numel"] * info["bits"] + info["extra_bits"])

    return bits
