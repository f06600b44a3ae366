"""A user's .tflite file: float or already quantized, run as it is on LiteRT and the EdgeTPU.

A float file is its own fp32 reference, and LiteRT's quantizing methods (ai-edge-quantizer
works on .tflite flatbuffers) start from it. A file that is already quantized (integer or
float16 weights) runs through the `original` method only: methods that quantize need a float
model, and there is no float reference to measure fidelity against (top-1 on labelled data
still is).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from qbench.inputs import InputSpec
from qbench.models.base import LoadedModel, ModelSource
from qbench.models.onnx_file import auto_dataset, resolve_path
from qbench.params import CheckError, Params, file_sha256
from qbench.plugins import models
from qbench.suite.schema import MemberRef

TFLITE_MAGIC = b"TFL3"  # the flatbuffer file identifier, bytes 4..8


class TfliteFileParams(Params):
    path: str = Field(
        description="path to a .tflite file (relative paths: from the suite's folder)"
    )
    dataset: MemberRef = Field(
        default=MemberRef(name="auto"),
        description="dataset whose inputs it takes: a name or {name, params}; auto: "
        "sample_photos for one float input of 3x224x224 (or 224x224x3), else synthetic",
    )

    path_fields: ClassVar[tuple[str, ...]] = ("path",)


_NUMPY = {"FLOAT32": "float32", "FLOAT16": "float16", "INT8": "int8", "UINT8": "uint8",
          "INT16": "int16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}  # fmt: skip


@lru_cache(maxsize=32)
def _facts(path: str, mtime: float) -> tuple[tuple[InputSpec, ...], str | None]:
    """(inputs as float where the model quantizes them itself, why it is quantized or None)."""
    data = Path(path).read_bytes()
    if data[4:8] != TFLITE_MAGIC:
        raise CheckError("path", f"{path}: not a .tflite model (no TFL3 identifier)")
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise CheckError(
            "path",
            f"{path}: reading a .tflite file needs the ai-edge-litert package "
            "(pip install -e '.[litert]'; scripts/setup.sh installs it)",
        ) from None

    from qbench.backends._tflite_graph import read_tflite_graph

    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    specs = []
    for i in range(graph.InputsLength()):
        tensor = graph.Tensors(graph.Inputs(i))
        signature = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else None
        shape = [int(d) for d in (signature if signature is not None else tensor.ShapeAsNumpy())]
        dtype = _NUMPY.get(names.get(tensor.Type(), ""), "float32")
        q = tensor.Quantization()
        if dtype in ("int8", "uint8", "int16") and q is not None and q.ScaleLength():
            dtype = "float32"  # a quantized input: the session quantizes float data with its scale
        dims = tuple(None if d < 0 else d for d in shape[1:])
        specs.append(InputSpec((tensor.Name() or b"").decode() or f"input_{i}", dims, dtype))
    tflite = read_tflite_graph(data)
    quantized = len(tflite.quantized_compute_ops())
    dequantized = sum(op.name == "DEQUANTIZE" for op in tflite.ops)
    compute = len(tflite.compute_ops())
    why = None
    if quantized:
        why = f"{quantized} of {compute} compute ops have integer weights"
    elif dequantized:
        why = f"{dequantized} DEQUANTIZE ops feed stored low-precision weights"
    return tuple(specs), why


@models.register
class TfliteFileModel(ModelSource):
    name = "tflite_file"
    description = "a .tflite file (float or already quantized), run on LiteRT / EdgeTPU"
    Params = TfliteFileParams
    dataset = "sample_photos"
    format = "tflite"

    def _path(self, params: Params) -> Path:
        assert isinstance(params, TfliteFileParams)
        return resolve_path(params.path, "path", (".tflite",), "a .tflite")

    def _facts(self, params: Params) -> tuple[tuple[InputSpec, ...], str | None]:
        path = self._path(params)
        return _facts(str(path), path.stat().st_mtime)

    def check(self, params: Params) -> None:
        self._facts(params)

    def inputs(self, params: Params) -> list[InputSpec]:
        return list(self._facts(params)[0])

    def quantized(self, params: Params) -> str | None:
        return self._facts(params)[1]

    def default_label(self, params: Params) -> str:
        assert isinstance(params, TfliteFileParams)
        return Path(params.path).stem

    def dataset_for(self, params: Params) -> Any:
        assert isinstance(params, TfliteFileParams)
        if params.dataset.name != "auto":
            return params.dataset
        inputs = self.inputs(params)
        if len(inputs) == 1 and len(inputs[0].shape) == 3 and inputs[0].shape[-1] == 3:
            hwc = inputs[0]
            inputs = [InputSpec(hwc.name, (hwc.shape[2], hwc.shape[0], hwc.shape[1]), hwc.dtype)]
        return auto_dataset(inputs)

    def load(self, params: Params) -> LoadedModel:
        path = self._path(params)
        return LoadedModel(
            weights=f"tflite file {path.name}", sha256=file_sha256(str(path)), tflite_path=path
        )
