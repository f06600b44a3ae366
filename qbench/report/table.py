"""The results table: every row of the store, one <tr data-cell-id=...> each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qbench.report import fmt
from qbench.report.fmt import DASH, esc, num

FILTERS = (
    ("status", "status"),
    ("model", "model"),
    ("method", "method_label"),
    ("backend", "backend_label"),
    ("device", "device"),
)


@dataclass(frozen=True)
class Col:
    head: str
    kind: str  # "num" or "text"
    cell: Callable[[Any], tuple[str, Any]]  # row -> (inner HTML, sort value or None)
    cls: str = ""
    tip: str = ""


def _plain(field: str) -> Callable[[Any], tuple[str, Any]]:
    return lambda r: (esc(getattr(r, field)) or DASH, None)


def _number(field: str, text: Callable[[Any], str]) -> Callable[[Any], tuple[str, Any]]:
    return lambda r: (esc(text(getattr(r, field))), num(getattr(r, field)))


def _share(field: str) -> Callable[[Any], tuple[str, Any]]:
    """A 0..1 share as a percent, its 95% interval (`field`_ci_low/high) under it."""

    def cell(r: Any) -> tuple[str, Any]:
        value = getattr(r, field)
        text = esc(fmt.percent(value))
        span = fmt.interval(getattr(r, f"{field}_ci_low"), getattr(r, f"{field}_ci_high"))
        if span:
            text += f'<br><span class="ci" title="95% interval">{esc(span)}</span>'
        return text, num(value)

    return cell


def _significant(value: Any) -> str:
    v = num(value)
    return DASH if v is None else f"{v:.3g}"


def _agreement(r: Any) -> tuple[str, Any]:
    """fp32_agreement, or, for an output of one value per input (which has no top-1 class to
    agree on), the share within tolerance of fp32's, marked as such."""
    if num(getattr(r, "fp32_agreement", None)) is None and num(
            getattr(r, "fp32_within_tol", None)) is not None:  # fmt: skip
        text, sort = _share("fp32_within_tol")(r)
        tip = "within tolerance of fp32: |output - fp32's| <= fp32_tolerance"
        return f'{text}<br><span class="ci" title="{esc(tip)}">within tol</span>', sort
    return _share("fp32_agreement")(r)


def _ratio(top: str, bottom: str) -> Callable[[Any], tuple[str, Any]]:
    def cell(r: Any) -> tuple[str, Any]:
        a, b = num(getattr(r, top)), num(getattr(r, bottom))
        if a is None and b is None:
            return DASH, None
        return f"{fmt.integer(a)}/{fmt.integer(b)}", a

    return cell


def _status(r: Any) -> tuple[str, Any]:
    s = esc(r.status) or "unknown"
    return f'<span class="badge {s}">{s}</span>', None


def _execution(r: Any) -> tuple[str, Any]:
    if r.simulated:
        return (
            '<span class="badge simulated" title="float kernels emulating integer ones">'
            "simulated</span>",
            None,
        )
    return esc(r.execution) or DASH, None


def _speedup(r: Any) -> tuple[str, Any]:
    if r.simulated:
        return f'{DASH} <span class="simnote">simulated: not a speedup</span>', None
    v = num(r.speedup)
    text, sort = (DASH, None) if v is None else (f"{v:.2f}×", v)
    warning = getattr(r, "hw_warning", None)
    if not fmt.is_missing(warning):
        text += (
            f' <span class="hwnote" title="{esc(warning)}">⚠ {esc(getattr(r, "hw_short", ""))}'
            "</span>"
        )
    return text, sort


def _energy(r: Any) -> tuple[str, Any]:
    """Energy per inference with its provenance: an estimate is never shown as a measurement
    (older stores have no power columns: a dash)."""
    value = num(getattr(r, "energy_per_inference_mj", None))
    provenance = getattr(r, "power_provenance", None)
    note = getattr(r, "power_note", None)
    if value is None or fmt.is_missing(provenance):
        tip = "" if fmt.is_missing(note) else f' title="{esc(note)}"'
        return f"<span{tip}>{DASH}</span>", None
    return f"{value:.3g} <i>({esc(provenance)})</i>", value


def _best_speedup(r: Any) -> tuple[str, Any]:
    if r.simulated:
        return DASH, None
    v = num(getattr(r, "speedup_best", None))
    return (DASH, None) if v is None else (f"{v:.2f}×", v)


def _model_config(r: Any) -> tuple[str, Any]:
    """batch and threads, one cell: "b1 · t1"."""
    return f"b{fmt.integer(r.batch)} · t{fmt.integer(r.threads)}", num(r.batch)


def _error_line(r: Any) -> str:
    return "" if fmt.is_missing(r.error) else f"<b>{esc(r.error)}</b>"


