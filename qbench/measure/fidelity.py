"""Accuracy on labelled data and fidelity of outputs to the fp32 model on the same inputs.

Top-1 accuracy and top-1 agreement come with a 95% interval that counts the evaluation inputs
as the dataset says they were drawn: where several inputs are crops of one photo
(Dataset.groups), a quantized model tends to keep or lose all of them together, so 170 crops of
17 photos carry far less evidence than 170 independent inputs. The interval is Wilson's score
interval at the effective sample size n / design effect, the design effect from the
cluster-robust variance of the proportion (Kish 1965; the ratio estimator's variance over
groups), with Student's t quantile for the few groups. Independent inputs give the plain
Wilson interval.

The metric fits the output. Argmax agreement and top-1 need a class distribution: more than one
value per input. An output of one value per input (a regression or voice-activity score, shape
[N], [N, 1]) has argmax 0 whatever its value, and its cosine with fp32 is ±1, so both would
report 1.000 for an int8 model whose output is noise. There fidelity is an error measure:
- output_rel_rmse: ||ref − test|| / ||ref|| over all evaluation outputs (= 10^(−SQNR/20));
- fp32_within_tol: the share of inputs whose output lies within WITHIN_TOLERANCE standard
  deviations of the fp32 outputs (over the evaluation set) of fp32's, with the same Wilson
  interval as agreement, so that the summary's budget can judge it at its lower bound. The
  tolerance is scaled by the spread, not by the mean square: an offset (a temperature of
  300 ± 1 K) would make a tolerance of the RMS lax, and the spread is what the output tells
  inputs apart by. fp32_tolerance holds the absolute tolerance used.
The cosine columns stay empty there, with the reason in the notes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np


def per_sample(outputs: np.ndarray) -> np.ndarray:
    """Outputs as one row per sample: [N, C, 1, 1] (DenseNet, SqueezeNet) -> [N, C]."""
    return outputs.reshape(len(outputs), -1)


# An input's output is "within tolerance" of fp32's when it is off by at most this many standard
# deviations of the fp32 outputs over the evaluation set: a tenth of the spread the output
# separates inputs by (a voice-activity score of spread 0.4: 0.04).
WITHIN_TOLERANCE = 0.1


def output_names(artifact: Path) -> list[str] | None:
    """The output names of an .onnx or .tflite artifact (None: another format, or unreadable):
    every backend compares its first output, so a model of several must say which one."""
    try:
        if artifact.suffix == ".onnx":
            from qbench.methods._calibration import onnx_output_names

            return onnx_output_names(artifact)
        if artifact.suffix == ".tflite":
            from qbench.methods._litert_quant import output_names as tflite_output_names

            return tflite_output_names(artifact)
    except Exception:  # a note is not worth failing a measured cell for
        return None
    return None


def judged_output_note(artifact: Path) -> str | None:
    """Which output accuracy and fidelity judge, where the model has several (None: one)."""
    names = output_names(artifact)
    if not names or len(names) < 2:
        return None
    return (f"accuracy and fidelity judge output 0 ({names[0]!r}) of {len(names)} outputs "
            f"({', '.join(repr(n) for n in names[1:])} not compared); its shape chose the "
            "metric")  # fmt: skip


def values_per_sample(outputs: np.ndarray) -> int:
    """How many values each input's output holds (1: a scalar or regression score)."""
    return int(per_sample(outputs).shape[1]) if len(outputs) else 0


def has_classes(outputs: np.ndarray) -> bool:
    """The output can be a class distribution: more than one value per input. With one value,
    argmax is 0 for every input and top-1 / agreement are 1.000 whatever the error."""
    return values_per_sample(outputs) > 1


