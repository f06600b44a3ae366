"""Post-training static int8: weights and activations in int8, scales from calibration.

ONNX format: ONNX Runtime's `quantize_static` (QDQ by default: uint8 activations, int8
per-channel symmetric weights — the U8S8 form that ORT fuses into VNNI kernels on x86), with
activation ranges from qbench.methods._calibration (min-max, percentile, entropy, mse) handed to
it as a calibration cache; 16-bit activations (QDQ only) as an option. Weight scales per tensor,
per output channel, or per group of `group_size` weights of an output channel: ORT's QDQ model
rewritten with opset-21 blocked DequantizeLinear (qbench.methods._blocked_qdq), which ORT runs
as float Conv/Gemm on dequantized weights (it has no blocked int8 kernel), hence "simulated".
Torch format (`torch_flow`): by default torchao's PT2E flow (qbench.methods._pt2e): the module
exported with torch.export, quantized by X86InductorQuantizer (uint8 asymmetric activations on
the full 8-bit grid from HistogramObserver ranges, int8 symmetric per-channel weights), saved as
an ExportedProgram inside the artifact and compiled by inductor, which lowers it to oneDNN int8
kernels. `torch_flow: fx` keeps the legacy torch.ao FX graph mode path with the `x86` engine
(min/max calibrated activations on a 7-bit range; deprecated in torch, kept while it imports).
LiteRT (tflite): ai-edge-quantizer's full-integer recipes on the fp32 conversion (int8
symmetric per-channel weights; int8 asymmetric or int16 symmetric activations; integer model
I/O), activation ranges from a plain min/max over the calibration inputs or, with another
`calibrator`, chosen from histograms of the fp32 .tflite's tensors by the same calibrators
(qbench.methods._litert_quant.calibrated_ranges). LiteRT's 8-bit activations are signed: the
default uint8 is built as int8 (the same asymmetric grid, zero point shifted by 128). Two
LiteRT-only passes raise the int8 model's fidelity without changing its graph or kernels:
`equalize` rescales ReLU/ReLU6 conv pairs of the float model before calibration so that small
channels get a usable share of their tensor's int8 range (qbench.methods._tflite_equalize), and
`rounding: gptq` re-rounds the int8 weights on the quantizer's scales against the calibration
inputs (qbench.methods._litert_quant.gptq_weights).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from qbench.methods._blocked_qdq import grouped_int8_weight_bits
from qbench.methods.base import (
    MakeContext,
    Method,
    fp32_tflite,
    packed_bytes,
    save_torch_artifact,
)
from qbench.methods.packing import int8_weight_bits
from qbench.params import Params
from qbench.plugins import methods
from qbench.quant.saturation import resolve_auto


class StaticInt8Params(Params):
    calibrator: Literal["minmax", "entropy", "percentile", "mse"] = Field(
        default="minmax",
        description="how activation ranges are chosen from calibration data: min-max; entropy "
        "(TensorRT's KL divergence); percentile; mse (the clipping range with the least mean "
        "squared quantization error of each tensor at the activation bit width). LiteRT: "
        "the same calibrators on the fp32 .tflite's tensors. The model outputs' range is "
        "then widened (output_range_scale)",
    )
    percentile: float = Field(
        default=99.999,
        gt=50,
        le=100,
        description="percentile of activation magnitudes kept, with calibrator=percentile; "
        "outliers are clipped only where they are fewer than (100 - percentile)% of the values",
    )
    histogram_bins: int = Field(
        default=2048,
        ge=256,
        le=65536,
        description="histogram bins of the percentile, entropy and mse calibrators",
    )
    entropy_quantized_bins: int = Field(
        default=128,
        ge=16,
        description="entropy: quantized bins the histogram is compared with over [-t, t] "
        "(TensorRT's 128); fewer than histogram_bins",
    )
    per_channel: bool = Field(
        default=True,
        description="one weight scale per output channel (False: one per tensor); with "
        "group_size, groups lie within output channels and per_channel must stay True",
    )
    group_size: int | None = Field(
        default=None,
        ge=1,
        description="ONNX QDQ: one symmetric int8 weight scale per group of this many "
        "consecutive weights of an output channel (its input channels × kernel positions, "
        "flattened; the last group may be shorter), as opset-21 blocked DequantizeLinear. "
        "ORT has no blocked int8 Conv/Gemm kernel: weights are dequantized to float, "
        "activations keep their Q/DQ (execution 'simulated'). None: per_channel decides",
    )
    activations: Literal["uint8", "int8", "uint16", "int16"] = Field(
        default="uint8",
        description="activation type (uint8 is the fast U8S8 form on x86; 16-bit types are QDQ "
        "only and run as float kernels between Q/DQ pairs on ORT's CPU)",
    )
    activation_symmetric: bool = Field(
        default=False,
        description="ONNX: activation ranges symmetric around zero (ORT's ActivationSymmetric; "
        "zero point 0 for int8/int16, 128 / 32768 for uint8 / uint16)",
    )
    quant_format: Literal["qdq", "qoperator"] = Field(
        default="qdq", description="ONNX: QuantizeLinear/DequantizeLinear pairs or QLinear ops"
    )
    reduce_range: bool | Literal["auto"] = Field(
        default="auto",
        description="ONNX: 7-bit weights, which avoids the int16 saturation of u8s8 kernels on "
        "x86 CPUs without VNNI/AMX; auto: 7-bit exactly where the CPU that prepares the cell "
        "(the device) saturates (qbench.quant.saturation), noted in the row; LiteRT and torch "
        "paths take auto only (torch's x86 path always reduces the activation range)",
    )
    equalize: bool = Field(
        default=False,
        description="LiteRT: cross-layer equalization (Nagel et al. 2019) of the fp32 .tflite "
        "before calibration: output channels of a conv with a fused ReLU/ReLU6 whose range is "
        "small on the calibration inputs are scaled up and the next conv's weights for them "
        "scaled down, so one per-tensor int8 step suits all channels; the float model computes "
        "the same (ReLU6 channels stay below equalize_headroom x 6 on the calibration inputs)",
    )
    equalize_headroom: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="equalize: each channel is lifted towards this fraction of its tensor's "
        "largest channel (and of 6 under a ReLU6): room left for inputs brighter than the "
        "calibration set's",
    )
    equalize_max_scale: float = Field(
        default=16.0,
        ge=1,
        description="equalize: the largest factor a channel is scaled by",
    )
    rounding: Literal["nearest", "gptq"] = Field(
        default="nearest",
        description="LiteRT: nearest rounds each int8 weight to its nearest level; gptq "
        "(Frantar et al. 2022) chooses each weight's integer on the same per-channel scales to "
        "minimise the layer's output error on the calibration inputs",
    )

    output_range_scale: float = Field(
        default=2.0,
        ge=1,
        le=16,
        description="the model outputs' calibrated range (as the calibrator chose it) is "
        "multiplied by this around zero: an input the model is surer of than of any "
        "calibration input would otherwise clip its top scores to one value, and top-1 would "
        "pick among ties (MobileNetV2's largest logit is 19.96 over 64 calibration crops, "
        "29.8 on an ImageNet photo). 1: the calibrated range. ONNX and LiteRT; torch's x86 "
        "path quantizes its outputs on a 7-bit grid (reduce_range) in a quint8 tensor, whose "
        "free upper codes already hold values up to the range's width past its maximum",
    )

    torch_flow: Literal["pt2e", "fx"] = Field(
        default="pt2e",
        description="torch only: pt2e = torchao's PT2E flow (torch.export, X86InductorQuantizer "
        "with its default config, convert_pt2e), run compiled by inductor (oneDNN int8 "
        "kernels); fx = legacy torch.ao FX graph mode with the x86 engine (deprecated in "
        "torch, kept while torch.ao.quantization.quantize_fx imports), run eagerly",
    )

    omitted_at_default: ClassVar[dict[str, Any]] = {
        # torch_flow: the ONNX and LiteRT artifacts and their rows' parameters do not change
        # (the torch artifact does: version 6)
        "torch_flow": "pt2e",
        "equalize": False,
        "equalize_headroom": 0.5,
        "equalize_max_scale": 16.0,
        "rounding": "nearest",
    }


# Settings only the ONNX path (ONNX Runtime's quantizer) knows; torch's x86 engine path takes
# its defaults only.
_ONNX_ONLY = (
    "calibrator",
    "histogram_bins",
    "entropy_quantized_bins",
    "activations",
    "activation_symmetric",
    "per_channel",
    "group_size",
    "reduce_range",
    "quant_format",
)
# Settings only the LiteRT path (qbench's own passes around ai-edge-quantizer) knows.
_LITERT_ONLY = ("equalize", "equalize_headroom", "equalize_max_scale", "rounding")
# Settings only the torch path knows.
_TORCH_ONLY = ("torch_flow",)
FX_LEGACY_NOTE = "legacy torch.ao FX path (deprecated)"


def _fx_unavailable() -> str | None:
    """Why the legacy FX path cannot be built here, or None."""
    try:
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx  # noqa: F401
    except Exception as exc:  # ImportError, or anything a removed module raises
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (f"torch_flow=fx: torch.ao.quantization.quantize_fx no longer imports ({line}); "
                "use torch_flow=pt2e")  # fmt: skip
    return None


def _changed(params: StaticInt8Params, names: tuple[str, ...]) -> list[str]:
    defaults = StaticInt8Params()
    return [k for k in names if getattr(params, k) != getattr(defaults, k)]


def _torch_qconfig_mapping() -> Any:
    import torch
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import MinMaxObserver

    base = get_default_qconfig_mapping("x86")
    default = base.global_qconfig
    # torch's x86 weight observer (per-channel symmetric) and min/max activations with torch's
    # x86 default reduce_range=True: the full uint8 range saturates fbgemm's int16 accumulation
    # on CPUs without VNNI (MobileNetV2's outputs then agree with fp32 on no input at all).
    activation = MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True)
    return base.set_global(QConfig(activation=activation, weight=default.weight))


def _relu6_ranges(prepared: Any) -> int:
    """Quantize the input of each ReLU6 on [0, 6]. torch.ao's x86 engine fuses Conv-BN-ReLU but
    not ReLU6: the conv's output is observed before the clamp, so MobileNetV2's first depthwise
    conv spent the int8 grid on [-8.7, 16.1] where only [0, 6] survives the ReLU6 (output SQNR
    1.3 dB, top-1 agreement 0.42). Where that observer watches nothing but the ReLU6's input,
    its range is clamped to [0, 6]: quantizing on that range clamps as the ReLU6 does, so the
    quantized model computes the same function with 4x finer steps. Returns the observers
    changed."""
    import torch
    from torch.ao.quantization.observer import MinMaxObserver

    class ReLU6InputObserver(MinMaxObserver):
        @torch.jit.export
        def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
            if bool(self.min_val > self.max_val):  # nothing observed (a rebuild): defaults
                return super().calculate_qparams()
            return self._calculate_qparams(
                torch.clamp(self.min_val, 0.0, 6.0), torch.clamp(self.max_val, 0.0, 6.0)
            )

    modules = dict(prepared.named_modules())
    changed = 0
    for node in prepared.graph.nodes:
        if node.op == "call_module":
            relu6 = isinstance(modules.get(node.target), torch.nn.ReLU6)
        else:
            relu6 = node.op == "call_function" and node.target is torch.nn.functional.relu6
        source = node.args[0] if relu6 and node.args else None
        if not isinstance(source, torch.fx.Node) or len(source.users) != 1:
            continue
        # the observer before the ReLU6 and the one after it (the same module: ReLU6 shares
        # its input's quantization)
        for observer_node in (source, *node.users):
            if observer_node.op != "call_module" or "activation_post_process" not in str(
                observer_node.target
            ):
                continue
            observer = getattr(prepared, str(observer_node.target))
            if type(observer) is MinMaxObserver:
                observer.__class__ = ReLU6InputObserver
                changed += 1
    return changed


@methods.register
class StaticInt8(Method):
    name = "static_int8"
    description = (
        "post-training static int8 (ORT quantize_static QDQ; torch: torchao PT2E + inductor, "
        "or the legacy FX x86 engine)"
    )
    Params = StaticInt8Params
    produces = ("onnx", "torch", "tflite")
    uses_calibration = True
    calibrates_exported_graph = ("onnx", "torch")  # torch: the PT2E program
    # 2: torch path calibrates activations with reduce_range=True. 3: ONNX ranges come from
    # qbench's own calibration run (entropy with 2048 histogram bins, mse) through a cache.
    # 4: torch path quantizes ReLU6 inputs on [0, 6] (_relu6_ranges). 5: ONNX and LiteRT model
    # outputs' ranges widened by output_range_scale; LiteRT's calibrators choose the outputs'
    # ranges too (they were kept at min-max, which outliers stretch). 6: torch artifacts from
    # torchao's PT2E flow by default (torch_flow; fx builds version 5's torch artifact).
    version = 7

    def for_cpu(self, fmt: str, params: Params, cpu_flags: list[str]) -> tuple[Params, list[str]]:
        assert isinstance(params, StaticInt8Params)
        if params.reduce_range != "auto":
            return params, []
        # LiteRT (XNNPACK widens to 32 bits) and torch's legacy FX path (always 7-bit
        # activations) need no decision
        if fmt == "tflite" or (fmt == "torch" and params.torch_flow == "fx"):
            return params.model_copy(update={"reduce_range": False}), []
        seven, why = resolve_auto(params.reduce_range, cpu_flags)
        if not seven:
            return params.model_copy(update={"reduce_range": False}), []
        if fmt == "torch":  # PT2E: X86InductorQuantizer's own reduce_range, on activations
            note = (f"reduce_range auto: activations on a 7-bit grid (0..127), because {why} "
                    "(X86InductorQuantizer's reduce_range)")  # fmt: skip
        else:
            note = (f"reduce_range auto: 7-bit weights, because {why} (ORT's and OpenVINO's "
                    "documented workaround; 8-bit weights are computed wrongly here)")  # fmt: skip
        return params.model_copy(update={"reduce_range": True}), [note]

    def execution(self, fmt: str, params: Params) -> str:
        assert isinstance(params, StaticInt8Params)
        # ORT's CPU has no 16-bit QLinear kernels and no blocked (per-group) int8 Conv/Gemm:
        # both run float Conv/Gemm between Q/DQ pairs.
        if fmt == "onnx" and (params.activations.endswith("16") or params.group_size):
            return "simulated"
        return "native"

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        assert isinstance(params, StaticInt8Params)
        if fmt == "tflite":
            return _describe_tflite(params)
        if fmt == "torch":
            return _describe_torch(params)
        row: dict[str, Any] = {
            # auto: decided per device in prepare (for_cpu), which fills the row's bits_w
            "bits_w": {True: 7, False: 8}.get(params.reduce_range),  # type: ignore[arg-type]
            "bits_a": 16 if params.activations.endswith("16") else 8,
            "granularity": "per_channel" if params.per_channel else "per_tensor",
            "calibrator": params.calibrator,
            "symmetric_weights": True,
            "act_dtype": params.activations,
            "weight_dtype": "int8",
            "weight_scheme": "uniform",
        }
        if params.calibrator == "percentile":
            row["percentile"] = params.percentile
        notes = []
        if params.group_size:
            row["granularity"] = "per_group"
            row["group_size"] = params.group_size
            notes.append(
                "per-group weight scales: ORT has no blocked int8 Conv/Gemm kernel; weights are "
                "dequantized to float (at every run), activations keep their Q/DQ"
            )
        if params.activations.endswith("16"):
            notes.append(
                "16-bit activations: ORT's CPU runs float Conv/Gemm between 16-bit Q/DQ pairs"
            )
        if notes:
            row["notes"] = notes
        return row

    def unsupported(self, fmt: str, params: Params, source: Any) -> str | None:
        assert isinstance(params, StaticInt8Params)
        if fmt == "tflite":
            torch_only = _changed(params, _TORCH_ONLY)
            return (
                super().unsupported(fmt, params, source)
                or (", ".join(torch_only) + " is a torch setting; the tflite path takes the "
                    "default" if torch_only else None)
                or _tflite_unsupported(params)
            )  # fmt: skip
        reason = super().unsupported(fmt, params, source)
        if reason:
            return reason
        litert_only = _changed(params, _LITERT_ONLY)
        if litert_only:
            return (", ".join(litert_only) + " is built for LiteRT (tflite) only (passes on "
                    f"the .tflite flatbuffer); the {fmt} path takes the default")  # fmt: skip
        if fmt == "torch":
            return _torch_unsupported(params)
        torch_only = _changed(params, _TORCH_ONLY)
        if torch_only:
            return (", ".join(torch_only) + f" is a torch setting; the {fmt} path takes the "
                    "default")  # fmt: skip
        if params.group_size and params.quant_format != "qdq":
            return (
                "per-group weight scales (group_size) need QDQ format: they are opset-21 "
                "blocked DequantizeLinear nodes, and QOperator's QLinearConv/QGemm take one "
                "weight scale per tensor or output channel only"
            )
        if params.group_size and not params.per_channel:
            return (
                "group_size splits each output channel's weights into groups; it needs "
                "per_channel=True (per_channel=False asks for one weight scale per tensor)"
            )
        if params.activations.endswith("16") and params.quant_format != "qdq":
            return "ONNX Runtime quantizes 16-bit activations in QDQ format only"
        if params.entropy_quantized_bins >= params.histogram_bins:
            return "entropy_quantized_bins must be fewer than histogram_bins"
        return None

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        assert isinstance(params, StaticInt8Params)
        meta: dict[str, Any] = {}
        if fmt == "onnx":
            meta["artifact_notes"] = self._make_onnx(params, ctx, out)
        elif fmt == "tflite":
            meta["artifact_notes"] = _make_tflite(params, ctx, out)
        elif params.torch_flow == "pt2e":
            from qbench.methods._pt2e import build_pt2e_artifact

            meta["artifact_notes"] = build_pt2e_artifact(ctx, self.name, params, out)
        else:
            self._make_torch(params, ctx, out)
            meta["artifact_notes"] = [FX_LEGACY_NOTE]
        per_channel = params.per_channel or fmt in ("torch", "tflite")
        if fmt == "onnx" and params.group_size:
            weight_bits = grouped_int8_weight_bits(8, params.group_size)
        else:
            weight_bits = int8_weight_bits(8, per_channel)
        meta["packed_bytes"] = packed_bytes(ctx, weight_bits)
        return meta

    def _make_onnx(self, params: StaticInt8Params, ctx: MakeContext, out: Path) -> list[str]:
        """Calibrate (qbench.methods._calibration), then quantize_static with those ranges."""
        import tempfile

        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        from qbench.methods._calibration import (
            QUANT_TYPES,
            CalibrationSettings,
            calibrate,
            onnx_output_names,
            widen_outputs,
            write_cache,
        )

        settings = CalibrationSettings(
            calibrator=params.calibrator,
            percentile=params.percentile,
            histogram_bins=params.histogram_bins,
            entropy_quantized_bins=params.entropy_quantized_bins,
            activations=params.activations,
            symmetric=params.activation_symmetric,
        )
        model = ctx.fp32_onnx()
        # keyed by the model's input names, which the fp32 graph's are (an ONNX file's own:
        # data_0, gpu_0/data_0; an export's: the declared ones)
        result = calibrate(model, ctx.calibration, "", settings)
        result = widen_outputs(result, onnx_output_names(model), params.output_range_scale)
        logging.getLogger("root").setLevel(logging.ERROR)
        notes = []
        with (
            tempfile.TemporaryDirectory(prefix="qbench-static-") as tmp,
            contextlib.redirect_stdout(io.StringIO()),
        ):
            cache = Path(tmp) / "calibration.json"
            write_cache(result.ranges, cache)
            # With group_size ORT writes per-channel weights first; they are re-blocked below.
            qdq = Path(tmp) / "qdq.onnx" if params.group_size else out
            quantize_static(
                str(model),
                str(qdq),
                None,
                quant_format=QuantFormat.QDQ
                if params.quant_format == "qdq"
                else QuantFormat.QOperator,
                per_channel=params.per_channel,
                activation_type=QUANT_TYPES[params.activations],
                weight_type=QuantType.QInt8,
                # prepare decided `auto` (for_cpu); a direct make() call builds 8-bit
                reduce_range=params.reduce_range is True,
                calibrate_method=settings.cache_method,
                extra_options={"ActivationSymmetric": params.activation_symmetric},
                calibration_cache_path=cache,
            )
            if params.group_size:
                notes.append(self._block(params, qdq, model, out))
        if params.calibrator != "minmax":
            notes.insert(0, f"{params.calibrator} calibration: {result.summary()}")
        if params.output_range_scale != 1:
            notes.append(_widened_note(params))
        return notes

    @staticmethod
    def _block(params: StaticInt8Params, qdq: Path, fp32: Path, out: Path) -> str:
        """ORT's per-channel QDQ model `qdq` with blocked int8 weights, written to `out`."""
        from qbench.methods._blocked_qdq import block_weights

        assert params.group_size is not None
        summary = block_weights(qdq, fp32, out, params.group_size, params.reduce_range is True)
        note = (
            f"per-group weights: {len(summary['blocked'])} Conv/Gemm/MatMul weights in groups "
            f"of {params.group_size} (opset-{summary['opset']} blocked DequantizeLinear)"
        )
        if summary["kept"]:
            note += "; left as ORT quantized them: " + ", ".join(summary["kept"])
        return note

    def _make_torch(self, params: StaticInt8Params, ctx: MakeContext, out: Path) -> None:
        import torch
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        from qbench.inputs import count, take

        torch.backends.quantized.engine = "x86"
        calib = ctx.calibration
        example = tuple(torch.as_tensor(v) for v in take(calib, 0, 1).values())
        prepared = prepare_fx(ctx.model.module.eval(), _torch_qconfig_mapping(), example)
        _relu6_ranges(prepared)
        with torch.no_grad():
            for start in range(0, count(calib), 16):
                prepared(*(torch.as_tensor(v) for v in take(calib, start, start + 16).values()))
        quantized = convert_fx(prepared)
        save_torch_artifact(out, ctx, self.name, params, quantized.state_dict())

    def rebuild_torch(self, module: Any, example: Any, params: Params) -> Any:
        """The FX module a legacy (torch_flow=fx) artifact's state dict loads into. A PT2E
        artifact has no state dict: its program is in the artifact's "exported"
        (qbench.methods._pt2e.load_exported), so it is refused here."""
        import torch

        assert isinstance(params, StaticInt8Params)
        if params.torch_flow != "fx":
            raise ValueError(
                "static_int8 torch_flow=pt2e artifacts hold an exported program (key "
                "'exported'), not a state dict: load it with qbench.methods._pt2e.load_exported, "
                "not rebuild_torch"
            )
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = "x86"
        example = example if isinstance(example, tuple) else (example,)
        prepared = prepare_fx(module.eval(), _torch_qconfig_mapping(), example)
        _relu6_ranges(prepared)
        return convert_fx(prepared)


