"""The answer at a glance: for each model on each device, which configuration to ship.

From the latest ok row of each cell (data.prepare + latest_per_cell):
- the reference is the best fp32: the fp32 cell of any backend (threads, batch) with the least
  time per input;
- speed is time per input, latency p50 / batch (a causal LM's latency is per generated token,
  at batch 1), and a speed-up is the reference's time over the cell's;
- simulated cells (float kernels emulating integer ones) are never candidates: their latency is
  not that of the method;
- accuracy is the group's own metric (ModelSummary.metric, shown per model): top-1 where the
  reference has labels, else agreement with fp32 (top-1 token agreement for a causal LM),
  else, for an output of one value per input (a regression or score, which has no classes:
  qbench.measure.fidelity), the share of inputs within tolerance of fp32 (fp32_within_tol);
  its change is against the reference's value, with the cell's 95% interval shifted the same
  way;
- "within budget" holds when the interval's lower bound is at most `budget` below the
  reference's accuracy (default 0.01: one point): an estimate whose interval is too wide to
  show that is not taken, whatever its point value. fp32 cells meet any budget;
- whatever the metric, a cell whose output SQNR against fp32 is below `sqnr_floor_db`
  (default 10 dB: an error a third of the signal's RMS) is never within budget: a metric can
  be blind to an error (argmax of a clipped output, a metric that misses what the user cares
  about), and an output that far from fp32's is not the model any more. Working int8 models
  measured here reach 13-30 dB; the broken ones that motivated the floor, 2.6 and -13 dB;
- a pick's speed-up is checked where the run timed it against its reference in interleaved
  rounds (report.confirmed): the confirmed median and interval are shown beside the cells'
  ratio, and a ratio of two cells timed under different machine loads is flagged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_BUDGET = 0.01
# Below this output SQNR against fp32 no cell is within budget, on any metric (see above).
DEFAULT_SQNR_FLOOR_DB = 10.0
METRICS = ("top1", "fp32_agreement", "fp32_within_tol")


@dataclass
class Pick:
    """One configuration of a summary line, with the figures that chose it."""

    cell_id: str
    method: str  # method with its non-default parameters
    backend: str  # backend with its parameters
    threads: int
    batch: int
    ms_per_input: float
    speedup: float | None  # over the best fp32 of the model on the device
    accuracy: float | None
    accuracy_ci_low: float | None
    accuracy_ci_high: float | None
    accuracy_change: float | None  # accuracy - reference accuracy
    artifact_bytes: int | None
    execution: str
    run_id: str | None = None  # the run that measured the row
    load_other_cores: float | None = None  # other processes' load while it was timed
    # the paired change against fp32 on the same inputs (top1_change) and its interval, where
    # measured: what the budget judged (None: the cell's own interval shifted by the reference)
    change_ci_low: float | None = None
    change_ci_high: float | None = None
    # the pick timed against the reference in interleaved rounds (report.confirmed)
    confirmed_speedup: float | None = None
    confirmed_ci_low: float | None = None
    confirmed_ci_high: float | None = None
    confirmation: str | None = None  # how it was confirmed, or why it was not

    def configuration(self) -> str:
        return (f"{self.method} on {self.backend}, {self.threads} thread"
                f"{'s' if self.threads != 1 else ''}, batch {self.batch}")  # fmt: skip


@dataclass
class ModelSummary:
    model: str
    device: str
    metric: str | None  # one of METRICS: what judged the budget (None: no accuracy measured)
    reference_accuracy: float | None  # the best fp32's (1.0 for agreement)
    budget: float
    reference: Pick | None  # the best fp32
    fastest: Pick | None
    within_budget: Pick | None
    candidates: int  # native ok cells compared
    notes: list[str] = field(default_factory=list)
    sqnr_floor_db: float = DEFAULT_SQNR_FLOOR_DB  # no cell below it is within budget

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("reference", "fastest", "within_budget"):
            pick = getattr(self, key)
            if pick is not None:
                out[key]["configuration"] = pick.configuration()
        return out


def summarize(
    latest: Any,
    budget: float = DEFAULT_BUDGET,
    metric: str | None = None,
    confirmations: dict[tuple[str, str], Any] | None = None,
    sqnr_floor_db: float = DEFAULT_SQNR_FLOOR_DB,
) -> list[ModelSummary]:
    """One ModelSummary per (model, device) with an ok cell; `latest` is the prepared frame of
    the latest row per cell. `metric` (one of METRICS) judges the budget on that metric where
    the cells have it; default: top-1 where the reference has labels, else agreement, else
    fp32_within_tol. No cell whose output SQNR is below `sqnr_floor_db` is within budget."""
    if metric not in (None, *METRICS):
        raise ValueError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    from qbench.report.data import time_per_input

    if not 0 <= budget < 1:
        raise ValueError(f"accuracy budget {budget} must be a fraction in [0, 1), e.g. 0.01")
    ok = latest[latest["status"].astype(object).eq("ok").fillna(False).astype(bool)].copy()
    ok["_ms"] = time_per_input(ok)
    ok = ok[ok["_ms"].notna()]
    out = []
    for (model, device), group in ok.groupby(["model", "device"], sort=True):
        out.append(_one(str(model), str(device), group, budget, metric, sqnr_floor_db))
    if confirmations is not None:  # speed-ups checked in interleaved rounds, and loads compared
        from qbench.report.confirmed import attach

        attach(out, confirmations)
    return out


def _metric(native: Any, reference_row: Any, asked: str | None) -> str | None:
    """The metric that judges a model: the one asked for where its cells have it, else top-1
    where the reference has labels, else agreement, else within tolerance (outputs of one
    value, where the first two are left empty because they cannot see the error)."""
    if asked is not None and number(native[asked].max()) is not None:
        return asked
    if reference_row is not None and number(reference_row.get("top1")) is not None:
        return "top1"
    for name in ("fp32_agreement", "fp32_within_tol"):
        if name in native and number(native[name].max()) is not None:
            return name
    return None


def _one(model: str, device: str, group: Any, budget: float, asked: str | None,
         floor: float = DEFAULT_SQNR_FLOOR_DB) -> ModelSummary:  # fmt: skip
    native = group[~group["simulated"].astype(bool)]
    notes = []
    simulated = len(group) - len(native)
    if simulated:
        notes.append(f"{simulated} simulated cell(s) left out: their latency is not the method's")
    fp32 = native[native["method"].astype(object).eq("fp32").fillna(False).astype(bool)]
    reference_row = fp32.loc[fp32["_ms"].idxmin()] if len(fp32) else None
    metric = _metric(native, reference_row, asked)
    ref_ms = None if reference_row is None else float(reference_row["_ms"])
    ref_acc = None
    if metric == "top1" and reference_row is not None:
        ref_acc = number(reference_row.get("top1"))
    elif metric in ("fp32_agreement", "fp32_within_tol"):
        ref_acc = 1.0  # fp32's agreement with itself
    if reference_row is None:
        notes.append("no native fp32 cell: speed-ups and accuracy changes are empty")

    def pick(row: Any) -> Pick:
        acc = number(row.get(metric)) if metric else None
        low = number(row.get(f"{metric}_ci_low")) if metric else None
        high = number(row.get(f"{metric}_ci_high")) if metric else None
        change, change_low, change_high = _paired(row, metric)
        if change is None and acc is not None and ref_acc is not None:
            change = acc - ref_acc
        return Pick(
            cell_id=str(row["cell_id"]),
            method=str(row["method_label"]),
            backend=str(row["backend_label"]),
            threads=int(number(row.get("threads")) or 1),
            batch=int(number(row.get("batch")) or 1),
            ms_per_input=float(row["_ms"]),
            speedup=None if ref_ms is None else ref_ms / float(row["_ms"]),
            accuracy=acc,
            accuracy_ci_low=low,
            accuracy_ci_high=high,
            accuracy_change=change,
            artifact_bytes=None if number(row.get("artifact_bytes")) is None
            else int(row["artifact_bytes"]),
            execution=str(row.get("execution") or ""),
            run_id=None if row.get("run_id") is None else str(row.get("run_id")),
            load_other_cores=number(row.get("load_other_cores")),
            change_ci_low=change_low,
            change_ci_high=change_high,
        )  # fmt: skip

    fastest = pick(native.loc[native["_ms"].idxmin()]) if len(native) else None
    within = None
    if ref_acc is not None and metric is not None:
        eligible = native[meets_budget(native, metric, ref_acc, budget, floor)]
        blind = below_floor(native, floor) & meets_budget(native, metric, ref_acc, budget, None)
        if blind.any():
            notes.append(
                f"{int(blind.sum())} cell(s) whose {metric} interval meets the budget left out: "
                f"output SQNR below the {floor:g} dB floor ("
                + ", ".join(f"{m} on {b} {float(v):.1f} dB" for m, b, v in zip(
                    native.loc[blind, "method_label"], native.loc[blind, "backend_label"],
                    native.loc[blind, "output_sqnr_db"], strict=True))
                + ")"
            )  # fmt: skip
        if len(eligible):
            within = pick(eligible.loc[eligible["_ms"].idxmin()])
            if within.cell_id == (reference_row["cell_id"] if reference_row is not None else ""):
                notes.append(
                    "no configuration faster than the best fp32 shows its accuracy within the "
                    "budget at the 95% lower bound (more eval samples narrow the intervals)"
                )
    elif metric is None:
        notes.append("no accuracy measured: no configuration can be judged against a budget")
    return ModelSummary(model, device, metric, ref_acc, budget, None if reference_row is None
                        else pick(reference_row), fastest, within, len(native), notes,
                        floor)  # fmt: skip


# Metrics with a paired change against fp32 measured on the same inputs (measure.fidelity's
# paired_change): its interval is what the budget judges where a row has it.
PAIRED_CHANGE = {"top1": "top1_change"}


def _paired(row: Any, metric: str | None) -> tuple[float | None, float | None, float | None]:
    """(change, low, high) of the row's paired change for `metric`, or Nones."""
    name = PAIRED_CHANGE.get(metric or "")
    if name is None:
        return None, None, None
    low, high = number(row.get(f"{name}_ci_low")), number(row.get(f"{name}_ci_high"))
    if low is None or high is None:
        return None, None, None
    return number(row.get(name)), low, high


