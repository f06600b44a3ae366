"""PyTorch eager on the CPU: fp32 modules, and int8 through torch's x86 quantized engine.

Artifacts are read with torch's weights-only unpickler: an artifact is a dict of plain values
and a state dict (tensors, quantized tensors, dtypes, qschemes: all in torch's default
weights-only set), so a file that would construct anything else, e.g. call os.system while it
is unpickled, is refused (UnsafeArtifactError) before any of it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from qbench.backends.base import Backend, Session, first_output, torch_args
from qbench.inputs import Inputs, InputSpec
from qbench.params import Params
from qbench.plugins import backends, methods, models

# What every artifact holds (qbench.methods.base.save_torch_artifact).
ARTIFACT_KEYS = ("model", "model_params", "method", "method_params", "state_dict")


class UnsafeArtifactError(ValueError):
    """A torch artifact that is not plain data (a pickle that would construct other objects or
    run code) or not a qbench artifact at all: refused, nothing of it was run. str(): one line."""


def weights_only_reason(exc: Exception) -> str:
    """The line of torch's multi-paragraph weights-only error that says what was refused
    ("Trying to load unsupported GLOBAL posix.system ...")."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Re-running")
    for line in str(exc).splitlines():
        text = line.rpartition("WeightsUnpickler error:")[2].strip()
        if text and not text.startswith(boilerplate) and not text.startswith("Please file"):
            return text
    return type(exc).__name__


def load_artifact(artifact: Path) -> dict[str, Any]:
    """A torch artifact's dict, read weights-only (no pickled code runs), on the CPU."""
    import pickle

    import torch

    try:
        saved = torch.load(artifact, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise UnsafeArtifactError(
            f"torch artifact {artifact} refused: it holds more than tensors and plain values "
            f"({weights_only_reason(exc)}); delete it so it is rebuilt"
        ) from exc
    if not isinstance(saved, dict):
        raise UnsafeArtifactError(
            f"torch artifact {artifact} is not a qbench artifact (holds a {type(saved).__name__})"
        )
    missing = [k for k in ARTIFACT_KEYS if k not in saved]
    if missing:
        raise UnsafeArtifactError(
            f"torch artifact {artifact} is not a qbench artifact (no {', '.join(missing)})"
        )
    return saved


class TorchParams(Params):
    channels_last: bool = Field(default=False, description="NHWC memory format for fp32")


def _is_quantized_compute(sub: Any) -> bool:
    cls = type(sub)
    # Quantized Linear holds a LinearPackedParams child: a container, not a second layer.
    return (
        ".quantized" in cls.__module__
        and cls.__name__.startswith(("Conv", "Linear"))
        and not cls.__name__.endswith("PackedParams")
    )


def count_torch_compute(module: Any) -> tuple[int, int]:
    """(quantized conv/linear modules, all conv/linear modules) of a module tree."""
    import torch

    quantized = compute = 0
    for sub in module.modules():
        if _is_quantized_compute(sub):
            quantized += 1
            compute += 1
        elif isinstance(sub, torch.nn.Conv2d | torch.nn.Linear):
            compute += 1
    return quantized, compute


class TorchSession(Session):
    def __init__(self, module: Any, channels_last: bool) -> None:
        import torch

        self.module = module
        self.channels_last = channels_last
        # fp16/bf16 modules take inputs of their own type; quantized ones take float32.
        self.dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()),
                          torch.float32)  # fmt: skip

    def runner(self, x: Inputs) -> Callable[[], Any]:
        import torch

        module, args = self.module, torch_args(x, self.dtype, self.channels_last)

        def run() -> Any:
            with torch.inference_mode():
                return module(*args)

        return run

    def predict(self, x: Inputs) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = first_output(self.module(*torch_args(x, self.dtype, self.channels_last)))
            return out.float().numpy()

    def inspect(self) -> dict[str, Any]:
        quantized, compute = count_torch_compute(self.module)
        return {"quantized_nodes": quantized, "compute_nodes": compute}


def example_args(saved: dict[str, Any]) -> Any:
    """A batch-1 example of a saved torch artifact's inputs (what rebuild_torch traces): one
    tensor for a one-input model, a tuple for several."""
    import torch

    specs = [InputSpec.from_json(s) for s in saved.get("inputs") or []]
    if not specs:
        return torch.zeros((1, *saved["input_shape"]))
    tensors = tuple(
        torch.zeros((1, *(d or 1 for d in s.shape)), dtype=getattr(torch, s.dtype)) for s in specs
    )
    return tensors[0] if len(tensors) == 1 else tensors


@backends.register
class TorchEagerBackend(Backend):
    name = "torch"
    description = "PyTorch eager, CPU (fp32; int8 via the x86 quantized engine)"
    Params = TorchParams
    loads = ("torch",)
    requires = ("torch",)

    def version(self) -> str:
        import torch

        return torch.__version__

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        import torch

        assert isinstance(params, TorchParams)
        torch.set_num_threads(threads)
        saved = load_artifact(artifact)
        source = models.get(saved["model"])()
        module = source.architecture(source.Params(**saved["model_params"]))
        method = methods.get(saved["method"])()
        module = method.rebuild_torch(module, example_args(saved),
                                      method.Params(**saved["method_params"]))  # fmt: skip
        module.load_state_dict(saved["state_dict"])
        module.eval()
        quantized = any(_is_quantized_compute(m) for m in module.modules())
        channels_last = params.channels_last and not quantized
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        return TorchSession(module, channels_last)
