"""Quantization methods: turn an fp32 model into an artifact a backend loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from qbench.inputs import Inputs, InputSpec
from qbench.models.base import LoadedModel, ModelSource, already_quantized, format_name
from qbench.params import NoParams, Params


@dataclass
class MakeContext:
    """Everything a method may use to build its artifact."""

    model_name: str
    source: ModelSource
    model_params: Params
    model: LoadedModel
    input_shape: tuple[int, ...]  # one sample of the first input, e.g. CHW
    # calibration inputs of a one-input model (NCHW float32 for images); None for a model of
    # several inputs: see calib_inputs
    calib: np.ndarray | None
    fp32_onnx: Any  # callable () -> Path: the cached fp32 ONNX export of this model
    # callable () -> Path: the cached fp32 LiteRT (.tflite) conversion (torch-format models)
    # or the user's own float .tflite
    fp32_tflite: Any = None
    inputs: list[InputSpec] | None = None  # the model's inputs (None: one, input_shape)
    calib_inputs: Inputs | None = None  # calibration inputs by model input name

    @property
    def input_specs(self) -> list[InputSpec]:
        from qbench.methods.export import INPUT_NAME

        return self.inputs or [InputSpec(INPUT_NAME, tuple(self.input_shape))]

    @property
    def calibration(self) -> Inputs:
        """Calibration inputs by model input name (every model)."""
        if self.calib_inputs is not None:
            return self.calib_inputs
        if self.calib is None:
            raise ValueError(f"model {self.model_name}: no calibration inputs in this context")
        return {self.input_specs[0].name: self.calib}

    def one_input(self, what: str) -> np.ndarray:
        """The calibration array of a one-input model; a clear error for a model of several."""
        if self.calib is None:
            names = ", ".join(s.name for s in self.input_specs)
            raise ValueError(f"{what} calibrates models of one input; model {self.model_name} "
                             f"takes {names}")  # fmt: skip
        return self.calib


class Method:
    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    produces: ClassVar[tuple[str, ...]]  # artifact formats this method can build
    uses_calibration: ClassVar[bool] = False  # see needs_calibration
    # Part of every artifact's cache key: bump it when the artifact changes for the same inputs.
    version: ClassVar[int] = 1

    def needs_calibration(self, params: Params) -> bool:
        """Whether building with these params reads calibration inputs (the suite's
        calibration section then applies, and cells expand per outlier fraction)."""
        return self.uses_calibration

    def execution(self, fmt: str, params: Params) -> str:
        """'native' when the runtime runs integer/fp16 kernels, 'simulated' when float ones."""
        return "native"

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        """Typed row columns for these parameters (bits_w, bits_a, granularity, ...)."""
        return {}

    def for_cpu(self, fmt: str, params: Params, cpu_flags: list[str]) -> tuple[Params, list[str]]:
        """These params with every `auto` setting decided for the CPU that will run the artifact
        (ISA flags read where the prepare stage runs: the device's own), and a note for each
        decision. The artifact's cache key and the row's described columns (bits_w ...) use
        the result, so artifacts for CPUs that need different settings never mix."""
        return params, []

    def stores_quantized(self, fmt: str, params: Params) -> bool:
        """Whether this method's artifact of `fmt` holds its weights in a type narrower than
        float32 (int8, int4, float16 ...): prepare then fails an artifact that holds none, and
        reads packed_bytes from it (qbench.formats.audit). Read from describe()'s weight_dtype;
        fake-quant methods say 'float32 (dequantized)'. Override where the runtime, not the
        file, applies the precision."""
        from qbench.formats import is_quantized_type

        return is_quantized_type(str(self.describe(fmt, params).get("weight_dtype") or ""))

    # The artifact's state dict holds every weight in the rebuilt module's own types (float
    # casts, torchao tensors): a backend may build the module without weights (meta) and
    # assign them, so loading never holds a second, randomly initialised copy.
    loads_by_assignment: ClassVar[bool] = False
    # False only for methods that run a model file as it is (`original`).
    needs_float_model: ClassVar[bool] = True
    # Formats whose artifact this method calibrates by running an exported graph on whole
    # calibration inputs (ONNX, OpenVINO IR, torch's PT2E program): a causal LM decodes
    # through a KV cache, which that graph and qbench's calibration do not feed.
    calibrates_exported_graph: ClassVar[tuple[str, ...]] = ()

    def unsupported(self, fmt: str, params: Params, source: ModelSource) -> str | None:
        """Why this method cannot build `fmt` for this model with these params, or None.
        Subclasses that add reasons call this first. `source` may be bound to its parameters
        (source.params): then the file itself is asked whether it is already quantized."""
        if fmt == "torch" and source.format != "torch":
            return f"model {source.name} is {format_name(source)}; it has no torch module"
        if fmt == "tflite" and source.format == "onnx":
            return (
                f"model {source.name} is an ONNX file; LiteRT artifacts are converted from "
                "torch modules"
            )
        if fmt == "onnx" and source.format == "tflite":
            return (f"model {source.name} is a .tflite file; ONNX artifacts come from torch "
                    "modules and ONNX files")  # fmt: skip
        params_of_source = getattr(source, "params", None)
        if (
            fmt in self.calibrates_exported_graph
            and params_of_source is not None
            and source.output_kind(params_of_source) == "token_logits"
        ):
            return (f"{self.name} ({fmt}) calibrates an exported graph on whole inputs; a "
                    "causal LM's decode takes a KV cache, which qbench's calibration does not "
                    "feed")  # fmt: skip
        quantized = already_quantized(source)
        if quantized and self.needs_float_model:
            return (f"model {source.name} is already quantized ({quantized}); {self.name} "
                    "needs a float model (method `original` runs the file as it is)")  # fmt: skip
        return None

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        """Write the artifact of format `fmt` to `out`; return row fields that describe it
        (packed_bytes, layer_bits_json, artifact_notes ...), cached beside the artifact."""
        raise NotImplementedError

    def rebuild_torch(self, module: Any, example: Any, params: Params) -> Any:
        """Turn a freshly built fp32 module into this method's structure so a saved state dict
        of format 'torch' loads into it. fp32 methods return the module unchanged."""
        return module


def fp32_tflite(ctx: MakeContext) -> Path:
    """The cached fp32 .tflite of the context's model (ctx.fp32_tflite must be set)."""
    if ctx.fp32_tflite is None:
        raise ValueError(
            f"model {ctx.model_name}: this context has no fp32 LiteRT conversion "
            "(MakeContext.fp32_tflite is unset)"
        )
    return Path(ctx.fp32_tflite())


def packed_bytes(ctx: MakeContext, weight_bits: Any) -> int:
    """Theoretical packed size of this model with `weight_bits(name, weight)` per layer: the
    row's figure for fake-quant methods only. For a method that stores quantized weights
    (stores_quantized) prepare's audit replaces it with what the artifact's constants take."""
    from qbench.methods.packing import packed_bytes_onnx, packed_bytes_tflite, packed_bytes_torch

    if ctx.model.has_module:
        return packed_bytes_torch(ctx.model.module, weight_bits)
    if ctx.model.tflite_path is not None:
        return packed_bytes_tflite(ctx.model.tflite_path, weight_bits)
    # the normalised graph: weights a file computes (ConstantOfShape) are folded there
    return packed_bytes_onnx(ctx.fp32_onnx(), weight_bits)


def save_torch_artifact(
    path: Path,
    ctx: MakeContext,
    method: str,
    params: Params,
    state_dict: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A torch artifact: the state dict plus what is needed to rebuild its module.

    Backends read it weights-only (tensors, quantized tensors, dtypes and plain values; no
    pickled code runs), so it is read back that way here, and returned: a state dict holding
    anything else fails its build with the reason, instead of every measurement of it. `extra`
    adds keys of tensors and plain values (a PT2E program's bytes as a uint8 tensor)."""
    import pickle

    import torch

    torch.save(
        {
            "model": ctx.model_name,
            "model_params": ctx.model_params.model_dump(),
            "method": method,
            "method_params": params.model_dump(),
            "input_shape": list(ctx.input_shape),
            "inputs": [spec.to_json() for spec in ctx.input_specs],
            "state_dict": state_dict,
            **(extra or {}),  # e.g. a PT2E program (qbench.methods._pt2e)
        },
        path,
    )
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        from qbench.formats.torch import weights_only_reason

        raise ValueError(
            f"method {method} saved a torch artifact that a weights-only load refuses "
            f"({weights_only_reason(exc)}): save tensors and plain values only"
        ) from exc
