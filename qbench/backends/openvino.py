"""OpenVINO runtime, CPU plugin.

Loads OpenVINO IR (format "openvino": one-file containers of qbench.methods._openvino_ir, built
by the nncf_int8 / nncf_weights methods and by bf16/fp16 for OpenVINO) and ONNX artifacts,
which OpenVINO's ONNX reader converts in memory (the fp32 export, ONNX Runtime's QDQ int8).

Nothing is left to the plugin's defaults that changes what runs: the model is compiled in
memory (no model cache unless `cache_dir` is given) with INFERENCE_PRECISION_HINT set
explicitly. On CPUs with AMX or AVX512-BF16 the CPU plugin's default precision is bf16, so an
fp32 artifact that did not ask for f32 would not be measured as fp32: `inference_precision:
auto` takes the artifact's own precision (f32 for ONNX files and NNCF's int8 IR, the
precision a bf16/fp16 IR is marked with). INFERENCE_NUM_THREADS is the cell's threads; the
latency hint runs one stream. qbench's ONNX exports have a dynamic batch axis; compiled as
it is, the plugin infers shapes and looks its kernels up on every call (MobileNetV2 int8, 1
thread: 8 % slower; the digits CNN's 0.03 ms int8 call: 1.8x slower), so by default
(`shapes: static`) the model is reshaped to the measured batch and compiled for it, as the
other backends run it (LiteRT's static tensors, torch.compile without dynamic shapes). Which
kernels really ran is read back from the compiled model's runtime graph (layer types and
runtime precisions; a snippets Subgraph counts the model's MatMuls it fuses).

ONNX graphs OpenVINO cannot run as their method meant them are refused at plan time
(`refuses`): QOperator graphs (com.microsoft QGemm and per-channel QLinearConv are not
converted), 16-bit QDQ activations (read, but computed wrongly: top-1 agreed with ONNX Runtime
on 60 % of the digits), per-group (blocked) DequantizeLinear (converted only where each group
divides its axis).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from qbench.backends._onednn import (
    ISA_LEVELS,
    cap_excludes_amx,
    kernel_summary,
    set_isa_cap,
    uses_amx,
)
from qbench.backends.base import Backend, Session, feed_by_name
from qbench.inputs import Inputs
from qbench.params import Params
from qbench.plugins import backends

# Runtime-graph layer types (rt_info "layerType") that do a layer's multiply-accumulates.
COMPUTE_LAYERS = frozenset(
    {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm"}
)
# runtimePrecision of a compute layer that runs integer (or low-bit weight) kernels
LOW_PRECISION = frozenset({"i8", "u8", "i4", "u4", "u2", "i2", "nf4", "f4e2m1", "u1"})
HALF = {"bf16": "bfloat16", "f16": "float16"}
_ISA = {"bf16": "AVX512-BF16/AMX-BF16", "f16": "AVX512-FP16/AMX-FP16"}


class OpenVinoParams(Params):
    hint: Literal["latency", "throughput"] = Field(
        default="latency",
        description="PERFORMANCE_HINT: latency runs one stream; throughput lets the CPU plugin "
        "choose streams (the timed call still runs one request at a time)",
    )
    inference_precision: Literal["auto", "f32", "bf16", "f16"] = Field(
        default="auto",
        description="INFERENCE_PRECISION_HINT, always set explicitly: auto is the artifact's "
        "own precision (f32 for ONNX files and NNCF int8 IR; bf16/f16 for the IR the bf16 and "
        "fp16 methods build). The CPU plugin's own default is bf16 on AMX/AVX512-BF16 CPUs, so "
        "an fp32 cell must ask for f32",
    )
    shapes: Literal["static", "dynamic"] = Field(
        default="static",
        description="static: a model with dynamic input shapes (a dynamic batch axis) is "
        "reshaped to the measured batch's shapes and compiled for them (compile_s), as OpenVINO "
        "recommends for CPU latency; dynamic: compiled once with the model's own shapes (the "
        "plugin then infers shapes and picks kernels on every call)",
    )
    isa: Literal[ISA_LEVELS] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="cap the instruction set of the CPU plugin's oneDNN kernels "
        "(ONEDNN_MAX_CPU_ISA, read when the plugin loads in the measure process), e.g. "
        "avx512_core_bf16 to run int8 and bf16 without AMX on the same machine; "
        "onednn_kernels says which kernels then ran",
    )
    cache_dir: str | None = Field(
        default=None,
        description="CACHE_DIR for compiled blobs (off by default: every cell compiles the "
        "model it measures, and load_s includes the compile)",
    )


def _precision_name(value: Any) -> str:
    """OpenVINO's short name of an element type read back from a property (f32, bf16, f16)."""
    name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(name, name)