def _describe_torch(params: StaticInt8Params) -> dict[str, Any]:
    if params.torch_flow == "fx":
        return {
            "bits_w": 8,
            "bits_a": 7,
            "granularity": "per_channel",
            "calibrator": "minmax",
            "symmetric_weights": True,
            "act_dtype": "uint8",
            "weight_dtype": "int8",
            "weight_scheme": "uniform",
            "notes": [
                "torch x86 engine: activations use a 7-bit range (reduce_range)",
                "a ReLU6's input is quantized on [0, 6] (torch fuses no conv with ReLU6)",
                FX_LEGACY_NOTE,
            ],
        }
    # torchao's get_default_x86_inductor_quantization_config(): reduce_range=False unless
    # decided for a CPU whose u8s8 kernels saturate (for_cpu: auto -> 7-bit activations)
    seven = params.reduce_range is True
    return {
        "bits_w": 8,
        "bits_a": {True: 7, False: 8}.get(params.reduce_range),  # type: ignore[arg-type]
        "granularity": "per_channel",
        "calibrator": "histogram",
        "symmetric_weights": True,
        "act_dtype": "uint8",
        "weight_dtype": "int8",
        "weight_scheme": "uniform",
        "notes": [
            "torchao PT2E (X86InductorQuantizer), compiled by inductor",
            "activations uint8 asymmetric per tensor on "
            + ("a 7-bit grid (reduce_range), " if seven else "the full 8-bit grid, ")
            + "ranges from torch's HistogramObserver (L2-error search over 2048 bins); weights "
            "int8 symmetric per output channel (min/max)",
        ],
    }