def meets_budget(rows: Any, metric: str, reference: float, budget: float,
                 sqnr_floor_db: float | None = DEFAULT_SQNR_FLOOR_DB) -> Any:  # fmt: skip
    """Per row (bool Series): the metric's 95% lower bound is at most `budget` below
    `reference`, and the output SQNR is not below `sqnr_floor_db` (None: no floor). Where the
    row has a paired change against fp32 on the same inputs (top1_change), its lower bound
    must be at least -budget instead: the two accuracies share which inputs are hard, and only
    the pairing removes that shared spread. A row without an interval shows nothing and does
    not meet it; fp32 rows (the reference method) do unless their SQNR is below the floor. A
    row without an SQNR (no fp32 reference to compare with) is judged on the metric alone."""
    low = rows[f"{metric}_ci_low"].map(number)
    if metric in PAIRED_CHANGE:  # the paired lower bound, shifted to the metric's scale
        import pandas as pd

        paired = [_paired(r, metric)[1] for _, r in rows.iterrows()]
        low = pd.Series([own if p is None else reference + p
                         for own, p in zip(low, paired, strict=True)],
                        index=rows.index, dtype=object)  # fmt: skip
    is_fp32 = rows["method"].astype(object).eq("fp32").fillna(False).astype(bool)
    shown = low.map(lambda v: v is not None and v >= reference - budget - 1e-12)
    passed = (is_fp32 | shown).astype(bool)
    if sqnr_floor_db is None:
        return passed
    return (passed & ~below_floor(rows, sqnr_floor_db)).astype(bool)


def below_floor(rows: Any, sqnr_floor_db: float) -> Any:
    """Per row (bool Series): the output SQNR against fp32 was measured and is below the floor
    (a NaN, or a missing column, is not: there was nothing to compare with)."""
    import pandas as pd

    if "output_sqnr_db" not in rows:
        return pd.Series(False, index=rows.index)
    sqnr = rows["output_sqnr_db"].map(number)
    return sqnr.map(lambda v: v is not None and v < sqnr_floor_db).astype(bool)


def number(value: Any) -> float | None:
    """`value` as a float, or None (missing, NaN, not a number)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out
