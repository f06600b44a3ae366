"""The nightly dashboard: every cell's metrics over time, with the steps found in them.

One self-contained HTML page (plotly.js inlined once by the same means as the report, the
report's stylesheet, plain JS filters, no network). Per cell and per hardware fingerprint,
one figure of four panels (p50 latency with its confidence interval, throughput, peak memory,
accuracy) over run time. Each fingerprint is its own figure and its own change point search:
runs on different hardware are never joined into one line or compared with each other.
Change points come from `changepoint.find_change_points` over the cell's whole history, so
each cell is judged against its own noise.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qbench.regress.changepoint import ChangePoint, find_change_points
from qbench.regress.history import METRICS
from qbench.report.data import is_missing as _missing
from qbench.report.fmt import num as _num

# The metrics drawn, in panel order (row by row in a 2 x 2 grid).
DASHBOARD_METRICS = ("latency_p50_ms", "throughput_ips", "peak_rss_mb", "accuracy")
FILTERS = (("model", "model"), ("method", "method"), ("backend", "backend"), ("device", "device"))
COLOUR = {"regression": "#cf222e", "improvement": "#1a7f37", "line": "#0969da"}
NOT_OK_SYMBOL = {"failed": "x", "timeout": "hourglass", "skipped": "circle-open"}
FIGURE_HEIGHT = 560


@dataclass(frozen=True)
class FoundChange:
    """A change point placed in the store: which cell, which hardware, which run and when."""

    cell_id: str
    fingerprint: str
    fingerprint_label: str
    anchor: str  # id of the cell's section on the page
    attrs: dict[str, str]  # model, method, backend, device (for the filters)
    when: Any  # run_started_at of the first run after the step
    point: ChangePoint


def _pct(change: float) -> str:
    """+25% / -4.3%: whole percent unless that would round a small step away."""
    return f"{change:+.0%}" if abs(change) >= 0.095 else f"{change:+.1%}"


def _value_text(metric: str, value: float) -> str:
    from qbench.report import fmt

    if metric == "accuracy":
        return fmt.percent(value)
    return fmt.ms(value)


def _cells(history: Any) -> list[tuple[str, str, Any]]:
    """(cell_id, anchor, rows) per cell, ordered by model, method, backend, device, cell."""
    order = history.assign(_k=history["cell_id"].astype(str)).sort_values(
        ["model", "method", "backend", "device", "_k"], kind="stable", na_position="last"
    )
    out = []
    for n, cell_id in enumerate(dict.fromkeys(order["cell_id"].astype(str))):
        rows = history[history["cell_id"].astype(str) == cell_id]
        out.append((cell_id, f"cell-{n}", rows))
    return out


def _fingerprints(rows: Any) -> list[tuple[str, str]]:
    """(fingerprint, label) of a cell's rows, in order of first appearance (history is sorted
    by run start)."""
    seen: dict[str, str] = {}
    for fp, label in zip(rows["fingerprint"], rows["fingerprint_label"], strict=True):
        key = "unknown" if _missing(fp) else str(fp)
        seen.setdefault(key, "unknown hardware" if _missing(label) else str(label))
    return list(seen.items())


def _attrs(rows: Any) -> dict[str, str]:
    first = rows.iloc[0]
    return {key: "" if _missing(first.get(col)) else str(first.get(col)) for key, col in FILTERS}


def _ok_series(rows: Any, fingerprint: str) -> Any:
    """The ok rows of one cell on one fingerprint, in run order (what cell_series gives for a
    known fingerprint; rows without one are grouped as "unknown")."""
    from qbench.regress.history import cell_series

    if fingerprint != "unknown":
        return cell_series(rows, str(rows["cell_id"].iloc[0]), fingerprint)
    ok = rows[(rows["status"] == "ok") & rows["fingerprint"].isna()]
    return ok.reset_index(drop=True)


def _of_fingerprint(rows: Any, fingerprint: str) -> Any:
    if fingerprint == "unknown":
        return rows[rows["fingerprint"].isna()]
    return rows[rows["fingerprint"] == fingerprint]


def history_change_points(history: Any) -> list[FoundChange]:
    """Every change point of every cell, metric and fingerprint in a history
    (`history.load_history`), regressions first, then the most recent first."""
    found = []
    for cell_id, anchor, rows in _cells(history):
        attrs = _attrs(rows)
        for fp, label in _fingerprints(rows):
            series = _ok_series(rows, fp)
            found.extend(
                FoundChange(cell_id, fp, label, anchor, attrs, series["run_started_at"][p.index], p)
                for p in _series_changes(series)
            )
    return _ordered(found)


# Accuracy on a fixed evaluation set barely moves between runs of the same artifact, so a
# drop of about one point is already a real change (compare's accuracy threshold is one point).
_DETECTION: dict[str, dict[str, float]] = {"accuracy": {"min_relative": 0.01, "noise_floor": 0.002}}


def _series_changes(series: Any) -> list[ChangePoint]:
    out: list[ChangePoint] = []
    if series.empty:
        return out
    run_ids = [str(r) for r in series["run_id"]]
    for metric in DASHBOARD_METRICS:
        if metric in series:
            values = [_num(v) for v in series[metric]]
            for part in _comparable(series, metric, values):
                out.extend(find_change_points(part, metric, run_ids, **_DETECTION.get(metric, {})))
    return sorted(out, key=lambda p: p.index)


def _comparable(series: Any, metric: str, values: list[float | None]) -> list[list[float | None]]:
    """`values` split into series that may be compared, each as long as `values` with the
    others' runs left empty: accuracy only within one metric (top-1 or agreement) and one
    dataset, so that a model moved to other evaluation data shows no step."""
    if metric != "accuracy":
        return [values]
    blank = [None] * len(values)
    keys = list(zip(series.get("accuracy_metric", blank), series.get("accuracy_dataset", blank),
                    strict=True))  # fmt: skip
    measured = dict.fromkeys(k for k, v in zip(keys, values, strict=True) if v is not None)
    return [[v if k == key else None for v, k in zip(values, keys, strict=True)]
            for key in measured]  # fmt: skip


def _ordered(found: list[FoundChange]) -> list[FoundChange]:
    import pandas as pd

    def key(f: FoundChange) -> tuple[int, float, float]:
        t = pd.Timestamp(f.when) if not _missing(f.when) else None
        stamp = t.timestamp() if t is not None else -math.inf
        return (f.point.kind != "regression", -stamp, -abs(math.log(f.point.ratio)))

    return sorted(found, key=key)


# --- the page ---------------------------------------------------------------------------------


def build_dashboard_html(history: Any, title: str = "qbench nightly dashboard") -> str:
    """The whole page for a history (`qbench.regress.history.load_history`)."""
    from qbench.report.assets import CSS, html_head
    from qbench.report.fmt import esc

    changes = history_change_points(history) if len(history) else []
    by_cell: dict[str, list[FoundChange]] = {}
    for f in changes:
        by_cell.setdefault(f.cell_id, []).append(f)
    sections = [
        _cell_section(cell_id, anchor, rows, by_cell.get(cell_id, []))
        for cell_id, anchor, rows in (_cells(history) if len(history) else [])
    ]
    body = "\n".join(sections) if sections else '<p class="muted">The store has no rows.</p>'
    return f"""{html_head(title, CSS + DASHBOARD_CSS)}
