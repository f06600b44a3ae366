"""ONNX Runtime on the CPU execution provider."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from qbench.backends.base import Backend, Session, feed_by_name
from qbench.inputs import Inputs
from qbench.params import Params
from qbench.plugins import backends

# Node types of an optimised graph that run integer (or low-bit) kernels.
QUANTIZED_OPS = frozenset(
    {
        "QLinearConv",
        "QLinearConvTranspose",
        "QLinearMatMul",
        "MatMulInteger",
        "MatMulInteger16",
        "ConvInteger",
        "MatMulNBits",
        "MatMulBnb4",
        "QGemm",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QAttention",
        "QOrderedMatMul",
        "NhwcQLinearConv",
    }
)
FLOAT_COMPUTE_OPS = frozenset(
    {
        "Conv",
        "MatMul",
        "Gemm",
        "FusedConv",
        "FusedMatMul",
        "FusedMatMulActivation",
        "FusedGemm",
        "NhwcConv",
        "NhwcFusedConv",
        "ConvTranspose",
    }
)


def count_compute_nodes(op_types: list[str]) -> tuple[int, int, dict[str, int]]:
    """(quantized compute nodes, all compute nodes, histogram of compute op types)."""
    hist = Counter(t for t in op_types if t in QUANTIZED_OPS or t in FLOAT_COMPUTE_OPS)
    quantized = sum(n for t, n in hist.items() if t in QUANTIZED_OPS)
    return quantized, sum(hist.values()), dict(hist)


class OrtParams(Params):
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        default="all", description="ORT graph optimisation level"
    )


_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class OrtSession(Session):
    def __init__(self, path: Path, threads: int, params: OrtParams) -> None:
        self.path, self.threads, self.params = path, threads, params
        self.session = self._create(None)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _create(self, optimized_path: str | None) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _LEVELS[self.params.graph_optimization]
        )
        # Threads must not spin after a run: the next timed call would compete with them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if optimized_path:
            options.optimized_model_filepath = optimized_path
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def runner(self, x: Inputs) -> Callable[[], Any]:
        run, feed = self.session.run, feed_by_name(self.input_names, x)
        return lambda: run(None, feed)

    def predict(self, x: Inputs) -> np.ndarray:
        feed = feed_by_name(self.input_names, x)
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)

    def inspect(self) -> dict[str, Any]:
        """Count what runs quantized in the graph ORT really executes (after its fusions)."""
        import onnx

        with tempfile.TemporaryDirectory() as tmp:
            optimized = str(Path(tmp) / "optimized.onnx")
            self._create(optimized)
            graph = onnx.load(optimized, load_external_data=False).graph
        quantized, compute, hist = count_compute_nodes([n.op_type for n in graph.node])
        ops = ", ".join(f"{k}×{v}" for k, v in sorted(hist.items()))
        return {
            "quantized_nodes": quantized,
            "compute_nodes": compute,
            "notes": [f"optimised graph compute ops: {ops}"],
        }


@backends.register
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = "ONNX Runtime, CPU execution provider"
    Params = OrtParams
    loads = ("onnx",)
    requires = ("onnxruntime",)

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        assert isinstance(params, OrtParams)
        return OrtSession(artifact, threads, params)