# ops of the model as read (before the plugin's fusions) that do multiply-accumulates
MODEL_COMPUTE_OPS = frozenset({"Convolution", "GroupConvolution", "ConvolutionBackpropData",
                               "GroupConvolutionBackpropData", "MatMul"})  # fmt: skip


def runtime_layers(compiled: Any) -> list[dict[str, Any]]:
    """Layer type, runtime precision, kernel, first input's type and the names of the model's
    ops it executes (originalLayersNames) of each node of the compiled model's runtime graph
    (what the CPU plugin executes)."""
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()

        def get(key: str, rt: Any = rt) -> str:
            return rt[key].astype(str) if key in rt else ""

        layers.append(
            {
                "type": get("layerType"),
                "precision": get("runtimePrecision"),
                "kernel": get("primitiveType"),
                "input": _precision_name(op.input(0).get_element_type())
                if op.get_input_size()
                else "",
                "original": [n for n in get("originalLayersNames").split(",") if n],
            }
        )
    return layers


def model_compute_ops(model: Any) -> frozenset[str]:
    """Friendly names of the model's compute ops (MODEL_COMPUTE_OPS), to count those the
    plugin fuses into a Subgraph."""
    return frozenset(op.get_friendly_name() for op in model.get_ordered_ops()
                     if op.get_type_name() in MODEL_COMPUTE_OPS)  # fmt: skip


def count_runtime_compute(
    layers: list[dict[str, Any]], compute_ops: frozenset[str] = frozenset()
) -> tuple[int, int, Counter[str]]:
    """(quantized compute layers, compute layers, histogram "Type precision" of compute layers).
    A compute layer runs quantized where its runtime precision is an integer type: int8
    activations (static int8) or integer weights decompressed inside the kernel (weight-only
    compression: its input stays float). A Subgraph (the plugin's code-generated fusion; with
    static shapes it takes MatMul chains, an MLP) counts once per model compute op it runs
    (`compute_ops`, by name), at its runtime precision."""
    quantized, compute, hist = 0, 0, Counter[str]()
    for layer in layers:
        if layer["type"] in COMPUTE_LAYERS:
            times = 1
        elif layer["type"] == "Subgraph":
            times = sum(name in compute_ops for name in layer["original"])
        else:
            continue
        if not times:
            continue
        low = layer["precision"] in LOW_PRECISION
        compute += times
        quantized += times * low
        weights_only = low and layer["input"] in ("f32", "bf16", "f16")
        label = f"{layer['type']} {layer['precision']}"
        hist[label + (" weights" if weights_only else "")] += times
    return quantized, compute, hist


def _has_quantization(model: Any) -> bool:
    """Whether the model as read holds quantization: FakeQuantize nodes, or integer constants
    dequantized for a compute op (ONNX QDQ / ConvInteger / compressed weights)."""
    from qbench.methods._openvino_ir import compute_weights

    if any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops()):
        return True
    return any(t not in ("f32", "f16", "bf16") for t in compute_weights(model).values())