<body>
<h1>{esc(title)}</h1>
{_counts(history, changes)}
{_filters(history)}
<h2>Change points</h2>
<p class="caption">Steps found over each cell's whole history, one metric and one hardware
fingerprint at a time: the series is segmented on log values against the cell's own
run-to-run noise (robust spread of consecutive differences), each side of a step holds at
least three runs, and steps smaller than 5% or not clear of that noise are left out.
<i>before → after</i> are the medians of the runs either side. Regressions first, most recent
first.</p>
{_changes_table(changes)}
<h2>Hardware</h2>
<p class="caption">Runs are grouped by the hardware that decides kernel speed (CPU model, ISA
flags, cores, RAM), not by host name. Each fingerprint gets its own lines and its own change
point search: runs on different hardware are never compared.</p>
{_hardware(history)}
<h2>Cells</h2>
<p class="caption">One figure per cell and hardware fingerprint. Whiskers on latency are the 95%
confidence interval of the median; the dotted line is each segment's median; ✕ and ▲ mark the
first run after a regression or an improvement. Runs in which the cell did not measure
(failed, timed out, skipped) are grey markers along the bottom of the latency panel and are
listed under the figure with their reason.</p>
{body}
<script>{DASHBOARD_JS}</script>
</body>
</html>
"""


def write_dashboard(store: str | Path, out: str | Path, title: str | None = None) -> Path:
    """Load the store's history, write the dashboard to `out` (parents created), return it."""
    from qbench.regress.history import load_history

    history = load_history(store)
    if len(history) == 0:
        raise ValueError(f"store {store} has no results: nothing to draw (run a suite first)")
    page = build_dashboard_html(history, title or f"qbench dashboard — {Path(store).name}")
    from qbench.files import write_atomic

    # a reader never sees half a page, and a full disk leaves none (nor a temporary file)
    return write_atomic(out, page)


