"""Datasets: real inputs (and labels where there are any) for calibration and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from qbench.inputs import DEFAULT_FIELD, Inputs, InputSpec
from qbench.params import NoParams, Params

Split = Literal["train", "calib", "eval"]


class Dataset:
    """A source of preprocessed inputs: one float32 array (NCHW for images; its field is called
    `input`), or named arrays for models of several inputs.

    `eval` is what accuracy and fidelity are measured on; `calib` feeds calibration and must not
    overlap `eval`'s labelled samples; `train` is for methods that train or fine-tune.

    An instance holds its typed parameters and, for datasets that shape their inputs after the
    model (synthetic), the model's declared inputs.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    labelled: ClassVar[bool]  # the eval split has labels (top-1 is measured)
    # The train split has labels (quantization-aware training); None: as `labelled`.
    train_labelled: ClassVar[bool | None] = None
    num_classes: ClassVar[int | None] = None
    input_shape: ClassVar[tuple[int, ...]]
    # Outputs on these inputs say something about the model (False: random inputs, latency
    # only; fidelity to fp32 is then left empty with the reason).
    measures_fidelity: ClassVar[bool] = True

    def __init__(
        self, params: Params | None = None, model_inputs: Sequence[InputSpec] | None = None
    ) -> None:
        self.params = params if params is not None else self.Params()
        self.model_inputs = list(model_inputs) if model_inputs is not None else None

    def fields(self) -> list[InputSpec]:
        """The named inputs each sample has, cheaply (the planner matches them with the
        model's inputs before anything runs)."""
        return [InputSpec(DEFAULT_FIELD, tuple(self.input_shape), "float32")]

    def fingerprint(self) -> Any:
        """What identifies the files the inputs are read from (names, sizes, times), for the
        input cache's key: an edited folder is read again. None: the data ships with a
        package."""
        return None

    def check(self) -> None:
        """Plan-time checks of what the parameters name (folders, files): raise
        CheckError(field, why)."""

    @property
    def label(self) -> str:
        """What rows call these inputs (accuracy_dataset): accuracy is compared only between
        rows measured on the same inputs."""
        return self.name

    def load(
        self, split: Split, n: int | None, seed: int = 0
    ) -> tuple[np.ndarray | Inputs, np.ndarray | None]:
        raise NotImplementedError

    def groups(self, split: Split, n: int | None, seed: int = 0) -> np.ndarray | None:
        """One id per input `load(split, n, seed)` returns, equal for inputs drawn together
        (crops of one photo): accuracy intervals count such a group as one draw. None: every
        input is an independent draw."""
        return None

    def has_train_labels(self) -> bool:
        return self.labelled if self.train_labelled is None else self.train_labelled

    @property
    def label_note(self) -> str:
        return "" if self.labelled else f"dataset {self.label} has no labels: top-1 not measured"


def check_finite(inputs: np.ndarray | Inputs, where: str) -> None:
    """ValueError naming the first sample whose input holds NaN or Inf: a model's outputs on
    it are NaN or Inf, and top-1 and cosine computed from them would be stored as numbers."""
    arrays = inputs if isinstance(inputs, dict) else {DEFAULT_FIELD: inputs}
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype.kind not in "fc" or array.ndim == 0 or array.size == 0:
            continue  # integers (token ids, masks) are finite
        flat = array.reshape(len(array), -1)
        bad = ~np.isfinite(flat)
        rows = np.flatnonzero(bad.any(axis=1))
        if len(rows):
            value = flat[rows[0]][bad[rows[0]]][0]
            raise ValueError(f"{where}: {name}[{rows[0]}] holds {value} ({len(rows)} sample(s) "
                             "do): inputs must be finite numbers")  # fmt: skip


def class_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """`labels` as int64 class indices; ValueError naming the first that is none (NaN, a
    fraction, negative): cast to int64 as they are, NaN becomes a huge negative number and
    -1 a class no model has, and every such input counts as a wrong answer, silently."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{where}: labels of shape {labels.shape}: expected one class index "
                         "per sample")  # fmt: skip
    if labels.dtype.kind == "b" or labels.dtype.kind not in "iuf":
        raise ValueError(f"{where}: labels of type {labels.dtype}: expected integer class "
                         "indices")  # fmt: skip
    if labels.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            i = int(np.flatnonzero(~whole)[0])
            raise ValueError(f"{where}: label [{i}] is {labels[i]}: expected an integer class "
                             "index")  # fmt: skip
    negative = np.flatnonzero(labels < 0)
    if len(negative):
        i = int(negative[0])
        raise ValueError(f"{where}: label [{i}] is {labels[i]}: class indices start at 0")
    if len(labels) and labels.max() > np.iinfo(np.int32).max:
        i = int(labels.argmax())
        raise ValueError(f"{where}: label [{i}] is {labels[i]}: not a class index")
    return labels.astype(np.int64)


def dataset_ref(value: Any) -> tuple[str, dict[str, Any]]:
    """(name, params) of a dataset given as a name or as {name, params[, label]}."""
    if isinstance(value, str):
        return value, {}
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return value["name"], dict(value.get("params") or {})


def open_dataset(value: Any, model_inputs: Sequence[InputSpec] | None = None) -> Dataset:
    """The dataset named by `value` (a name or {name, params}) with typed parameters;
    RegistryError for an unknown name, pydantic's ValidationError for bad parameters."""
    from qbench.plugins import load_all

    name, params = dataset_ref(value)
    cls = load_all().datasets.get(name)
    return cls(cls.Params(**params), model_inputs)
