"""A store as history: one row per (run, cell) with the run's time and hardware fingerprint.

Runs on different hardware must never be compared as if they were one machine, but the host
*name* alone is a poor key: CI runners get a new name every night on the same hardware. The
fingerprint is therefore the hardware that decides kernel speed: CPU model, the ISA flags
that matter for quantized kernels, logical cores and RAM (rounded to whole GiB).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

# Metrics followed over time: column, what a worse value is, and its label.
METRICS: dict[str, dict[str, str]] = {
    "latency_p50_ms": {"worse": "higher", "label": "p50 latency (ms)"},
    "throughput_ips": {"worse": "lower", "label": "throughput (inputs/s)"},
    "peak_rss_mb": {"worse": "higher", "label": "peak memory (MiB)"},
    "artifact_bytes": {"worse": "higher", "label": "artifact size (bytes)"},
    "accuracy": {"worse": "lower", "label": "accuracy (top-1, else agreement with fp32)"},
}

CELL_KEYS = ("model", "method", "backend", "device", "batch", "threads")


def _flags_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    try:
        return ",".join(sorted(str(f) for f in value))
    except TypeError:
        return str(value)


def _num_text(value: Any, fmt: str) -> str:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return "?"
    return "?" if math.isnan(f) else format(f, fmt)


def fingerprint_label(run: dict[str, Any]) -> str:
    """Human-readable hardware description of one run row."""
    cores = _num_text(run.get("cores_logical"), ".0f")
    ram = _num_text(run.get("ram_gb"), ".0f")
    flags = _flags_text(run.get("cpu_flags")) or "no flags recorded"
    return f"{run.get('cpu_model') or 'unknown CPU'}, {cores} cores, {ram} GiB, [{flags}]"


def fingerprint_of(run: dict[str, Any]) -> str:
    """Short stable id of a run's hardware (see the module docstring)."""
    return hashlib.sha256(fingerprint_label(run).encode()).hexdigest()[:10]


def load_history(store: str | Path) -> Any:
    """Every result row of a store joined with its run: a pandas DataFrame sorted by run start.

    Added columns: run_started_at, fingerprint, fingerprint_label, host, accuracy,
    accuracy_metric. Rows keep every status (skipped and failed included) so that a cell that
    stopped running shows as such.
    """
    import pandas as pd

    from qbench.report.data import add_accuracy
    from qbench.store.parquet import load

    runs, results = load(store)
    if results.empty:
        return results.assign(
            run_started_at=pd.Series(dtype="datetime64[us, UTC]"),
            fingerprint=pd.Series(dtype=str),
            fingerprint_label=pd.Series(dtype=str),
            host=pd.Series(dtype=str),
            accuracy=pd.Series(dtype=float),
            accuracy_metric=pd.Series(dtype=str),
        )
    info = {}
    for run in runs.to_dict("records"):
        info[run["run_id"]] = {
            "run_started_at": run.get("started_at"),
            "fingerprint": fingerprint_of(run),
            "fingerprint_label": fingerprint_label(run),
            "host": run.get("host"),
        }
    df = results.copy()
    for column in ("run_started_at", "fingerprint", "fingerprint_label", "host"):
        df[column] = [info.get(r, {}).get(column) for r in df["run_id"]]
    add_accuracy(df)
    df["run_started_at"] = pd.to_datetime(df["run_started_at"], utc=True)
    return df.sort_values(["run_started_at", "run_id", "cell_id"], kind="stable").reset_index(
        drop=True
    )


def cell_series(history: Any, cell_id: str, fingerprint: str | None = None) -> Any:
    """The ok rows of one cell in run order (one fingerprint, when given)."""
    rows = history[(history["cell_id"] == cell_id) & (history["status"] == "ok")]
    if fingerprint is not None:
        rows = rows[rows["fingerprint"] == fingerprint]
    return rows.reset_index(drop=True)


def relative_noise(values: Any) -> float | None:
    """A cell's own run-to-run noise: robust spread of the relative change between
    consecutive runs (1.4826 x the median absolute log ratio, i.e. a standard deviation for
    Gaussian noise). None with fewer than three runs."""
    import numpy as np

    xs = np.asarray([v for v in values if v is not None and v > 0], dtype=float)
    if xs.size < 3:
        return None
    return step_sigma(np.log(xs))


def step_sigma(log_values: Any) -> float:
    """Noise (a standard deviation) of a series of log values from its first differences:
    1.4826 x their median absolute value / sqrt(2). Robust to the few steps a series holds,
    since a step moves one difference only."""
    import numpy as np

    steps = np.diff(np.asarray(log_values, dtype=float))
    # Centred on zero, not on the median step: without a change, steps have mean zero, and a
    # series that alternates high/low would otherwise have a median step at one extreme and
    # a spread of zero.
    mad = float(np.median(np.abs(steps)))
    # Differences of two noisy values have sqrt(2) times the noise of one value.
    return 1.4826 * mad / math.sqrt(2)
