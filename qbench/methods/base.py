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


class Method:
    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    produces: ClassVar[tuple[str, ...]]  # artifact formats this method can build
    uses_calibration: ClassVar[bool] = False
    # Part of every artifact's cache key: bump it when the artifact changes for the same inputs.
    version: ClassVar[int] = 1

    def execution(self, fmt: str, params: Params) -> str:
        """'native' when the runtime runs integer/fp16 kernels, 'simulated' when float ones."""
        return "native"

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        """Typed row columns for these parameters (bits_w, bits_a, granularity, ...)."""
        return {}

    def unsupported(self, fmt: str, params: Params, source: ModelSource) -> str | None:
        """Why this method cannot build `fmt` for this model with these params, or None."""
        return None

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> None:
        """Write the artifact of format `fmt` to `out`."""
        raise NotImplementedError

    def rebuild_torch(self, module: Any, example: Any, params: Params) -> Any:
        """Turn a freshly built fp32 module into this method's structure so a saved state dict
        of format 'torch' loads into it. fp32 methods return the module unchanged."""
        return module


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