def top1(outputs: np.ndarray) -> np.ndarray:
    """Each sample's top-1 class, or -1 where it has none: the top score is shared by two or
    more classes (an int8 output clipped at its range's end, a constant output) or is not a
    number. A tie picked by argmax's first index would count as a guess that happens to match."""
    flat = per_sample(outputs)
    if flat.shape[1] == 0:
        return np.full(len(flat), -1)
    index = flat.argmax(axis=1)
    best = flat[np.arange(len(flat)), index]
    tied = (flat == best[:, None]).sum(axis=1) > 1
    return np.where(tied | ~np.isfinite(best), -1, index)


def constant_outputs(outputs: np.ndarray) -> bool:
    """Every sample gives the same output (placeholder weights, a dead network): agreement with
    it says nothing about a quantized model."""
    flat = per_sample(outputs)
    return len(flat) > 1 and bool(np.all(flat == flat[:1]))


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    topk = np.argsort(-per_sample(logits), axis=1)[:, :k]
    return float((topk == labels[:, None]).any(axis=1).mean())


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio: 10·log10(Σref² / Σ(ref−test)²)."""
    noise = float(np.sum((reference.astype(np.float64) - test) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def relative_rms_error(reference: np.ndarray, test: np.ndarray) -> float:
    """||ref − test|| / ||ref|| over every evaluation output (the Frobenius norm): the error's
    RMS as a share of the reference's; 1.0 is an error as large as the signal. The same ratio
    as sqnr_db, in the unit a regression output is read in: 10^(−SQNR/20)."""
    return 10.0 ** (-sqnr_db(reference, test) / 20.0)


def within_tolerance(
    reference: np.ndarray,
    test: np.ndarray,
    groups: np.ndarray | None,
    notes: list[str],
    tolerance: float = WITHIN_TOLERANCE,
) -> dict[str, float]:
    """fp32_within_tol (with its 95% interval and accuracy_groups) and fp32_tolerance: an input
    agrees where every value of its output lies within `tolerance` standard deviations of the
    fp32 outputs (over all inputs) of fp32's; a value that is not a number never does. A
    reference without spread leaves it empty (why is appended to `notes`)."""
    ref = per_sample(reference).astype(np.float64)
    out = per_sample(test).astype(np.float64)
    spread = float(np.std(ref)) if ref.size else 0.0
    if not math.isfinite(spread) or spread == 0.0:
        notes.append("fp32_within_tol empty: the fp32 outputs do not vary over the evaluation "
                     "inputs, so there is no spread to scale a tolerance by")  # fmt: skip
        return {}
    limit = tolerance * spread
    error = np.abs(out - ref).max(axis=1)
    hits = np.isfinite(error) & (error <= limit)
    return {**_with_interval("fp32_within_tol", hits, groups), "fp32_tolerance": limit}


def cosines(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Each sample's cosine similarity between its reference and test outputs."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = test.reshape(len(test), -1).astype(np.float64)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    return np.where(denom > 0, np.sum(ref * out, axis=1) / np.maximum(denom, 1e-300), 0.0)


def mean_cosine(reference: np.ndarray, test: np.ndarray) -> float:
    return float(cosines(reference, test).mean())


Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion `p` observed on `n` (possibly fractional,
    effective) independent trials."""
    if n <= 0:
        return 0.0, 1.0
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # it always holds p (rounding would leave p = 1 a hair above the upper end)
    return max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p))


def effective_samples(hits: np.ndarray, groups: np.ndarray | None) -> tuple[float, int]:
    """(effective sample size, number of groups) of 0/1 `hits` drawn in `groups` (one id per
    input; None: every input its own group), between 1 and the number of inputs. Where every
    input agrees (or none does) there is no spread to measure the clustering by, and every
    input counts, as one disagreeing input would show (its group's excess is 1 / n²: a design
    effect of 1). Taking the count of groups instead made a cell with no disagreement ten
    times less certain than one with a single disagreement, ranking the perfect cell below
    the imperfect one; simulated coverage of the two rules is the same (tests/test_measure)."""
    y = np.asarray(hits, dtype=np.float64).reshape(-1)
    n = len(y)
    if groups is None:
        return float(n), n
    ids, index = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
    count = len(ids)
    if count < 2:
        return 1.0, count
    p = y.mean()
    sums = np.bincount(index, weights=y, minlength=count)
    sizes = np.bincount(index, minlength=count).astype(np.float64)
    variance = count / (count - 1) * float(np.sum((sums - p * sizes) ** 2)) / (n * n)
    if p * (1 - p) == 0:
        return float(n), count
    if variance <= 0:  # every group holds the same share of hits: no clustering to discount
        return float(n), count
    return float(min(max(p * (1 - p) / variance, 1.0), n)), count


