"""scikit-learn's 1,797 real 8×8 handwritten digits, with a fixed stratified held-out split."""

from __future__ import annotations

import numpy as np

from qbench.datasets.base import Dataset, Split
from qbench.plugins import datasets

HELD_OUT_FRACTION = 0.2  # 360 test images; the rest train the CNN and feed calibration


@datasets.register
class Digits(Dataset):
    name = "digits"
    description = "scikit-learn load_digits: 1,797 real 8x8 handwritten digits, 10 classes"
    labelled = True
    num_classes = 10
    input_shape = (1, 8, 8)

    def _split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
        y = digits.target.astype(np.int64)
        return train_test_split(x, y, test_size=HELD_OUT_FRACTION, random_state=0, stratify=y)

    def load(
        self, split: Split, n: int | None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        x_train, x_test, y_train, y_test = self._split()
        if split == "eval":
            x, y = x_test, y_test
        else:
            x, y = x_train, y_train
            if split == "calib":
                order = np.random.default_rng(seed).permutation(len(x))
                x, y = x[order], y[order]
        if n is not None:
            x, y = x[:n], y[:n]
        return np.ascontiguousarray(x), y