# Shown in every row: what a reader compares at a glance, narrow enough for a laptop screen.
COLUMNS: tuple[Col, ...] = (
    Col("model", "text", _plain("model")),
    Col("method", "text", _plain("method_label"), "lbl"),
    Col("backend", "text", _plain("backend_label"), "lbl"),
    Col("device", "text", _plain("device")),
    Col("b · t", "num", _model_config, "n", "batch · threads"),
    Col("status", "text", _status, "status-cell"),
    Col("execution", "text", _execution, "exec-cell"),
    Col("p50 ms", "num", _number("latency_p50_ms", fmt.ms), "n", "median latency per batch"),
    Col(
        "× best fp32",
        "num",
        _best_speedup,
        "n",
        "time per input (p50 / batch) of the fastest fp32 cell of this model on this device, "
        "any backend / this cell's (native cells only)",
    ),
    Col(
        "speedup vs fp32",
        "num",
        _speedup,
        "n",
        "p50 of the fp32 cell of the same backend, device, batch and threads / p50 of this cell "
        "(native cells only)",
    ),
    Col("top-1", "num", _share("top1"), "n", "top-1 accuracy; under it its 95% interval"),
    Col(
        "fp32 agree",
        "num",
        _agreement,
        "n",
        "share of inputs whose top-1 class equals fp32's; under it its 95% interval (crops of "
        "one photo count as one draw: accuracy_groups). An output of one value per input has no "
        "class: there, the share of inputs within tolerance of fp32's output (marked within tol)",
    ),
    Col("artifact MB", "num", _number("artifact_bytes", fmt.mb), "n", "10⁶ bytes on disk"),
)
# Folded into each row's details: everything else the row holds.
DETAILS: tuple[Col, ...] = (
    Col("run", "text", _plain("run_id"), "id"),
    Col("bits w/a", "num", _ratio("bits_w", "bits_a"), "n", "weight bits / activation bits"),
    Col("p90 ms", "num", _number("latency_p90_ms", fmt.ms), "n"),
    Col("p99 ms", "num", _number("latency_p99_ms", fmt.ms), "n"),
    Col("inputs/s", "num", _number("throughput_ips", lambda v: fmt.fixed(v, 1)), "n"),
    Col("load s", "num", _number("load_s", fmt.ms), "n"),
    Col("peak RSS MiB", "num", _number("peak_rss_mb", lambda v: fmt.fixed(v, 0)), "n"),
    Col("packed MB", "num", _number("packed_bytes", fmt.mb), "n"),
    Col("quant/compute nodes", "num", _ratio("quantized_nodes", "compute_nodes"), "n"),
    Col("SQNR dB", "num", _number("output_sqnr_db", lambda v: fmt.fixed(v, 1)), "n"),
    Col(
        "rel. RMS error",
        "num",
        _number("output_rel_rmse", lambda v: fmt.fixed(v, 3)),
        "n",
        "||output - fp32's|| / ||fp32's|| over the evaluation inputs",
    ),
    Col(
        "tolerance",
        "num",
        _number("fp32_tolerance", _significant),
        "n",
        "absolute tolerance of within tol: 0.1 × the fp32 outputs' standard deviation",
    ),
    Col("energy mJ/inf", "num", _energy, "n"),
)


def _details(r: Any) -> str:
    """The row's other figures and its notes, folded: the summary line shows the error."""
    items = "".join(f"<dt>{esc(c.head)}</dt><dd>{c.cell(r)[0] or DASH}</dd>" for c in DETAILS)
    notes = "<br>".join(esc(n) for n in fmt.text_list(r.notes))
    error = _error_line(r)
    label = error or '<span class="muted">details</span>'
    trace = getattr(r, "error_traceback", None)
    trace_html = "" if fmt.is_missing(trace) else f'<pre class="traceback">{esc(str(trace))}</pre>'
    return (
        f"<details><summary>{label}</summary>{trace_html}<dl>{items}</dl>"
        + (f'<div class="notes">{notes}</div>' if notes else "")
        + "</details>"
    )


def results_table(df: Any) -> str:
    """Filter controls and the table; `df` is the prepared frame (data.prepare)."""
    order = df.sort_values(
        ["model", "method_label", "backend_label", "device", "batch", "threads", "run_id"],
        kind="stable",
    )
    head = "".join(
        f'<th data-type="{c.kind}"'
        + (f' title="{esc(c.tip)}"' if c.tip else "")
        + f">{esc(c.head)}</th>"
        for c in COLUMNS
    )
    head += (
        '<th data-type="text" title="the error, then the row\'s other figures and notes">'
        "error / details</th>"
    )
    body = "\n".join(_row(r) for r in order.itertuples(index=False))
    return (
        f'{_filters(df)}\n<div class="scroll"><table id="results">\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>"
    )


def _row(r: Any) -> str:
    status = esc(r.status) or "unknown"
    classes = f"st-{status}" + (" simulated" if r.simulated else "")
    if not fmt.is_missing(getattr(r, "hw_warning", None)):
        classes += " hwwarned"
    attrs = {"data-cell-id": r.cell_id, "data-run-id": r.run_id, "class": classes}
    attrs.update({f"data-{name}": getattr(r, field) for name, field in FILTERS})
    tds = []
    for c in COLUMNS:
        inner, sort = c.cell(r)
        extra = f' class="{c.cls}"' if c.cls else ""
        if c.kind == "num":
            extra += f' data-v="{"" if sort is None else repr(float(sort))}"'
        tds.append(f"<td{extra}>{inner}</td>")
    tds.append(f'<td class="err">{_details(r)}</td>')
    attr_text = " ".join(f'{k}="{esc(v)}"' for k, v in attrs.items())
    return f"<tr {attr_text}>{''.join(tds)}</tr>"


def _filters(df: Any) -> str:
    selects = []
    for name, field in FILTERS:
        values = sorted({str(v) for v in df[field] if not fmt.is_missing(v)})
        if len(values) < 2:
            continue
        options = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
        selects.append(
            f'<label>{name} <select data-filter="{name}">'
            f'<option value="">all</option>{options}</select></label>'
        )
    return (
        '<div class="filters"><input type="search" id="filter" '
        'placeholder="filter rows: words to find in any column" aria-label="filter rows">'
        f'{"".join(selects)}<span id="shown" class="muted"></span></div>'
    )
