"""Confirm the summary's speed-ups before stating them.

The summary's "fastest" and "within budget" picks are each compared with the best fp32 cell of
their model and device, but the two cells were timed minutes apart, and on a shared machine the
load changes in between (issue 28: ResNet-18's best int8 read 5.36x over fp32 in a run where
fp32 was timed under load; the same pair in interleaved rounds, 3.87x [3.80, 3.92]). So after
the run, each pick is timed against its reference again in interleaved rounds (the `confirm`
agent stage, in a process of its own), and the summary states the median of the per-round
ratios with its 95% interval, or says why a pick could not be confirmed.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

# Pairs timed in a confirmation: enough rounds for a distribution-free interval of the median
# ratio (15 rounds: between the 4th and 12th ordered ratios), each short enough that a pair
# costs seconds, not minutes.
CONFIRM_ROUNDS = 15
CONFIRM_SECONDS = 0.25
CONFIRM_MIN_ITERS = 5
CONFIRM_TIMEOUT_S = 300.0


class ConfirmSettings(BaseModel):
    """How `qbench run` confirms its summary's picks (interleaved rounds against fp32)."""

    enabled: bool = Field(default=True, description="confirm the picks after the run")
    rounds: int = Field(default=CONFIRM_ROUNDS, ge=5, le=200, description="interleaved rounds")
    min_seconds: float = Field(
        default=CONFIRM_SECONDS, gt=0, le=10, description="least time per variant per round"
    )
    min_iters: int = Field(
        default=CONFIRM_MIN_ITERS, ge=1, le=10_000, description="least calls per variant per round"
    )


@dataclass
class Confirmation:
    """One pick timed against its reference in interleaved rounds (or why it was not)."""

    model: str
    device: str
    cell_id: str
    reference_cell_id: str
    speedup: float | None = None  # median over rounds of reference p50 / pick p50
    speedup_ci_low: float | None = None
    speedup_ci_high: float | None = None
    rounds: int = 0
    p_value: float | None = None  # one-sided Wilcoxon: the pick is not faster
    load_other_cores: float | None = None
    why_not: str | None = None  # set where the pair was not timed


def pairs(picks: list[Any]) -> list[tuple[str, str, str, str]]:
    """(model, device, reference cell id, pick cell id) of every summary pick that is not
    its own reference, once each."""
    seen: list[tuple[str, str, str, str]] = []
    for summary in picks:
        ref = summary.reference
        for pick in (summary.fastest, summary.within_budget):
            if ref is None or pick is None or pick.cell_id == ref.cell_id:
                continue
            key = (summary.model, summary.device, ref.cell_id, pick.cell_id)
            if key not in seen:
                seen.append(key)
    return seen


def ratio_statistics(reference: list[float], pick: list[float]) -> dict[str, float | None]:
    """Median of the per-round ratios reference / pick, its 95% interval (order statistics)
    and the one-sided Wilcoxon p-value that the pick is not faster."""
    from qbench.measure.stats import median_ci

    ratios = [r / p for r, p in zip(reference, pick, strict=True) if p > 0]
    if not ratios:
        return {"speedup": None, "speedup_ci_low": None, "speedup_ci_high": None,
                "p_value": None}  # fmt: skip
    ordered = sorted(ratios)
    n = len(ordered)
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    low, high = median_ci(ratios)
    from qbench.measure.stats import slower_p_value

    kept = [(r, p) for r, p in zip(reference, pick, strict=True) if p > 0]
    p_value = slower_p_value([p for _, p in kept], [r for r, _ in kept])  # the reference slower
    return {"speedup": median, "speedup_ci_low": low, "speedup_ci_high": high,
            "p_value": p_value}  # fmt: skip


