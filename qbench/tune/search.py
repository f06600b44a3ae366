"""`qbench tune`: the fastest configuration of one model on one device within an accuracy
budget, searched the way INC's and Olive's tuners search, with statistics at each step.

1. Screen: every method × parameters × backend × threads of the search space is planned (cells
   a backend cannot run are skipped with the planner's reason) and run on a few inputs with a
   short timing: a normal run in the store. A cell is pruned when it is simulated (float
   kernels: no real speed-up), not faster than the best fp32, or fails the budget even at the
   upper bound of its 95% interval (it cannot pass on more inputs either, but for chance).
2. Full: the survivors and the best fp32 (the reference) run with the suite's own accuracy
   samples and timing: a second normal run. A cell meets the budget when the lower bound of
   its interval is at most `budget` below the reference's accuracy (report.summary's rule).
3. Finals: the cells that meet it and are within FINALS_SPAN of the fastest of them are timed
   against each other in one process, in interleaved rounds; a finalist slower than the
   fastest by a one-sided Wilcoxon test (p < ALPHA) is out, and of those left (tied within
   noise) the one with the highest accuracy lower bound wins (then the smaller artifact).

The result names the winner, the Pareto front of the full run and a suite that reproduces the
winner. A time budget stops starting cells once spent: the cells left are recorded as
skipped with that reason, and the finals are left out.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qbench.report.summary import number
from qbench.tune.space import stage_suite, winner_suite

FINALS_SPAN = 1.15  # finalists: within 15% of the fastest cell that meets the budget
MAX_FINALISTS = 4
ALPHA = 0.05


@dataclass
class Trial:
    cell_id: str
    stage: str  # screen or full
    status: str
    verdict: str  # what tune concluded from it


@dataclass
class TuneResult:
    model: str
    device: str
    budget: float
    metric: str | None
    reference: dict[str, Any] | None
    winner: dict[str, Any] | None
    why: str
    finals: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    trials: list[Trial]
    runs: dict[str, str]
    suite: str  # YAML of a suite that reproduces the winner ("" without one)
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TuneConfig:
    base: dict[str, Any]  # the suite tune starts from: one model, its data and settings
    source_dir: Path  # where the base suite's relative paths start
    store: Path
    budget: float = 0.01
    methods: list[dict[str, Any]] = field(default_factory=list)
    backends: list[dict[str, Any]] = field(default_factory=list)
    threads: list[int] = field(default_factory=lambda: [1])
    screen_samples: int = 64
    time_budget_s: float | None = None
    rounds: int = 7
    round_seconds: float = 0.5
    metric: str | None = None  # top1 or fp32_agreement; None: top-1 where there are labels


def tune(config: TuneConfig, progress: Any = None) -> TuneResult:
    started = time.monotonic()
    deadline = None
    if config.time_budget_s is not None:
        deadline = (started + config.time_budget_s,
                    f"qbench tune: its time budget ({_duration(config.time_budget_s)}) was "
                    "spent before this cell could start")  # fmt: skip
    name = config.base["name"]
    full_samples = (config.base.get("accuracy") or {}).get("samples")
    screen_n = config.screen_samples
    if isinstance(full_samples, int):
        screen_n = min(screen_n, full_samples)
    screen_suite = stage_suite(config.base, f"{name}-tune-screen", config.methods,
                               config.backends, config.threads, screen_n, screen=True)  # fmt: skip
    _, screen = _run(screen_suite, config, progress, deadline)
    screen_df = _frame(screen.rows)
    trials = []
    verdicts = screen_verdicts(screen_df, config.budget, config.metric)
    for row in screen.rows:
        trials.append(Trial(row["cell_id"], "screen", row["status"], verdicts[row["cell_id"]]))
    keep = {cid for cid, v in verdicts.items() if v in KEPT}
    runs = {"screen": screen.run_id}
    notes: list[str] = []
    if not keep:
        why = nothing_qualifies("no cell survived the screen", trials,
                                no_accuracy(config.base, screen_df, config))  # fmt: skip
        return _result(config, name, None, why, trials, runs, [], [], "", started, notes)
    unjudged = no_accuracy(config.base, screen_df, config)
    if unjudged:
        # the full run could not judge the budget either: stop here, rows kept in the store
        why = nothing_qualifies("the budget cannot be judged", trials, unjudged)
        return _result(config, name, None, why, trials, runs, [], [], "", started, notes)
    if deadline is not None and time.monotonic() >= deadline[0]:
        notes.append("the time budget was spent during the screen: no full evaluation")
        return _result(config, name, None, "time budget spent during the screen", trials,
                       runs, [], [], "", started, notes)  # fmt: skip
    full_suite = stage_suite(config.base, f"{name}-tune", config.methods, config.backends,
                             config.threads, None, screen=False)  # fmt: skip
    full_plan, full = _run(full_suite, config, progress, deadline, keep=keep)
    runs["full"] = full.run_id
    full_df = _frame(full.rows)
    cells = {c.cell_id: c for c in full_plan.cells}

    from qbench.report.summary import meets_budget, summarize

    (summary,) = summarize(full_df, config.budget, config.metric) or [None]
    if summary is None or summary.reference is None:
        for row in full.rows:
            verdict = f"{row['status']}: {row.get('error')}" if row["status"] != "ok" else "ok"
            trials.append(Trial(row["cell_id"], "full", row["status"], verdict))
        why = nothing_qualifies("no fp32 reference measured in the full run", trials, None)
        return _result(config, name, None, why, trials, runs, [], [], "", started, notes)
    native = full_df[_native_ok(full_df)]
    ref_acc = summary.reference_accuracy
    eligible = native.iloc[0:0]
    if summary.metric is not None and ref_acc is not None:
        eligible = native[meets_budget(native, summary.metric, ref_acc, config.budget)]
    elig_ids = set(eligible["cell_id"])
    for row in full.rows:
        cid = row["cell_id"]
        if row["status"] != "ok":
            verdict = f"{row['status']}: {row.get('error')}"
        elif cid in elig_ids:
            verdict = "meets the budget"
        else:
            verdict = _budget_miss(full_df[full_df["cell_id"] == cid].iloc[0], summary)
        trials.append(Trial(cid, "full", row["status"], verdict))
    ms = dict(zip(native["cell_id"], native["_ms"], strict=True))
    ranked = sorted(elig_ids, key=lambda c: ms[c])
    pareto = _pareto(native, summary.metric)
    if not ranked:  # no accuracy to judge, or not even the reference is a native ok cell
        why = nothing_qualifies("no cell of the full run meets the budget", trials,
                                no_accuracy(config.base, full_df, config))  # fmt: skip
        return _result(config, name, None, why, trials, runs, [], pareto, "", started, notes,
                       asdict(summary.reference), summary.metric)  # fmt: skip
    finals: list[dict[str, Any]] = []
    winner_id, why = ranked[0], "the fastest cell that meets the budget (no other within 15%)"
    contenders = [c for c in ranked if ms[c] <= ms[ranked[0]] * FINALS_SPAN][:MAX_FINALISTS]
    if len(contenders) > 1:
        if deadline is not None and time.monotonic() >= deadline[0]:
            why = ("the fastest cell that meets the budget by its full-run p50 (time budget "
                   "spent: no interleaved finals)")  # fmt: skip
        elif any(cells[c].transport != "subprocess" for c in contenders):
            # the finals time artifacts in this process: a remote device's cells cannot be
            why = ("the fastest cell that meets the budget by its full-run p50 (a remote "
                   "device: the interleaved finals run on this host only)")  # fmt: skip
        else:
            winner_id, why, finals = _finals(
                [cells[c] for c in contenders], eligible, config, summary.metric or "top1"
            )
    winner_row = full_df[full_df["cell_id"] == winner_id].iloc[0]
    suite = winner_suite(config.base, cells[winner_id], config.source_dir)
    winner = _pick(winner_row, summary)
    reference = asdict(summary.reference)
    return _result(config, name, winner, why, trials, runs, finals, pareto, suite, started,
                   notes, reference, summary.metric)  # fmt: skip


SURVIVES = "survives the screen"
REFERENCE = "reference: the best fp32"
CLOSE_FP32 = "kept: an fp32 within 15% of the best (the full run picks the reference)"
KEPT = (SURVIVES, REFERENCE, CLOSE_FP32)


def screen_verdicts(df: Any, budget: float, metric: str | None = None) -> dict[str, str]:
    """Per screened cell: SURVIVES, REFERENCE or why it is pruned."""
    from qbench.report.summary import summarize

    out: dict[str, str] = {}
    for _, row in df.iterrows():
        if row["status"] != "ok":
            out[row["cell_id"]] = f"{row['status']}: {row.get('error')}"
        elif row["simulated"]:
            out[row["cell_id"]] = "pruned: simulated (float kernels emulating integer ones)"
    summaries = summarize(df, budget, metric)
    if not summaries or summaries[0].reference is None:
        for cid in df["cell_id"]:
            out.setdefault(cid, "pruned: no fp32 cell ran to compare with")
        return out
    s = summaries[0]
    out[s.reference.cell_id] = REFERENCE
    ref_ms = s.reference.ms_per_input
    for _, row in df.iterrows():
        cid = row["cell_id"]
        if cid in out:
            continue
        if not row["_ms"] > 0:
            out[cid] = "pruned: no latency measured"
            continue
        if row["method"] == "fp32":
            # the screen's short timing cannot tell fp32 runtimes this close apart
            slower = f"pruned: fp32, slower than the reference ({row['_ms']:.3g} ms/input)"
            out[cid] = CLOSE_FP32 if row["_ms"] <= ref_ms * FINALS_SPAN else slower
            continue
        if row["_ms"] >= ref_ms:
            out[cid] = (f"pruned: not faster than the best fp32 ({row['_ms']:.3g} vs "
                        f"{ref_ms:.3g} ms per input)")  # fmt: skip
            continue
        why = _fails_at_upper_bound(row, s, budget)
        out[cid] = f"pruned: {why}" if why else SURVIVES
    return out


def _fails_at_upper_bound(row: Any, s: Any, budget: float) -> str | None:
    """Why the cell fails the budget even at its interval's upper bound, or None."""
    if s.metric is None or s.reference_accuracy is None:
        return None
    value = number(row.get(s.metric))
    high = number(row.get(f"{s.metric}_ci_high"))
    upper = high if high is not None else value
    if upper is None:
        return None
    floor = s.reference_accuracy - budget
    if upper < floor - 1e-12:
        return (f"{s.metric} {value:.3f}, 95% upper bound {upper:.3f} < {floor:.3f} (fp32 "
                f"{s.reference_accuracy:.3f} - budget {budget:g}) on "
                f"{int(number(row.get('accuracy_samples')) or 0)} screen inputs")  # fmt: skip
    return None


