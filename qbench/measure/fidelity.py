"""Accuracy on labelled data and fidelity of outputs to the fp32 model on the same inputs."""

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


def fidelity(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    return {
        "fp32_agreement": float((reference.argmax(1) == test.argmax(1)).mean()),
        "output_cosine": mean_cosine(reference, test),
        "output_sqnr_db": sqnr_db(reference, test),
    }


def accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    out = {"top1": topk_accuracy(logits, labels, 1)}
    if logits.shape[1] > 5:
        out["top5"] = topk_accuracy(logits, labels, 5)
    return out
