"""What the model sources given by a file (onnx_file, tflite_file) share: the path checked at
plan time, the file's facts read once per version of it, its label, and dataset auto."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from qbench.inputs import InputSpec, shape_fits
from qbench.models.base import LoadedModel, ModelSource
from qbench.params import CheckError, Params, file_sha256
from qbench.suite.schema import MemberRef

IMAGE_INPUT = (3, 224, 224)  # what dataset auto gives an image model: sample_photos' crops


class FileParams(Params):
    path: str = Field(
        description="path to the model file (relative paths: from the suite's folder)"
    )
    dataset: MemberRef = Field(
        default=MemberRef(name="auto"),
        description="dataset whose inputs it takes: a name or {name, params}; auto: "
        "sample_photos for one float input of 3x224x224 (or 224x224x3), else synthetic "
        "(latency only)",
    )

    path_fields: ClassVar[tuple[str, ...]] = ("path",)


class OnnxFileParams(FileParams):
    batch_axes: dict[str, int | None] = Field(
        default_factory=dict,
        description="input name -> 0 (a batch along axis 0) or null (not a batch: fed at its "
        "declared shape whatever the batch); unnamed inputs: axis 0 where it is dynamic (or "
        "the first input's fixed batch), none for scalars and other fixed inputs",
    )
    constants: dict[str, Any] = Field(
        default_factory=dict,
        description="input name -> the value fed to that input in every batch instead of the "
        "data's (a scalar such as a sample rate, or nested lists of its declared shape); on "
        "the command line --input NAME=VALUE",
    )


# (name, declared dims with None for a dynamic one, numpy dtype) of one graph input
RawInput = tuple[str, tuple[int | None, ...], str]


@dataclass(frozen=True)
class FileFacts:
    inputs: tuple[InputSpec, ...]
    fixed_batch: int | None  # the batch the graph is fixed to, None: any
    quantized: str | None  # why the file is already quantized, None: float
    # every input's whole declared shape, where the source decides per input which axis is
    # the batch (lay_out); None: `inputs` as read (axis 0 of each is the batch)
    raw: tuple[RawInput, ...] | None = None


def _batch_size(raw: list[RawInput], declared: dict[str, int | None]) -> tuple[bool, int | None]:
    """(whether any input is a batch, the fixed batch or None) from the first input that
    may be a batch: its axis 0 sets what the others are compared with."""
    for name, dims, _ in raw:
        if dims and declared.get(name, 0) == 0:
            return True, dims[0]
    return False, None


def lay_out(raw: list[RawInput], declared: dict[str, int | None],
            constants: dict[str, Any]) -> tuple[tuple[InputSpec, ...], int | None]:  # fmt: skip
    """(the inputs, the fixed batch) of a graph whose inputs are `raw`.

    The batch is axis 0 of the first input that has one (declared: `batch_axes`): a dynamic
    size there makes every input with a dynamic axis 0 a batch, a fixed size B every input
    whose axis 0 is dynamic or B. The others (an RNN state [2, 1, 128] beside data [N, 512],
    a scalar sample rate) are not a batch: they are fed at their declared shape, and do not
    fix the batch (qbench once read the state's 2 as "a fixed batch of 2")."""
    declared = {**{k: None for k in constants}, **declared}
    any_batch, size = _batch_size(raw, declared)
    specs, fixed = [], set()
    for name, dims, dtype in raw:
        want = declared.get(name, "auto")
        batched = bool(dims) and (want == 0 or (want == "auto" and (
            dims[0] is None or dims[0] == size)))  # fmt: skip
        if batched:
            specs.append(InputSpec(name, dims[1:], dtype))
            if dims[0] is not None:
                fixed.add(dims[0])
        else:
            specs.append(InputSpec(name, dims, dtype, None, constants.get(name)))
    if not any_batch:  # only scalars and fixed inputs: one inference is batch 1
        return tuple(specs), 1
    return tuple(specs), (min(fixed) if fixed else None)


def check_overrides(raw: list[RawInput], params: Any) -> None:
    """`batch_axes` and `constants` name inputs the graph has, with values that fit them:
    CheckError(field, why) in one line."""
    import numpy as np

    shapes = {name: (dims, dtype) for name, dims, dtype in raw}
    known = ", ".join(shapes)
    for name, axis in params.batch_axes.items():
        if name not in shapes:
            raise CheckError("batch_axes", f"{name}: no such input (inputs: {known})")
        if axis not in (0, None):
            raise CheckError("batch_axes", f"{name}: {axis}: expected 0 (a batch along axis "
                             "0) or null (not a batch); qbench batches along axis 0 "
                             "only")  # fmt: skip
        if axis == 0 and not shapes[name][0]:
            raise CheckError("batch_axes", f"{name}: a scalar input has no axis 0 to batch")
    for name, value in params.constants.items():
        if name not in shapes:
            raise CheckError("constants", f"{name}: no such input (inputs: {known})")
        if params.batch_axes.get(name, None) == 0:
            raise CheckError("constants", f"{name}: a constant is fed whole in every batch; "
                             "batch_axes says it is a batch")  # fmt: skip
        dims, dtype = shapes[name]
        try:
            array = np.array(value, dtype=dtype)
        except (TypeError, ValueError):
            raise CheckError("constants", f"{name}: {value!r} is not a {dtype} value") from None
        if not shape_fits(dims, array.shape):
            raise CheckError("constants", f"{name}: the value's shape {list(array.shape)} does "
                             f"not fit the input's declared shape {list(dims)}")  # fmt: skip


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


def auto_dataset(inputs: list[InputSpec]) -> str:
    """sample_photos for a model of one float image input it fits (NCHW or NHWC), else
    synthetic inputs."""
    if len(inputs) == 1 and inputs[0].dtype == "float32":
        shape = inputs[0].shape
        hwc_as_chw = (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape
        if shape_fits(shape, IMAGE_INPUT) or shape_fits(hwc_as_chw, IMAGE_INPUT):
            return "sample_photos"
    return "synthetic"


class ModelFile(ModelSource):
    """A model source given by one file; subclasses say how to read its facts."""

    Params = FileParams
    dataset = "auto"
    suffixes: ClassVar[tuple[str, ...]]
    kind: ClassVar[str]  # "an ONNX", "a .tflite"
    loaded_as: ClassVar[str]  # the LoadedModel field that holds the path

    # (path, modification time) -> facts: each version of a file is read once per process
    read_facts: ClassVar[Callable[[str, float], FileFacts]]

    def _path(self, params: Params) -> Path:
        assert isinstance(params, FileParams)
        return resolve_path(params.path, "path", self.suffixes, self.kind)

    def facts(self, params: Params) -> FileFacts:
        path = self._path(params)
        return self.read_facts(str(path), path.stat().st_mtime)

    def check(self, params: Params) -> None:
        facts = self.facts(params)
        if facts.raw is not None and isinstance(params, OnnxFileParams):
            check_overrides(list(facts.raw), params)

    def _laid_out(self, params: Params) -> tuple[tuple[InputSpec, ...], int | None]:
        facts = self.facts(params)
        if facts.raw is None:  # a .tflite file: axis 0 of every input is its batch
            return facts.inputs, facts.fixed_batch
        if isinstance(params, OnnxFileParams):
            return lay_out(list(facts.raw), params.batch_axes, params.constants)
        return lay_out(list(facts.raw), {}, {})

    def inputs(self, params: Params) -> list[InputSpec]:
        return list(self._laid_out(params)[0])

    def fixed_batch(self, params: Params) -> int | None:
        return self._laid_out(params)[1]

    def quantized(self, params: Params) -> str | None:
        return self.facts(params).quantized

    def default_label(self, params: Params) -> str:
        assert isinstance(params, FileParams)
        return Path(params.path).stem

    def dataset_for(self, params: Params) -> Any:
        assert isinstance(params, FileParams)
        if params.dataset.name != "auto":
            return params.dataset
        return auto_dataset(self.inputs(params))

    def load(self, params: Params) -> LoadedModel:
        path = self._path(params)
        kind = self.kind.split()[-1].lstrip(".")
        return LoadedModel(
            weights=f"{kind} file {path.name}",
            sha256=file_sha256(str(path)),
            **{self.loaded_as: path},
        )


def cached_facts(read: Callable[[str], FileFacts]) -> Callable[[str, float], FileFacts]:
    """`read(path)` cached per (path, modification time)."""

    @lru_cache(maxsize=32)
    def facts(path: str, mtime: float) -> FileFacts:
        return read(path)

    return facts