MISSED = ("misses the budget", "95% upper bound")  # what a verdict says of a budget miss
LISTED = 3  # cell ids named per kind in the one-line reason; the trials list every cell


def nothing_qualifies(head: str, trials: list[Trial], unjudged: str | None) -> str:
    """Why no configuration qualifies, in one line: `head`, whether the data leaves no
    accuracy to judge, and (by each cell's last verdict) the cells that failed, missed the
    budget or were skipped."""
    last = {t.cell_id: t for t in trials}  # the full run's verdict replaces the screen's
    failed = [c for c, t in last.items() if t.status in ("failed", "timeout")]
    missed = [c for c, t in last.items() if t.status == "ok" and any(m in t.verdict
                                                                     for m in MISSED)]  # fmt: skip
    skipped = [c for c, t in last.items() if t.status == "skipped"]
    parts = [head]
    if unjudged:
        parts.append(unjudged)
    for cells, what in ((failed, "failed or timed out"), (missed, "missed the budget"),
                        (skipped, "skipped")):  # fmt: skip
        if cells:
            named = ", ".join(cells[:LISTED]) + (f" and {len(cells) - LISTED} more"
                                                 if len(cells) > LISTED else "")  # fmt: skip
            parts.append(f"{len(cells)} cell{'s' if len(cells) != 1 else ''} {what} ({named})")
    return "; ".join(parts) + " (each trial's verdict says why)"