def _torch_unsupported(params: StaticInt8Params) -> str | None:
    fx = params.torch_flow == "fx"
    path = "torch x86 engine path (torch_flow=fx)" if fx else "torch PT2E path"
    if _changed(params, ("output_range_scale",)):
        if fx:
            return ("torch x86 engine path takes no output_range_scale: its outputs' 7-bit "
                    "grid in a quint8 tensor already leaves the range's width free above "
                    "its maximum")  # fmt: skip
        return ("torch PT2E path takes no output_range_scale: X86InductorQuantizer leaves the "
                "model's outputs in float")  # fmt: skip
    changed = _changed(params, _ONNX_ONLY)
    if not fx and params.reduce_range is True:  # PT2E takes it (7-bit activations)
        changed = [c for c in changed if c != "reduce_range"]
    if changed and fx:
        return (
            f"{path} supports calibrator=minmax with uint8 asymmetric activations, per-channel "
            "(not per-group) weights and QDQ only; it takes no " + ", ".join(changed) + " setting"
        )
    if changed:
        return (
            f"{path} builds X86InductorQuantizer's default only: uint8 asymmetric activations "
            "with HistogramObserver ranges (calibrator stays at its default, minmax), "
            "per-channel (not per-group) int8 weights, QDQ; it takes no "
            + ", ".join(changed)
            + " setting"
        )
    if fx:
        return _fx_unavailable()
    from qbench.methods._pt2e import pt2e_unavailable_at_plan

    reason = pt2e_unavailable_at_plan()
    return f"torch_flow=pt2e: {reason}; torch_flow=fx builds the legacy path" if reason else None


