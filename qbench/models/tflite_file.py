"""A user's .tflite file: float or already quantized, run as it is on LiteRT and the EdgeTPU.

A float file is its own fp32 reference, and LiteRT's quantizing methods (ai-edge-quantizer
works on .tflite flatbuffers) start from it. A file that is already quantized (integer or
float16 weights) runs through the `original` method only: methods that quantize need a float
model, and there is no float reference to measure fidelity against (top-1 on labelled data
still is).
"""

from __future__ import annotations

from pathlib import Path

from qbench.inputs import InputSpec
from qbench.models._file import FileFacts, ModelFile, cached_facts
from qbench.params import CheckError
from qbench.plugins import models

TFLITE_MAGIC = b"TFL3"  # the flatbuffer file identifier, bytes 4..8

_NUMPY = {"FLOAT32": "float32", "FLOAT16": "float16", "INT8": "int8", "UINT8": "uint8",
          "INT16": "int16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}  # fmt: skip


def read_tflite_facts(path: str) -> FileFacts:
    """The inputs (float where the model quantizes them itself: the session does it with the
    tensor's scale), and why the file is already quantized."""
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
    graph = schema.Model.GetRootAsModel(data, 0).Subgraphs(0)
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
    why = None
    if quantized:
        why = f"{quantized} of {len(tflite.compute_ops())} compute ops have integer weights"
    elif dequantized:
        why = f"{dequantized} DEQUANTIZE ops feed stored low-precision weights"
    # LiteRT resizes or loops any batch (qbench.backends.litert): no fixed batch
    return FileFacts(tuple(specs), None, why)


@models.register
class TfliteFileModel(ModelFile):
    name = "tflite_file"
    description = "a .tflite file (float or already quantized), run on LiteRT / EdgeTPU"
    format = "tflite"
    suffixes = (".tflite",)
    kind = "a .tflite"
    loaded_as = "tflite_path"
    read_facts = staticmethod(cached_facts(read_tflite_facts))