def no_accuracy(base: dict[str, Any], df: Any, config: TuneConfig) -> str | None:
    """Why the budget cannot be judged on these rows (no accuracy measured), or None."""
    from qbench.report.summary import summarize

    summaries = summarize(df, config.budget, config.metric) if len(df) else []
    if summaries and summaries[0].metric is not None:
        return None
    if not summaries or summaries[0].reference is None:
        return None  # no ok fp32 cell: the failures say why, not the data
    if _dataset_name(base) == "synthetic":
        return (
            "synthetic data leaves no accuracy to judge (random inputs: no labels, no "
            "fidelity to fp32); give real inputs (--data, or the suite's accuracy.dataset)"
        )
    return ("no accuracy was measured (no labels and no fidelity to fp32): the budget cannot "
            "be judged")  # fmt: skip


def _dataset_name(base: dict[str, Any]) -> str | None:
    """The dataset the suite's model is evaluated on: the model's own, else accuracy's."""
    model = (base.get("models") or [None])[0]
    given = model.get("params", {}).get("dataset") if isinstance(model, dict) else None
    given = given or (base.get("accuracy") or {}).get("dataset")
    return given.get("name") if isinstance(given, dict) else given


def _budget_miss(row: Any, s: Any) -> str:
    if row["simulated"]:
        return "simulated: not a candidate"
    if s.metric is None:
        return "no accuracy measured"
    low = number(row.get(f"{s.metric}_ci_low"))
    if low is None:
        return f"no 95% interval for {s.metric}: the budget cannot be judged"
    return (f"misses the budget: {s.metric} lower bound {low:.3f} < "
            f"{s.reference_accuracy - s.budget:.3f}")  # fmt: skip