def _with_interval(name: str, hits: np.ndarray, groups: np.ndarray | None) -> dict[str, float]:
    p = float(np.mean(hits))
    n_eff, count = effective_samples(hits, groups)
    z = Z95
    if groups is not None and 2 <= count < len(hits):
        # few groups: the variance itself is uncertain; Student's t with groups - 1 degrees
        # of freedom instead of the normal quantile (17 photos: 2.12 instead of 1.96)
        from scipy.stats import t

        z = float(t.ppf(0.975, count - 1))
    low, high = wilson_interval(p, n_eff, z)
    return {name: p, f"{name}_ci_low": low, f"{name}_ci_high": high, "accuracy_groups": count}


def fidelity(reference: np.ndarray, test: np.ndarray, groups: np.ndarray | None = None,
             notes: list[str] | None = None,
             scores: Callable[[np.ndarray], np.ndarray] | None = None,
             agreement: bool = True) -> dict[str, float]:  # fmt: skip
    """fp32_agreement (with its 95% interval and the number of independent groups it counts,
    accuracy_groups), output cosine (mean and 1st percentile) and SQNR of `test` against
    `reference`; `groups`: which inputs were drawn together (Dataset.groups); `scores`: what
    turns an output into class scores for agreement (an embedding's linear probe);
    `agreement` False: outputs without classes (embeddings without a probe), no agreement.

    An input agrees where both have a top-1 class (no tie at the top) and it is the same. Inputs
    where the reference itself has none are left out; a reference that is the same for every
    input leaves agreement empty. Why is appended to `notes`.

    An output of one value per input has no classes and no direction: agreement and cosine stay
    empty and fp32_within_tol (within_tolerance) judges it instead; output_rel_rmse and SQNR are
    measured for every output."""
    notes = notes if notes is not None else []
    out: dict[str, float] = {
        "output_sqnr_db": sqnr_db(reference, test),
        "output_rel_rmse": relative_rms_error(reference, test),
    }
    if scores is None and not has_classes(reference):
        notes.append(
            "fp32_agreement and output_cosine empty: the output holds one value per input, "
            "whose argmax is always 0 and whose cosine is always ±1; fidelity is judged by "
            f"fp32_within_tol (|output − fp32's| ≤ {WITHIN_TOLERANCE:g} × the fp32 outputs' "
            "standard deviation), output_rel_rmse and output_sqnr_db"
        )
        if constant_outputs(reference):
            notes.append("fp32_within_tol empty: the fp32 reference gives the same output for "
                         "every input (placeholder or dead weights?)")  # fmt: skip
            return out
        return {**out, **within_tolerance(reference, test, groups, notes)}
    each = cosines(reference, test)
    out["output_cosine"] = float(each.mean())
    # the worst 1% of inputs: a mean near 1 can hide a few inputs the model gets wrong
    out["output_cosine_p1"] = float(np.percentile(each, 1))
    if not agreement:
        return out
    if scores is not None:  # embeddings: top-1 of the probe's class scores, not of the vector
        reference, test = scores(reference), scores(test)
    ref_top, test_top = top1(reference), top1(test)
    defined = ref_top >= 0
    if constant_outputs(reference):
        notes.append(
            "fp32_agreement empty: the fp32 reference gives the same output for every "
            "input (placeholder or dead weights?), so agreeing with it says nothing"
        )
    elif not defined.any():
        notes.append("fp32_agreement empty: the fp32 reference's top score is tied on every input")
    else:
        if not defined.all():
            notes.append(
                f"fp32_agreement leaves out {int((~defined).sum())} of {len(defined)} "
                "inputs: the fp32 reference's top score is tied there"
            )
        tied = int((test_top[defined] < 0).sum())
        if tied:
            notes.append(
                f"{tied} input(s) with a tie at the top of the output count as disagreeing"
            )
        kept = None if groups is None else np.asarray(groups)[defined]
        out.update(_with_interval("fp32_agreement", (test_top == ref_top)[defined], kept))
    return out


