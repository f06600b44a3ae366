"""What must hold of a cell's outputs before they become metrics: a number computed from NaN,
or a label no output class can match, would be stored as a plausible result (top-1 0.0,
cosine 0.0, status ok). The planner refuses such input data (qbench.datasets.base); these
checks catch what only the outputs show, and fail the cell with the reason instead."""

from __future__ import annotations

import numpy as np

from qbench.measure.fidelity import has_classes, per_sample, values_per_sample


def _first_not_finite(outputs: np.ndarray) -> int | None:
    """Index of the first input whose output holds NaN or Inf, None where all are finite."""
    flat = per_sample(np.asarray(outputs))
    if flat.dtype.kind not in "fc":
        return None
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    return int(bad[0]) if len(bad) else None


def check_outputs(outputs: np.ndarray | None, reference: np.ndarray | None = None,
                  labels: np.ndarray | None = None,
                  output_kind: str | None = None) -> None:  # fmt: skip
    """ValueError where the model's `outputs` (or the fp32 `reference` outputs of the same
    inputs) hold NaN or Inf, or where a label is no class of the outputs (labels of another
    dataset, or 1-based ones). None outputs (a backend that computes none) pass. Labels are
    compared with the outputs' classes only where the outputs are class scores (an embedding's
    classes are its probe's)."""
    if outputs is None:
        return
    for what, values in (("outputs", outputs), ("fp32 reference outputs", reference)):
        if values is None:
            continue
        index = _first_not_finite(values)
        if index is not None:
            raise ValueError(f"the model's {what} hold NaN or Inf (input [{index}] first): no "
                             "accuracy or fidelity can be computed from them")  # fmt: skip
    if labels is None or output_kind == "embedding" or not has_classes(outputs):
        return
    classes = values_per_sample(outputs)
    labels = np.asarray(labels).reshape(-1)
    outside = np.flatnonzero((labels < 0) | (labels >= classes))
    if len(outside):
        i = int(outside[0])
        raise ValueError(f"label [{i}] is {labels[i]}, but the outputs have {classes} classes "
                         f"(0..{classes - 1}): the labels do not belong to this model "
                         f"({len(outside)} of {len(labels)} are outside)")  # fmt: skip