def _counts(history: Any, changes: list[FoundChange]) -> str:
    from qbench.report.fmt import esc, when

    if len(history) == 0:
        return '<p class="counts">No runs.</p>'
    regressions = sum(f.point.kind == "regression" for f in changes)
    starts = history["run_started_at"].dropna()
    span = f"from {when(starts.min())} to {when(starts.max())}" if len(starts) else ""
    return (
        f'<p class="counts">{history["run_id"].nunique()} runs {esc(span)}, '
        f"{history['cell_id'].nunique()} cells, "
        f"{history['fingerprint'].nunique()} hardware fingerprint(s): "
        f'<span class="badge failed">regressions: {regressions}</span> '
        f'<span class="badge ok">improvements: {len(changes) - regressions}</span></p>'
    )


def _filters(history: Any) -> str:
    from qbench.report.fmt import esc

    selects = []
    labels = dict(zip(history["fingerprint"], history["fingerprint_label"], strict=True))
    for name, column in (*FILTERS, ("hardware", "fingerprint")):
        if column not in history:
            continue
        values = sorted({str(v) for v in history[column] if not _missing(v)})
        options = "".join(
            f'<option value="{esc(v)}">'
            f"{esc(labels.get(v, v) if name == 'hardware' else v)}</option>"
            for v in values
        )
        selects.append(
            f'<label>{name} <select data-dash-filter="{name}">'
            f'<option value="">all</option>{options}</select></label>'
        )
    return (
        f'<div class="filters" id="dash-filters">{"".join(selects)}'
        '<label><input type="checkbox" id="only-changes"> only with a change point</label>'
        '<span id="cells-shown" class="muted"></span></div>'
    )


def _filter_attrs(attrs: dict[str, str], fingerprint: str | None = None) -> str:
    from qbench.report.fmt import esc

    text = " ".join(f'data-{k}="{esc(v)}"' for k, v in attrs.items())
    if fingerprint is not None:
        text += f' data-hardware="{esc(fingerprint)}"'
    return text


