"""PyTorch eager on an NVIDIA GPU (CUDA): fp32, fp16 and bf16 modules.

The artifact is rebuilt exactly as the CPU `torch` backend rebuilds it (its `open` is reused:
model architecture, the method's rebuild_torch, the saved state dict), then moved to the GPU.
fp16/bf16 artifacts keep their dtype (the method cast the module), so they run CUDA half /
bfloat16 kernels (tensor cores where the GPU has them). Modules of torch's x86 quantized engine
(static/dynamic int8 artifacts) have no CUDA kernels and are refused at open with that reason.
torchao weight-only int8/int4 on CUDA is not built yet.

Timing: the runner calls forward and then `torch.cuda.synchronize(device)`, so `perf_counter`
around it spans the device execution (qbench/measure/gpu.py; `cuda_event_times` cross-checks).
Input stays on the GPU: host->device copies are excluded from latency.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from qbench.backends.base import Backend, Session, first_output, torch_args
from qbench.backends.torch_eager import TorchEagerBackend, TorchParams, count_torch_compute
from qbench.inputs import Inputs
from qbench.measure.gpu import memory_notes, no_gpu_reason
from qbench.params import Params
from qbench.plugins import backends


class TorchCudaParams(Params):
    device_id: int = Field(default=0, ge=0, description="CUDA device index")
    channels_last: bool = Field(default=False, description="NHWC memory format")
    cudnn_benchmark: bool = Field(
        default=True, description="let cuDNN time its convolution algorithms (during warm-up)"
    )


def _torch_version() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def _torch_cuda_reason() -> str | None:
    """Why torch cannot use CUDA here, for a host with a GPU (imports torch once)."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA (a CPU-only wheel)"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable CUDA device"
    return None


def cuda_unavailable_reason() -> str | None:
    """Why torch on CUDA cannot run here, or None. Cheap without a GPU (no torch import)."""
    if find_spec("torch") is None:
        return "needs Python package torch (a CUDA build), not installed"
    no_gpu = no_gpu_reason()
    if no_gpu:
        version = _torch_version() or "?"
        if "+cpu" in version:
            return f"{no_gpu}; and torch {version} is a CPU-only build"
        return no_gpu
    return _torch_cuda_reason()


class TorchCudaSession(Session):
    def __init__(self, module: Any, params: TorchCudaParams) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda", params.device_id)
        self.params = params
        self.dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()),
                          torch.float32)  # fmt: skip
        module = module.to(self.device).eval().requires_grad_(False)
        if params.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module

    def _args(self, x: Inputs) -> list[Any]:
        return torch_args(x, self.dtype, self.params.channels_last, self.device)

    def runner(self, x: Inputs) -> Callable[[], Any]:
        # Parameters need no grad and the input has none: forward builds no autograd graph,
        # so no inference_mode context is entered inside the timed call.
        module, args = self.module, self._args(x)
        sync, device = self.torch.cuda.synchronize, self.device

        def run() -> Any:
            out = module(*args)
            sync(device)
            return out

        return run

    def predict(self, x: Inputs) -> np.ndarray:
        with self.torch.inference_mode():
            return first_output(self.module(*self._args(x))).float().cpu().numpy()

    def inspect(self) -> dict[str, Any]:
        torch = self.torch
        quantized, compute = count_torch_compute(self.module)
        allocator = {
            "peak allocated": torch.cuda.max_memory_allocated(self.device) / 2**20,
            "peak reserved": torch.cuda.max_memory_reserved(self.device) / 2**20,
        }
        name = torch.cuda.get_device_name(self.device)
        notes = [
            f"torch CUDA {torch.version.cuda} on {name}, {str(self.dtype).replace('torch.', '')}"
        ]
        notes += memory_notes(self.device.index or 0, allocator)
        notes.append("latency: forward + torch.cuda.synchronize(); input already on the GPU")
        return {"quantized_nodes": quantized, "compute_nodes": compute, "notes": notes}


@backends.register
class TorchCudaBackend(Backend):
    name = "torch_cuda"
    description = "PyTorch eager on an NVIDIA GPU (CUDA): fp32, fp16, bf16"
    Params = TorchCudaParams
    loads = ("torch",)
    requires = ("torch",)

    def unavailable(self) -> str | None:
        return cuda_unavailable_reason()

    def version(self) -> str:
        import torch

        return f"{torch.__version__} (CUDA {torch.version.cuda})"

    def refuses(
        self, method: str, method_params: Params, fmt: str, params: Params, cpu_flags: list[str]
    ) -> str | None:
        if method in ("static_int8", "dynamic_int8"):
            return (f"{method}'s torch artifact runs on torch's x86 quantized engine "
                    "(or inductor's CPU int8 kernels): no CUDA kernels")  # fmt: skip
        return None

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        import torch

        assert isinstance(params, TorchCudaParams)
        why = cuda_unavailable_reason()
        if why:
            raise RuntimeError(why)
        # The CPU backend's loader rebuilds the module (architecture, method, state dict).
        cpu = TorchEagerBackend().open(artifact, fmt, threads, TorchParams(channels_last=False))
        module = cpu.module  # type: ignore[attr-defined]
        if count_torch_compute(module)[0]:
            raise RuntimeError(
                "torch's x86 quantized-engine modules (int8 artifacts) have no CUDA kernels"
            )
        torch.backends.cudnn.benchmark = params.cudnn_benchmark
        return TorchCudaSession(module, params)
