"""OpenVINO IR in qbench's one-file container (.openvino: header, XML, weights)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from qbench.formats import Contents

SUFFIX = ".openvino"
# IR element types by numpy-style name
_TYPES = {"f32": "float32", "f64": "float64", "f16": "float16", "bf16": "bfloat16", "i8": "int8",
          "u8": "uint8", "i4": "int4", "u4": "uint4", "i16": "int16", "u16": "uint16",
          "i32": "int32", "i64": "int64", "u1": "bool", "boolean": "bool", "nf4": "nf4",
          "f8e4m3": "float8_e4m3fn", "f8e5m2": "float8_e5m2"}  # fmt: skip


def contents(path: Path) -> Contents:
    """The IR's Const layers by element type and their bytes (the `size` each takes in the
    weights file), and its FakeQuantize layers and Converts from a quantized type."""
    import xml.etree.ElementTree as ElementTree

    from qbench.formats import QUANTIZED_TYPES
    from qbench.methods._openvino_ir import unpack

    _, xml, _ = unpack(Path(path))
    root = ElementTree.fromstring(xml)
    dtypes: Counter[str] = Counter()
    stored, ops = 0, 0
    const_type: dict[str, str] = {}
    for layer in root.iter("layer"):
        data = layer.find("data")
        attrs = {} if data is None else data.attrib
        if layer.get("type") == "Const":
            kind = _TYPES.get(attrs.get("element_type", ""), attrs.get("element_type", "?"))
            dtypes[kind] += 1
            stored += int(attrs.get("size", 0))
            const_type[layer.get("id", "")] = kind
        elif layer.get("type") == "FakeQuantize":
            ops += 1
    for edge in root.iter("edge"):  # a Convert fed by a quantized constant dequantizes it
        if const_type.get(edge.get("from-layer", "")) in QUANTIZED_TYPES:
            ops += 1
    return Contents(dtypes, stored, ops)
