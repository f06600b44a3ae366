"""Accuracy on labelled data and fidelity of outputs to the fp32 model on the same inputs.

Top-1 accuracy and top-1 agreement come with a 95% interval that counts the evaluation inputs
as the dataset says they were drawn: where several inputs are crops of one photo
(Dataset.groups), a quantized model tends to keep or lose all of them together, so 170 crops of
17 photos carry far less evidence than 170 independent inputs. The interval is Wilson's score
interval at the effective sample size n / design effect, the design effect from the
cluster-robust variance of the proportion (Kish 1965; the ratio estimator's variance over
groups), with Student's t quantile for the few groups. Independent inputs give the plain
Wilson interval.
"""

from __future__ import annotations

import math

import numpy as np


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    topk = np.argsort(-logits, axis=1)[:, :k]
    return float((topk == labels[:, None]).any(axis=1).mean())


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio: 10·log10(Σref² / Σ(ref−test)²)."""
    noise = float(np.sum((reference.astype(np.float64) - test) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def mean_cosine(reference: np.ndarray, test: np.ndarray) -> float:
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = test.reshape(len(test), -1).astype(np.float64)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(denom > 0, np.sum(ref * out, axis=1) / np.maximum(denom, 1e-300), 0.0)
    return float(cos.mean())


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
    input agrees (or none does) there is no spread to measure the clustering by, and the count
    of groups is taken: what a sample of that many independent draws would show."""
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
        return float(count), count
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


def fidelity(reference: np.ndarray, test: np.ndarray,
             groups: np.ndarray | None = None) -> dict[str, float]:  # fmt: skip
    """fp32_agreement (with its 95% interval and the number of independent groups it counts,
    accuracy_groups), output cosine and SQNR of `test` against `reference`; `groups`: which
    inputs were drawn together (Dataset.groups)."""
    return {
        **_with_interval("fp32_agreement", reference.argmax(1) == test.argmax(1), groups),
        "output_cosine": mean_cosine(reference, test),
        "output_sqnr_db": sqnr_db(reference, test),
    }


def accuracy(logits: np.ndarray, labels: np.ndarray,
             groups: np.ndarray | None = None) -> dict[str, float]:  # fmt: skip
    """top1 (with its 95% interval and accuracy_groups) and, with more than 5 classes, top5."""
    out = _with_interval("top1", np.argmax(logits, axis=1) == labels, groups)
    if logits.shape[1] > 5:
        out["top5"] = topk_accuracy(logits, labels, 5)
    return out