def accuracy(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None,
             notes: list[str] | None = None,
             reference: np.ndarray | None = None) -> dict[str, float]:  # fmt: skip
    """top1 (with its 95% interval and accuracy_groups) and, with more than 5 classes, top5.
    A tie at the top of an output is no prediction: it counts as wrong. An output of one value
    per input has no classes to rank: top1 stays empty (why is appended to `notes`).
    With the fp32 `reference` outputs of the same inputs: top1_change, the paired change of
    top-1 against fp32 (paired_change)."""
    if not has_classes(logits):
        if notes is not None:
            notes.append("top1 empty: the output holds one value per input, not a score per "
                         "class (argmax would be class 0 for every input)")  # fmt: skip
        return {}
    hits = top1(logits) == labels
    out = _with_interval("top1", hits, groups)
    if per_sample(logits).shape[1] > 5:
        out["top5"] = topk_accuracy(logits, labels, 5)
    if reference is not None and len(reference) == len(labels):
        out.update(paired_change("top1_change", hits, top1(reference) == labels, groups))
    return out


# A paired interval is never narrower than that of a sample with this many discordant inputs:
# with none observed, the rule of three puts 95% of the plausible discordance below 3 / n.
MIN_DISCORDANT = 3


def paired_change(name: str, hits: np.ndarray, reference_hits: np.ndarray,
                  groups: np.ndarray | None = None) -> dict[str, float]:  # fmt: skip
    """The change of a 0/1 score against the reference's on the same inputs (mean of
    hits − reference_hits) with its 95% interval, as `name`, `name`_ci_low/_ci_high.

    Paired: only the inputs where the two differ (discordant) move it, so the sampling spread
    both share (which inputs happened to be easy) cancels, and the interval is far narrower
    than the two accuracies' own intervals (McNemar's setting). Its variance is the larger of
    the cluster-robust one (inputs cropped from one photo are one draw: `groups`, Student's t
    with groups − 1 degrees of freedom) and that of MIN_DISCORDANT independent discordant
    inputs, so no discordance observed never reads as no change proven beyond 3 / n."""
    d = np.asarray(hits, dtype=np.float64).reshape(-1) - np.asarray(
        reference_hits, dtype=np.float64
    ).reshape(-1)
    n = len(d)
    if n == 0:
        return {}
    mean = float(d.mean())
    draws = n  # with no discordance every input counts, as effective_samples has it
    discordant = max(float(np.count_nonzero(d)), MIN_DISCORDANT)
    # the sample variance of d (sum of d² = the discordant count) over the draws: Var of the mean
    variance = max(discordant - draws * mean * mean, 0.0) / (max(draws - 1, 1) * draws)
    z = Z95
    if groups is not None:
        ids, index = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
        count = len(ids)
        if 2 <= count < n:
            sums = np.bincount(index, weights=d - mean, minlength=count)
            variance = max(variance, count / (count - 1) * float(np.sum(sums**2)) / (n * n))
            from scipy.stats import t

            z = float(t.ppf(0.975, count - 1))
    half = z * math.sqrt(variance)
    return {name: mean, f"{name}_ci_low": max(-1.0, mean - half),
            f"{name}_ci_high": min(1.0, mean + half)}  # fmt: skip
