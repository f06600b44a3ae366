"""Quantization methods: turn an fp32 model into an artifact a backend loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from qbench.models.base import LoadedModel, ModelSource
from qbench.params import NoParams, Params


@dataclass
class MakeContext:
    """Everything a method may use to build its artifact."""

    model_name: str
    source: ModelSource
    model_params: Params
    model: LoadedModel
    input_shape: tuple[int, ...]  # one sample, CHW
    calib: np.ndarray | None  # calibration inputs (NCHW float32)
    fp32_onnx: Any  # callable () -> Path: the cached fp32 ONNX export of this model
    # callable () -> Path: the cached fp32 LiteRT (.tflite) conversion (torch-format models)
    fp32_tflite: Any = None


class Method:
    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    produces: ClassVar[tuple[str, ...]]  # artifact formats this method can build
    uses_calibration: ClassVar[bool] = False  # see needs_calibration
    # Part of every artifact's cache key: bump it when the artifact changes for the same inputs.
    version: ClassVar[int] = 1

    def needs_calibration(self, params: Params) -> bool:
        """Whether building with these params reads calibration inputs (the suite's
        calibration section then applies, and cells expand per outlier fraction)."""
        return self.uses_calibration

    def execution(self, fmt: str, params: Params) -> str:
        """'native' when the runtime runs integer/fp16 kernels, 'simulated' when float ones."""
        return "native"

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        """Typed row columns for these parameters (bits_w, bits_a, granularity, ...)."""
        return {}

    def unsupported(self, fmt: str, params: Params, source: ModelSource) -> str | None:
        """Why this method cannot build `fmt` for this model with these params, or None.
        Subclasses that add reasons call this first."""
        if fmt == "torch" and source.format != "torch":
            return f"model {source.name} is an ONNX file; it has no torch module"
        if fmt == "tflite" and source.format != "torch":
            return (
                f"model {source.name} is an ONNX file; LiteRT artifacts are converted from "
                "torch modules"
            )
        return None

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        """Write the artifact of format `fmt` to `out`; return row fields that describe it
        (packed_bytes, layer_bits_json, artifact_notes ...), cached beside the artifact."""
        raise NotImplementedError

    def rebuild_torch(self, module: Any, example: Any, params: Params) -> Any:
        """Turn a freshly built fp32 module into this method's structure so a saved state dict
        of format 'torch' loads into it. fp32 methods return the module unchanged."""
        return module


def fp32_tflite(ctx: MakeContext) -> Path:
    """The cached fp32 .tflite of the context's model (ctx.fp32_tflite must be set)."""
    if ctx.fp32_tflite is None:
        raise ValueError(
            f"model {ctx.model_name}: this context has no fp32 LiteRT conversion "
            "(MakeContext.fp32_tflite is unset)"
        )
    return Path(ctx.fp32_tflite())


def packed_bytes(ctx: MakeContext, weight_bits: Any) -> int:
    """Theoretical packed size of this model with `weight_bits(name, weight)` per layer."""
    from qbench.methods.packing import packed_bytes_onnx, packed_bytes_torch

    if ctx.model.module is not None:
        return packed_bytes_torch(ctx.model.module, weight_bits)
    return packed_bytes_onnx(ctx.model.onnx_path, weight_bits)


def save_torch_artifact(
    path: Path, ctx: MakeContext, method: str, params: Params, state_dict: dict[str, Any]
) -> None:
    """A torch artifact: the state dict plus what is needed to rebuild its module."""
    import torch

    torch.save(
        {
            "model": ctx.model_name,
            "model_params": ctx.model_params.model_dump(),
            "method": method,
            "method_params": params.model_dump(),
            "input_shape": list(ctx.input_shape),
            "state_dict": state_dict,
        },
        path,
    )
