"""GPU backends (onnxruntime_gpu, torch_cuda) and qbench.measure.gpu.

Without a GPU: skip reasons name the missing GPU, suites/gpu.yaml plans to skipped cells only,
and the parts that need no GPU (provider options, node placement, memory notes) run. With an
NVIDIA GPU (and onnxruntime-gpu / a CUDA build of torch) the GPU tests run real sessions.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from qbench.backends import onnxruntime_gpu as ortg
from qbench.backends import torch_cuda as tc
from qbench.measure import gpu
from tests.conftest import REPO, make_tiny_onnx


def _has_torch_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _has_ort_cuda() -> bool:
    try:
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers() and (
            gpu.no_gpu_reason() is None
        )
    except ImportError:
        return False


HAS_GPU = gpu.no_gpu_reason() is None
needs_torch_cuda = pytest.mark.skipif(not _has_torch_cuda(), reason="no NVIDIA GPU with torch CUDA")
needs_ort_cuda = pytest.mark.skipif(
    not _has_ort_cuda(), reason="no NVIDIA GPU with onnxruntime-gpu's CUDAExecutionProvider"
)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> Any:
    """This host as one without any NVIDIA device node."""
    monkeypatch.setattr(gpu, "gpu_device_nodes", lambda: [])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu.no_gpu_reason.cache_clear()
    yield
    gpu.no_gpu_reason.cache_clear()


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(gpu, "gpu_device_nodes", lambda: ["/dev/nvidia0"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu.no_gpu_reason.cache_clear()
    yield
    gpu.no_gpu_reason.cache_clear()


# --- without a GPU -----------------------------------------------------------------------


def test_no_gpu_reason_names_the_missing_gpu(no_gpu: Any) -> None:
    reason = gpu.no_gpu_reason()
    assert reason is not None and "no NVIDIA GPU" in reason and "/dev/nvidia0" in reason


def test_cuda_visible_devices_hiding_every_gpu(fake_gpu: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    gpu.no_gpu_reason.cache_clear()
    assert "CUDA_VISIBLE_DEVICES" in (gpu.no_gpu_reason() or "")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    gpu.no_gpu_reason.cache_clear()
    assert gpu.no_gpu_reason() is None


def test_ort_gpu_reasons(monkeypatch: pytest.MonkeyPatch, no_gpu: Any) -> None:
    cpu_only = ("AzureExecutionProvider", "CPUExecutionProvider")
    monkeypatch.setattr(ortg, "available_providers", lambda: cpu_only)
    reason = ortg.OnnxRuntimeGpuBackend().unavailable()
    assert reason is not None
    assert reason.startswith("no NVIDIA GPU")
    assert "CUDAExecutionProvider" in reason and "CPUExecutionProvider" in reason
    # onnxruntime-gpu installed, still no GPU: the GPU alone is named.
    monkeypatch.setattr(ortg, "available_providers", lambda: ("CUDAExecutionProvider", *cpu_only))
    reason = ortg.OnnxRuntimeGpuBackend().unavailable()
    assert reason is not None and reason.startswith("no NVIDIA GPU")
    assert "has no" not in reason
    assert "TensorrtExecutionProvider" in (ortg.gpu_unavailable_reason("tensorrt") or "")


def test_ort_gpu_reason_with_gpu_but_cpu_package(monkeypatch: Any, fake_gpu: Any) -> None:
    monkeypatch.setattr(ortg, "available_providers", lambda: ("CPUExecutionProvider",))
    reason = ortg.OnnxRuntimeGpuBackend().unavailable()
    assert reason is not None and "no CUDAExecutionProvider" in reason
    assert "onnxruntime-gpu" in reason and "no NVIDIA GPU" not in reason


def test_torch_cuda_reason(monkeypatch: pytest.MonkeyPatch, no_gpu: Any) -> None:
    monkeypatch.setattr(tc, "_torch_version", lambda: "2.13.0+cpu")
    reason = tc.TorchCudaBackend().unavailable()
    assert reason is not None and reason.startswith("no NVIDIA GPU")
    assert "CPU-only build" in reason
    monkeypatch.setattr(tc, "_torch_version", lambda: "2.13.0+cu128")
    assert tc.TorchCudaBackend().unavailable() == gpu.no_gpu_reason()


@pytest.mark.skipif(HAS_GPU, reason="this host has an NVIDIA GPU: its gpu suite cells can run")
def test_gpu_suite_plans_only_skipped_cells_naming_the_gpu() -> None:
    from qbench.plan import build_plan
    from qbench.suite.loader import load_suite

    plan = build_plan(*load_suite(REPO / "suites" / "gpu.yaml"))
    assert plan.cells and not plan.runnable
    assert {c.backend for c in plan.cells} == {"onnxruntime_gpu", "torch_cuda"}
    assert {c.model for c in plan.cells} == {"resnet18", "mobilenet_v2", "digits_cnn"}
    assert {c.method for c in plan.cells} == {"fp32", "fp16", "static_int8", "bf16"}
    for cell in plan.cells:
        assert "no NVIDIA GPU" in (cell.skip_reason or ""), cell.cell_id
    assert any(c.backend_params.get("provider") == "tensorrt" for c in plan.cells)


def _fp16_onnx(src: Path, out: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(out))
    return out


def _qdq_onnx(src: Path, out: Path) -> Path:
    """The tiny model with a QuantizeLinear/DequantizeLinear pair in front of its Conv."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    g = model.graph
    g.initializer.extend([helper.make_tensor("s", TensorProto.FLOAT, [], [0.02]),
                          helper.make_tensor("z", TensorProto.UINT8, [], [128])])  # fmt: skip
    q = helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"])
    dq = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])
    for node in g.node:
        node.input[:] = ["dq" if i == "input" else i for i in node.input]
    g.node.insert(0, dq)
    g.node.insert(0, q)
    onnx.save(model, str(out))
    return out


