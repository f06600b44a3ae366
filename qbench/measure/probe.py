"""A linear probe: how a sentence encoder's embeddings serve a labelled task.

The probe (multinomial logistic regression) is fitted once on the fp32 model's embeddings of
the dataset's train split, which is never evaluated, and then applied unchanged to every
cell's embeddings of the held-out split: what a deployment sees when a head trained on the
float encoder serves a quantized one. Its class scores give top-1 accuracy (with the usual
interval) and agreement with the fp32 encoder's predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PROBE_TRAIN_SAMPLES = 1000  # train-split documents the probe is fitted on
PROBE_C = 10.0  # inverse L2 strength: embeddings are unit vectors, so weights need room


def fit_probe(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Weights, bias and the training accuracy of a probe fitted on `embeddings`."""
    from sklearn.linear_model import LogisticRegression

    x = embeddings.reshape(len(embeddings), -1).astype(np.float64)
    clf = LogisticRegression(C=PROBE_C, max_iter=2000)
    clf.fit(x, labels)
    if len(clf.classes_) < 2:
        raise ValueError("the probe's train split holds a single class")
    return {
        "coef": clf.coef_.astype(np.float64),
        "intercept": clf.intercept_.astype(np.float64),
        "classes": clf.classes_.astype(np.int64),
        "train_samples": np.int64(len(x)),
        "train_accuracy": np.float64(clf.score(x, labels)),
    }


def save_probe(path: Path, probe: dict[str, Any]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **probe)


def load_probe(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def probe_scores(probe: dict[str, np.ndarray], embeddings: np.ndarray) -> np.ndarray:
    """Class scores [N, classes] in label order (columns for labels the probe never saw stay
    at -inf, so they are never its top-1)."""
    x = embeddings.reshape(len(embeddings), -1).astype(np.float64)
    coef, intercept, classes = probe["coef"], probe["intercept"], probe["classes"]
    if coef.shape[0] == 1:  # binary: scikit-learn keeps one row of weights
        raw = x @ coef[0] + intercept[0]
        fitted = np.stack([-raw, raw], axis=1)
    else:
        fitted = x @ coef.T + intercept
    out = np.full((len(x), int(classes.max()) + 1), -np.inf)
    out[:, classes] = fitted
    return out
