"""One room per artifact format: what an artifact of that format holds, read back from the file.

Each module (onnx, tflite, torch, openvino) owns its suffix and `contents(path)`: the graph's
constants counted by the element type they are stored in, the bytes they take at those types,
and the ops that compute in or convert from a quantized type. `qbench.formats.audit` compares
that with what the method that wrote the artifact meant to store.
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Element types narrower than float32: integer grids and half floats. A method meant to
# quantize leaves at least one constant in one of them (or an op converting from one).
QUANTIZED_TYPES = frozenset({
    "int2", "int4", "uint4", "int8", "uint8", "int16", "uint16", "float16", "bfloat16",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "nf4", "f4e2m1",
})  # fmt: skip
FLOAT_TYPES = frozenset({"float32", "float64"})
# artifact format -> module of this package that reads it (an EdgeTPU artifact is a .tflite)
_READERS = {"onnx": "onnx", "tflite": "tflite", "edgetpu": "tflite", "torch": "torch",
            "openvino": "openvino"}  # fmt: skip


def is_quantized_type(dtype: str) -> bool:
    """Whether a declared weight type ('int8', 'uint4', 'float16', 'int3', 'float32
    (dequantized)') is stored narrower than float32: the first word, a QUANTIZED_TYPES name
    or an integer / float type of under 32 bits."""
    import re

    word = dtype.split(" ")[0] if dtype else ""
    narrow = re.fullmatch(r"(u?int|float|bfloat)(\d+)", word)
    return word in QUANTIZED_TYPES or (narrow is not None and int(narrow[2]) < 32)


@dataclass(frozen=True)
class Contents:
    """What an artifact holds, read from its bytes."""

    dtypes: Counter[str] = field(default_factory=Counter)  # constants by stored element type
    stored_bytes: int = 0  # bytes the constants take at their stored types
    quantized_ops: int = 0  # ops that compute in, or convert from, a QUANTIZED_TYPES type

    @property
    def quantized_tensors(self) -> int:
        return sum(n for t, n in self.dtypes.items() if t in QUANTIZED_TYPES)

    @property
    def float_tensors(self) -> int:
        return sum(n for t, n in self.dtypes.items() if t in FLOAT_TYPES)

    def summary(self) -> str:
        """'int8×4, float32×9 constants, 6 quantized ops'"""
        types = ", ".join(f"{t}×{n}" for t, n in self.dtypes.most_common()) or "no"
        return f"{types} constants, {self.quantized_ops} quantized ops"


def reader(fmt: str) -> object | None:
    """The module of this package that reads artifacts of `fmt`; None for a format it lacks."""
    name = _READERS.get(fmt)
    return None if name is None else importlib.import_module(f"qbench.formats.{name}")


def contents(fmt: str, path: Path) -> Contents | None:
    """What the artifact at `path` holds; None where no module here reads `fmt` (or, for a
    torch artifact, where its weights live in a program this package does not open)."""
    module = reader(fmt)
    return None if module is None else module.contents(Path(path))  # type: ignore[attr-defined]
