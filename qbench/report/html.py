"""The report page: one self-contained HTML file (plotly.js inlined once, no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qbench.report import fmt
from qbench.report.fmt import DASH, esc
from qbench.store.schema import STATUSES


def build_report_html(
    runs: Any,
    results: Any,
    title: str = "qbench report",
    budget: float | None = None,
    metric: str | None = None,
) -> str:
    """The whole page for a store's two tables (as `qbench.store.parquet.load` returns them);
    `budget` and `metric`: the summary's accuracy budget and what it is judged on
    (report.summary: default one point, of top-1 where there are labels)."""
    from qbench.report.assets import CSS, JS, html_head
    from qbench.report.charts import build_charts
    from qbench.report.data import best_fp32_speedups, latest_per_cell, prepare
    from qbench.report.devices_view import devices_section
    from qbench.report.hardware import banner, hardware_warnings
    from qbench.report.llm_view import llm_section
    from qbench.report.summary import DEFAULT_BUDGET, summarize
    from qbench.report.summary_view import summary_section
    from qbench.report.table import results_table

    df = prepare(results)
    df["hw_warning"], df["hw_short"] = hardware_warnings(df, runs)
    latest = latest_per_cell(df)
    df["speedup_best"] = best_fp32_speedups(df, among=latest)
    budget = DEFAULT_BUDGET if budget is None else budget
    from qbench.confirm.picks import from_runs

    summary = summary_section(summarize(latest, budget, metric, from_runs(runs)))
    charts = build_charts(latest)
    devices = devices_section(latest)
    several = df["run_id"].nunique() > 1
    chart_note = (
        " The store holds several runs: the charts use the latest row of each cell; "
        "the table lists every row with its run."
        if several
        else ""
    )
    chart_html = "\n".join(
        f'<h3>{esc(c.title)}</h3>\n<p class="caption">{esc(c.caption)}</p>\n'
        + (f'<div class="chart">{c.html}</div>' if c.html else "")
        for c in charts
    )
    return f"""{html_head(title, CSS)}