def why_not_confirmable(ref: Any, pick: Any, prepared: dict[str, dict[str, Any]],
                        executor: str) -> str | None:  # fmt: skip
    """Why a pair cannot be timed together here, or None."""
    if executor != "local":
        return f"not confirmed: cells ran through the {executor} executor, not in this process"
    for cell in (ref, pick):
        if cell.cell_id not in prepared:
            return (f"not confirmed: {cell.cell_id} was measured in an earlier run (its "
                    "artifact is not at hand); run the suite again to confirm")  # fmt: skip
        if cell.transport != "subprocess":
            return f"not confirmed: {cell.cell_id} runs on a remote device ({cell.transport})"
    if ref.threads != pick.threads:
        return (f"not confirmed: the two cells use {ref.threads} and {pick.threads} threads, "
                "and one process runs one thread setting")  # fmt: skip
    return None


def confirm_pair(ref: Any, pick: Any, prepared: dict[str, dict[str, Any]], workdir: Path,
                 settings: ConfirmSettings) -> dict[str, Any]:  # fmt: skip
    """Run the agent's confirm stage on the pair; its per-round medians or a failure."""
    from qbench.transports.subprocess import THREAD_VARS, run_stage

    workdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "cells": [ref.to_json(), pick.to_json()],
        "prepared": [prepared[ref.cell_id], prepared[pick.cell_id]],
        "rounds": settings.rounds,
        # a suite that times its cells briefly (a smoke test, CI) gets brief rounds too
        "min_iters": min(settings.min_iters, int(pick.measurement["min_iters"])),
        "min_seconds": min(settings.min_seconds, float(pick.measurement["min_seconds"])),
    }
    (workdir / "cell.json").write_text(json.dumps(spec, default=str))
    env = {**os.environ, **dict.fromkeys(THREAD_VARS, str(ref.threads))}
    return run_stage(sys.executable, "confirm", workdir, env, CONFIRM_TIMEOUT_S)


def confirm_picks(picks: list[Any], cells: dict[str, Any], prepared: dict[str, dict[str, Any]],
                  executor: str, workroot: Path, settings: ConfirmSettings,
                  ) -> list[Confirmation]:  # fmt: skip
    """A Confirmation for every pick of `picks` (summary.ModelSummary) against its reference;
    `cells` and `prepared` by cell id: the run's cells and their prepare results."""
    out = []
    for i, (model, device, ref_id, pick_id) in enumerate(pairs(picks)):
        done = Confirmation(model, device, pick_id, ref_id)
        out.append(done)
        ref, pick = cells.get(ref_id), cells.get(pick_id)
        if ref is None or pick is None:
            done.why_not = "not confirmed: a cell of the pair is not in this run's plan"
            continue
        done.why_not = why_not_confirmable(ref, pick, prepared, executor)
        if done.why_not:
            continue
        result = confirm_pair(ref, pick, prepared, workroot / f"confirm-{i}", settings)
        if result.get("status") != "ok":
            done.why_not = f"not confirmed: the confirm stage failed: {result.get('error')}"
            continue
        reference_p50s, pick_p50s = result["p50s"]
        done.rounds = len(pick_p50s)
        done.load_other_cores = result.get("load_other_cores")
        for key, value in ratio_statistics(reference_p50s, pick_p50s).items():
            setattr(done, key, value)
    return out


def to_json(confirmations: list[Confirmation]) -> str:
    return json.dumps([asdict(c) for c in confirmations])


def from_runs(runs: Any) -> dict[tuple[str, str], tuple[str, Confirmation]]:
    """The latest confirmation of each (reference, pick) pair in a store's runs frame, with
    the id of the run that made it."""
    found: dict[tuple[str, str], tuple[str, Confirmation]] = {}
    if "confirmations_json" not in getattr(runs, "columns", ()):
        return found
    ordered = runs.sort_values("started_at") if "started_at" in runs.columns else runs
    for run_id, text in zip(ordered["run_id"], ordered["confirmations_json"], strict=True):
        if not isinstance(text, str) or not text:
            continue
        try:
            items = json.loads(text)
        except ValueError:
            continue
        for item in items if isinstance(items, list) else []:
            try:
                c = Confirmation(**item)
            except TypeError:
                continue  # written by another qbench version: not read as this one
            found[(c.reference_cell_id, c.cell_id)] = (str(run_id), c)
    return found
