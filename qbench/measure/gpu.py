"""NVIDIA GPU helpers: is a GPU here, CUDA-event timing, and GPU memory from NVML.

Timing. `qbench.measure.latency.time_rounds` reads `perf_counter` around each call of a
session's runner. The GPU backends (onnxruntime_gpu, torch_cuda) make that call return only
when the GPU has finished: the runner launches the work and then waits on the device
(`torch.cuda.synchronize()`, or ONNX Runtime's end-of-Run stream synchronisation plus
`IOBinding.synchronize_outputs()`). The host clock around a synchronised call therefore spans
launch + device execution + the wait's return, which is the device time plus a few
microseconds of launch/wake-up overhead. `cuda_event_times` times the same call with
CUDA events recorded on the stream (device time only, no host overhead); the GPU tests compare
the two to bound that overhead.

Memory. `nvml_memory` reads the board's used/total memory and, where the driver reports it,
this process's own GPU memory (nvmlDeviceGetComputeRunningProcesses). The runtimes' own
allocator figures (torch.cuda.max_memory_allocated; ONNX Runtime's arena has no Python
query) are read by the backends themselves.

Power and energy come from the `nvml` power meter (qbench/power/nvml.py), not from here.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Device nodes of an NVIDIA GPU driver: discrete GPUs (/dev/nvidia0...) and Jetson's
# integrated GPU (nvgpu driver).
_DISCRETE = "/dev/nvidia0"
_JETSON = ("/dev/nvhost-ctrl-gpu", "/dev/nvgpu/igpu0/ctrl")


def gpu_device_nodes() -> list[str]:
    """NVIDIA GPU device nodes present on this host (empty without a GPU or its driver)."""
    found = (
        sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*")) if Path("/dev").is_dir() else []
    )
    found += [p for p in _JETSON if os.path.exists(p)]
    return found


@functools.cache
def no_gpu_reason() -> str | None:
    """Why this host has no usable NVIDIA GPU, or None when a GPU device node is present.

    Cheap (a few stat calls), so it can run while planning. It checks the driver's device
    nodes, not CUDA itself: CUDA_VISIBLE_DEVICES hiding every GPU is reported too.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"no NVIDIA GPU visible: CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    if gpu_device_nodes():
        return None
    return f"no NVIDIA GPU: {_DISCRETE} is absent (no NVIDIA GPU or driver on this host)"


def cuda_event_times(
    fn: Callable[[], Any], iters: int, warmup: int = 3, torch: Any = None
) -> list[float]:
    """Device time in ms of each of `iters` calls of `fn`, from CUDA events on the current stream.

    Each call is bracketed by two events with enable_timing=True; the end event is waited on
    before the next call so the samples do not overlap. Needs torch with CUDA (it times any
    work submitted to torch's current stream; ONNX Runtime's CUDA EP uses its own stream, so
    for ORT the events bound the call only when `fn` itself synchronises).
    """
    if torch is None:
        torch = importlib.import_module("torch")
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(float(start.elapsed_time(end)))
    return times


def _pci_bus_id_of_cuda_device(device_id: int) -> str | None:
    """PCI bus id of CUDA device `device_id` through torch, when torch has CUDA (else None)."""
    try:
        torch = importlib.import_module("torch")
        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(device_id)
        domain = getattr(props, "pci_domain_id", 0)
        return f"{domain:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    except Exception:
        return None


def nvml_memory(device_id: int = 0, pid: int | None = None) -> dict[str, Any] | None:
    """GPU memory from NVML for CUDA device `device_id`, or None without pynvml/driver/GPU.

    Keys: gpu_name, used_mb and total_mb (the whole board), process_mb (this process's GPU
    memory where the driver reports per-process usage; absent otherwise). CUDA numbers
    devices fastest-first unless CUDA_DEVICE_ORDER=PCI_BUS_ID while NVML numbers them by PCI
    bus, so the device is matched by PCI bus id when torch can tell it.
    """
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError: no driver or no GPU
        return None
    try:
        bus_id = _pci_bus_id_of_cuda_device(device_id)
        handle = None
        if bus_id is not None:
            try:
                handle = nvml.nvmlDeviceGetHandleByPciBusId(bus_id)
            except Exception:
                handle = None
        if handle is None:
            handle = nvml.nvmlDeviceGetHandleByIndex(device_id)
        info = nvml.nvmlDeviceGetMemoryInfo(handle)
        name = nvml.nvmlDeviceGetName(handle)
        out: dict[str, Any] = {
            "gpu_name": name.decode() if isinstance(name, bytes) else str(name),
            "used_mb": info.used / 2**20,
            "total_mb": info.total / 2**20,
        }
        me = os.getpid() if pid is None else pid
        try:
            procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except Exception:  # not supported on some boards (Jetson, WSL)
            procs = []
        for proc in procs:
            used = getattr(proc, "usedGpuMemory", None)
            if proc.pid == me and isinstance(used, int) and used >= 0:
                out["process_mb"] = used / 2**20
        return out
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def memory_notes(device_id: int, allocator: dict[str, float] | None = None) -> list[str]:
    """Row notes describing GPU memory: the runtime allocator's figures, then NVML's."""
    notes = []
    if allocator:
        parts = ", ".join(f"{k} {v:.1f} MiB" for k, v in allocator.items())
        notes.append(f"GPU memory (runtime allocator): {parts}")
    mem = nvml_memory(device_id)
    if mem is None:
        notes.append("GPU memory (NVML): not read (no pynvml module, NVML driver or GPU)")
    else:
        text = (
            f"GPU memory (NVML, {mem['gpu_name']}): board "
            f"{mem['used_mb']:.0f}/{mem['total_mb']:.0f} MiB used"
        )
        if "process_mb" in mem:
            text += f", this process {mem['process_mb']:.1f} MiB"
        notes.append(text)
    return notes