def test_provider_list_picks_trt_precision_from_the_graph(tmp_path: Path) -> None:
    fp32 = make_tiny_onnx(tmp_path / "fp32.onnx")
    fp16 = _fp16_onnx(fp32, tmp_path / "fp16.onnx")
    qdq = _qdq_onnx(fp32, tmp_path / "qdq.onnx")
    cache = str(tmp_path / "trt")
    cuda = ortg.provider_list(fp32, ortg.OrtGpuParams(device_id=1))
    assert cuda == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]

    def trt(path: Path, **kw: Any) -> dict[str, Any]:
        providers = ortg.provider_list(
            path, ortg.OrtGpuParams(provider="tensorrt", trt_cache_dir=cache, **kw)
        )
        names = [p if isinstance(p, str) else p[0] for p in providers]
        assert names == [
            "TensorrtExecutionProvider",
            "CUDAExecutionProvider",
            "CPUExecutionProvider",
        ]
        return providers[0][1]

    assert (trt(fp32)["trt_fp16_enable"], trt(fp32)["trt_int8_enable"]) == (False, False)
    assert (trt(fp16)["trt_fp16_enable"], trt(fp16)["trt_int8_enable"]) == (True, False)
    assert (trt(qdq)["trt_fp16_enable"], trt(qdq)["trt_int8_enable"]) == (False, True)
    assert trt(fp32, trt_fp16=True)["trt_fp16_enable"] is True
    assert trt(qdq, trt_int8=False)["trt_int8_enable"] is False
    opts = trt(fp32)
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == cache
    assert Path(cache).is_dir()
    from qbench.cache import cache_root

    default = ortg.provider_list(fp32, ortg.OrtGpuParams(provider="tensorrt"))[0][1]
    assert default["trt_engine_cache_path"] == str(cache_root() / "trt")


def test_placement_counts_nodes_per_provider() -> None:
    def sub(ep: str, *ops: str) -> Any:
        nodes = [SimpleNamespace(op_type=o) for o in ops]
        return SimpleNamespace(ep_name=ep, get_nodes=lambda: nodes)

    per_ep, gpu_ops = ortg.placement([
        sub("CUDAExecutionProvider", "Conv", "Relu"),
        sub("CPUExecutionProvider", "Shape"),
        sub("CUDAExecutionProvider", "Gemm"),
    ])  # fmt: skip
    assert per_ep == {"CUDAExecutionProvider": 3, "CPUExecutionProvider": 1}
    assert gpu_ops == ["Conv", "Relu", "Gemm"]


