"""ONNX Runtime on NVIDIA GPUs: the CUDA and TensorRT execution providers (onnxruntime-gpu).

fp32 and fp16 graphs run on either provider; static int8 QDQ graphs become int8 TensorRT
engines (TensorRT's explicit quantization reads the Q/DQ pairs). Nodes a provider cannot take
fall back to the next one (TensorRT -> CUDA -> CPU); `inspect` counts where each node went
(ORT's `session.record_ep_graph_assignment_info` + `get_provider_graph_assignment_info()`).

Timing: the runner binds its input and outputs to GPU memory once (IOBinding), so the timed
call is `run_with_iobinding` + `synchronize_outputs()` only: host<->device copies are excluded
from latency. ORT synchronises the providers' streams at the end of each Run (its default),
so `perf_counter` around the call spans the device execution (qbench/measure/gpu.py).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from qbench.backends.base import Backend, Session, feed_by_name
from qbench.backends.onnxruntime import count_compute_nodes
from qbench.cache import cache_root
from qbench.inputs import Inputs
from qbench.measure.gpu import memory_notes, no_gpu_reason
from qbench.params import Params
from qbench.plugins import backends

_EP = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_GPU_EPS = frozenset(_EP.values())


class OrtGpuParams(Params):
    provider: Literal["cuda", "tensorrt"] = Field(
        default="cuda", description="execution provider: cuda, or tensorrt (falls back to cuda)"
    )
    trt_fp16: bool | None = Field(
        default=None,
        description="TensorRT fp16 tactics; None: on when the graph has float16 initializers",
    )
    trt_int8: bool | None = Field(
        default=None,
        description="TensorRT int8 from the graph's Q/DQ nodes; None: on when it has them",
    )
    device_id: int = Field(default=0, ge=0, description="CUDA device index")
    trt_cache_dir: str | None = Field(
        default=None,
        description="TensorRT engine and timing cache folder; None: trt/ in qbench's cache",
    )


@functools.cache
def available_providers() -> tuple[str, ...]:
    """ONNX Runtime's execution providers in this install (imports onnxruntime once)."""
    import onnxruntime

    return tuple(onnxruntime.get_available_providers())


def gpu_unavailable_reason(provider: str = "cuda") -> str | None:
    """Why `provider` cannot run here (missing package, provider or GPU), or None."""
    if find_spec("onnxruntime") is None:
        return "needs Python package onnxruntime-gpu, not installed"
    ep = _EP[provider]
    providers = available_providers()
    no_gpu = no_gpu_reason()
    missing_ep = (
        None
        if ep in providers
        else f"onnxruntime has no {ep} (installed: {', '.join(providers)}; "
        f"it comes with the onnxruntime-gpu package)"
    )
    if no_gpu and missing_ep:
        return f"{no_gpu}; and {missing_ep}"
    return no_gpu or missing_ep


def _graph_facts(path: Path) -> tuple[bool, bool]:
    """(has float16 initializers, has QuantizeLinear/DequantizeLinear nodes)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    return fp16, qdq


def provider_list(path: Path, params: OrtGpuParams) -> list[Any]:
    """The providers (with options) to ask ONNX Runtime for, in priority order."""
    cuda_opts = {"device_id": params.device_id}
    cuda = ("CUDAExecutionProvider", cuda_opts)
    if params.provider == "cuda":
        return [cuda, "CPUExecutionProvider"]
    fp16, qdq = _graph_facts(path)
    cache = (
        Path(params.trt_cache_dir).expanduser() if params.trt_cache_dir else cache_root() / "trt"
    )
    cache.mkdir(parents=True, exist_ok=True)
    trt_opts = {
        "device_id": params.device_id,
        "trt_fp16_enable": fp16 if params.trt_fp16 is None else params.trt_fp16,
        "trt_int8_enable": qdq if params.trt_int8 is None else params.trt_int8,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
    }
    return [("TensorrtExecutionProvider", trt_opts), cuda, "CPUExecutionProvider"]


def placement(assignment: Any) -> tuple[Counter[str], list[str]]:
    """(nodes per provider, op types of the nodes on GPU providers) from ORT's assignment info."""
    per_ep: Counter[str] = Counter()
    gpu_ops: list[str] = []
    for subgraph in assignment:
        nodes = subgraph.get_nodes()
        per_ep[subgraph.ep_name] += len(nodes)
        if subgraph.ep_name in _GPU_EPS:
            gpu_ops.extend(n.op_type for n in nodes)
    return per_ep, gpu_ops


