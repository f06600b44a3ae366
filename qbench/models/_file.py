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


@dataclass(frozen=True)
class FileFacts:
    inputs: tuple[InputSpec, ...]
    fixed_batch: int | None  # the batch the graph is fixed to, None: any
    quantized: str | None  # why the file is already quantized, None: float


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
        self.facts(params)

    def inputs(self, params: Params) -> list[InputSpec]:
        return list(self.facts(params).inputs)

    def fixed_batch(self, params: Params) -> int | None:
        return self.facts(params).fixed_batch

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
