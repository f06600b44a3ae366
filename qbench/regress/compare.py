"""`qbench compare BASE CANDIDATE`: per cell, what changed between two runs, and is it real?

A latency verdict needs three things (see `latency_verdict`):
  1. the raw samples differ significantly (two-sided Mann-Whitney U, p < alpha);
  2. the change is larger than the cell's own noise band (z x the noise of a ratio of two runs);
  3. the change is consistent with a slowdown of at least the threshold: the ratio lies
     within that noise band of the threshold or beyond it.
The noise is the cell's own: from its history in the store (earlier runs on the same
hardware), else from the spread of the two runs' timing rounds, never below a floor. A noisy
cell therefore needs a bigger change to fail a night, and a quiet one still catches a change
of the threshold's size although its measured ratio lands a little under it half the time.
Accuracy has an absolute threshold; memory and artifact size relative ones (they carry no
samples, so no test).

Which latency is judged: the fastest call of each run (latency_min_ms), where both rows have
it. On a shared machine the median moves with whatever else runs (other processes only add
time to a call: unchanged cells' p50 ratios ranged 0.68-2.25 on a loaded 2-core VM), while the
fastest call is what the code itself costs, and a slower kernel moves it as much as the median
(benchmarks/regression_detection.py). With MIN_HISTORY_RUNS earlier runs the candidate is
judged against their median and their spread, else against the base run with the noise floor;
condition 1 (a test across one run's samples) does not apply to it, since a run's samples share
its conditions. A change that shows only in the slow calls (a periodic stall) is not judged
here: the p50 change is in the reason, and the dashboard shows p50 trends. Rows without
latency_min_ms are judged on p50 as before.

Runs on different hardware (history.fingerprint_of) are refused, with the reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qbench.regress.history import load_history, relative_noise
from qbench.report.fmt import num as _num

REGRESSION, IMPROVEMENT, NO_CHANGE = "regression", "improvement", "no change"
# Cell-level outcomes beside the three verdicts.
BROKE, FIXED, ADDED, REMOVED, NOT_RUN = "broke", "fixed", "added", "removed", "not run"
NOT_COMPARED = "not compared"  # the cell's device changed hardware between the runs
FAILING = (REGRESSION, BROKE)

HISTORY_RUNS = 20  # earlier runs used for a cell's noise; older ones may predate a change


class CompareError(ValueError):
    """The comparison cannot be made (unknown run, different hardware); one-line reason."""


class NothingToCompare(Exception):
    """`previous` was asked for and the store holds no earlier run on this hardware."""


@dataclass(frozen=True)
class Thresholds:
    latency: float = 0.10  # relative change of p50 latency that counts
    alpha: float = 0.01  # significance of the Mann-Whitney U test
    z: float = 2.0  # width of the noise band, in noise standard deviations
    noise_floor: float = 0.01  # smallest per-run relative noise assumed
    accuracy: float = 0.01  # absolute change of accuracy (0..1) that counts
    memory: float = 0.10  # relative change of peak memory that counts...
    memory_min_mb: float = 2.0  # ...when it is also at least this many MiB
    size: float = 0.01  # relative change of artifact size that counts


@dataclass
class MetricChange:
    metric: str
    base: float | None
    candidate: float | None
    change: float | None  # relative (candidate / base - 1), or absolute for accuracy
    verdict: str
    reason: str
    p_value: float | None = None


@dataclass
class CellComparison:
    cell_id: str
    model: str | None
    method: str | None
    backend: str | None
    device: str | None
    verdict: str
    reason: str = ""
    changes: list[MetricChange] = field(default_factory=list)

    def change(self, metric: str) -> MetricChange | None:
        return next((c for c in self.changes if c.metric == metric), None)


@dataclass
class Comparison:
    base_run: str
    candidate_run: str
    base_started: str
    candidate_started: str
    hardware: str
    thresholds: Thresholds
    cells: list[CellComparison]

    def count(self, verdict: str) -> int:
        return sum(c.verdict == verdict for c in self.cells)

    @property
    def failing(self) -> list[CellComparison]:
        return [c for c in self.cells if c.verdict in FAILING]

    def to_json(self) -> dict[str, Any]:
        return {
            "base_run": self.base_run,
            "candidate_run": self.candidate_run,
            "base_started": self.base_started,
            "candidate_started": self.candidate_started,
            "hardware": self.hardware,
            "thresholds": asdict(self.thresholds),
            "counts": {v: self.count(v) for v in _ORDER if self.count(v)},
            "regressions": [c.cell_id for c in self.failing],
            "cells": [asdict(c) for c in self.cells],
        }


_ORDER = (
    BROKE,
    REGRESSION,
    IMPROVEMENT,
    FIXED,
    NO_CHANGE,
    NOT_COMPARED,
    ADDED,
    REMOVED,
    NOT_RUN,
)


# --------------------------------------------------------------------------- statistics


def mann_whitney_p(a: Any, b: Any) -> float:
    """Two-sided Mann-Whitney U p-value of two samples (asymptotic, tie-corrected)."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return math.nan
    if np.ptp(np.concatenate([x, y])) == 0:
        return 1.0
    return float(mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").pvalue)


def rounds_noise(*round_medians: Any) -> float | None:
    """Per-run relative noise from the timing rounds of runs (pooled standard deviation of
    the log round medians); None when no run has two rounds."""
    import numpy as np

    squares, dof = 0.0, 0
    for medians in round_medians:
        xs = np.log(
            np.asarray(
                [m for m in (medians if medians is not None else []) if m and m > 0], dtype=float
            )
        )
        if xs.size >= 2:
            squares += float(((xs - xs.mean()) ** 2).sum())
            dof += xs.size - 1
    return math.sqrt(squares / dof) if dof else None


def latency_verdict(
    base_samples: Any,
    candidate_samples: Any,
    base_p50: float,
    candidate_p50: float,
    noise: float,
    t: Thresholds,
    label: str = "p50",
    sample_test: bool = True,
) -> tuple[str, str, float]:
    """(verdict, reason, p-value) of a latency change; `noise` is the per-run relative noise
    (a standard deviation of log latency); `label` names the latency judged. `sample_test`
    False: no Mann-Whitney condition, where the noise band comes from the cell's history of
    runs (its spread between runs is the test; samples of one run are not independent of
    that run's conditions, so their test adds nothing but misses)."""
    p = mann_whitney_p(base_samples, candidate_samples) if sample_test else math.nan
    log_ratio = math.log(candidate_p50 / base_p50)
    band = t.z * math.sqrt(2.0) * max(noise, t.noise_floor)  # noise of a ratio of two runs
    boundary = max(math.log1p(t.latency) - band, band)
    change = math.expm1(log_ratio)
    why = (
        f"{label} {change:+.1%}; flagged beyond ±{math.expm1(boundary):.1%} (threshold "
        f"{t.latency:.0%}, noise {max(noise, t.noise_floor):.1%}/run)"
        + (f"; Mann-Whitney p={p:.2g}" if sample_test else "")
    )
    if abs(log_ratio) <= boundary:
        return NO_CHANGE, why, p
    if sample_test and not p < t.alpha:
        return NO_CHANGE, why + f" (not significant at {t.alpha:g})", p
    return (REGRESSION if log_ratio > 0 else IMPROVEMENT), why, p


# The latency a verdict is judged on: the fastest call where both rows have it, else p50.
LATENCY_METRICS = ("latency_min_ms", "latency_p50_ms")
MIN_HISTORY_RUNS = 8  # earlier runs before the fastest call is judged against their median


def _judged_latency(base: dict[str, Any], cand: dict[str, Any], history_p50s: list[float],
                    history_mins: list[float]) -> tuple[Any, ...] | None:  # fmt: skip
    """(metric, base value, candidate value, baseline, base samples, candidate samples,
    noise, where the noise came from, extra reason) of the latency to judge, or None."""
    b50, c50 = _num(base.get("latency_p50_ms")), _num(cand.get("latency_p50_ms"))
    bmin, cmin = _num(base.get("latency_min_ms")), _num(cand.get("latency_min_ms"))
    bs, cs = _list(base.get("latency_samples_ms")), _list(cand.get("latency_samples_ms"))
    if bmin and cmin:
        mins = [v for v in (_num(v) for v in history_mins) if v]
        # a spread of a few runs is itself too noisy to set a band by (3 runs gave 2-10% on
        # one cell): below MIN_HISTORY_RUNS the base run alone is the baseline
        noise = relative_noise(mins) if len(mins) >= MIN_HISTORY_RUNS else None
        baseline, source = bmin, f"history of {len(mins)} runs"
        if noise is not None:
            import statistics

            baseline = statistics.median(mins)
            # the baseline is a median of k runs: its own noise is about sqrt(pi / 2k) of one
            noise *= math.sqrt((1 + math.pi / (2 * len(mins))) / 2)
        else:
            noise = 0.0
            source = f"the noise floor (fewer than {MIN_HISTORY_RUNS} earlier runs)"
        p50_text = f"; p50 {c50 / b50 - 1:+.1%}" if b50 and c50 else ""
        extra = (f"; judged on the fastest call, against the median of {len(mins)} earlier runs"
                 if source.startswith("history") else
                 "; judged on the fastest call")  # fmt: skip
        return ("latency_min_ms", bmin, cmin, baseline, bs, cs, noise,
                source, extra + p50_text)  # fmt: skip
    if not (b50 and c50):
        return None
    noise = relative_noise(history_p50s)
    source = f"history of {len(history_p50s)} runs"
    if noise is None:
        noise = rounds_noise(base.get("latency_repeat_p50s_ms"), cand.get("latency_repeat_p50s_ms"))
        source = "the two runs' timing rounds"
    if noise is None:
        noise, source = 0.0, "the noise floor (no history, one round per run)"
    return "latency_p50_ms", b50, c50, b50, bs, cs, noise, source, ""


def _list(value: Any) -> list[float]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [float(v) for v in value]


# --------------------------------------------------------------------------- cells


def compare_cell(
    base: dict[str, Any],
    cand: dict[str, Any],
    history_p50s: list[float],
    t: Thresholds,
    history_rss: list[float] | None = None,
    history_mins: list[float] | None = None,
) -> CellComparison:
    """Both rows ok: every metric's change and the cell's verdict. `history_p50s`,
    `history_rss` and `history_mins` are the cell's earlier p50 latencies, peak memories and
    fastest calls on this hardware (up to and including the base run)."""
    out = CellComparison(
        cell_id=cand["cell_id"],
        model=cand.get("model"),
        method=cand.get("method"),
        backend=cand.get("backend"),
        device=cand.get("device"),
        verdict=NO_CHANGE,
    )
    judged = _judged_latency(base, cand, history_p50s, history_mins or [])
    if judged is not None:
        metric, b50, c50, baseline, bs, cs, noise, source, extra = judged
        label = "fastest call" if metric == "latency_min_ms" else "p50"
        # The fastest call has no per-sample test: a run's samples share that run's conditions
        # (its load, its frequency), so a test across them sees differences between runs as
        # significant whatever they are; the band from the runs' spread is the test.
        fastest = metric == "latency_min_ms"
        verdict, reason, p = latency_verdict(bs, cs, baseline, c50, noise, t, label,
                                             sample_test=not fastest)  # fmt: skip
        why = f"{reason}; noise from {source}{extra}"
        p = None if math.isnan(p) else p  # no test was made (JSON has no NaN)
        out.changes.append(MetricChange(metric, b50, c50, c50 / b50 - 1, verdict, why, p))
        bt, ct = _num(base.get("throughput_ips")), _num(cand.get("throughput_ips"))
        if bt and ct:
            # Same samples, so the same test; a slower cell is a throughput regression.
            tp_verdict = {REGRESSION: REGRESSION, IMPROVEMENT: IMPROVEMENT}.get(verdict, NO_CHANGE)
            out.changes.append(
                MetricChange(
                    "throughput_ips",
                    bt,
                    ct,
                    ct / bt - 1,
                    tp_verdict,
                    "follows the latency test (same samples)",
                    p,
                )
            )
    bm, cm = _num(base.get("peak_rss_mb")), _num(cand.get("peak_rss_mb"))
    if bm and cm:
        rel = cm / bm - 1
        # Peak memory has no samples to test, but its history shows how much it wanders.
        noise = relative_noise(history_rss or []) or 0.0
        limit = max(t.memory, math.expm1(t.z * math.sqrt(2.0) * noise))
        big = abs(rel) > limit and abs(cm - bm) >= t.memory_min_mb
        verdict = (REGRESSION if rel > 0 else IMPROVEMENT) if big else NO_CHANGE
        out.changes.append(
            MetricChange(
                "peak_rss_mb",
                bm,
                cm,
                rel,
                verdict,
                f"{rel:+.1%} ({cm - bm:+.1f} MiB); flagged beyond ±{limit:.0%} (threshold "
                f"{t.memory:.0%}, noise {noise:.1%}/run) and {t.memory_min_mb:g} MiB",
            )
        )
    bs, cs = _num(base.get("artifact_bytes")), _num(cand.get("artifact_bytes"))
    if bs and cs:
        rel = cs / bs - 1
        verdict = (REGRESSION if rel > 0 else IMPROVEMENT) if abs(rel) > t.size else NO_CHANGE
        out.changes.append(
            MetricChange(
                "artifact_bytes", bs, cs, rel, verdict, f"{rel:+.2%}; threshold {t.size:.0%}"
            )
        )
    ba, bmetric = _num(base.get("accuracy")), base.get("accuracy_metric")
    ca, cmetric = _num(cand.get("accuracy")), cand.get("accuracy_metric")
    bdata, cdata = base.get("accuracy_dataset"), cand.get("accuracy_dataset")
    if ba is not None and ca is not None:
        delta = ca - ba
        if bmetric != cmetric:
            verdict, reason = NO_CHANGE, f"not compared: {bmetric} in base, {cmetric} in candidate"
        elif bdata and cdata and bdata != cdata:  # a model's evaluation data changed
            verdict, reason = (
                NO_CHANGE,
                f"not compared: dataset {bdata} in base, {cdata} in candidate",
            )
        else:
            verdict = NO_CHANGE
            if abs(delta) > t.accuracy:
                verdict = REGRESSION if delta < 0 else IMPROVEMENT
            reason = f"{cmetric} {delta * 100:+.2f} points; threshold {t.accuracy * 100:g} points"
        out.changes.append(MetricChange("accuracy", ba, ca, delta, verdict, reason))
    verdicts = {c.verdict for c in out.changes}
    if REGRESSION in verdicts:
        out.verdict = REGRESSION
    elif IMPROVEMENT in verdicts:
        out.verdict = IMPROVEMENT
    flagged = [c for c in out.changes if c.verdict == out.verdict != NO_CHANGE]
    # Unflagged cells still say how close their latency came (the test CI readers look at).
    shown = flagged or [c for c in out.changes if c.metric in LATENCY_METRICS]
    out.reason = "; ".join(f"{c.metric}: {c.reason}" for c in shown)
    return out


def _device_changed(base: dict[str, Any] | None, cand: dict[str, Any] | None) -> str | None:
    """Why a cell's two rows ran on different CPUs (a device reached over ssh/adb can change
    under the same name while the host stays the same), or None."""
    if base is None or cand is None:
        return None
    before, after = base.get("device_cpu_model"), cand.get("device_cpu_model")
    if isinstance(before, str) and isinstance(after, str) and before != after:
        return f"not compared: the device's CPU changed ({before} -> {after})"
    return None


def _status_only(
    cell_id: str,
    base: dict[str, Any] | None,
    cand: dict[str, Any] | None,
    refused: str | None = None,
) -> Any:
    row = cand if cand is not None else base
    assert row is not None
    out = CellComparison(
        cell_id=cell_id,
        model=row.get("model"),
        method=row.get("method"),
        backend=row.get("backend"),
        device=row.get("device"),
        verdict=NOT_RUN,
    )
    if refused:
        out.verdict, out.reason = NOT_COMPARED, refused
    elif base is None:
        out.verdict, out.reason = ADDED, f"only in the candidate ({row.get('status')})"
    elif cand is None:
        out.verdict, out.reason = REMOVED, f"only in the base ({base.get('status')})"
    elif base.get("status") == "ok":
        out.verdict = BROKE
        out.reason = f"ok in the base, {cand.get('status')} now: {cand.get('error')}"
    elif cand.get("status") == "ok":
        out.verdict, out.reason = FIXED, f"{base.get('status')} in the base, ok now"
    else:
        out.reason = f"{base.get('status')} in the base, {cand.get('status')} now: " + str(
            cand.get("error")
        )
    return out


def compare_runs(history: Any, base_run: str, candidate_run: str, t: Thresholds) -> Comparison:
    """Compare two runs of one history (see load_history)."""
    base_rows = history[history["run_id"] == base_run]
    cand_rows = history[history["run_id"] == candidate_run]
    for run_id, rows in ((base_run, base_rows), (candidate_run, cand_rows)):
        if rows.empty:
            raise CompareError(f"run {run_id}: no result rows in the store")
    base_fp, cand_fp = base_rows["fingerprint"].iloc[0], cand_rows["fingerprint"].iloc[0]
    if base_fp != cand_fp:
        raise CompareError(
            f"refusing to compare runs on different hardware: base {base_run} ran on "
            f"{base_rows['fingerprint_label'].iloc[0]}, candidate {candidate_run} on "
            f"{cand_rows['fingerprint_label'].iloc[0]}"
        )
    base_start = base_rows["run_started_at"].iloc[0]
    # The cell's noise from earlier runs on this hardware, up to and including the base.
    earlier = history[
        (history["fingerprint"] == base_fp)
        & (history["status"] == "ok")
        & (history["run_started_at"] <= base_start)
        & (history["run_id"] != candidate_run)
    ]
    by_base = {r["cell_id"]: r for r in base_rows.to_dict("records")}
    by_cand = {r["cell_id"]: r for r in cand_rows.to_dict("records")}
    cells = []
    for cell_id in sorted(set(by_base) | set(by_cand)):
        b, c = by_base.get(cell_id), by_cand.get(cell_id)
        moved = _device_changed(b, c)
        if moved:
            cells.append(_status_only(cell_id, b, c, moved))
        elif b is not None and c is not None and b["status"] == c["status"] == "ok":
            past = earlier[earlier["cell_id"] == cell_id].tail(HISTORY_RUNS)
            p50s, rss = past["latency_p50_ms"].tolist(), past["peak_rss_mb"].tolist()
            mins = past["latency_min_ms"].tolist() if "latency_min_ms" in past else []
            cells.append(compare_cell(b, c, p50s, t, rss, mins))
        else:
            cells.append(_status_only(cell_id, b, c))
    cells.sort(key=lambda c: (_ORDER.index(c.verdict), c.cell_id))
    return Comparison(
        base_run=base_run,
        candidate_run=candidate_run,
        base_started=str(base_start),
        candidate_started=str(cand_rows["run_started_at"].iloc[0]),
        hardware=str(cand_rows["fingerprint_label"].iloc[0]),
        thresholds=t,
        cells=cells,
    )


# --------------------------------------------------------------------------- runs


def _runs_of(history: Any) -> Any:
    return (
        history[["run_id", "run_started_at", "fingerprint"]]
        .drop_duplicates("run_id")
        .sort_values(["run_started_at", "run_id"])
        .reset_index(drop=True)
    )


def resolve(ref: str, history: Any, where: str, candidate: str | None = None) -> str:
    """A run id from `latest`, `previous` (the latest run before the candidate on the same
    hardware), a run id or a unique prefix of one."""
    runs = _runs_of(history)
    if runs.empty:
        raise CompareError(f"{where}: the store holds no results")
    if ref == "latest":
        return str(runs["run_id"].iloc[-1])
    if ref == "previous":
        if candidate is None:
            raise CompareError("`previous` is a base: use it as BASE, with CANDIDATE a run")
        cand = runs[runs["run_id"] == candidate].iloc[0]
        before = runs[
            (runs["run_started_at"] < cand["run_started_at"])
            & (runs["fingerprint"] == cand["fingerprint"])
        ]
        if before.empty:
            raise NothingToCompare(
                f"{where}: no run before {candidate} on this hardware: nothing to compare"
            )
        return str(before["run_id"].iloc[-1])
    matches = [r for r in runs["run_id"] if str(r).startswith(ref)]
    if len(matches) == 1:
        return str(matches[0])
    if not matches:
        raise CompareError(f"{where}: no run {ref!r} (runs: latest, previous or a run id)")
    raise CompareError(f"{where}: {ref!r} matches {len(matches)} runs; give more of the id")


def _load(store: str | Path) -> Any:
    path = Path(store)
    if not path.is_dir():
        raise CompareError(f"{store}: no such store directory")
    try:
        return load_history(path)
    except Exception as exc:  # a broken store: one line, not a traceback
        raise CompareError(f"{store}: cannot read the store ({type(exc).__name__}: {exc})") from exc


def compare(
    base: str, candidate: str, store: str | Path | None = None, t: Thresholds | None = None
) -> Comparison:
    """BASE and CANDIDATE are run references in `store`, or, without `store`, store
    directories whose latest runs are compared."""
    import pandas as pd

    t = t or Thresholds()
    if store is not None:
        history = _load(store)
        cand_id = resolve(candidate, history, str(store))
        base_id = resolve(base, history, str(store), candidate=cand_id)
    else:
        base_hist, cand_hist = _load(base), _load(candidate)
        cand_id = resolve("latest", cand_hist, candidate)
        base_id = resolve("latest", base_hist, base)
        if base_id == cand_id:
            raise CompareError(f"{base} and {candidate}: both latest runs are {base_id}")
        history = pd.concat([base_hist, cand_hist], ignore_index=True)
        history = history.drop_duplicates(["run_id", "cell_id"]).sort_values(
            ["run_started_at", "run_id", "cell_id"], kind="stable"
        )
    if base_id == cand_id:
        raise CompareError(f"BASE and CANDIDATE are the same run, {base_id}")
    return compare_runs(history, base_id, cand_id, t)


# --------------------------------------------------------------------------- output


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    if metric == "accuracy":
        return f"{value:.4f}"
    if metric == "artifact_bytes":
        return f"{value / 1e6:.3f} MB"
    if metric in LATENCY_METRICS:
        return f"{value:.4g} ms"
    if metric == "throughput_ips":
        return f"{value:.4g}/s"
    return f"{value:.1f} MiB"


def _change_text(c: MetricChange) -> str:
    if c.change is None:
        return "—"
    if c.metric == "accuracy":
        return f"{c.change * 100:+.2f} pt"
    return f"{c.change:+.1%}"


def to_markdown(cmp: Comparison) -> str:
    counts = ", ".join(f"{cmp.count(v)} {v}" for v in _ORDER if cmp.count(v))
    t = cmp.thresholds
    lines = [
        f"## qbench compare: {len(cmp.failing)} regression(s)",
        "",
        f"- base `{cmp.base_run}` ({cmp.base_started}) → candidate `{cmp.candidate_run}` "
        f"({cmp.candidate_started})",
        f"- hardware: {cmp.hardware}",
        f"- thresholds: latency {t.latency:.0%} of the fastest call (of p50 where a row has "
        f"none: Mann-Whitney p < {t.alpha:g}), beyond "
        f"{t.z:g}× the cell's noise), accuracy {t.accuracy * 100:g} points, memory "
        f"{t.memory:.0%}, size {t.size:.0%}",
        f"- cells: {counts}",
        "",
        "| verdict | cell | latency (fastest call, else p50) | throughput | peak memory | size "
        "| accuracy | why |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell in cmp.cells:
        parts = []
        judged = next((m for m in LATENCY_METRICS if cell.change(m) is not None), "latency_p50_ms")
        for metric in (
            judged,
            "throughput_ips",
            "peak_rss_mb",
            "artifact_bytes",
            "accuracy",
        ):
            c = cell.change(metric)
            if c is None:
                parts.append("—")
            else:
                mark = " ⚠" if c.verdict == REGRESSION else ""
                parts.append(
                    f"{_fmt(metric, c.base)} → {_fmt(metric, c.candidate)} "
                    f"({_change_text(c)}){mark}"
                )
        why = cell.reason.replace("|", "\\|")
        lines.append(
            f"| **{cell.verdict}** | `{cell.cell_id}` | " + " | ".join(parts) + f" | {why} |"
        )
    return "\n".join(lines) + "\n"


def to_json_text(cmp: Comparison) -> str:
    return json.dumps(cmp.to_json(), indent=2, default=str)
