"""qbench's torch artifacts (.pt): a weights-only state dict and what rebuilds its module."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qbench.formats import Contents

SUFFIX = ".pt"
# torch's quantized dtypes by the element type their integers are stored in
_QUANTIZED = {"qint8": "int8", "quint8": "uint8", "qint32": "int32", "quint4x2": "uint4",
              "quint2x4": "int2"}  # fmt: skip


def _tensors(value: Any) -> Iterator[Any]:
    """Every plain tensor in a state dict value: packed params' tuples, and the inner tensors
    of tensor subclasses (torchao's quantized weights flatten into int data and scales)."""
    import torch

    if isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, torch.Tensor):
        flatten = getattr(value, "__tensor_flatten__", None)
        if type(value) not in (torch.Tensor, torch.nn.Parameter) and flatten is not None:
            for name in flatten()[0]:
                yield from _tensors(getattr(value, name))
        else:
            yield value


def contents(path: Path) -> Contents | None:
    """The state dict's tensors by stored element type and their bytes; None for a PT2E
    artifact, whose weights live in an exported program's archive (not read here)."""
    import torch

    saved = torch.load(path, weights_only=True, map_location="cpu")
    if saved.get("exported") is not None:
        return None
    dtypes: Counter[str] = Counter()
    stored = 0
    for tensor in _tensors(saved.get("state_dict", {})):
        name = str(tensor.dtype).removeprefix("torch.")
        dtypes[_QUANTIZED.get(name, name)] += 1
        stored += tensor.numel() * tensor.element_size()
        if tensor.is_quantized and tensor.qscheme() in (
            torch.per_channel_affine,
            torch.per_channel_symmetric,
        ):
            stored += tensor.q_per_channel_scales().numel() * 12  # fp64 scale, int32 zero
    return Contents(dtypes, stored, 0)  # a state dict has no graph: tensors only


def weights_only_reason(exc: Exception) -> str:
    """The line of torch's multi-paragraph weights-only error that says what was refused
    ("Trying to load unsupported GLOBAL posix.system ...")."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Re-running")
    for line in str(exc).splitlines():
        text = line.rpartition("WeightsUnpickler error:")[2].strip()
        if text and not text.startswith(boilerplate) and not text.startswith("Please file"):
            return text
    return type(exc).__name__
