"""Tune's finalists timed against each other: every artifact opened in one process, timed in
interleaved rounds (each round times every finalist once, in rotating order, so drift and a
noisy neighbour hit all alike), then compared with a significance test on the per-round
ratios."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def open_runner(cell: Any, prepared: dict[str, Any]) -> Callable[[], Any]:
    """The timed call of a prepared cell: its backend's session bound to one batch of the
    cell's eval inputs, nothing else."""
    from qbench.inputs import InputSpec, batch_of, bind, load_npz
    from qbench.plugins import load_members

    fam = load_members(cell.members) if cell.members else None
    if fam is None:
        from qbench.plugins import load_all

        fam = load_all()
    backend = fam.backends.get(cell.backend)()
    session = backend.open(Path(prepared["artifact_path"]), cell.artifact_format, cell.threads,
                           backend.Params(**cell.backend_params))  # fmt: skip
    spec = [InputSpec.from_json(s) for s in prepared["model_inputs"]]
    x, _ = load_npz(prepared["eval_path"])
    return session.runner(batch_of(bind(spec, x), cell.batch))


def interleave(runners: dict[str, Callable[[], Any]], rounds: int, seconds: float
               ) -> dict[str, list[float]]:  # fmt: skip
    """Per-round median latency (ms) of every runner, rounds interleaved in rotating order."""
    names = list(runners)
    for run in runners.values():  # warm-up: first-call allocations, caches
        for _ in range(5):
            run()
    p50s: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            run, samples, end = runners[name], [], time.perf_counter() + seconds
            while time.perf_counter() < end or len(samples) < 5:
                start = time.perf_counter()
                run()
                samples.append((time.perf_counter() - start) * 1e3)
            p50s[name].append(statistics.median(samples))
    return p50s


def slower_p_value(fast: list[float], slow: list[float]) -> float:
    """One-sided p-value that `slow` is slower than `fast`: a Wilcoxon signed-rank test on the
    per-round log ratios (paired: both were timed in the same round). 1.0 where every round
    ties."""
    from scipy.stats import wilcoxon

    logs = [math.log(b / a) for a, b in zip(fast, slow, strict=True)]
    if all(v == 0 for v in logs):
        return 1.0
    return float(wilcoxon(logs, alternative="greater").pvalue)


def ratio(p50s: dict[str, list[float]], slow: str, fast: str) -> float:
    """How many times faster `fast` is than `slow`: the median of the per-round ratios."""
    return statistics.median(a / b for a, b in zip(p50s[slow], p50s[fast], strict=True))
