"""Any ONNX file by path: it is its own fp32 reference; only ONNX-loading backends run it.

The file's graph inputs (minus initializers, which IR-3 files list as inputs too) are the model's
inputs, matched by name with the dataset's fields; axis 0 is the batch (a fixed size there, the
ONNX Model Zoo's norm, is the only batch the model runs). Before quantization the graph is
normalised once (qbench.methods.export.normalize_onnx): initializers dropped from the inputs,
opset raised to 13 where it is lower, constants folded.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from qbench.inputs import InputSpec, shape_fits
from qbench.models.base import LoadedModel, ModelSource
from qbench.params import CheckError, Params, file_sha256
from qbench.plugins import models
from qbench.suite.schema import MemberRef

IMAGE_INPUT = (3, 224, 224)  # what dataset auto gives an image model: sample_photos' crops


class OnnxFileParams(Params):
    path: str = Field(description="path to a .onnx file (relative paths: from the suite's folder)")
    dataset: MemberRef = Field(
        default=MemberRef(name="auto"),
        description="dataset whose inputs it takes: a name or {name, params}; auto: "
        "sample_photos for one float input of 3x224x224, else synthetic (latency only)",
    )

    path_fields: ClassVar[tuple[str, ...]] = ("path",)


def resolve_path(value: str, field: str, suffixes: tuple[str, ...], kind: str) -> Path:
    """The file `value` names, or CheckError(field, why) naming what is wrong with it."""
    path = Path(value).expanduser()
    if not path.exists():
        raise CheckError(field, f"{value}: no such file")
    if path.is_dir():
        raise CheckError(field, f"{value}: is a directory, expected {kind} file")
    if path.suffix.lower() not in suffixes:
        raise CheckError(
            field, f"{value}: expected {kind} file ({'/'.join(suffixes)}), got {path.suffix!r}"
        )
    return path.resolve()


@lru_cache(maxsize=32)
def _graph_inputs(path: str, mtime: float) -> tuple[tuple[InputSpec, ...], int | None, str | None]:
    """(inputs, fixed batch or None, why it is already quantized or None) of an ONNX file, read
    once per file version."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CheckError("path", f"{path}: not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise CheckError("path", f"{path}: not an ONNX model (its graph has no nodes)")
    initializers = {i.name for i in model.graph.initializer}
    specs, batches = [], []
    for value in model.graph.input:
        if value.name in initializers:  # IR < 4: weights are listed as inputs too
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in tensor.shape.dim]  # fmt: skip
        if not dims:
            raise CheckError(
                "path",
                f"{path}: input {value.name} has no batch axis (rank 0); qbench feeds "
                "batches along axis 0",
            )
        dtype = str(tensor_dtype_to_np_dtype(tensor.elem_type))
        specs.append(InputSpec(value.name, tuple(dims[1:]), dtype))
        batches.append(dims[0])
    if not specs:
        raise CheckError("path", f"{path}: the graph has no inputs to feed")
    fixed = {b for b in batches if b is not None}
    quantized = sorted({n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS})
    why = f"its graph holds {', '.join(quantized)}" if quantized else None
    return tuple(specs), (min(fixed) if fixed else None), why


# Ops that only a quantized graph holds.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                           "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                           "MatMulNBits", "QGemm", "QAttention"})  # fmt: skip


def onnx_facts(path: Path) -> tuple[tuple[InputSpec, ...], int | None, str | None]:
    return _graph_inputs(str(path), path.stat().st_mtime)


@models.register
class OnnxFileModel(ModelSource):
    name = "onnx_file"
    description = "an fp32 ONNX file given by path (any inputs, matched to the data by name)"
    Params = OnnxFileParams
    dataset = "sample_photos"
    format = "onnx"

    def _path(self, params: Params) -> Path:
        assert isinstance(params, OnnxFileParams)
        return resolve_path(params.path, "path", (".onnx",), "an ONNX")

    def check(self, params: Params) -> None:
        onnx_facts(self._path(params))

    def inputs(self, params: Params) -> list[InputSpec]:
        return list(onnx_facts(self._path(params))[0])

    def fixed_batch(self, params: Params) -> int | None:
        return onnx_facts(self._path(params))[1]

    def quantized(self, params: Params) -> str | None:
        return onnx_facts(self._path(params))[2]

    def default_label(self, params: Params) -> str:
        assert isinstance(params, OnnxFileParams)
        return Path(params.path).stem

    def dataset_for(self, params: Params) -> Any:
        assert isinstance(params, OnnxFileParams)
        if params.dataset.name != "auto":
            return params.dataset
        return auto_dataset(self.inputs(params))

    def load(self, params: Params) -> LoadedModel:
        path = self._path(params)
        return LoadedModel(
            weights=f"onnx file {path.name}", sha256=file_sha256(str(path)), onnx_path=path
        )


def auto_dataset(inputs: list[InputSpec]) -> str:
    """sample_photos for a model of one float image input it fits, else synthetic inputs."""
    if (
        len(inputs) == 1
        and inputs[0].dtype == "float32"
        and shape_fits(inputs[0].shape, IMAGE_INPUT)
    ):
        return "sample_photos"
    return "synthetic"
