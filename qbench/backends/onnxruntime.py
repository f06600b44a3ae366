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

    def lm(self, capacity: int | None = None) -> OrtCausalLM:
        """The causal LM of a graph exported with its KV cache (export_causal_lm), token by
        token; `capacity` is not needed: the cache grows with each step."""
        return OrtCausalLM(self.session)

    def inspect(self) -> dict[str, Any]:
        """Count what runs quantized in the graph ORT really executes (after its fusions).

        Reading that graph means a second session that writes it out, and the onnx package
        (half a second to import; seconds of session for an LLM), after every measured cell.
        The count is the same for the same file, ORT version, optimisation level and CPU (its
        fusions follow the CPU's instruction sets), so it is cached under those."""
        import json

        import onnxruntime as ort

        from qbench.cache import cached_file
        from qbench.probe import parse_cpuinfo

        def count(tmp: Path) -> None:
            import onnx

            with tempfile.TemporaryDirectory() as folder:
                optimized = str(Path(folder) / "optimized.onnx")
                self._create(optimized)
                graph = onnx.load(optimized, load_external_data=False).graph
            quantized, compute, hist = count_compute_nodes([n.op_type for n in graph.node])
            tmp.write_text(json.dumps({"quantized": quantized, "compute": compute, "hist": hist}))

        try:
            cpu = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
        except OSError:
            cpu = {"model": None, "flags": []}
        stat = self.path.stat()
        key = {"artifact": [str(self.path.resolve()), stat.st_size, stat.st_mtime_ns],
               "ort": ort.__version__, "level": self.params.graph_optimization,
               "cpu": [cpu["model"], sorted(cpu["flags"])], "v": 1}  # fmt: skip
        counted = json.loads(cached_file("ort_graph_counts", key, ".json", count).path.read_text())
        ops = ", ".join(f"{k}×{v}" for k, v in sorted(counted["hist"].items()))
        return {
            "quantized_nodes": counted["quantized"],
            "compute_nodes": counted["compute"],
            "notes": [f"optimised graph compute ops: {ops}"],
        }


class OrtCausalLM:
    """Prefill, KV-cache decode and log-probabilities (qbench.measure.llm) of a causal LM
    graph with past_key_*/past_value_* inputs and present_* outputs. The cache stays in ORT's
    own tensors (OrtValue) from one step to the next, never copied through numpy: what a
    generation loop over ORT (onnxruntime-genai) keeps too."""

    def __init__(self, session: Any) -> None:
        import onnxruntime as ort

        self.session = session
        self.ortvalue = ort.OrtValue.ortvalue_from_numpy
        inputs = {i.name: i for i in session.get_inputs()}
        self.past = [n for n in inputs if n.startswith("past_")]
        if "logit_positions" not in inputs or not self.past:
            raise ValueError(
                "this ONNX graph has no KV-cache inputs (past_key_*, past_value_*, "
                "logit_positions): causal LMs run on ONNX Runtime as qbench exports them "
                "(hf_local models); a graph of whole windows cannot decode token by token"
            )
        self.outputs = [o.name for o in session.get_outputs()]
        self.present = [n for n in self.outputs if n.startswith("present_")]
        if [n.replace("present_", "past_", 1) for n in self.present] != self.past:
            raise ValueError("the graph's present_* outputs do not match its past_* inputs")
        self.empty = {}
        for name in self.past:  # [1, kv_heads, 0, head_dim]: the prefill's empty cache
            shape = [d if isinstance(d, int) else 0 for d in inputs[name].shape]
            dtype = np.float16 if inputs[name].type == "tensor(float16)" else np.float32
            self.empty[name] = self.ortvalue(np.zeros(shape, dtype=dtype))

    def _run(self, ids: np.ndarray, positions: np.ndarray, past: dict[str, Any]) -> Any:
        feed = {
            "input_ids": self.ortvalue(np.ascontiguousarray(ids, dtype=np.int64)[None]),
            "logit_positions": self.ortvalue(positions),
            **past,
        }
        out = self.session.run_with_ort_values(self.outputs, feed)
        return out[0].numpy()[0], dict(zip(self.past, out[1:], strict=True))

    def prefill(self, ids: np.ndarray) -> tuple[int, Any]:
        logits, past = self._run(ids, np.array([len(ids) - 1], dtype=np.int64), self.empty)
        return int(logits[-1].argmax()), past

    def decode(self, token: int, state: Any) -> tuple[int, Any]:
        logits, past = self._run(np.array([token]), np.zeros(1, dtype=np.int64), state)
        return int(logits[-1].argmax()), past

    def decode_logprobs(self, token: int, state: Any) -> tuple[np.ndarray, Any]:
        from qbench.measure.llm import log_softmax

        logits, past = self._run(np.array([token]), np.zeros(1, dtype=np.int64), state)
        return log_softmax(logits[-1:])[0], past

    def logprobs(self, ids: np.ndarray) -> np.ndarray:
        from qbench.measure.llm import log_softmax

        logits, _ = self._run(ids, np.arange(len(ids), dtype=np.int64), self.empty)
        return log_softmax(logits)


@backends.register
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = "ONNX Runtime, CPU execution provider"
    Params = OrtParams
    loads = ("onnx",)
    generates = True  # causal LMs exported with their KV cache (OrtCausalLM)
    requires = ("onnxruntime",)

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        assert isinstance(params, OrtParams)
        return OrtSession(artifact, threads, params)
