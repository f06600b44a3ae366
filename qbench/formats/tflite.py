"""LiteRT flatbuffers (.tflite; an EdgeTPU artifact is one too): what they hold, and the
rewrites a float file from an older converter needs before ai-edge-quantizer can read it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from qbench.formats import QUANTIZED_TYPES, Contents

SUFFIX = ".tflite"
# the key TensorFlow's converter gives the one signature of a model
DEFAULT_SIGNATURE = "serving_default"


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _type_names() -> dict[int, str]:
    return {v: k.lower() for k, v in vars(_schema().TensorType).items() if not k.startswith("_")}


def buffer_bytes(model: Any, index: int) -> int:
    """Bytes a buffer holds: inline, or (as ai-edge-quantizer writes large files) after the
    flatbuffer at Offset()/Size()."""
    if index <= 0:
        return 0
    buffer = model.Buffers(index)
    if buffer.DataLength():
        return int(buffer.DataLength())
    return int(buffer.Size()) if buffer.Offset() > 1 else 0


def contents(path: Path) -> Contents:
    """Every subgraph's constant tensors (those with buffer data) by element type, their bytes
    (each buffer counted once, plus custom ops' options), and the ops that read or write a
    tensor of a quantized type (int8 kernels, hybrid kernels, DEQUANTIZE of int8/fp16 weights,
    an EdgeTPU custom op)."""
    model = _schema().Model.GetRootAsModel(Path(path).read_bytes(), 0)
    names = _type_names()
    dtypes: Counter[str] = Counter()
    buffers: dict[int, int] = {}
    quantized_ops, custom = 0, 0
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        types = [names.get(sg.Tensors(t).Type(), "unknown") for t in range(sg.TensorsLength())]
        for t in range(sg.TensorsLength()):
            index = sg.Tensors(t).Buffer()
            size = buffer_bytes(model, index)
            if size:
                dtypes[types[t]] += 1
                buffers[index] = size
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            tensors = [*(op.Inputs(j) for j in range(op.InputsLength())),
                       *(op.Outputs(j) for j in range(op.OutputsLength()))]  # fmt: skip
            quantized_ops += any(t >= 0 and types[t] in QUANTIZED_TYPES for t in tensors)
            # a compiled delegate op (the EdgeTPU's) carries the weights it took in its options
            custom += int(op.CustomOptionsLength())
    return Contents(dtypes, sum(buffers.values()) + custom, quantized_ops)


def quantizer_ready(data: bytes) -> tuple[bytes, list[str]]:
    """`data` rewritten so that ai-edge-quantizer reads it as LiteRT does, and what changed.

    - Operator codes: files written before schema 3a (older TensorFlow converters) keep the op
      only in `deprecated_builtin_code`; `builtin_code` reads 0 (ADD). LiteRT takes the larger
      of the two, ai-edge-quantizer only `builtin_code`: every op looked like ADD to it and it
      quantized nothing (a float32 artifact, ratio 1.00). Both fields get the op's code.
    - Signatures: its calibrator runs the model through a SignatureDef; a file without one gets
      DEFAULT_SIGNATURE over the first subgraph's inputs and outputs.
    Unchanged bytes come back when nothing needs either rewrite."""
    schema = _schema()
    model = schema.Model.GetRootAsModel(data, 0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    legacy = [i for i, c in enumerate(codes) if c.DeprecatedBuiltinCode() > c.BuiltinCode()]
    unsigned = model.SignatureDefsLength() == 0
    if not legacy and not unsigned:
        return data, []
    if any(model.Buffers(b).Offset() > 1 for b in range(model.BuffersLength())):
        raise ValueError(
            "a .tflite with buffers stored outside its flatbuffer cannot be "
            "rewritten for ai-edge-quantizer (legacy op codes, no SignatureDef)"
        )
    obj = schema.ModelT.InitFromObj(model)
    changed = []
    if legacy:
        for i in legacy:
            code = obj.operatorCodes[i]
            code.builtinCode = code.deprecatedBuiltinCode
        changed.append(f"{len(legacy)} operator codes set only in the pre-3a "
                       "deprecated_builtin_code field copied to builtin_code")  # fmt: skip
    if unsigned:
        obj.signatureDefs = [_default_signature(schema, obj.subgraphs[0])]
        changed.append(f"no SignatureDef: added {DEFAULT_SIGNATURE!r} over the model's inputs "
                       "and outputs")  # fmt: skip
    return _pack(obj), changed


def _default_signature(schema: Any, subgraph: Any) -> Any:
    def tensor_map(index: int) -> Any:
        entry = schema.TensorMapT()
        name = subgraph.tensors[index].name
        entry.name = name.decode() if isinstance(name, bytes) else name
        entry.tensorIndex = int(index)
        return entry

    sig = schema.SignatureDefT()
    sig.signatureKey = DEFAULT_SIGNATURE
    sig.subgraphIndex = 0
    sig.inputs = [tensor_map(i) for i in subgraph.inputs]
    sig.outputs = [tensor_map(i) for i in subgraph.outputs]
    return sig


def _pack(obj: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def strip_signatures(data: bytes) -> bytes:
    """`data` without SignatureDefs (as older converters wrote files): for tests."""
    obj = _schema().ModelT.InitFromObj(_schema().Model.GetRootAsModel(data, 0))
    obj.signatureDefs = []
    return _pack(obj)


def legacy_op_codes(data: bytes) -> bytes:
    """`data` with each op's code only in deprecated_builtin_code, builtin_code 0, as files
    from converters before schema 3a hold them (codes under 127 only): for tests."""
    obj = _schema().ModelT.InitFromObj(_schema().Model.GetRootAsModel(data, 0))
    for code in obj.operatorCodes:
        if code.builtinCode < 127:
            code.deprecatedBuiltinCode, code.builtinCode = code.builtinCode, 0
    return _pack(obj)
