"""Derived columns the report needs: variant labels, accuracy metric, speedup, latest rows."""

from __future__ import annotations

import math
from typing import Any

BASELINE_METHOD = "fp32"


def is_missing(value: Any) -> bool:
    """None, NaN, NaT and pandas.NA count as missing; containers and strings never do."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str) or hasattr(value, "__len__"):
        return False
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def split_cell_id(
    cell_id: Any, model: Any, backend: Any, device: Any, batch: Any, threads: Any
) -> tuple[str | None, str | None]:
    """(method part, backend part) of a cell id `model/method[p]/backend[p]/device/bB/tT`.

    The parts carry the non-default parameters, so two variants of one method stay apart.
    Returns (None, None) when the id does not have that shape.
    """
    if is_missing(cell_id) or is_missing(model) or is_missing(backend):
        return None, None
    cid, prefix = str(cell_id), f"{model}/"
    suffix = f"/{device}/b{_int_text(batch)}/t{_int_text(threads)}"
    if not (cid.startswith(prefix) and cid.endswith(suffix)):
        return None, None
    rest = cid[len(prefix) : len(cid) - len(suffix)]
    for start in _positions(rest, f"/{backend}"):
        after = rest[start + len(str(backend)) + 1 :]
        if after == "" or after.startswith("["):
            return rest[:start] or None, rest[start + 1 :]
    return None, None


def _positions(text: str, needle: str) -> list[int]:
    out, start = [], text.rfind(needle)
    while start >= 0:
        out.append(start)
        start = text.rfind(needle, 0, start)
    return out


def _int_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def prepare(results: Any) -> Any:
    """A copy of the results with the report's derived columns added.

    method_label/backend_label: the method/backend with their parameters, from the cell id.
    accuracy/accuracy_metric: top1 where present, else fp32_agreement, and which one it is.
    simulated: execution == "simulated". speedup: see `compute_speedups`.
    """
    import pandas as pd

    from qbench.store.schema import RESULT_COLUMN_NAMES

    df = results.copy().reset_index(drop=True)
    for name in RESULT_COLUMN_NAMES:
        if name not in df.columns:
            df[name] = pd.NA
    parts = [
        split_cell_id(*vals)
        for vals in zip(
            df["cell_id"],
            df["model"],
            df["backend"],
            df["device"],
            df["batch"],
            df["threads"],
            strict=True,
        )
    ]
    df["method_label"] = [p[0] or _text(m) for p, m in zip(parts, df["method"], strict=True)]
    df["backend_label"] = [p[1] or _text(b) for p, b in zip(parts, df["backend"], strict=True)]
    add_accuracy(df)
    df["simulated"] = df["execution"].astype(object).eq("simulated").fillna(False).astype(bool)
    df["speedup"] = compute_speedups(df)
    return df


# Each row's accuracy: the first of these it has (an output of one value per input has
# neither top-1 nor agreement, which cannot see its error: within tolerance judges it).
ACCURACY_METRICS = ("top1", "fp32_agreement", "fp32_within_tol")


def add_accuracy(df: Any) -> None:
    """Add `accuracy` (the first of ACCURACY_METRICS a row has), its 95% interval
    (`accuracy_ci_low`, `accuracy_ci_high`) and `accuracy_metric` (which one) to a results
    frame, in place."""
    import pandas as pd

    df["accuracy"] = df["accuracy_ci_low"] = df["accuracy_ci_high"] = float("nan")
    df["accuracy_metric"] = None
    for name in reversed(ACCURACY_METRICS):  # the first metric present wins: set it last
        if name not in df:  # older stores lack newer metrics
            continue
        value = pd.to_numeric(df[name], errors="coerce")
        has = value.notna()
        df.loc[has, "accuracy"] = value[has]
        for end in ("ci_low", "ci_high"):  # the chosen metric's 95% interval (NaN where none)
            column = f"{name}_{end}"
            bound = pd.to_numeric(df[column], errors="coerce") if column in df else value * math.nan
            df.loc[has, f"accuracy_{end}"] = bound[has]
        df.loc[has, "accuracy_metric"] = name


def _text(value: Any) -> str:
    return "" if is_missing(value) else str(value)


def _run_order(df: Any) -> Any:
    """Rows sorted oldest first: by the cell's start time, then by run id (UTC time first)."""
    import pandas as pd

    started = pd.to_datetime(df["started_at"], errors="coerce", utc=True)
    key = df.assign(_started=started, _run=df["run_id"].astype(object).fillna(""))
    key = key.sort_values(["_started", "_run"], kind="stable", na_position="first")
    return key.drop(columns=["_started", "_run"])


