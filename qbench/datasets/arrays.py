"""Your own inputs as arrays: a .npz of named inputs (and optional labels), or one .npy.

The field names of a .npz are the names the model's inputs are matched with (a model of one
input takes a file of one field whatever its name). Labels, where the file holds them, make
top-1 measured. Calibration inputs come from a second file (`calib_path`) or from the samples
the evaluation split leaves: the two never share a sample.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field

from qbench.datasets.base import Dataset, Split, check_finite, class_labels
from qbench.inputs import DEFAULT_FIELD, Inputs, InputSpec
from qbench.params import CheckError, Params
from qbench.plugins import datasets


class ArraysParams(Params):
    path: str = Field(
        description=".npz of named inputs (one array per model input, samples on axis 0), or "
        "a .npy of one input (relative paths: from the suite's folder)"
    )
    labels: str = Field(
        default="labels",
        description=".npz field holding integer class labels (one per sample); used where "
        "present, never fed to the model",
    )
    calib_path: str | None = Field(
        default=None,
        description="a second file of the same fields for calibration; none: calibration takes "
        "the samples the evaluation split leaves",
    )
    eval_fraction: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="without calib_path: share of the samples evaluated (the first ones); the "
        "rest calibrate and train",
    )

    path_fields: ClassVar[tuple[str, ...]] = ("path", "calib_path")


def _header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """field -> (shape, dtype) of a .npz or .npy without reading the arrays."""

    def read(fh: object) -> tuple[tuple[int, ...], str]:
        fmt = np.lib.format
        version = fmt.read_magic(fh)
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = reader(fh)
        return tuple(shape), str(dtype)

    try:
        if path.suffix == ".npy":
            with open(path, "rb") as fh:
                return {DEFAULT_FIELD: read(fh)}
        with zipfile.ZipFile(path) as archive:
            out = {}
            for name in archive.namelist():
                if name.endswith(".npy"):
                    with archive.open(name) as fh:
                        out[name[: -len(".npy")]] = read(fh)
            return out
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckError("path", f"{path}: not a readable {path.suffix} file ({exc})") from None


def _file(value: str, field: str) -> Path:
    path = Path(value).expanduser()
    if not path.exists():
        raise CheckError(field, f"{value}: no such file")
    if path.is_dir():
        raise CheckError(field, f"{value}: is a directory, expected a .npz or .npy file")
    if path.suffix not in (".npz", ".npy"):
        raise CheckError(field, f"{value}: expected a .npz or .npy file, got {path.suffix!r}")
    return path


def _stat(path: Path) -> list[object]:
    info = path.stat()
    return [str(path.resolve()), info.st_size, info.st_mtime_ns]


@datasets.register
class Arrays(Dataset):
    name = "arrays"
    description = "your inputs as arrays: a .npz of named inputs (+ labels) or one .npy"
    Params = ArraysParams
    labelled = False  # per file: set from its fields

    def __init__(self, params: Params | None = None, model_inputs: object = None) -> None:
        super().__init__(params, model_inputs)  # type: ignore[arg-type]
        p = self.params
        assert isinstance(p, ArraysParams)
        self._path = Path(p.path).expanduser()
        self.labelled = (
            self._path.suffix == ".npz"
            and self._path.is_file()
            and (p.labels in _header(self._path))
        )

    @property
    def label(self) -> str:
        return f"arrays:{self._path.name}"

    def _shapes(self, path: Path, field: str) -> dict[str, tuple[tuple[int, ...], str]]:
        p = self.params
        assert isinstance(p, ArraysParams)
        found = _header(_file(str(path), field))
        inputs = {k: v for k, v in found.items() if k != p.labels}
        if not inputs:
            raise CheckError(field, f"{path}: holds no input arrays")
        counts = {v[0][0] if v[0] else 0 for v in found.values()}
        if len(counts) != 1 or 0 in counts:
            raise CheckError(
                field,
                f"{path}: every field needs the same number of samples on axis 0 "
                f"(found {', '.join(f'{k} {v[0]}' for k, v in found.items())})",
            )
        return inputs

    def fingerprint(self) -> object:
        p = self.params
        assert isinstance(p, ArraysParams)
        return [_stat(Path(f).expanduser()) for f in (p.path, p.calib_path) if f]

    def check(self) -> None:
        p = self.params
        assert isinstance(p, ArraysParams)
        fields = self._shapes(self._path, "path")
        if p.calib_path is not None:
            calib = self._shapes(Path(p.calib_path).expanduser(), "calib_path")
            if {k: v[0][1:] for k, v in calib.items()} != {k: v[0][1:] for k, v in fields.items()}:
                raise CheckError("calib_path", f"{p.calib_path}: its fields differ from {p.path}'s")
        elif next(iter(fields.values()))[0][0] < 2:
            raise CheckError("path", f"{p.path}: one sample cannot be split into evaluation "
                             "and calibration inputs (give calib_path)")  # fmt: skip
        # The values too, before anything runs: NaN or Inf inputs and labels that are no class
        # index would each be measured as a plausible number (top-1 0.0 "ok")
        for field, value in (("path", p.path), ("calib_path", p.calib_path)):
            if value is not None:
                try:
                    self._read(Path(value).expanduser())
                except ValueError as exc:
                    raise CheckError(field, str(exc)) from None
                except (OSError, EOFError, zipfile.BadZipFile) as exc:
                    raise CheckError(field, f"{value}: cannot be read ({exc})") from None

    def fields(self) -> list[InputSpec]:
        return [InputSpec(k, v[0][1:], v[1]) for k, v in self._shapes(self._path, "path").items()]

    def _read(self, path: Path) -> tuple[Inputs, np.ndarray | None]:
        """The file's inputs and int64 labels; ValueError naming the file and the first sample
        whose input is not finite or whose label is no class index."""
        p = self.params
        assert isinstance(p, ArraysParams)
        labels = None
        if path.suffix == ".npy":
            inputs = {DEFAULT_FIELD: np.load(path)}
        else:
            with np.load(path) as data:
                inputs = {k: data[k] for k in data.files if k != p.labels}
                if p.labels in data.files:
                    labels = class_labels(data[p.labels], f"{path}: {p.labels}")
        check_finite(inputs, str(path))
        return inputs, labels

    def load(self, split: Split, n: int | None, seed: int = 0) -> tuple[Inputs, np.ndarray | None]:
        p = self.params
        assert isinstance(p, ArraysParams)
        if split != "eval" and p.calib_path is not None:
            x, y = self._read(Path(p.calib_path).expanduser())
            order = np.random.default_rng(seed).permutation(len(next(iter(x.values()))))
        else:
            x, y = self._read(self._path)
            total = len(next(iter(x.values())))
            cut = min(max(1, round(total * p.eval_fraction)), total - 1)
            if split == "eval":
                order = np.arange(cut)
            else:  # the samples evaluation leaves, in a seeded order
                order = cut + np.random.default_rng(seed).permutation(total - cut)
        if n is not None:
            order = order[:n]
        return {k: v[order] for k, v in x.items()}, (None if y is None else y[order])
