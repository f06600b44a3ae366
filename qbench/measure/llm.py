"""Causal LMs measured the way llama-bench and vLLM's benchmark measure them.

Speed, at batch 1:
- prefill: one forward over a prompt of each asked length, with the KV cache filled, and the
  first token picked: its time is the time to first token (TTFT); prefill tokens/s = length /
  TTFT. Each length is timed in several iterations after a warm-up; the median counts.
- decode: from the longest prompt, tokens generated one at a time (greedy, the KV cache
  carried), each step timed alone: per-token latency percentiles and decode tokens/s
  (1000 / mean ms). These per-token latencies are also the row's latency_* columns.

Quality, on windows of real text the fp32 model never saw as prompts (the dataset's eval
split):
- perplexity: exp of the mean next-token negative log-likelihood over every position;
- KL divergence of each position's next-token distribution from the fp32 reference's,
  KL(P_fp32 || P_cell), mean and 99th percentile (llama.cpp's `--kl-divergence`);
- top-1 token agreement with the fp32 reference (fp32_agreement), with an interval that
  counts each window as one draw (positions of one window are not independent);
- the same divergence and agreement on the first window fed one token at a time through the
  KV cache (decode_kld_mean, decode_fp32_agreement): what generation computes. A whole window
  is one prefill-style call, and a method whose activations are quantized per tensor (ONNX
  Runtime's dynamic int8) shares one scale across all of its positions there, while a decode
  step quantizes its one token alone: the two can differ by an order of magnitude.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qbench.measure.fidelity import _with_interval
from qbench.measure.stats import summarize


class TokenModel(Protocol):
    """What a backend session gives for a causal LM (Session.lm())."""

    def prefill(self, ids: np.ndarray) -> tuple[int, Any]:
        """Run a prompt [T] token ids; (the next token, the state to decode from)."""
        ...

    def decode(self, token: int, state: Any) -> tuple[int, Any]:
        """Feed one token after `state`; (the next token, the new state)."""
        ...

    def logprobs(self, ids: np.ndarray) -> np.ndarray:
        """Next-token log-probabilities [T, vocab] (float32) of a window [T], no cache."""
        ...

    def decode_logprobs(self, token: int, state: Any) -> tuple[np.ndarray, Any]:
        """decode(), returning the next-token log-probabilities [vocab] instead of a token."""
        ...


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)


def reference_logprobs(module: Any, windows: np.ndarray) -> np.ndarray:
    """The fp32 torch causal LM's next-token log-probabilities, [windows, T, vocab], stored as
    float16: half the disk (8 windows of 256 tokens over a 49k vocabulary: 200 MB) for a
    rounding of at most 2^-11 relative per entry, whose errors average out of the KL mean."""
    import torch

    out = []
    with torch.inference_mode():
        for ids in windows:
            logits = module(torch.as_tensor(ids[None]))[0].float()
            out.append(torch.log_softmax(logits, dim=-1).to(torch.float16).numpy())
    return np.stack(out)


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter_ns()
    result = call()
    return (time.perf_counter_ns() - start) / 1e6, result


def prompts(windows: np.ndarray, lengths: Sequence[int]) -> tuple[dict[int, np.ndarray], list[str]]:
    """Prompts of each length cut from the running text of the eval windows; lengths longer
    than the text are left out, with the reason."""
    text = windows.reshape(-1)
    out, notes = {}, []
    for length in lengths:
        if length > len(text):
            notes.append(
                f"prefill at {length} tokens not measured: the eval text holds "
                f"{len(text)} tokens (raise accuracy.samples or the window)"
            )
        else:
            out[length] = np.ascontiguousarray(text[:length])
    return out, notes


def measure_speed(
    lm: TokenModel, prompt_by_length: dict[int, np.ndarray], m: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Prefill per prompt length and decode from the longest: the row's speed columns."""
    notes: list[str] = []
    iters = max(3, min(m["min_iters"], 20))  # a long prefill takes a while: a few suffice
    prefill_p50: dict[int, float] = {}
    for length, ids in prompt_by_length.items():
        for _ in range(max(1, min(m["warmup"], 2))):
            lm.prefill(ids)
        samples, deadline = [], time.perf_counter() + m["min_seconds"]
        while len(samples) < iters or (time.perf_counter() < deadline and len(samples) < 200):
            samples.append(_timed(lambda ids=ids: lm.prefill(ids))[0])
        prefill_p50[length] = float(np.median(samples))
    longest = max(prompt_by_length)
    steps = m["decode_tokens"]
    token, state = lm.prefill(prompt_by_length[longest])
    for _ in range(min(steps, 4)):  # warm-up steps (first-call allocations)
        token, state = lm.decode(token, state)
    token_ms: list[float] = []
    rounds: list[list[float]] = []
    deadline = time.perf_counter() + m["min_seconds"]
    while not rounds or (
        (len(token_ms) < m["min_iters"] or time.perf_counter() < deadline)
        and len(rounds) < max(m["repeats"], 1) * 50
    ):
        token, state = lm.prefill(prompt_by_length[longest])
        this_round = []
        for _ in range(steps):
            elapsed, (token, state) = _timed(lambda t=token, s=state: lm.decode(t, s))
            this_round.append(elapsed)
        rounds.append(this_round)
        token_ms += this_round
    stats = summarize(token_ms)
    ttft = prefill_p50[longest]
    row: dict[str, Any] = {
        **stats,
        "latency_samples_ms": token_ms,
        "latency_repeat_p50s_ms": [float(np.median(r)) for r in rounds],
        "iters": len(token_ms),
        "repeats": len(rounds),
        "prompt_tokens": longest,
        "ttft_ms": ttft,
        "prefill_tps": longest * 1000.0 / ttft,
        "prefill_lengths": list(prefill_p50),
        "prefill_p50s_ms": list(prefill_p50.values()),
        "decode_tokens": steps,
        "decode_tps": 1000.0 / stats["latency_mean_ms"],
        "decode_p50_ms": stats["latency_p50_ms"],
        "decode_p90_ms": stats["latency_p90_ms"],
        "decode_p99_ms": stats["latency_p99_ms"],
        "throughput_ips": 1000.0 / stats["latency_mean_ms"],
    }
    notes.append(
        f"causal LM at batch 1: latency_* and throughput are per generated token (greedy "
        f"decode with KV cache after a {longest}-token prompt, {steps} tokens per round); "
        f"ttft_ms is the {longest}-token prefill"
    )
    return row, notes