# --- LiteRT ----------------------------------------------------------------------------------


def _widened_note(params: StaticInt8Params) -> str:
    return (f"model output range widened x{params.output_range_scale:g} (output_range_scale): "
            "inputs surer than any calibration input keep their top scores apart")  # fmt: skip


def _tflite_activation_bits(params: StaticInt8Params) -> int:
    return 16 if params.activations == "int16" else 8


def _tflite_unsupported(params: StaticInt8Params) -> str | None:
    """What ai-edge-quantizer's static recipes (with qbench's calibration) cannot do."""
    reasons = []
    if params.calibrator == "entropy" and params.entropy_quantized_bins >= params.histogram_bins:
        reasons.append("entropy_quantized_bins must be fewer than histogram_bins")
    if not params.per_channel:
        reasons.append("LiteRT path quantizes weights per output channel only (per_channel=False)")
    if params.group_size:
        reasons.append("LiteRT's integer convolution kernels take no per-group weight scales "
                       "(group_size)")  # fmt: skip
    if params.activations == "uint16":
        reasons.append("LiteRT's 16-bit activations are int16 (symmetric); uint16 is not built")
    if params.activation_symmetric and _tflite_activation_bits(params) == 8:
        reasons.append("LiteRT's int8 activations are asymmetric (ai-edge-quantizer's static "
                       "recipe); activation_symmetric=True is not built")  # fmt: skip
    if params.quant_format != "qdq":
        reasons.append("quant_format=qoperator is an ONNX setting; the LiteRT path takes the "
                       "default only")  # fmt: skip
    if params.reduce_range is True:
        reasons.append("LiteRT path has no reduce_range (7-bit weights)")
    return "; ".join(reasons) or None


