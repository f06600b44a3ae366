"""Datasets: real inputs (and labels where there are any) for calibration and evaluation."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from qbench.params import NoParams, Params

Split = Literal["train", "calib", "eval"]


class Dataset:
    """A source of preprocessed float32 inputs in NCHW layout.

    `eval` is what accuracy and fidelity are measured on; `calib` feeds calibration and must not
    overlap `eval`'s labelled samples; `train` is for methods that train or fine-tune.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    labelled: ClassVar[bool]  # the eval split has labels (top-1 is measured)
    # The train split has labels (quantization-aware training); None: as `labelled`.
    train_labelled: ClassVar[bool | None] = None
    num_classes: ClassVar[int | None] = None
    input_shape: ClassVar[tuple[int, int, int]]

    def load(
        self, split: Split, n: int | None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def groups(self, split: Split, n: int | None, seed: int = 0) -> np.ndarray | None:
        """One id per input `load(split, n, seed)` returns, equal for inputs drawn together
        (crops of one photo): accuracy intervals count such a group as one draw. None: every
        input is an independent draw."""
        return None

    @classmethod
    def has_train_labels(cls) -> bool:
        return cls.labelled if cls.train_labelled is None else cls.train_labelled

    @property
    def label_note(self) -> str:
        return "" if self.labelled else f"dataset {self.name} has no labels: top-1 not measured"