def latest_per_cell(df: Any) -> Any:
    """The latest row of each cell_id (by start time, then run id)."""
    ordered = _run_order(df)
    return ordered.drop_duplicates("cell_id", keep="last").sort_index()


def compute_speedups(results: Any) -> Any:
    """speedup = latency_p50 of the fp32 row / latency_p50 of this row, per row.

    The fp32 row is the one with the same model, backend (with its parameters), device, batch
    and threads, from the same run where there is one, else the latest such row of any run.
    Only rows with status "ok", a latency, and native execution get a value: simulated rows
    (float kernels emulating integer ones) never get a speedup. Returns a float Series on the
    index of `results`, NaN where there is no speedup.
    """
    import pandas as pd

    df = results if "backend_label" in results.columns else _with_labels(results)
    p50 = pd.to_numeric(df["latency_p50_ms"], errors="coerce")
    ok = df["status"].astype(object).eq("ok").fillna(False).astype(bool) & (p50 > 0)
    simulated = df["execution"].astype(object).eq("simulated").fillna(False).astype(bool)
    keys = ["model", "backend_label", "device", "batch", "threads"]
    base = df[ok & ~simulated & df["method"].astype(object).eq(BASELINE_METHOD).fillna(False)]
    base = _run_order(base.assign(_p50=p50[base.index]))
    same_run: dict[tuple, float] = {}
    any_run: dict[tuple, float] = {}
    for _, row in base.iterrows():
        key = tuple(_hashable(row[k]) for k in keys)
        same_run[(_hashable(row["run_id"]), *key)] = row["_p50"]  # the latest wins
        any_run[key] = row["_p50"]
    out = pd.Series(float("nan"), index=df.index, dtype="float64")
    for idx in df.index[ok & ~simulated]:
        row = df.loc[idx]
        key = tuple(_hashable(row[k]) for k in keys)
        ref = same_run.get((_hashable(row["run_id"]), *key), any_run.get(key))
        if ref is not None:
            out[idx] = float(ref) / float(p50[idx])
    return out


def time_per_input(df: Any) -> Any:
    """latency p50 / batch, ms: the speed unit that compares cells of different batch sizes
    (a causal LM's latency is per generated token, at batch 1). NaN where there is none."""
    import pandas as pd

    p50 = pd.to_numeric(df["latency_p50_ms"], errors="coerce")
    batch = pd.to_numeric(df["batch"], errors="coerce").fillna(1).clip(lower=1)
    return (p50 / batch).where(p50 > 0)


def native_ok(df: Any) -> Any:
    """Rows with status ok that ran natively (a simulated row's latency is not the method's)."""
    ok = df["status"].astype(object).eq("ok").fillna(False).astype(bool)
    return ok & ~df["execution"].astype(object).eq("simulated").fillna(False).astype(bool)


def best_fp32_speedups(df: Any, among: Any = None) -> Any:
    """Per row: the least time per input of the native fp32 rows of the same model and device
    (any backend, threads and batch) / this row's; NaN for simulated or not-ok rows and where
    the model has no fp32 row on that device. The fp32 rows are taken from `among` (default
    `df`), one row per cell (latest_per_cell): a table of every run's rows compares each with
    the latest fp32."""
    import pandas as pd

    among = df if among is None else among
    ms = time_per_input(df)
    usable = native_ok(df) & ms.notna()
    ref_ms = time_per_input(among)
    is_fp32 = among["method"].astype(object).eq(BASELINE_METHOD).fillna(False).astype(bool)
    fp32 = native_ok(among) & ref_ms.notna() & is_fp32
    ref = ref_ms[fp32].groupby([among["model"][fp32], among["device"][fp32]]).min()
    out = pd.Series(float("nan"), index=df.index, dtype="float64")
    for idx in df.index[usable]:
        key = (df.at[idx, "model"], df.at[idx, "device"])
        if key in ref.index:
            out[idx] = float(ref[key]) / float(ms[idx])
    return out


def _with_labels(results: Any) -> Any:
    df = results.copy()
    df["backend_label"] = [
        split_cell_id(*vals)[1] or _text(vals[2])
        for vals in zip(
            df["cell_id"],
            df["model"],
            df["backend"],
            df["device"],
            df["batch"],
            df["threads"],
            strict=True,
        )
    ]
    return df


def _hashable(value: Any) -> Any:
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if hasattr(value, "item"):  # numpy scalars
        return _hashable(value.item())
    return value