def test_placement_api_on_the_cpu_provider(tmp_path: Path) -> None:
    """The ORT API inspect() relies on (record_ep_graph_assignment_info) works in this ORT."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    sess = ort.InferenceSession(str(make_tiny_onnx(tmp_path / "m.onnx")), options,
                                providers=["CPUExecutionProvider"])  # fmt: skip
    per_ep, gpu_ops = ortg.placement(sess.get_provider_graph_assignment_info())
    assert per_ep["CPUExecutionProvider"] >= 3 and gpu_ops == []


def test_memory_notes_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "nvml_memory", lambda device_id=0, pid=None: None)
    notes = gpu.memory_notes(0, {"peak allocated": 12.5})
    assert notes[0] == "GPU memory (runtime allocator): peak allocated 12.5 MiB"
    assert "not read" in notes[1]


def test_nvml_memory_reads_fake_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import sys

    class FakeNvml:
        def nvmlInit(self) -> None: ...
        def nvmlShutdown(self) -> None: ...
        def nvmlDeviceGetHandleByIndex(self, i: int) -> str:
            return f"h{i}"

        def nvmlDeviceGetHandleByPciBusId(self, bus: str) -> str:
            raise RuntimeError

        def nvmlDeviceGetMemoryInfo(self, h: str) -> Any:
            return SimpleNamespace(used=3 * 2**30, total=24 * 2**30)

        def nvmlDeviceGetName(self, h: str) -> bytes:
            return b"NVIDIA GeForce RTX 4090"

        def nvmlDeviceGetComputeRunningProcesses(self, h: str) -> list[Any]:
            return [SimpleNamespace(pid=os.getpid(), usedGpuMemory=512 * 2**20),
                    SimpleNamespace(pid=1, usedGpuMemory=2**30)]  # fmt: skip

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    mem = gpu.nvml_memory(0)
    assert mem == {"gpu_name": "NVIDIA GeForce RTX 4090", "used_mb": 3072.0,
                   "total_mb": 24576.0, "process_mb": 512.0}  # fmt: skip
    assert "this process 512.0 MiB" in gpu.memory_notes(0)[0]


def test_cuda_event_times_with_a_fake_torch() -> None:
    calls: list[str] = []

    class Event:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing

        def record(self) -> None:
            calls.append("record")

        def synchronize(self) -> None:
            calls.append("sync")

        def elapsed_time(self, end: Any) -> float:
            return 1.5

    fake = SimpleNamespace(cuda=SimpleNamespace(Event=Event, synchronize=lambda: None))
    times = gpu.cuda_event_times(lambda: calls.append("fn"), iters=3, warmup=2, torch=fake)
    assert times == [1.5, 1.5, 1.5]
    assert calls[:2] == ["fn", "fn"] and calls[2:6] == ["record", "fn", "record", "sync"]


# --- with a GPU ---------------------------------------------------------------------------


def _tiny_torch() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
    ).eval()  # fmt: skip


@needs_torch_cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torch_cuda_half_agrees_with_fp32(dtype: str) -> None:
    import torch

    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    module = _tiny_torch()
    with torch.inference_mode():
        ref = module(torch.from_numpy(x)).numpy()
    half = tc.TorchCudaSession(module.to(getattr(torch, dtype)), tc.TorchCudaParams())
    out = half.predict(x)
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=0.05, atol=0.05)
    assert (out.argmax(1) == ref.argmax(1)).all()
    row = half.inspect()
    assert row["compute_nodes"] == 3 and row["quantized_nodes"] == 0
    assert any("peak allocated" in n for n in row["notes"])


@needs_torch_cuda
def test_torch_cuda_runner_time_matches_cuda_events() -> None:
    """perf_counter around the synchronised runner ~ CUDA-event device time (plus overhead)."""
    import torch

    session = tc.TorchCudaSession(_tiny_torch(), tc.TorchCudaParams())
    x = np.random.default_rng(0).normal(size=(8, 3, 128, 128)).astype(np.float32)
    run = session.runner(x)
    events = sorted(gpu.cuda_event_times(run, iters=50, warmup=10, torch=torch))
    host = []
    for _ in range(50):
        t0 = time.perf_counter()
        run()
        host.append((time.perf_counter() - t0) * 1e3)
    ev, wall = events[len(events) // 2], sorted(host)[len(host) // 2]
    # The host clock cannot be shorter than the device work it waited for, and adds only
    # launch and wake-up overhead on top.
    assert wall >= 0.9 * ev
    assert wall <= ev * 1.5 + 0.5, (wall, ev)


@needs_torch_cuda
def test_torch_cuda_backend_is_available_with_a_gpu() -> None:
    backend = tc.TorchCudaBackend()
    assert backend.unavailable() is None
    assert "CUDA" in backend.version()


@needs_ort_cuda
@pytest.mark.parametrize("variant", ["fp32", "fp16", "qdq"])
def test_ort_cuda_session_agrees_with_cpu(tmp_path: Path, variant: str) -> None:
    import onnxruntime as ort

    path = make_tiny_onnx(tmp_path / "fp32.onnx", in_ch=3, size=32)
    if variant == "fp16":
        path = _fp16_onnx(path, tmp_path / "fp16.onnx")
    elif variant == "qdq":
        path = _qdq_onnx(path, tmp_path / "qdq.onnx")
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    cpu = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = cpu.run(None, {cpu.get_inputs()[0].name: x})[0]
    session = ortg.OnnxRuntimeGpuBackend().open(path, "onnx", 1, ortg.OrtGpuParams())
    np.testing.assert_allclose(session.predict(x), ref, rtol=0.02, atol=0.02)
    run = session.runner(x)
    for _ in range(5):
        run()
    row = session.inspect()
    assert "CUDAExecutionProvider" in row["notes"][0]
    assert row["compute_nodes"] >= 1


@needs_ort_cuda
def test_ort_tensorrt_session_when_tensorrt_is_installed(tmp_path: Path) -> None:
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu without TensorrtExecutionProvider (TensorRT not installed)")
    path = make_tiny_onnx(tmp_path / "fp32.onnx", in_ch=3, size=32)
    params = ortg.OrtGpuParams(provider="tensorrt", trt_cache_dir=str(tmp_path / "trt"))
    session = ortg.OnnxRuntimeGpuBackend().open(path, "onnx", 1, params)
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    cpu = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = cpu.run(None, {cpu.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(session.predict(x), ref, rtol=0.02, atol=0.02)
    assert "TensorrtExecutionProvider" in session.inspect()["notes"][0]
