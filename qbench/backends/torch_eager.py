"""PyTorch eager on the CPU: fp32 modules, and int8 through torch's x86 quantized engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from qbench.backends.base import Backend, Session
from qbench.params import Params
from qbench.plugins import backends, methods, models


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

    def _tensor(self, x: np.ndarray) -> Any:
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.dtype)
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    def runner(self, x: np.ndarray) -> Callable[[], Any]:
        import torch

        module, tensor = self.module, self._tensor(x)

        def run() -> Any:
            with torch.inference_mode():
                return module(tensor)

        return run

    def predict(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(self._tensor(x)).float().numpy()

    def inspect(self) -> dict[str, Any]:
        quantized, compute = count_torch_compute(self.module)
        return {"quantized_nodes": quantized, "compute_nodes": compute}


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
        saved = torch.load(artifact, weights_only=False, map_location="cpu")
        source = models.get(saved["model"])()
        module = source.architecture(source.Params(**saved["model_params"]))
        method = methods.get(saved["method"])()
        example = torch.zeros((1, *saved["input_shape"]))
        module = method.rebuild_torch(module, example, method.Params(**saved["method_params"]))
        module.load_state_dict(saved["state_dict"])
        module.eval()
        quantized = any(_is_quantized_compute(m) for m in module.modules())
        channels_last = params.channels_last and not quantized
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        return TorchSession(module, channels_last)
