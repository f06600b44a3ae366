"""Named model inputs: what a model takes and what a dataset gives, and how they are matched.

A batch of inputs is a plain `dict[str, np.ndarray]` (`Inputs`), one array per model input, in
the model's input order, each with the samples on axis 0. Single-input models (most CNNs) hold
one entry. A model declares its inputs as `InputSpec`s (name, per-sample shape with None for a
dynamic axis, dtype); a dataset names its fields the same way. `bind` matches the two: by name,
or, where both have exactly one, the one field to the one input whatever their names (the
built-in datasets call their field `input`; an ONNX Model Zoo graph calls its `data_0`).

Not every input is a batch. An input whose `batch_axis` is None (an RNN's state `[2, 1, 128]`,
a scalar sample rate) is fed at its declared shape whatever the batch: the dataset still gives
one value per sample, and `bind` keeps the first sample's (or the constant `value` the suite
gives) as a `Fixed` array, which every batching helper here passes through unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Inputs = dict[str, np.ndarray]

DEFAULT_FIELD = "input"  # the field name of a dataset that gives one unnamed array


@dataclass(frozen=True)
class InputSpec:
    """One model input (or dataset field): per-sample shape (None: any size) and dtype."""

    name: str
    shape: tuple[int | None, ...]  # batch_axis 0: one sample's; None: the whole input's
    dtype: str = "float32"
    batch_axis: int | None = 0  # None: not a batch, fed at `shape` whatever the batch
    value: Any = None  # a constant fed instead of the data's field (JSON: number or lists)

    @property
    def batched(self) -> bool:
        return self.batch_axis is not None

    def describe(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape) or "scalar"
        kind = "" if self.batched or not self.shape else ", not a batch"
        return f"{self.name} ({self.dtype} {dims}{kind})"

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if not self.batched:
            out["batch_axis"] = None
        if self.value is not None:
            out["value"] = self.value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputSpec:
        return cls(data["name"], tuple(data["shape"]), data["dtype"],
                   data.get("batch_axis", 0), data.get("value"))  # fmt: skip


class Fixed(np.ndarray):
    """An input that is not a batch (a state, a scalar): slicing it along the sample axis
    gives it whole, so code that cuts batches with `x[a:b]` (ORT's calibration reader, the
    helpers below) feeds it at its declared shape."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return self
        return np.asarray(self)[key]


def fixed(x: Any, dtype: str) -> Fixed:
    return np.array(x, dtype=dtype).view(Fixed)


def as_inputs(x: np.ndarray | Inputs) -> Inputs:
    """A dataset's `load` result (one array, or named arrays) as named arrays."""
    return dict(x) if isinstance(x, dict) else {DEFAULT_FIELD: x}


def count(inputs: Inputs) -> int:
    """Samples in a batch: the length of its first batched input (1 where none is)."""
    batched = [v for v in inputs.values() if not isinstance(v, Fixed)]
    return len(batched[0]) if batched else 1