class OpenVinoSession(Session):
    """A model on OpenVINO's CPU plugin. With `shapes: static` (the default) a model whose
    input shapes are dynamic (qbench's ONNX exports have a dynamic batch axis) is reshaped to
    the batch's shapes and compiled for them when runner() binds the batch (not timed;
    compile_s), as a compiled torch module is: the plugin then plans memory and picks kernels
    once, not on every call. predict() feeds batches of the same shapes; another shape gets
    its own compile."""

    def __init__(
        self,
        model: Any,
        own_precision: str,
        threads: int,
        params: OpenVinoParams,
        keep: Any = None,
    ) -> None:
        import openvino as ov

        self.params, self.threads, self.own = params, threads, own_precision
        self.keep = keep  # the IR's weights tensor: the model's constants may share it
        self.precision = own_precision if params.inference_precision == "auto" else (
            params.inference_precision
        )  # fmt: skip
        self.config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": self.precision,
            "PERFORMANCE_HINT": params.hint.upper(),
            "INFERENCE_NUM_THREADS": threads,
        }
        if params.hint == "latency":
            self.config["NUM_STREAMS"] = 1
        if params.cache_dir:
            self.config["CACHE_DIR"] = params.cache_dir
        self.quantized_model = _has_quantization(model)
        self.core = ov.Core()
        self.model = model
        self.input_names = [port.get_any_name() for port in model.inputs]
        self.dynamic = any(port.get_partial_shape().is_dynamic for port in model.inputs)
        self.per_shapes = self.dynamic and params.shapes == "static"  # compiled per batch
        self.compile_s: float | None = None
        # compiled models (and one infer request each) by input shapes; None: the model's own
        self.by_shapes: dict[tuple[tuple[int, ...], ...] | None, tuple[Any, Any]] = {}
        self.compiled: Any = None
        if not self.per_shapes:
            self.compiled, self.request = self._compile(None)

    def _compile(self, shapes: tuple[tuple[int, ...], ...] | None) -> tuple[Any, Any]:
        """The compiled model and its infer request for these input shapes (None: the model's
        own, dynamic where it is), compiled once per shapes."""
        key = shapes if self.per_shapes else None
        if key not in self.by_shapes:
            model = self.model
            if key is not None:
                import openvino as ov

                model = self.model.clone()
                ports = zip(model.inputs, key, strict=True)
                model.reshape({port.get_any_name(): ov.PartialShape(list(shape))
                               for port, shape in ports})  # fmt: skip
            compiled = self.core.compile_model(model, "CPU", self.config)
            self.by_shapes[key] = (compiled, compiled.create_infer_request())
        return self.by_shapes[key]

    def _tensors(self, x: Inputs) -> list[tuple[Any, np.ndarray]]:
        import openvino as ov

        feed = feed_by_name(self.input_names, x)
        tensors = []
        for port, value in zip(self.model.inputs, feed.values(), strict=True):
            dtype = port.get_element_type().to_dtype()
            # asarray(order=C), not ascontiguousarray: that makes a scalar input 1-d
            array = np.asarray(value, dtype=dtype, order="C")
            # A shared-memory Tensor points into the array without owning it: callers keep
            # the arrays alive as long as the tensors, or a copy made here is freed under it.
            tensors.append((ov.Tensor(array, shared_memory=True), array))
        return tensors

    @staticmethod
    def _shapes(bound: list[tuple[Any, np.ndarray]]) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(array.shape) for _, array in bound)

    def runner(self, x: Inputs) -> Callable[[], Any]:
        """The inputs bound to one infer request once; the timed call is the inference alone
        (synchronous, in the calling thread; outputs left in OpenVINO's buffers)."""
        self.bound = self._tensors(x)  # kept: the tensors share the arrays' memory
        shapes = self._shapes(self.bound)
        first = self.compiled is None
        started = time.perf_counter()
        self.compiled, self.request = self._compile(shapes)
        if first:
            self.compile_s = time.perf_counter() - started
        for index, (tensor, _) in enumerate(self.bound):
            self.request.set_input_tensor(index, tensor)
        infer = self.request.infer

        def run() -> Any:
            return infer(share_outputs=True)

        # The request needs its compiled model, core and input memory: a caller that keeps
        # only this callable (not the session) must not let them be freed under it.
        run.session = self  # type: ignore[attr-defined]
        return run

    def predict(self, x: Inputs) -> np.ndarray:
        bound = self._tensors(x)  # alive until the inference has run
        compiled, _ = self._compile(self._shapes(bound))
        request = compiled.create_infer_request()
        for index, (tensor, _) in enumerate(bound):
            request.set_input_tensor(index, tensor)
        request.infer()
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    def inspect(self) -> dict[str, Any]:
        """What the CPU plugin runs: quantized vs all compute layers of the runtime graph, the
        execution precision read back, and whether the method's low precision really ran."""
        if self.compiled is None:  # inspected before any batch was bound: the model as it is
            self.compiled, self.request = self._compile(None)
        layers = runtime_layers(self.compiled)
        quantized, compute, hist = count_runtime_compute(layers, model_compute_ops(self.model))
        used = _precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        streams = self.compiled.get_property("NUM_STREAMS")
        threads = self.compiled.get_property("INFERENCE_NUM_THREADS")
        pinning = self.compiled.get_property("ENABLE_CPU_PINNING")
        asked = "" if self.params.inference_precision != "auto" else " (auto: the artifact's)"
        notes = [
            f"OpenVINO CPU: execution precision {used} (INFERENCE_PRECISION_HINT read back; "
            f"asked {self.precision}{asked}), hint {self.params.hint}, {streams} stream(s), "
            f"{threads} thread(s), CPU pinning {'on' if pinning else 'off'}",
        ]
        if hist:
            ops = ", ".join(f"{k}×{v}" for k, v in sorted(hist.items()))
            notes.append(f"runtime graph compute layers: {ops}")
        kernels = Counter(f"{layer['type'].lower()} {layer['kernel']}" for layer in layers
                          if layer["type"] in COMPUTE_LAYERS and layer["kernel"])  # fmt: skip
        if self.params.isa:
            notes.append(_isa_note(self.params.isa, kernels))
        shapes = next((k for k, v in self.by_shapes.items() if v[0] is self.compiled), None)
        if shapes is not None:
            listed = ", ".join(map(str, shapes))
            notes.append(
                f"compiled for static input shapes {listed} in {self.compile_s or 0:.2f} s "
                "(the model's own are dynamic)"
            )
        elif self.dynamic:
            notes.append("compiled with the model's dynamic input shapes (shapes: dynamic)")
        row: dict[str, Any] = {"quantized_nodes": quantized, "compute_nodes": compute}
        if kernels:
            row["onednn_kernels"] = kernel_summary(kernels, limit=12)
        if self.compile_s is not None:
            row["compile_s"] = self.compile_s
        # What ran is the plugin's call, not the method's label (see onnxruntime_gpu):
        half_ran = sum(n for label, n in hist.items() if label.split()[1] == self.precision)
        if quantized:
            row["execution"] = "native"
        elif self.quantized_model:
            row["execution"] = "simulated"
            notes.append(
                "the artifact's integer weights / quantize-dequantize pairs run as float "
                "kernels on OpenVINO's CPU plugin (no integer compute layer)"
            )
        elif self.own in HALF:  # a bf16/fp16 IR: native only where its precision ran
            if used == self.own and half_ran:
                row["execution"] = "native"
            else:
                row["execution"] = "simulated"
                why = "" if self.precision != self.own else f" ({_ISA[self.own]} missing?)"
                notes.append(f"the IR is meant to run in {self.own}; the CPU plugin runs "
                             f"{used}{why}")  # fmt: skip
        if self.precision != used:
            notes.append(f"INFERENCE_PRECISION_HINT {self.precision} was asked; the CPU plugin "
                         f"uses {used}")  # fmt: skip
        row["notes"] = notes
        return row


