"""LiteRT (formerly TensorFlow Lite) on the CPU: XNNPACK delegate or builtin kernels.

Input layout: the session takes the harness's named float32 batches (NCHW for images), one per
model input. A model with NCHW input (litert-torch's default: it transposes inside the graph)
gets them as they are; a model with NHWC input (litert_torch.to_channel_last_io, most .tflite
files) gets 4-D batches transposed, outside the timed call.

Integer I/O: full-integer models take and return int8/int16 (uint8 for older ones). Inputs are
quantized and outputs dequantized with each tensor's own scale and zero point.

Batches: models are usually exported at batch 1. A batch of N runs as one invoke of the
interpreter resized to N (resize_tensor_input + allocate_tensors), which is what a batched
deployment does. The first time a batch size is used its batched outputs are checked against
one batch-1 invoke per sample; a graph that cannot be resized (a constant reshape to batch 1)
or whose resized outputs differ runs that batch as N batch-1 invokes instead, and inspect()
says which happened.

Timed call (runner): set_tensor of the already-quantized (and laid-out) input, invoke, and
get_tensor of the raw output, N times in loop mode. Quantizing the input and dequantizing the
output stay outside it, like the bound input of the ONNX Runtime backend: they are numpy work
of the harness, not of the runtime.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from qbench.backends._tflite_graph import (
    delegate_partitions,
    histogram,
    read_tflite_graph,
)
from qbench.backends.base import Backend, Session, feed_by_name
from qbench.inputs import Inputs
from qbench.params import Params
from qbench.plugins import backends

# Relative L2 difference between a resized batch's outputs and per-sample batch-1 outputs
# above which the resized graph is taken to mix samples (a bad reshape): then loop instead.
# Generous on purpose: batch-dependent rounding (dynamic-range kernels) stays far below it.
BATCH_CHECK_RTOL = 0.05


class LitertParams(Params):
    xnnpack: bool = Field(
        default=True,
        description="apply the XNNPACK delegate (LiteRT's default); false: builtin kernels only",
    )


def quantize_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """float input -> the tensor's dtype, with its own (scale, zero point)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return np.ascontiguousarray(x, dtype=dtype)
    scale, zero_point = detail["quantization"]
    if scale == 0:  # an integer tensor that is not quantized
        return np.ascontiguousarray(x, dtype=dtype)
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float64) / scale) + zero_point
    return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(dtype))


def dequantize_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Raw output -> float32, with the tensor's own (scale, zero point)."""
    if np.dtype(detail["dtype"]).kind == "f":
        return np.asarray(y, np.float32)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        return np.asarray(y, np.float32)
    return ((y.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def _error_text(exc: BaseException, limit: int = 200) -> str:
    """LiteRT's error reporter glues its messages together ('...runtimeNode number 10 ...')."""
    text = re.sub(r"(?<=\S)(Node number \d+)", r"; \1", " ".join(str(exc).split()))
    return text[:limit]


def _relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), 1e-12))


