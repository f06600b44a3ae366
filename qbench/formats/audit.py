"""The artifact audit: what a method built, read back from the file, against what it meant to
store. A method that meant to quantize (Method.stores_quantized) and left every constant float
failed, whatever its name says; the row's counts and packed_bytes come from the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qbench.formats import Contents, contents


class PhantomQuantization(ValueError):
    """A quantizing method wrote an artifact holding no quantized tensor (one-line message)."""


def fields(found: Contents | None) -> dict[str, Any]:
    """The row columns of what an artifact holds (none where it was not read)."""
    if found is None:
        return {}
    return {"quantized_tensors": found.quantized_tensors, "float_tensors": found.float_tensors}


def audit(method: Any, fmt: str, params: Any, path: Path) -> dict[str, Any]:
    """Row fields read back from the artifact at `path`: quantized_tensors and float_tensors,
    and packed_bytes (its constants' bytes at their stored types) where the method stores
    quantized weights (fake-quant methods keep their theoretical figure: their file is float).
    Raises PhantomQuantization where such a method's artifact holds no quantized constant and
    no op that converts from or computes in a quantized type."""
    found = contents(fmt, path)
    row = fields(found)
    if found is None or not method.stores_quantized(fmt, params):
        return row
    if found.quantized_tensors == 0 and found.quantized_ops == 0:
        floats = "/".join(sorted(t for t in found.dtypes if t.startswith("float"))) or "float"
        raise PhantomQuantization(
            f"{method.name} left every tensor {floats}: its {fmt} quantizer quantized nothing "
            f"({found.summary()})"
        )
    row["packed_bytes"] = found.stored_bytes
    return row