@backends.register
class OpenVinoBackend(Backend):
    name = "openvino"
    description = "OpenVINO runtime, CPU plugin (OpenVINO IR and ONNX)"
    Params = OpenVinoParams
    loads = ("openvino", "onnx")
    requires = ("openvino",)

    def version(self) -> str:
        import openvino

        return openvino.__version__.split("-")[0]

    def refuses(
        self, method: str, method_params: Params, fmt: str, params: Params, cpu_flags: list[str]
    ) -> str | None:
        assert isinstance(params, OpenVinoParams)
        if fmt == "onnx" and method == "static_int8":
            why = _static_int8_refusal(method_params)
            if why:
                return why
        precision = params.inference_precision
        if precision == "auto" and fmt == "openvino" and method in ("bf16", "fp16"):
            precision = "bf16" if method == "bf16" else "f16"
        if precision in HALF and cpu_flags:
            from qbench.probe import kernel_readiness

            why = kernel_readiness(cpu_flags)["bf16" if precision == "bf16" else "fp16"]
            if why:
                instead = "emulates bf16 with AVX-512 conversions or runs f32" if (
                    precision == "bf16"
                ) else "runs bf16 (or f32) instead of f16"  # fmt: skip
                return (f"this CPU has {why} (probe): OpenVINO's CPU plugin {instead}, so the "
                        f"cell would not measure {precision}")  # fmt: skip
        return None

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        assert isinstance(params, OpenVinoParams)
        # before the CPU plugin loads in this process: its oneDNN reads the cap once
        set_isa_cap(params.isa)
        import openvino as ov

        if fmt == "openvino":
            from qbench.methods._openvino_ir import read_model

            model, header, keep = read_model(ov.Core(), artifact)
            return OpenVinoSession(model, header["inference_precision"], threads, params, keep)
        if fmt != "onnx":
            raise ValueError(f"the openvino backend loads openvino and onnx artifacts, not {fmt}")
        try:
            model = ov.Core().read_model(str(artifact))
        except RuntimeError as exc:
            reason = " ".join(str(exc).split())[:400]
            raise ValueError(f"OpenVINO cannot read ONNX artifact {artifact.name}: "
                             f"{reason}") from None  # fmt: skip
        return OpenVinoSession(model, "f32", threads, params)