def _changes_table(changes: list[FoundChange]) -> str:
    from qbench.report.fmt import esc, when

    if not changes:
        return '<p class="muted" id="no-changes">No change point found.</p>'
    rows = []
    for f in changes:
        p = f.point
        label = METRICS.get(p.metric, {}).get("label", p.metric)
        rows.append(
            f'<tr class="cp {p.kind}" {_filter_attrs(f.attrs, f.fingerprint)} '
            f'data-cell-id="{esc(f.cell_id)}" data-metric="{esc(p.metric)}">'
            f'<td class="id"><a href="#{f.anchor}">{esc(f.cell_id)}</a></td>'
            f'<td title="{esc(f.fingerprint_label)}"><code>{esc(f.fingerprint)}</code></td>'
            f"<td>{esc(label)}</td>"
            f"<td>{esc(when(f.when))}<br><code>{esc(p.run_id)}</code></td>"
            f'<td class="n">{esc(_value_text(p.metric, p.before))} → '
            f"{esc(_value_text(p.metric, p.after))}</td>"
            f'<td class="n">{esc(_pct(p.change))}</td>'
            f'<td><span class="badge {"failed" if p.kind == "regression" else "ok"}">'
            f"{esc(p.kind)}</span></td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("cell", "hardware", "metric", "first run after", "before → after", "change", "")
    )
    return (
        '<div class="scroll"><table id="changes"><thead><tr>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _hardware(history: Any) -> str:
    from qbench.report.fmt import esc, when

    if len(history) == 0:
        return ""
    items = []
    for fp, label in _fingerprints(history):
        rows = _of_fingerprint(history, fp)
        hosts = sorted({str(h) for h in rows["host"] if not _missing(h)})
        starts = rows["run_started_at"].dropna()
        items.append(
            f'<li data-hardware="{esc(fp)}"><code>{esc(fp)}</code> — {esc(label)}: '
            f"{rows['run_id'].nunique()} runs, {esc(when(starts.min()))} to "
            f"{esc(when(starts.max()))}, hosts {esc(', '.join(hosts) or '–')}</li>"
        )
    return f'<ul class="hardware">{"".join(items)}</ul>'


def _cell_section(cell_id: str, anchor: str, rows: Any, changes: list[FoundChange]) -> str:
    from qbench.report.fmt import esc

    attrs = _attrs(rows)
    first = rows.iloc[0]
    detail = " · ".join(
        f"{k} {esc(first.get(k))}"
        for k in ("model", "method", "backend", "device", "batch", "threads")
        if not _missing(first.get(k))
    )
    blocks = []
    for k, (fp, label) in enumerate(_fingerprints(rows)):
        mine = [f for f in changes if f.fingerprint == fp]
        blocks.append(
            f'<div class="hw" data-hardware="{esc(fp)}" data-changes="{len(mine)}">'
            f"<h4>on <code>{esc(fp)}</code> — {esc(label)}</h4>"
            f"{_figure(_of_fingerprint(rows, fp), fp, [f.point for f in mine], f'{anchor}-{k}')}"
            f"{_not_ok_notes(_of_fingerprint(rows, fp))}</div>"
        )
    return (
        f'<section class="cell" id="{anchor}" {_filter_attrs(attrs)} '
        f'data-cell-id="{esc(cell_id)}" data-changes="{len(changes)}">'
        f'<h3>{esc(cell_id)}</h3><p class="muted">{detail}</p>{"".join(blocks)}</section>'
    )


def _not_ok_notes(rows: Any) -> str:
    """Runs in which the cell did not measure, grouped by status and reason."""
    from qbench.report.fmt import esc, when

    bad = rows[rows["status"] != "ok"]
    if bad.empty:
        return ""
    items = []
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in bad.itertuples():
        reason = "" if _missing(getattr(r, "error", None)) else str(r.error)
        groups.setdefault((str(r.status), reason), []).append(r.run_started_at)
    for (status, reason), times in groups.items():
        span = when(times[0]) if len(times) == 1 else f"{when(times[0])} to {when(times[-1])}"
        items.append(
            f'<li class="st-{esc(status)}"><span class="badge {esc(status)}">{esc(status)}</span> '
            f"in {len(times)} run(s), {esc(span)}: {esc(reason or 'no reason recorded')}</li>"
        )
    return f'<ul class="notok">{"".join(items)}</ul>'


def _figure(rows: Any, fingerprint: str, points: list[ChangePoint], div_id: str) -> str:
    """One figure, 2 x 2 panels, for one cell on one fingerprint."""
    from plotly.subplots import make_subplots

    from qbench.report.charts import _render

    ok = _ok_series(rows, fingerprint) if (rows["status"] == "ok").any() else None
    if ok is None or ok.empty:
        return '<p class="muted">No ok run on this hardware: nothing to draw.</p>'
    titles = [METRICS[m]["label"] for m in DASHBOARD_METRICS]
    metrics = ok["accuracy_metric"].dropna().unique()
    if len(metrics) == 1:
        titles[3] = "accuracy: " + ("top-1" if metrics[0] == "top1" else "agreement with fp32")
    fig = make_subplots(
        rows=2, cols=2, shared_xaxes="all", subplot_titles=titles, vertical_spacing=0.14
    )
    x = [_iso(t) for t in ok["run_started_at"]]
    runs = [str(r) for r in ok["run_id"]]
    for n, metric in enumerate(DASHBOARD_METRICS):
        row, col = n // 2 + 1, n % 2 + 1
        ys = [_num(v) for v in ok[metric]] if metric in ok else [None] * len(ok)
        if all(v is None for v in ys):
            # Explicit refs to this panel's own axes: with row/col, plotly keeps a "x domain"
            # ref on the first panel, where x=0.5 is a date in 1970 that stretches the shared
            # time axis of every panel.
            axis = "" if n == 0 else str(n + 1)
            fig.add_annotation(
                text="no values recorded", showarrow=False,
                xref=f"x{axis} domain", yref=f"y{axis} domain", x=0.5, y=0.5,
            )  # fmt: skip
            continue
        _add_line(fig, metric, x, ys, runs, ok, row, col)
        mine = [p for p in points if p.metric == metric]
        _add_segments(fig, x, ys, mine, row, col)
        _add_change_marks(fig, x, ys, mine, row, col)
        if metric == "accuracy":
            fig.update_yaxes(tickformat=".1%", range=_share_range(ys), row=row, col=col)
    _add_not_ok(fig, rows, ok)
    fig.update_layout(showlegend=False, hovermode="closest")
    # The time range is set, not autoscaled: a panel without data (accuracy of the null
    # backend) would otherwise pull Plotly's default date range into the shared axis.
    fig.update_xaxes(type="date", range=_time_range(rows))
    fig.update_annotations(font_size=12)
    return f'<div class="chart">{_render(fig, div_id, FIGURE_HEIGHT)}</div>'


def _time_range(rows: Any) -> list[str] | None:
    """The cell's runs in time, padded by 3% (an hour either side of a single run)."""
    import pandas as pd

    starts = rows["run_started_at"].dropna()
    if starts.empty:
        return None
    lo, hi = pd.Timestamp(starts.min()), pd.Timestamp(starts.max())
    pad = (hi - lo) * 0.03 if hi > lo else pd.Timedelta(hours=1)
    return [(lo - pad).isoformat(), (hi + pad).isoformat()]


def _share_range(ys: list[float | None]) -> list[float]:
    """A y range for a share: Plotly pads a flat line out to 0-150 %, which reads as data."""
    vals = [v for v in ys if v is not None]
    lo, hi = min(vals), max(vals)
    pad = max(0.01, 0.15 * (hi - lo))
    return [max(0.0, lo - pad), min(1.0, hi + pad) if hi <= 1.0 else hi + pad]


def _iso(value: Any) -> str | None:
    import pandas as pd

    return None if _missing(value) else pd.Timestamp(value).isoformat()


def _add_line(
    fig: Any, metric: str, x: list[Any], ys: list[Any], runs: list[str], ok: Any, row: int, col: int
) -> None:
    error_y = None
    if metric == "latency_p50_ms" and {"latency_ci_low_ms", "latency_ci_high_ms"} <= set(ok):
        lo = [_num(v) for v in ok["latency_ci_low_ms"]]
        hi = [_num(v) for v in ok["latency_ci_high_ms"]]
        if any(v is not None for v in lo + hi):
            error_y = {
                "type": "data",
                "symmetric": False,
                "array": [_gap(h, y) for h, y in zip(hi, ys, strict=True)],
                "arrayminus": [_gap(y, low) for low, y in zip(lo, ys, strict=True)],
                "color": "#8c959f",
                "thickness": 1,
                "width": 3,
            }  # fmt: skip
    fig.add_scatter(
        x=x, y=ys, mode="lines+markers", name=METRICS[metric]["label"],
        line={"color": COLOUR["line"], "width": 1.5}, marker={"size": 5},
        error_y=error_y, customdata=runs, connectgaps=False,
        hovertemplate="run %{customdata}<br>%{x}<br>%{y:.4g}<extra></extra>",
        row=row, col=col,
    )  # fmt: skip


def _gap(high: float | None, low: float | None) -> float | None:
    return None if high is None or low is None else high - low


def _add_segments(
    fig: Any, x: list[Any], ys: list[Any], points: list[ChangePoint], row: int, col: int
) -> None:
    """Each segment's median as a flat dotted line: the levels the steps are measured between."""
    if not points:
        return
    import numpy as np

    edges = [0, *[p.index for p in points], len(ys)]
    for a, b in itertools.pairwise(edges):
        vals = [v for v in ys[a:b] if v is not None and v > 0]
        if not vals:
            continue
        level = float(np.exp(np.median(np.log(vals))))
        fig.add_scatter(
            x=[x[a], x[b - 1]], y=[level, level], mode="lines", hoverinfo="skip",
            line={"color": "#57606a", "dash": "dot", "width": 1.5}, row=row, col=col,
        )  # fmt: skip


def _add_change_marks(
    fig: Any, x: list[Any], ys: list[Any], points: list[ChangePoint], row: int, col: int
) -> None:
    for p in points:
        colour = COLOUR[p.kind]
        y = ys[p.index] if ys[p.index] is not None else p.after
        text = f"{_pct(p.change)} {p.kind} at run {p.run_id}"
        fig.add_scatter(
            x=[x[p.index]], y=[y], mode="markers",
            marker={"color": colour, "size": 13,
                    "symbol": "x" if p.kind == "regression" else "triangle-up",
                    "line": {"width": 1, "color": "#fff"}},
            hovertemplate=f"{text}<br>{_value_text(p.metric, p.before)} → "
            f"{_value_text(p.metric, p.after)}<extra></extra>",
            row=row, col=col,
        )  # fmt: skip
        fig.add_annotation(
            x=x[p.index], y=y, text=text, showarrow=True, arrowhead=2, arrowcolor=colour,
            ax=0, ay=-34, font={"color": colour, "size": 11}, bgcolor="rgba(255,255,255,0.85)",
            row=row, col=col,
        )  # fmt: skip
        fig.add_vline(
            x=x[p.index], line={"color": colour, "dash": "dash", "width": 1}, row=row, col=col
        )


def _add_not_ok(fig: Any, rows: Any, ok: Any) -> None:
    """Runs that did not measure, as grey markers at the bottom of the latency panel."""
    bad = rows[rows["status"] != "ok"]
    lat = [v for v in (_num(v) for v in ok["latency_p50_ms"]) if v is not None]
    if bad.empty or not lat:
        return
    y = min(lat) * 0.97
    for status in sorted(set(bad["status"].astype(str))):
        sel = bad[bad["status"].astype(str) == status]
        reasons = [
            f"{r.run_id}: {status}" + ("" if _missing(r.error) else f" — {str(r.error)[:160]}")
            for r in sel.itertuples()
        ]
        fig.add_scatter(
            x=[_iso(t) for t in sel["run_started_at"]], y=[y] * len(sel), mode="markers",
            name=status, customdata=reasons, hovertemplate="%{customdata}<extra></extra>",
            marker={"color": "#8c959f", "size": 10,
                    "symbol": NOT_OK_SYMBOL.get(status, "diamond-open")},
            row=1, col=1,
        )  # fmt: skip


DASHBOARD_CSS = """
section.cell { border-top: 1px solid var(--line); margin: 12px 0; padding-top: 4px; }
section.cell h3 { font-family: ui-monospace, monospace; font-size: 14px; }
section.cell h4 { margin: 8px 0 2px; font-size: 13px; font-weight: 600; }
#changes tr.regression td:first-child { border-left: 3px solid var(--failed); }
#changes tr.improvement td:first-child { border-left: 3px solid var(--ok); }
ul.notok { margin: 2px 0 8px; font-size: 12px; }
ul.hardware { font-size: 13px; }
"""

# Filters: a cell shows when its model/method/backend/device match the selects and at least
# one of its hardware blocks shows; the change table follows the same selects. Plotly sizes
# a plot from its container when drawn, so plots that come back into view are resized.
DASHBOARD_JS = r"""
(function () {
  "use strict";
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-dash-filter]"));
  var only = document.getElementById("only-changes");
  var counter = document.getElementById("cells-shown");
  var cells = Array.prototype.slice.call(document.querySelectorAll("section.cell"));
  var changeRows = Array.prototype.slice.call(document.querySelectorAll("#changes tbody tr"));

  function matches(el, names) {
    return selects.every(function (s) {
      var name = s.dataset.dashFilter;
      return names.indexOf(name) < 0 || s.value === "" ||
        el.getAttribute("data-" + name) === s.value;
    });
  }

  function resize(el) {
    if (!window.Plotly) { return; }
    Array.prototype.forEach.call(el.querySelectorAll(".js-plotly-plot"), function (p) {
      window.Plotly.Plots.resize(p);
    });
  }

  function apply() {
    var shown = 0;
    var cellKeys = ["model", "method", "backend", "device"];
    cells.forEach(function (cell) {
      var any = false;
      var back = [];
      Array.prototype.forEach.call(cell.querySelectorAll(".hw"), function (hw) {
        var ok = matches(hw, ["hardware"]) && (!only.checked || hw.dataset.changes !== "0");
        if (ok && hw.hidden) { back.push(hw); }
        hw.hidden = !ok;
        any = any || ok;
      });
      var visible = any && matches(cell, cellKeys);
      var wasHidden = cell.hidden;
      cell.hidden = !visible;
      if (visible) {
        shown += 1;
        if (wasHidden) { resize(cell); } else { back.forEach(resize); }
      }
    });
    changeRows.forEach(function (r) {
      r.hidden = !matches(r, cellKeys.concat(["hardware"]));
    });
    if (counter) { counter.textContent = shown + " of " + cells.length + " cells shown"; }
  }

  selects.forEach(function (s) { s.addEventListener("change", apply); });
  if (only) { only.addEventListener("change", apply); }
  apply();
})();
"""