def _cut(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    return x if isinstance(x, Fixed) else np.ascontiguousarray(x[start:stop])


def take(inputs: Inputs, start: int, stop: int) -> Inputs:
    return {k: _cut(v, start, stop) for k, v in inputs.items()}


def first(inputs: Inputs) -> np.ndarray:
    """The array of a single-input batch (methods that quantize one-input image models)."""
    if len(inputs) != 1:
        raise ValueError(f"expected one input, got {len(inputs)}: {', '.join(inputs)}")
    return next(iter(inputs.values()))


def batch_of(inputs: Inputs, batch: int) -> Inputs:
    """The first `batch` samples, repeated where there are fewer."""
    n = count(inputs)
    reps = -(-batch // n)
    out = {}
    for name, x in inputs.items():
        x = np.concatenate([x] * reps) if reps > 1 and not isinstance(x, Fixed) else x
        out[name] = _cut(x, 0, batch)
    return out


def chunks(inputs: Inputs, size: int) -> list[Inputs]:
    """Consecutive batches of `size` samples; the last one padded by repeating its own first
    sample, so a graph with a fixed batch takes every chunk (callers trim the outputs)."""
    n = count(inputs)
    out = []
    for start in range(0, n, size):
        part = take(inputs, start, min(start + size, n))
        if count(part) < size:
            part = {k: v if isinstance(v, Fixed) else
                    np.concatenate([v, np.repeat(v[:1], size - len(v), 0)])
                    for k, v in part.items()}  # fmt: skip
        out.append(part)
    return out


def fed_shapes(inputs: Inputs) -> dict[str, list[int]]:
    """input name -> the shape it is fed at (rows' input_shapes_json, error messages)."""
    return {k: [int(d) for d in np.shape(v)] for k, v in inputs.items()}


def describe_fed(inputs: Inputs) -> str:
    """'x float32[1, 3, 16, 16], sr int64[]': what a batch feeds, for error messages."""
    return ", ".join(f"{k} {np.asarray(v).dtype}{list(np.shape(v))}" for k, v in inputs.items())


def fields_of(inputs: Inputs) -> list[InputSpec]:
    return [InputSpec(k, tuple(int(d) for d in v.shape[1:]), str(v.dtype))
            for k, v in inputs.items()]  # fmt: skip


def shape_fits(want: Sequence[int | None], got: Sequence[int | None]) -> bool:
    return len(want) == len(got) and all(
        w is None or g is None or w == g for w, g in zip(want, got, strict=True)
    )


def _kind(dtype: str) -> str:
    return "float" if np.dtype(dtype).kind == "f" else ("bool" if dtype == "bool" else "int")


def _nhwc(shape: Sequence[int | None]) -> tuple[int | None, ...]:
    return (shape[1], shape[2], shape[0])


def fed_from_data(model: Sequence[InputSpec]) -> list[InputSpec]:
    """The inputs the data feeds: all but those given a constant `value`."""
    return [spec for spec in model if spec.value is None]


def binding(model: Sequence[InputSpec], fields: Sequence[InputSpec]) -> dict[str, tuple[str, bool]]:
    """model input name -> (dataset field name, transpose CHW to HWC) for each input the data
    feeds (not those given a constant); ValueError (one sentence) when they do not fit: a
    missing field, a different rank or size, a float field for an integer input. An image field
    (C, H, W) fits a model input (H, W, C): a .tflite file's channels-last input takes the same
    photos, transposed. A field of an input that is not a batch holds one value per sample
    shaped as the whole input."""
    fed = fed_from_data(model)
    by_name = {f.name: f for f in fields}
    if all(spec.name in by_name for spec in fed):
        pairs = [(spec, by_name[spec.name]) for spec in fed]
    elif len(fed) == 1 and len(fields) == 1:
        pairs = [(fed[0], fields[0])]
    else:
        missing = [s.name for s in fed if s.name not in by_name]
        raise ValueError(
            f"the model's input(s) {', '.join(missing)} have no field of that name in the data "
            f"(data fields: {', '.join(f.name for f in fields) or 'none'}; model inputs: "
            f"{', '.join(s.describe() for s in model)})"
        )
    mapping = {}
    for spec, field in pairs:
        transpose = False
        if not shape_fits(spec.shape, field.shape):
            transpose = (spec.batched and len(field.shape) == 3
                         and shape_fits(spec.shape, _nhwc(field.shape)))  # fmt: skip
            if not transpose:
                raise ValueError(
                    f"data field {field.describe()} does not fit model input {spec.describe()}"
                )
        if _kind(spec.dtype) == "int" and _kind(field.dtype) == "float":
            raise ValueError(
                f"data field {field.describe()} is float; model input {spec.describe()} takes "
                "integers"
            )
        mapping[spec.name] = (field.name, transpose)
    return mapping


def binding_notes(model: Sequence[InputSpec], fields: Sequence[InputSpec]) -> list[str]:
    """What `bind` does to the data beyond renaming, for the row's notes: a transposed layout,
    an input fed at one shape whatever the batch, a constant."""
    mapping = binding(model, fields)
    notes = []
    for spec in model:
        dims = list(spec.shape)
        if spec.value is not None:
            notes.append(f"input {spec.name}: the constant {spec.value} given for it, "
                         f"shape {dims}, in every batch")  # fmt: skip
            continue
        field, transpose = mapping[spec.name]
        if transpose:
            notes.append(f"input {spec.name}: data field {field} is channels-first (NCHW); "
                         f"transposed to the model's channels-last (NHWC) {dims}")  # fmt: skip
        if not spec.batched:
            notes.append(f"input {spec.name} is not a batch: fed at its declared shape {dims} "
                         f"in every batch (field {field}'s first sample)")  # fmt: skip
    return notes


def bind(model: Sequence[InputSpec], data: Inputs) -> Inputs:
    """The dataset's arrays renamed, laid out and cast to the model's inputs, in its order; an
    input that is not a batch is its field's first sample (or its constant) as a `Fixed`."""
    mapping = binding(model, fields_of(data))
    out: Inputs = {}
    for spec in model:
        if spec.value is not None:
            out[spec.name] = fixed(spec.value, spec.dtype)
            continue
        field, transpose = mapping[spec.name]
        x = data[field].transpose(0, 2, 3, 1) if transpose else data[field]
        x = np.ascontiguousarray(np.asarray(x).astype(spec.dtype, copy=False))
        out[spec.name] = x if spec.batched else np.asarray(x[0]).view(Fixed)
    return out


def save_npz(fh: Any, inputs: Inputs, **extra: np.ndarray) -> None:
    """Named inputs in one .npz (x0, x1, ... and their names: names may hold '/', which a
    zip member name would read as a folder)."""
    arrays = {f"x{i}": v for i, v in enumerate(inputs.values())}
    np.savez(fh, names=np.array(json.dumps(list(inputs))), **arrays, **extra)


def load_npz(path: str | Path) -> tuple[Inputs, dict[str, np.ndarray]]:
    """(named inputs, the other arrays: y, g, ...) of a file written by `save_npz`."""
    data = np.load(path)
    names = json.loads(str(data["names"]))
    inputs = {name: data[f"x{i}"] for i, name in enumerate(names)}
    extra = {k: data[k] for k in data.files if k != "names" and not _is_input_key(k)}
    return inputs, extra


def _is_input_key(key: str) -> bool:
    return key.startswith("x") and key[1:].isdigit()