def _describe_tflite(params: StaticInt8Params) -> dict[str, Any]:
    bits_a = _tflite_activation_bits(params)
    notes = []
    if params.activations == "uint8":
        notes.append("LiteRT's 8-bit activations are signed: activations=uint8 is built as int8 "
                     "(the same asymmetric grid, zero point shifted by 128)")  # fmt: skip
    if bits_a == 16:
        notes.append("int16 activations (symmetric) x int8 weights run on LiteRT's builtin "
                     "int16x8 kernels; XNNPACK has none")  # fmt: skip
    row: dict[str, Any] = {
        "bits_w": 8,
        "bits_a": bits_a,
        "granularity": "per_channel",
        "calibrator": params.calibrator,
        "symmetric_weights": True,
        "act_dtype": "int16" if bits_a == 16 else "int8",
        "weight_dtype": "int8",
        "weight_scheme": "uniform",
    }
    if params.calibrator == "percentile":
        row["percentile"] = params.percentile
    if notes:
        row["notes"] = notes
    return row


def _make_tflite(params: StaticInt8Params, ctx: MakeContext, out: Path) -> list[str]:
    from qbench.methods._calibration import CalibrationSettings
    from qbench.methods._litert_quant import aeq_version, full_integer, io_note, rewrite_notes

    calib = ctx.one_input("LiteRT's full-integer path")
    bits_a = _tflite_activation_bits(params)
    settings = None
    if params.calibrator != "minmax":
        settings = CalibrationSettings(
            calibrator=params.calibrator,
            percentile=params.percentile,
            histogram_bins=params.histogram_bins,
            entropy_quantized_bins=params.entropy_quantized_bins,
            activations="int16" if bits_a == 16 else "int8",
            symmetric=bits_a == 16,
        )
    with tempfile.TemporaryDirectory(prefix="qbench-equalize-") as tmp:
        fp32 = fp32_tflite(ctx)
        equalized = None
        if params.equalize:
            from qbench.methods._tflite_equalize import equalize

            target = Path(tmp) / "equalized.tflite"
            equalized = equalize(fp32, target, calib, params.equalize_headroom,
                                 params.equalize_max_scale)  # fmt: skip
            fp32 = target  # calibration, quantization and GPTQ all start from it
        found = full_integer(fp32, out, calib, activation_bits=bits_a, calibration=settings,
                             gptq=params.rounding == "gptq",
                             output_range_scale=params.output_range_scale)  # fmt: skip
    recipe = "static_wi8_ai16" if bits_a == 16 else "static_wi8_ai8"
    kind = "int16 activations x int8 weights" if bits_a == 16 else "full int8"
    how = "min/max" if settings is None else params.calibrator
    notes = [
        f"LiteRT {kind} (ai-edge-quantizer {aeq_version()} {recipe}), {how} calibration on "
        f"{len(calib)} inputs; {io_note(out)}"
    ]
    notes += rewrite_notes(found)
    if params.output_range_scale != 1:
        notes.append(_widened_note(params))
    if equalized is not None:
        notes.append(f"before calibration, {equalized}")
    if "calibration" in found:
        notes.append(f"LiteRT calibration {found['calibration']}")
    if "gptq_weights" in found:
        notes.append(f"GPTQ rounding of all {found['gptq_weights']} int8 weight tensors on "
                     f"the quantizer's scales, Hessians from {len(calib)} calibration "
                     "inputs")  # fmt: skip
    return notes
