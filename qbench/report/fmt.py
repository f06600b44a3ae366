"""Text for the page's cells: numbers at a readable precision, missing values as a dash."""

from __future__ import annotations

import html
import json
from typing import Any

from qbench.report.data import is_missing

DASH = "–"


def esc(value: Any) -> str:
    return html.escape("" if is_missing(value) else str(value), quote=True)


def num(value: Any) -> float | None:
    """A finite float, or None."""
    if is_missing(value) or isinstance(value, bool | str):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out and out not in (float("inf"), float("-inf")) else None


def integer(value: Any) -> str:
    v = num(value)
    return DASH if v is None else f"{round(v):d}"


def ms(value: Any) -> str:
    """Latency-like figures: about three significant digits, never scientific notation."""
    v = num(value)
    if v is None:
        return DASH
    a = abs(v)
    digits = 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3 if a >= 0.01 else 4
    return f"{v:,.{digits}f}"


def fixed(value: Any, digits: int) -> str:
    v = num(value)
    return DASH if v is None else f"{v:,.{digits}f}"


def percent(value: Any) -> str:
    v = num(value)
    return DASH if v is None else f"{100 * v:.1f}%"


def interval(low: Any, high: Any) -> str:
    """'81.9–97.0' (percent, no sign) of a 0..1 interval; empty where either end is missing."""
    a, b = num(low), num(high)
    return "" if a is None or b is None else f"{100 * a:.1f}–{100 * b:.1f}"


def mb(value: Any) -> str:
    v = num(value)
    return DASH if v is None else f"{v / 1e6:,.2f}"


def text_list(value: Any) -> list[str]:
    """A list<string> cell (list, numpy array or None) as a list of strings."""
    if is_missing(value):
        return []
    if isinstance(value, str):
        return [value]
    try:
        return [str(v) for v in value if not is_missing(v)]
    except TypeError:
        return [str(value)]


def pretty_json(value: Any) -> str:
    if is_missing(value):
        return DASH
    try:
        return json.dumps(json.loads(str(value)), indent=2, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


def when(value: Any) -> str:
    """A timestamp as 'YYYY-MM-DD HH:MM UTC'."""
    if is_missing(value):
        return DASH
    import pandas as pd

    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return str(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%d %H:%M UTC")
