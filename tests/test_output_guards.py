"""qbench.measure.guards: outputs that would make a plausible but meaningless metric (NaN/Inf
outputs give top-1 0.0 and cosine 0.0; labels no output class can match give top-1 0.0) fail
the cell with the reason and the first input at fault, instead of being stored as `ok`."""

from __future__ import annotations

import numpy as np
import pytest

from qbench.measure.guards import check_outputs

LOGITS = np.eye(4, 10, dtype=np.float32)  # four inputs, ten classes


def test_finite_outputs_and_labels_of_their_classes_pass() -> None:
    check_outputs(LOGITS, LOGITS.copy(), np.array([0, 1, 2, 9]))
    check_outputs(None, None, np.array([-1]))  # a backend that computes no outputs
    # an embedding's classes are its probe's, not the vector's values
    check_outputs(LOGITS, None, np.array([0, 1, 2, 50]), output_kind="embedding")
    check_outputs(np.ones((4, 1), np.float32), None, np.array([0, 3, 7, 1]))  # no classes


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_outputs_fail_naming_the_input(bad: float) -> None:
    outputs = LOGITS.copy()
    outputs[2, 5] = bad
    with pytest.raises(ValueError, match=r"outputs hold NaN or Inf \(input \[2\] first\)"):
        check_outputs(outputs)
    with pytest.raises(ValueError, match=r"fp32 reference outputs hold NaN or Inf"):
        check_outputs(LOGITS, outputs)


@pytest.mark.parametrize(("label", "index"), [(10, 1), (-1, 1), (1000, 1)])
def test_labels_outside_the_outputs_classes_fail(label: int, index: int) -> None:
    labels = np.array([0, label, 2, 3])
    with pytest.raises(ValueError, match=rf"label \[{index}\] is {label}, but the outputs have "
                       r"10 classes \(0\.\.9\)"):  # fmt: skip
        check_outputs(LOGITS, None, labels)