class LitertSession(Session):
    """One LiteRT interpreter: every model input in (by name, else by position), output 0 out."""

    delegate_name = "XNNPACK"

    def __init__(
        self,
        path: Path,
        threads: int,
        xnnpack: bool = True,
        delegates: list[Any] | None = None,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.path, self.threads, self.xnnpack = Path(path), threads, xnnpack
        kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": threads}
        if not xnnpack:
            kwargs["experimental_op_resolver_type"] = (
                OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        if delegates:
            kwargs["experimental_delegates"] = delegates
        self.interpreter = Interpreter(**kwargs)
        self.interpreter.allocate_tensors()  # XNNPACK (the default delegate) is applied here
        self.inputs = self.interpreter.get_input_details()
        self.input = self.inputs[0]
        self.output = self.interpreter.get_output_details()[0]
        self.shapes = [tuple(int(d) for d in i["shape"]) for i in self.inputs]
        self.model_shape = self.shapes[0]
        self.batch = self.model_shape[0]  # the interpreter's current batch
        self.batch_mode: dict[int, str] = {self.batch: "native"}  # native | resized | loop
        self.batch_notes: dict[int, str] = {}
        self.timed_batch: int | None = None

    # ---- layout, quantization -----------------------------------------------------------------
    def _to_model_input(self, x: Inputs) -> list[np.ndarray]:
        """A batch -> one array per model input, in its layout and dtype (outside any timed
        call). A 4-D NCHW batch fits an NHWC input transposed."""
        feed = feed_by_name([d["name"] for d in self.inputs], x)
        out = []
        for detail, shape, value in zip(self.inputs, self.shapes, feed.values(), strict=True):
            want = shape[1:]
            if value.ndim == 4 and tuple(value.shape[1:]) != want:
                nhwc = (value.shape[2], value.shape[3], value.shape[1])
                if nhwc == want:
                    value = value.transpose(0, 2, 3, 1)
            if tuple(value.shape[1:]) != want:
                raise ValueError(
                    f"input {detail['name']} of shape {value.shape[1:]} does not fit the "
                    f"model's {want}"
                )
            out.append(quantize_input(value, detail))
        return out

    # ---- batching -----------------------------------------------------------------------------
    def _resize(self, n: int) -> None:
        for detail, shape in zip(self.inputs, self.shapes, strict=True):
            self.interpreter.resize_tensor_input(detail["index"], [n, *shape[1:]])
        self.interpreter.allocate_tensors()

    def _set_batch(self, n: int) -> None:
        """Resize the interpreter to batch n; on failure it is left at its previous batch."""
        if self.batch == n:
            return
        try:
            self._resize(n)
        except Exception:
            self._resize(self.batch)
            raise
        self.batch = n

    def _invoke(self, q: list[np.ndarray]) -> np.ndarray:
        it = self.interpreter
        for detail, value in zip(self.inputs, q, strict=True):
            it.set_tensor(detail["index"], value)
        it.invoke()
        return it.get_tensor(self.output["index"])

    def _pieces(self, q: list[np.ndarray]) -> list[list[np.ndarray]]:
        step = self.model_shape[0]
        return [[np.ascontiguousarray(v[i : i + step]) for v in q]
                for i in range(0, len(q[0]), step)]  # fmt: skip

    def _loop(self, q: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([self._invoke(p) for p in self._pieces(q)])

    def _choose_batch_mode(self, q: list[np.ndarray]) -> str:
        """Resize to the batch if the resized graph gives the per-sample outputs, else loop."""
        n, base = len(q[0]), self.model_shape[0]
        if n in self.batch_mode:
            return self.batch_mode[n]
        reference = None
        if n % base == 0:
            self._set_batch(base)
            reference = dequantize_output(self._loop(q), self.output)
        try:
            self._set_batch(n)
            got = self._invoke(q)
        except (RuntimeError, ValueError) as exc:
            mode, note = "loop", f"resizing to batch {n} failed ({_error_text(exc)})"
        else:
            if reference is None:
                mode, note = "resized", "not checked against batch-1 invokes"
            elif got.shape[0] != n:
                mode, note = "loop", f"resized output has batch {got.shape[0]}, not {n}"
            else:
                err = _relative_l2(dequantize_output(got, self.output), reference)
                if err > BATCH_CHECK_RTOL:
                    mode = "loop"
                    note = f"resized outputs differ from batch-1 invokes (rel. L2 {err:.3g})"
                else:
                    mode, note = "resized", f"matches batch-1 invokes (rel. L2 {err:.2g})"
        if mode == "loop" and n % base:
            raise ValueError(f"batch {n} is neither resizable nor a multiple of {base}")
        self.batch_mode[n], self.batch_notes[n] = mode, note
        return mode

    def _prepare(self, x: Inputs) -> tuple[list[np.ndarray], str]:
        q = self._to_model_input(x)
        mode = self._choose_batch_mode(q)
        self._set_batch(len(q[0]) if mode != "loop" else self.model_shape[0])
        return q, mode

    # ---- Session ------------------------------------------------------------------------------
    def runner(self, x: Inputs) -> Callable[[], Any]:
        q, mode = self._prepare(x)
        self.timed_batch = len(q[0])
        it, out = self.interpreter, self.output["index"]
        set_tensor, invoke, get_tensor = it.set_tensor, it.invoke, it.get_tensor
        indices = [d["index"] for d in self.inputs]
        pieces = [q] if mode != "loop" else self._pieces(q)
        if len(pieces) == 1 and len(indices) == 1:
            inp, value = indices[0], pieces[0][0]

            def run() -> Any:
                set_tensor(inp, value)
                invoke()
                return get_tensor(out)

            return run

        def run_all() -> Any:
            outs = []
            for piece in pieces:
                for index, value in zip(indices, piece, strict=True):
                    set_tensor(index, value)
                invoke()
                outs.append(get_tensor(out))
            return outs

        return run_all

    def predict(self, x: Inputs) -> np.ndarray:
        before = self.batch
        q, mode = self._prepare(x)
        y = self._loop(q) if mode == "loop" else self._invoke(q)
        self._set_batch(before)  # a runner made earlier stays valid
        return dequantize_output(y, self.output)

    # ---- inspect ------------------------------------------------------------------------------
    def _io_notes(self) -> list[str]:
        notes = []
        for role, d in (("input", self.input), ("output", self.output)):
            dtype = np.dtype(d["dtype"])
            if dtype.kind != "f" and d["quantization"][0]:
                scale, zp = d["quantization"]
                verb = "quantized" if role == "input" else "dequantized"
                notes.append(
                    f"{dtype.name} {role} (scale {scale:.6g}, zero point {zp}), "
                    f"{verb} outside the timed call"
                )
        return notes

    def _batch_note(self) -> list[str]:
        n = self.timed_batch
        if n is None or self.batch_mode.get(n) in (None, "native"):
            return []
        if self.batch_mode[n] == "loop":
            return [f"batch {n} ran as {n // self.model_shape[0]} invokes of the model's "
                    f"batch {self.model_shape[0]}: {self.batch_notes[n]}"]  # fmt: skip
        return [f"batch {n} ran as one invoke of the graph resized from batch "
                f"{self.model_shape[0]} ({self.batch_notes[n]})"]  # fmt: skip

    def inspect(self) -> dict[str, Any]:
        graph = read_tflite_graph(self.path)
        names = graph.op_names
        summary = delegate_partitions(self.interpreter, len(names))
        delegated = summary.delegated
        builtin = [names[i] for i in summary.undelegated()]
        if delegated:
            delegation = (
                f"{self.delegate_name} ran {len(delegated)} of {len(names)} ops in "
                f"{len(summary.partitions)} partition(s); builtin kernels ran {len(builtin)}"
                + (f" ({histogram(builtin)})" if builtin else "")
            )
        elif self.xnnpack:
            delegation = (f"XNNPACK took none of the {len(names)} ops; builtin kernels ran all "
                          f"({histogram(builtin)})")  # fmt: skip
        else:
            delegation = f"XNNPACK off: builtin kernels ran all {len(names)} ops"
        compute = graph.compute_ops()
        return {
            "delegate": self.delegate_name if delegated else "none",
            "delegated_nodes": len(delegated),
            "graph_nodes": len(names),
            "compute_nodes": len(compute),
            "quantized_nodes": len(graph.quantized_compute_ops()),
            "notes": [
                delegation,
                f"compute ops: {histogram([op.name for op in compute]) or 'none'}",
                *self._io_notes(),
                *self._batch_note(),
            ],
        }


def litert_version() -> str:
    try:
        import ai_edge_litert

        return str(ai_edge_litert.__version__)
    except AttributeError:
        from importlib.metadata import version

        return version("ai-edge-litert")


@backends.register
class LitertBackend(Backend):
    name = "litert"
    description = "LiteRT (TensorFlow Lite) interpreter, CPU: XNNPACK delegate or builtin kernels"
    Params = LitertParams
    loads = ("tflite",)
    requires = ("ai_edge_litert",)

    def version(self) -> str:
        return litert_version()

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        assert isinstance(params, LitertParams)
        return LitertSession(artifact, threads, xnnpack=params.xnnpack)