def _finals(contenders: list[Any], eligible: Any, config: TuneConfig, metric: str
            ) -> tuple[str, str, list[dict[str, Any]]]:  # fmt: skip
    """(winner cell id, why, per-finalist timings) from interleaved rounds in this process."""
    from qbench.agent import prepare
    from qbench.confirm.stage import open_runner
    from qbench.measure.latency import interleaved_rounds
    from qbench.measure.stats import slower_p_value
    from qbench.tune.finals import ratio

    runners = {c.cell_id: open_runner(c, prepare(c)) for c in contenders}
    p50s = interleaved_rounds(runners, config.rounds, 5, config.round_seconds)
    median = {cid: sorted(v)[len(v) // 2] for cid, v in p50s.items()}
    fastest = min(median, key=median.get)  # type: ignore[arg-type]
    rows = {r["cell_id"]: r for _, r in eligible.iterrows()}
    finals, tied = [], [fastest]
    for cid in p50s:
        entry: dict[str, Any] = {"cell_id": cid, "round_p50s_ms": p50s[cid],
                                 "median_ms": median[cid]}  # fmt: skip
        if cid != fastest:
            p = slower_p_value(p50s[fastest], p50s[cid])
            entry["times_fastest"] = ratio(p50s, cid, fastest)
            entry["p_slower"] = p
            if p >= ALPHA:
                tied.append(cid)
        finals.append(entry)

    def key(cid: str) -> tuple[float, float, float]:
        low = number(rows[cid].get(f"{metric}_ci_low"))
        size = number(rows[cid].get("artifact_bytes")) or math.inf
        return (-(low if low is not None else -1.0), size, median[cid])

    winner = min(tied, key=key)
    n = len(p50s[fastest])
    if len(tied) == 1:
        why = (f"fastest of {len(contenders)} finalists in {n} interleaved rounds, each other "
               f"significantly slower (one-sided Wilcoxon, p < {ALPHA})")  # fmt: skip
    else:
        why = (f"{len(tied)} of {len(contenders)} finalists tied within noise in {n} interleaved "
               f"rounds (one-sided Wilcoxon, p >= {ALPHA}); of those, the highest accuracy "
               "lower bound (then the smaller artifact)")  # fmt: skip
    return winner, why, finals


def _pareto(native: Any, metric: str | None) -> list[dict[str, Any]]:
    from qbench.report.pareto import pareto_front

    if metric is None:
        return []
    xs = native["_ms"].astype(float).tolist()
    ys = native[metric].astype(float).tolist()
    out = []
    for i in pareto_front(xs, ys):
        r = native.iloc[i]
        size = number(r["artifact_bytes"])
        out.append({"cell_id": r["cell_id"], "ms_per_input": float(r["_ms"]),
                    metric: float(r[metric]), "artifact_bytes": size})  # fmt: skip
    return out


def _pick(row: Any, s: Any) -> dict[str, Any]:
    ref = s.reference.ms_per_input
    metric = s.metric
    return {
        "cell_id": row["cell_id"],
        "method": row["method_label"],
        "backend": row["backend_label"],
        "threads": int(row["threads"]),
        "batch": int(row["batch"]),
        "ms_per_input": float(row["_ms"]),
        "speedup": ref / float(row["_ms"]),
        "metric": metric,
        "accuracy": number(row.get(metric)) if metric else None,
        "accuracy_ci_low": number(row.get(f"{metric}_ci_low")) if metric else None,
        "accuracy_ci_high": number(row.get(f"{metric}_ci_high")) if metric else None,
        "artifact_bytes": number(row.get("artifact_bytes")),
        "artifact_sha256": row.get("artifact_sha256"),
    }


def _result(config: TuneConfig, name: str, winner: dict[str, Any] | None, why: str,
            trials: list[Trial], runs: dict[str, str], finals: list[dict[str, Any]],
            pareto: list[dict[str, Any]], suite: str, started: float, notes: list[str],
            reference: dict[str, Any] | None = None, metric: str | None = None
            ) -> TuneResult:  # fmt: skip
    model = config.base["models"][0]
    label = model if isinstance(model, str) else str(model.get("label") or model.get("name"))
    device = (config.base.get("devices") or ["local"])[0]
    return TuneResult(label, device, config.budget, metric, reference, winner, why, finals,
                      pareto, trials, runs, suite, time.monotonic() - started, notes)  # fmt: skip


def _run(
    suite: dict[str, Any],
    config: TuneConfig,
    progress: Any,
    deadline: tuple[float, str] | None,
    keep: set[str] | None = None,
) -> tuple[Any, Any]:
    """(plan, run summary) of one stage's suite, run into the store; `keep`: the cell ids to
    run (the others are excluded, as a suite's rules exclude cells)."""
    from qbench.plan import Plan
    from qbench.runner import load_plan, run_plan
    from qbench.suite.loader import SuiteSource

    text = yaml.safe_dump(suite, sort_keys=False)
    source = SuiteSource(config.source_dir / f"{suite['name']}.yaml", text)
    typed, plan, text = load_plan(source)
    if keep is not None:
        kept = [c for c in plan.cells if c.cell_id in keep]
        plan = Plan(cells=kept, excluded=plan.excluded + len(plan.cells) - len(kept))
    bar = progress(len(plan.runnable)) if progress else None
    try:
        summary = run_plan(plan, typed.name, f"qbench tune ({suite['name']})", text,
                           config.store, bar, deadline=deadline)  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    return plan, summary


def _frame(rows: list[dict[str, Any]]) -> Any:
    """The prepared frame (report.data.prepare) of a run's rows, with `_ms` (time per input)."""
    import pandas as pd

    from qbench.report.data import prepare, time_per_input

    df = prepare(pd.DataFrame(rows))
    df["_ms"] = time_per_input(df)
    return df


def _native_ok(df: Any) -> Any:
    from qbench.report.data import native_ok

    return native_ok(df) & df["_ms"].notna()


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