def measure_quality(
    lm: TokenModel, windows: np.ndarray, reference: np.ndarray | None
) -> tuple[dict[str, Any], list[str]]:
    """Perplexity on the windows; KL divergence and top-1 agreement against `reference`
    (fp32 log-probabilities, [windows, T, vocab], may be a memory map)."""
    nll, kld, hits, groups = [], [], [], []
    ref_nll = []
    for index, ids in enumerate(windows):
        logp = lm.logprobs(ids).astype(np.float64)  # [T, V]
        targets = ids[1:]
        nll.append(-logp[np.arange(len(targets)), targets])
        if reference is not None:
            ref = np.asarray(reference[index], dtype=np.float64)
            ref_nll.append(-ref[np.arange(len(targets)), targets])
            kld.append(kl_divergence(ref, logp))
            hits.append(ref.argmax(-1) == logp.argmax(-1))
            groups.append(np.full(len(ids), index))
    all_nll = np.concatenate(nll)
    row: dict[str, Any] = {
        "perplexity": float(np.exp(all_nll.mean())),
        "perplexity_tokens": len(all_nll),
        "accuracy_samples": len(windows),
    }
    notes: list[str] = []
    if reference is None:
        notes.append("kld and fp32_agreement empty: no fp32 reference for this model")
        return row, notes
    divergence = np.maximum(np.concatenate(kld), 0.0)  # rounding can give -1e-9
    row.update(
        {
            "perplexity_fp32": float(np.exp(np.concatenate(ref_nll).mean())),
            "kld_mean": float(divergence.mean()),
            "kld_p99": float(np.percentile(divergence, 99)),
            **_with_interval("fp32_agreement", np.concatenate(hits), np.concatenate(groups)),
        }
    )
    row["perplexity_change"] = row["perplexity"] / row["perplexity_fp32"] - 1.0
    row.update(decode_quality(lm, windows[0], np.asarray(reference[0], dtype=np.float64)))
    notes.append(
        f"decode_kld_mean, decode_fp32_agreement: the first eval window fed one token at a time "
        f"through the KV cache ({row['decode_quality_tokens']} positions, teacher-forced), "
        "against the fp32 reference"
    )
    return row, notes


def decode_quality(lm: TokenModel, ids: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """KL divergence and top-1 agreement with `reference` ([T, vocab] fp32 log-probabilities
    of the window `ids`) when the window is fed token by token: a one-token prefill, then each
    next token of the text decoded with the cache (teacher forcing), as generation computes."""
    _, state = lm.prefill(ids[:1])
    steps = []
    for position in range(1, len(ids)):
        logp, state = lm.decode_logprobs(int(ids[position]), state)
        steps.append(logp.astype(np.float64))
    logp, ref = np.stack(steps), reference[1:]
    return {
        "decode_kld_mean": float(np.maximum(kl_divergence(ref, logp), 0.0).mean()),
        "decode_fp32_agreement": float(np.mean(ref.argmax(-1) == logp.argmax(-1))),
        "decode_quality_tokens": len(steps),
    }


def kl_divergence(reference: np.ndarray, logp: np.ndarray) -> np.ndarray:
    """KL(P_reference || P) of each position, from log-probabilities [..., vocab]."""
    return np.sum(np.exp(reference) * (reference - logp), axis=-1)


def open_reference(path: str | Path | None) -> np.ndarray | None:
    return None if path is None else np.load(path, mmap_mode="r")