<body>
{_header(title, runs, df)}
{_unfinished(runs)}
{banner(df)}
{summary}
<h2>Hosts</h2>
<p class="caption">The machine each run measured on, latest run first.</p>
{_hosts(runs)}
<h2>Charts</h2>
<p class="caption">From cells with status ok only.{esc(chart_note)}</p>
{chart_html}
{llm_section(latest)}
{devices}
<h2>All results</h2>
<p class="caption">Every row of the store, skipped, failed and timed-out cells included with
their reason. Click a header to sort (blanks stay last); type in the box to keep the rows that
contain every word. Simulated cells ran float kernels emulating integer ones: their latency is
not that of integer kernels and they get no speedup.</p>
{results_table(df)}
<script>{JS}</script>
</body>
</html>
"""


def write_report(
    store: str | Path, out: str | Path, title: str | None = None, budget: float | None = None
) -> Path:
    """Load the store at `store`, write its report to `out` (parents created), return `out`."""
    from qbench.store.parquet import load

    runs, results = load(store)
    if len(results) == 0:
        raise ValueError(f"store {store} has no results: nothing to report (run a suite first)")
    page = build_report_html(runs, results, title or f"qbench report — {Path(store).name}", budget)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def _header(title: str, runs: Any, df: Any) -> str:
    counts = df["status"].astype(object).value_counts()
    badges = "".join(
        f'<span class="badge {s}">{s}: {int(counts.get(s, 0))}</span>' for s in STATUSES
    )
    others = int(len(df) - sum(int(counts.get(s, 0)) for s in STATUSES))
    if others:
        badges += f'<span class="badge skipped">other: {others}</span>'
    sim = int(df["simulated"].sum())
    sim_text = f", {sim} simulated" if sim else ""
    run_ids = sorted({str(r) for r in df["run_id"] if not fmt.is_missing(r)})
    info = {str(r["run_id"]): r for _, r in runs.iterrows()} if len(runs) else {}
    items = []
    for rid in reversed(run_ids):  # run ids begin with their UTC start: latest first
        r = info.get(rid)
        suite = esc(r["suite"]) if r is not None else esc(_first(df, rid, "suite"))
        started = fmt.when(r["started_at"]) if r is not None else DASH
        host = esc(r["host"]) if r is not None else DASH
        n = int((df["run_id"] == rid).sum())
        items.append(
            f"<li><code>{esc(rid)}</code> — suite <b>{suite or DASH}</b>, "
            f"started {esc(started)}, host {host or DASH}, {n} rows</li>"
        )
    return (
        f"<h1>{esc(title)}</h1>\n"
        f'<p class="counts">{len(df)} rows ({df["cell_id"].nunique()} distinct cells'
        f"{sim_text}): {badges}</p>\n"
        f'<p class="muted">Runs covered:</p><ul>{"".join(items)}</ul>'
    )


def _first(df: Any, run_id: str, field: str) -> Any:
    values = df.loc[df["run_id"] == run_id, field]
    return values.iloc[0] if len(values) else None


def _code(value: Any) -> str:
    return f"<code>{esc(value)}</code>" if esc(value) else DASH


HOST_FIELDS = (
    ("run", lambda r: _code(r.get("run_id"))),
    ("suite", lambda r: esc(r.get("suite"))),
    ("started", lambda r: esc(fmt.when(r.get("started_at")))),
    ("finished", lambda r: esc(fmt.when(r.get("finished_at")))),
    ("host", lambda r: esc(r.get("host"))),
    ("cpu_model", lambda r: esc(r.get("cpu_model"))),
    ("cpu_flags", lambda r: esc(" ".join(fmt.text_list(r.get("cpu_flags"))))),
    (
        "cores (logical / physical)",
        lambda r: f"{fmt.integer(r.get('cores_logical'))} / {fmt.integer(r.get('cores_physical'))}",
    ),
    ("ram_gb", lambda r: fmt.fixed(r.get("ram_gb"), 1)),
    ("os", lambda r: esc(r.get("os"))),
    ("python", lambda r: esc(r.get("python"))),
    ("packages", lambda r: f"<pre>{esc(fmt.pretty_json(r.get('packages_json')))}</pre>"),
    ("git_sha", lambda r: _code(r.get("git_sha"))),
    (
        "cells (planned / excluded)",
        lambda r: f"{fmt.integer(r.get('cells_total'))} / {fmt.integer(r.get('cells_excluded'))}",
    ),
)


def _hosts(runs: Any) -> str:
    if len(runs) == 0:
        return '<p class="muted">The store has no run records.</p>'
    import pandas as pd

    started = pd.to_datetime(runs["started_at"], errors="coerce", utc=True)
    ordered = runs.assign(_s=started).sort_values(
        ["_s", "run_id"], ascending=False, na_position="last"
    )
    records = [row.to_dict() for _, row in ordered.iterrows()]
    lines = []
    for label, cell in HOST_FIELDS:
        tds = "".join(f"<td>{cell(r) or DASH}</td>" for r in records)
        lines.append(f"<tr><th>{esc(label)}</th>{tds}</tr>")
    return '<div class="scroll"><table class="hosts">' + "\n".join(lines) + "</table></div>"


def _unfinished(runs: Any) -> str:
    """A line for each run not finished when the page was written: its rows are the ones
    measured so far (read from its journal), not a complete run."""
    if "run_state" not in runs.columns:
        return ""
    open_runs = runs[runs["run_state"] != "finished"]
    items = [
        f"<li>run {esc(str(r.run_id))} ({esc(str(r.suite))}): "
        + ("still running" if r.run_state == "running" else "interrupted (resume it with "
           "<code>qbench run SUITE --resume</code>)")
        + ": its rows are those measured so far</li>"
        for r in open_runs.itertuples()
    ]  # fmt: skip
    return (
        f'<div class="hwwarn" id="unfinished-runs"><ul>{"".join(items)}</ul></div>' if items else ""
    )