class OrtGpuSession(Session):
    def __init__(self, path: Path, threads: int, params: OrtGpuParams) -> None:
        import onnxruntime as ort

        self.ort, self.params, self.path = ort, params, path
        self.providers = provider_list(path, params)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        self.session = ort.InferenceSession(str(path), options, providers=self.providers)
        wanted = self.providers[0][0]
        if wanted not in self.session.get_providers():
            raise RuntimeError(
                f"ONNX Runtime did not create {wanted} (session providers: "
                f"{', '.join(self.session.get_providers())})"
            )
        self.input_names = [i.name for i in self.session.get_inputs()]
        # an fp16 graph takes float16 inputs: float data is cast to it, integers kept
        self.fp16 = {i.name for i in self.session.get_inputs() if i.type == "tensor(float16)"}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _feed(self, x: Inputs) -> dict[str, np.ndarray]:
        feed = feed_by_name(self.input_names, x)
        # asarray(order=C), not ascontiguousarray: that makes a scalar input 1-d
        return {k: np.asarray(v, dtype=np.float16, order="C") if k in self.fp16 else
                np.asarray(v, order="C") for k, v in feed.items()}  # fmt: skip

    def runner(self, x: Inputs) -> Callable[[], Any]:
        ort, device = self.ort, self.params.device_id
        binding = self.session.io_binding()
        x_gpu = []
        for name, value in self._feed(x).items():
            x_gpu.append(ort.OrtValue.ortvalue_from_numpy(value, "cuda", device))
            binding.bind_ortvalue_input(name, x_gpu[-1])
        for name in self.output_names:
            binding.bind_output(name, "cuda", device)
        run = self.session.run_with_iobinding
        run(binding)  # allocates the outputs on the GPU; rebind them so runs reuse them
        for name, value in zip(self.output_names, binding.get_outputs(), strict=True):
            binding.bind_ortvalue_output(name, value)
        sync = binding.synchronize_outputs
        keep = tuple(x_gpu)  # the input OrtValues must outlive the binding

        def timed() -> Any:
            run(binding)
            sync()
            return keep

        return timed

    def predict(self, x: Inputs) -> np.ndarray:
        return np.asarray(self.session.run(None, self._feed(x))[0], dtype=np.float32)

    def inspect(self) -> dict[str, Any]:
        per_ep, gpu_ops = placement(self.session.get_provider_graph_assignment_info())
        all_quantized, compute, hist = count_compute_nodes(gpu_ops)
        placed = ", ".join(f"{ep} {n}" for ep, n in per_ep.most_common())
        notes = [f"node placement: {placed}"]
        trt = next((p for p in self.providers if p[0] == "TensorrtExecutionProvider"), None)
        row: dict[str, Any] = {"compute_nodes": compute, "quantized_nodes": all_quantized}
        if trt is not None:
            opts = trt[1]
            notes.append(
                f"TensorRT: fp16 {'on' if opts['trt_fp16_enable'] else 'off'}, "
                f"int8 {'on' if opts['trt_int8_enable'] else 'off'}; TensorRT picks each "
                "layer's precision inside its engine (not visible to ONNX Runtime)"
            )
            # Which QDQ Conv/Gemm became int8 layers is decided inside the engine: not counted.
            if opts["trt_int8_enable"] and per_ep.get("TensorrtExecutionProvider"):
                row["quantized_nodes"] = None
        # What ran is the provider's call, not the method's: the method labels ONNX fp16
        # `simulated` (the CPU provider casts it back to fp32), but CUDA and TensorRT run fp16
        # kernels; a QDQ graph is int8 only inside a TensorRT int8 engine (CUDA runs float
        # kernels between Q/DQ pairs).
        fp16, qdq = _graph_facts(self.path)
        if fp16:
            row["execution"] = "native"
        elif qdq:
            int8_engine = trt is not None and trt[1]["trt_int8_enable"]
            row["execution"] = "native" if int8_engine else "simulated"
            if not int8_engine:
                notes.append("QDQ graph on the CUDA provider: float kernels between Q/DQ "
                             "pairs (only a TensorRT int8 engine runs int8)")  # fmt: skip
        if hist:
            notes.append(
                "GPU compute ops: " + ", ".join(f"{k}×{v}" for k, v in sorted(hist.items()))
            )
        notes += memory_notes(self.params.device_id)
        notes.append("latency: IOBinding with input/outputs on the GPU; host<->device copies "
                     "excluded")  # fmt: skip
        row["notes"] = notes
        return row


@backends.register
class OnnxRuntimeGpuBackend(Backend):
    name = "onnxruntime_gpu"
    description = "ONNX Runtime, CUDA or TensorRT execution provider (NVIDIA GPU)"
    Params = OrtGpuParams
    loads = ("onnx",)
    requires = ("onnxruntime",)

    def unavailable(self) -> str | None:
        # Per cell the provider param may ask for TensorRT; the CUDA provider is needed by
        # both (TensorRT falls back to it), and a missing TensorRT fails at open() with why.
        return gpu_unavailable_reason("cuda")

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        assert isinstance(params, OrtGpuParams)
        why = gpu_unavailable_reason(params.provider)
        if why:
            raise RuntimeError(why)
        return OrtGpuSession(artifact, threads, params)
