"""Post-training static int8: weights and activations in int8, scales from calibration.

ONNX format: ONNX Runtime's `quantize_static` (QDQ by default: uint8 activations, int8
per-channel symmetric weights — the U8S8 form that ORT fuses into VNNI kernels on x86).
Torch format: torch.ao FX graph mode with the `x86` engine, min/max calibrated activations.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from qbench.methods.base import MakeContext, Method, packed_bytes, save_torch_artifact
from qbench.methods.packing import int8_weight_bits
from qbench.params import Params
from qbench.plugins import methods


class StaticInt8Params(Params):
    calibrator: Literal["minmax", "entropy", "percentile"] = Field(
        default="minmax", description="how activation ranges are chosen from calibration data"
    )
    percentile: float = Field(
        default=99.999, gt=50, le=100, description="percentile kept, with calibrator=percentile"
    )
    per_channel: bool = Field(default=True, description="one weight scale per output channel")
    activations: Literal["uint8", "int8"] = Field(
        default="uint8", description="activation type (uint8 is the fast U8S8 form on x86)"
    )
    quant_format: Literal["qdq", "qoperator"] = Field(
        default="qdq", description="ONNX: QuantizeLinear/DequantizeLinear pairs or QLinear ops"
    )
    reduce_range: bool = Field(
        default=False,
        description="ONNX: 7-bit weights, which avoids int16 saturation of u8s8 kernels on x86 "
        "without VNNI (torch's x86 path always reduces the activation range)",
    )


class _CalibrationReader:
    """Feeds calibration inputs to ORT one at a time (the CalibrationDataReader protocol)."""

    def __init__(self, inputs: np.ndarray, input_name: str) -> None:
        self._items = iter([{input_name: inputs[i : i + 1]} for i in range(len(inputs))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some calibrators
        pass


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


@methods.register
class StaticInt8(Method):
    name = "static_int8"
    description = "post-training static int8 (ORT quantize_static QDQ; torch FX x86 engine)"
    Params = StaticInt8Params
    produces = ("onnx", "torch")
    uses_calibration = True
    version = 2  # 2: torch path calibrates activations with reduce_range=True

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        assert isinstance(params, StaticInt8Params)
        if fmt == "torch":
            return {
                "bits_w": 8,
                "bits_a": 7,
                "granularity": "per_channel",
                "calibrator": "minmax",
                "symmetric_weights": True,
                "act_dtype": "uint8",
                "weight_dtype": "int8",
                "notes": ["torch x86 engine: activations use a 7-bit range (reduce_range)"],
            }
        return {
            "bits_w": 7 if params.reduce_range else 8,
            "bits_a": 8,
            "granularity": "per_channel" if params.per_channel else "per_tensor",
            "calibrator": params.calibrator,
            "symmetric_weights": True,
            "act_dtype": params.activations,
            "weight_dtype": "int8",
        }

    def unsupported(self, fmt: str, params: Params, source: Any) -> str | None:
        assert isinstance(params, StaticInt8Params)
        if fmt == "torch":
            if source.format != "torch":
                return f"model {source.name} is an ONNX file; it has no torch module"
            if params.calibrator != "minmax" or params.activations != "uint8":
                return (
                    "torch x86 engine path supports calibrator=minmax with uint8 activations only"
                )
            if not params.per_channel or params.reduce_range or params.quant_format != "qdq":
                return (
                    "torch x86 engine path takes no per_channel, reduce_range or "
                    "quant_format settings (per-channel weights, 7-bit activation range)"
                )
        return None

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        assert isinstance(params, StaticInt8Params) and ctx.calib is not None
        if fmt == "onnx":
            self._make_onnx(params, ctx, out)
        else:
            self._make_torch(params, ctx, out)
        per_channel = params.per_channel or fmt == "torch"
        return {"packed_bytes": packed_bytes(ctx, int8_weight_bits(8, per_channel))}

    def _make_onnx(self, params: StaticInt8Params, ctx: MakeContext, out: Path) -> None:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        from qbench.methods.export import INPUT_NAME

        calibrators = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }
        extra: dict[str, Any] = {}
        if params.calibrator == "percentile":
            extra["CalibPercentile"] = params.percentile
        logging.getLogger("root").setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(ctx.fp32_onnx()),
                str(out),
                _CalibrationReader(ctx.calib, INPUT_NAME),
                quant_format=QuantFormat.QDQ
                if params.quant_format == "qdq"
                else QuantFormat.QOperator,
                per_channel=params.per_channel,
                activation_type=QuantType.QUInt8
                if params.activations == "uint8"
                else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                reduce_range=params.reduce_range,
                calibrate_method=calibrators[params.calibrator],
                extra_options=extra,
            )

    def _make_torch(self, params: StaticInt8Params, ctx: MakeContext, out: Path) -> None:
        import torch
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = "x86"
        example = (torch.as_tensor(ctx.calib[:1]),)
        prepared = prepare_fx(ctx.model.module.eval(), _torch_qconfig_mapping(), example)
        with torch.no_grad():
            for start in range(0, len(ctx.calib), 16):
                prepared(torch.as_tensor(ctx.calib[start : start + 16]))
        quantized = convert_fx(prepared)
        save_torch_artifact(out, ctx, self.name, params, quantized.state_dict())

    def rebuild_torch(self, module: Any, example: Any, params: Params) -> Any:
        import torch
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = "x86"
        return convert_fx(prepare_fx(module.eval(), _torch_qconfig_mapping(), (example,)))