def _isa_note(isa: str, kernels: Counter[str]) -> str:
    """What an `isa` cap did: a cap below AMX under which AMX kernels still ran came after the
    plugin had loaded in this process (oneDNN reads ONEDNN_MAX_CPU_ISA once)."""
    note = f"oneDNN ISA capped at {isa} (ONEDNN_MAX_CPU_ISA)"
    if cap_excludes_amx(isa) and any(uses_amx(name) for name in kernels):
        note += ": not applied, AMX kernels ran (the CPU plugin was loaded before the cap)"
    return note


def _static_int8_refusal(p: Params) -> str | None:
    quant_format = getattr(p, "quant_format", "qdq")
    activations = str(getattr(p, "activations", "uint8"))
    if quant_format == "qoperator":
        return ("OpenVINO's ONNX reader does not convert QOperator graphs (ONNX Runtime's "
                "com.microsoft QGemm; QLinearConv with per-channel weight scales): use "
                "quant_format qdq, or method nncf_int8")  # fmt: skip
    if activations.endswith("16"):
        return (f"OpenVINO reads 16-bit QDQ activations ({activations}) but computes them "
                "wrongly (top-1 agreed with ONNX Runtime's run of the same graph on 60 % of "
                "the digits): not measured")  # fmt: skip
    if getattr(p, "group_size", None):
        return ("per-group (blocked, opset-21) DequantizeLinear: OpenVINO's ONNX reader "
                "converts it only where every group divides its axis, and would run it as "
                "float weights: not measured")  # fmt: skip
    return None
