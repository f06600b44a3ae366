"""The timing loop: warm up, then time at least N iterations AND at least T seconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def time_rounds(
    run: Callable[[], Any],
    warmup: int,
    min_iters: int,
    min_seconds: float,
    repeats: int = 1,
    max_iters: int = 100_000,
) -> list[list[float]]:
    """Raw per-iteration latencies in ms, one list per round.

    The loop body does only: read clock, call, read clock, append. Anything else would be
    counted in every sample (benchmarks/harness_overhead.py measures what is left).
    """
    for _ in range(warmup):
        run()
    clock = time.perf_counter_ns
    rounds: list[list[float]] = []
    for _ in range(repeats):
        samples: list[int] = []
        append = samples.append
        deadline = clock() + int(min_seconds * 1e9)
        while True:
            start = clock()
            run()
            end = clock()
            append(end - start)
            if (len(samples) >= min_iters and end >= deadline) or len(samples) >= max_iters:
                break
        rounds.append([s / 1e6 for s in samples])
    return rounds


def interleaved_rounds(
    runners: dict[str, Callable[[], Any]],
    rounds: int,
    min_iters: int,
    min_seconds: float,
    warmup: int = 5,
) -> dict[str, list[float]]:
    """Each runner's median latency (ms) per round, the runners timed in interleaved rounds:
    every round times each once with time_rounds, in an order that rotates from round to
    round, so drift and a noisy neighbour hit all of them alike. Two cells timed minutes apart
    can see different loads; per-round ratios of interleaved rounds cannot."""
    import statistics

    names = list(runners)
    for run in runners.values():  # first-call allocations and caches, outside every round
        for _ in range(warmup):
            run()
    p50s: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            (samples,) = time_rounds(runners[name], 0, min_iters, min_seconds, 1)
            p50s[name].append(statistics.median(samples))
    return p50s
