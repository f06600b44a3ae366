"""The report's Plotly figures, from the latest ok row of each cell.

Each figure becomes a <div> and a Plotly.newPlot call; plotly.js itself is inlined once by
the page (html.py), so every figure is rendered with include_plotlyjs=False.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qbench.report import fmt
from qbench.report.pareto import pareto_front

METRIC_LABEL = {"top1": "top-1", "fp32_agreement": "agreement with fp32",
                "fp32_within_tol": "within tolerance of fp32"}  # fmt: skip
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True)
class Chart:
    title: str
    caption: str
    html: str


def build_charts(latest: Any) -> list[Chart]:
    """All figures; `latest` is the prepared frame (data.prepare) of the latest row per cell."""
    ok = latest[latest["status"].astype(object).eq("ok").fillna(False).astype(bool)]
    colours = _colours(sorted(ok["method_label"].dropna().unique()))
    charts = accuracy_charts(ok, colours)
    charts.append(packed_size_chart(ok))
    charts.append(speedup_chart(ok, colours))
    charts.append(size_chart(ok, colours))
    return [c for c in charts if c is not None]


def _colours(labels: list[str]) -> dict[str, str]:
    from plotly.colors import qualitative

    palette = qualitative.Plotly
    return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def _render(fig: Any, div_id: str, height: int) -> str:
    fig.update_layout(
        height=height,
        margin={"l": 60, "r": 20, "t": 40, "b": 60},
        template="plotly_white",
        font={"family": "system-ui, sans-serif"},
    )
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config=PLOT_CONFIG,
        default_width="100%",
        default_height=f"{height}px",
    )


SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "star", "hexagon", "cross",
           "triangle-down", "pentagon")  # fmt: skip


def _symbols(labels: list[str]) -> dict[str, str]:
    return {label: SYMBOLS[i % len(SYMBOLS)] for i, label in enumerate(labels)}


def accuracy_charts(ok: Any, colours: dict[str, str] | None = None) -> list[Chart]:
    """One figure per device, one panel per model: accuracy against the speed-up over the best
    fp32 of that model on that device (any backend). Colour = method, symbol = backend; each
    panel's y axis is the model's one metric (top-1 where its fp32 has labels, else agreement
    with fp32); the dotted line is the panel's Pareto front."""
    from plotly.subplots import make_subplots

    from qbench.report.data import best_fp32_speedups

    ok = ok.assign(speedup_best=best_fp32_speedups(ok))
    pts = ok[ok["accuracy"].notna() & ok["speedup_best"].notna()]
    simulated = int((ok["simulated"] & ok["accuracy"].notna()).sum())
    colours = colours or _colours(sorted(ok["method_label"].dropna().unique()))
    symbols = _symbols(sorted(ok["backend_label"].dropna().unique()))
    charts = []
    for n, device in enumerate(sorted(pts["device"].dropna().unique())):
        d = pts[pts["device"] == device]
        models = sorted(d["model"].unique())
        cols = min(len(models), 3)
        rows = -(-len(models) // cols)
        metric = {m: _model_metric(d[d["model"] == m]) for m in models}
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=models,
                            horizontal_spacing=0.08, vertical_spacing=0.16)  # fmt: skip
        shown: set[tuple[str, str]] = set()
        for i, model in enumerate(models):
            row, col = i // cols + 1, i % cols + 1
            m = d[(d["model"] == model) & (d["accuracy_metric"] == metric[model])]
            _add_panel(fig, m, colours, symbols, shown, row, col)
            fig.update_xaxes(type="log", tickformat="~g", title="× best fp32 (log)", row=row,
                             col=col)  # fmt: skip
            fig.update_yaxes(title=METRIC_LABEL[metric[model]], tickformat=".0%", row=row, col=col)
        fig.update_layout(legend={"title": {"text": "method · backend"}})
        caption = (
            "One panel per model; each point is one cell (latest ok row). x = speed-up over the "
            "best fp32 of that model on this device, any backend (time per input: latency p50 "
            "/ batch); right is faster, 1 is that fp32. y = the model's accuracy metric: top-1 "
            "on labelled data, else the share of inputs whose top-1 matches fp32; bars are 95% "
            "intervals. Colour = method, symbol = backend. The dotted line is the panel's "
            "Pareto front: no other cell is both faster and more accurate."
        )
        if simulated:
            caption += (
                f" {simulated} simulated cell(s) are left out: float kernels emulating integer "
                "ones have no real speed-up."
            )
        charts.append(
            Chart(
                f"Accuracy vs speed-up — {device}",
                caption,
                _render(fig, f"chart-accuracy-{n}", 420 * rows),
            )
        )
    if not charts:
        return [
            Chart(
                "Accuracy vs speed-up",
                "No native ok cell has an accuracy and an fp32 cell to compare with.",
                "",
            )
        ]
    return charts  # fmt: skip


def _model_metric(m: Any) -> str:
    """A model's one accuracy metric: top-1 where its cells have it, else agreement, else
    within tolerance (an output of one value per input)."""
    for name in ("top1", "fp32_agreement"):
        if (m["accuracy_metric"] == name).any():
            return name
    return "fp32_within_tol"


def _gaps(values: Any) -> list[float | None]:
    """Error-bar lengths for Plotly: None (no bar) where the interval is missing."""
    return [None if v != v else max(float(v), 0.0) for v in values]


def _interval_text(low: Any, high: Any) -> str:
    span = fmt.interval(low, high)
    return f" (95% interval {span}%)" if span else ""


def _add_panel(fig: Any, m: Any, colours: dict[str, str], symbols: dict[str, str],
               shown: set[tuple[str, str]], row: int, col: int) -> None:  # fmt: skip
    """One trace per (method, backend) in one model's panel, then its Pareto front."""
    for (method, backend), sel in m.groupby(["method_label", "backend_label"], sort=True):
        ys = sel["accuracy"].astype(float)
        colour = colours.get(method, "#444")
        custom = [
            [r.model, r.method_label, r.backend_label, _i(r.batch), _i(r.threads),
             METRIC_LABEL[r.accuracy_metric], _interval_text(r.accuracy_ci_low,
             r.accuracy_ci_high), r.latency_p50_ms]
            for r in sel.itertuples()
        ]  # fmt: skip
        key = (str(method), str(backend))
        fig.add_scatter(
            x=sel["speedup_best"].astype(float).tolist(),
            y=ys.tolist(),
            error_y={
                "type": "data",
                "symmetric": False,
                "array": _gaps(sel["accuracy_ci_high"].astype(float) - ys),
                "arrayminus": _gaps(ys - sel["accuracy_ci_low"].astype(float)),
                "color": colour,
                "thickness": 1,
                "width": 3,
            },
            mode="markers",
            name=f"{method} · {backend}",
            legendgroup=f"{method} · {backend}",
            showlegend=key not in shown,
            marker={"color": colour, "symbol": symbols.get(str(backend), "circle"), "size": 11,
                    "line": {"width": 1, "color": "#fff"}},
            customdata=custom,
            hovertemplate=(
                "<b>%{customdata[0]}</b><br>method: %{customdata[1]}"
                "<br>backend: %{customdata[2]}<br>batch %{customdata[3]}, "
                "threads %{customdata[4]}<br>%{x:.2f}× the best fp32 "
                "(p50 %{customdata[7]:.3g} ms)"
                "<br>%{customdata[5]}: %{y:.2%}%{customdata[6]}<extra></extra>"
            ),
            row=row,
            col=col,
        )  # fmt: skip
        shown.add(key)
    # lowest time first: x = 1 / speed-up
    xs = (1.0 / m["speedup_best"].astype(float)).tolist()
    ys = m["accuracy"].astype(float).tolist()
    speedups = m["speedup_best"].astype(float).tolist()
    front = pareto_front(xs, ys)
    if len(front) >= 2:
        fig.add_scatter(
            x=[speedups[i] for i in front],
            y=[ys[i] for i in front],
            mode="lines",
            line={"color": "#888", "dash": "dot", "width": 1.5},
            showlegend=False,
            hoverinfo="skip",
            row=row,
            col=col,
        )


def _i(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return ""


def _config_labels(df: Any) -> list[str]:
    """x-axis labels: the model, plus device/batch/threads where the data has several."""
    many = {k: df[k].nunique() > 1 for k in ("device", "batch", "threads")}
    labels = []
    for r in df.itertuples():
        parts = [str(r.model)]
        if many["device"]:
            parts.append(str(r.device))
        if many["batch"]:
            parts.append(f"b{_i(r.batch)}")
        if many["threads"]:
            parts.append(f"t{_i(r.threads)}")
        labels.append(" · ".join(parts))
    return labels


def _bars(df: Any, y: str, colours: dict[str, str], y_title: str, text: list[str]) -> Any:
    import plotly.express as px

    many = len(df) > 24  # labels on that many bars would only be noise; hover still tells
    df = df.assign(config=_config_labels(df), bar_text=[""] * len(df) if many else text)
    fig = px.bar(
        df,
        x="config",
        y=y,
        color="method_label",
        facet_col="backend_label",
        barmode="group",
        text="bar_text",
        color_discrete_map=colours,
        category_orders={"method_label": list(colours), "config": sorted(set(df["config"]))},
        labels={
            "config": "model",
            "method_label": "method",
            "backend_label": "backend",
            y: y_title,
        },
        hover_data={"cell_id": True, "bar_text": False},
    )
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    fig.update_traces(textposition="outside", cliponaxis=False)
    return fig


def speedup_chart(ok: Any, colours: dict[str, str]) -> Chart:
    from qbench.report.data import best_fp32_speedups

    title = "Speed-up vs the best fp32 of any backend"
    ok = ok.assign(speedup_best=best_fp32_speedups(ok))
    rows = ok[ok["speedup_best"].notna()]
    simulated = ok[ok["simulated"]]
    note = ""
    if not simulated.empty:
        note = (
            f" {len(simulated)} simulated cell(s) are not shown: they run float kernels "
            "that emulate integer ones, so their latency ratio is not a speedup."
        )
    caption = (
        "speed-up = time per input (p50 latency / batch) of the fastest fp32 cell of the same "
        "model on the same device, whatever its backend, threads or batch / this cell's. One "
        "scale for every backend: the tallest bar is the fastest configuration (dashed line = "
        "that fp32; fp32 bars of slower backends sit below it)." + note
    )
    if rows.empty:
        return Chart(title, "No native ok cell has an fp32 cell to compare with." + note, "")
    rows = rows.sort_values(["backend_label", "model", "method_label"])
    fig = _bars(
        rows,
        "speedup_best",
        colours,
        "× best fp32",
        [f"{v:.2f}×" for v in rows["speedup_best"]],
    )
    fig.add_hline(y=1, line_dash="dash", line_color="#555", row="all", col="all")
    return Chart(title, caption, _render(fig, "chart-speedup", 460))


def size_chart(ok: Any, colours: dict[str, str]) -> Chart:
    title = "Artifact size"
    rows = ok[ok["artifact_bytes"].notna()]
    if rows.empty:
        return Chart(title, "No ok cell records an artifact size.", "")
    keys = ["model", "method_label", "backend_label"]
    rows = rows.sort_values(keys).drop_duplicates(keys, keep="last")
    rows = rows.assign(
        size_mb=rows["artifact_bytes"].astype(float) / 1e6, batch=1, threads=1, device=""
    )
    fig = _bars(
        rows, "size_mb", colours, "artifact size, MB", [f"{v:.2f}" for v in rows["size_mb"]]
    )
    caption = (
        "Size on disk of the artifact each backend loaded (MB = 10⁶ bytes), per model, "
        "method and backend."
    )
    return Chart(title, caption, _render(fig, "chart-size", 420))


def packed_size_chart(ok: Any) -> Chart | None:
    """Accuracy against theoretical packed size, one panel per model, colour = method, symbol =
    backend (open: simulated)."""
    from plotly.subplots import make_subplots

    pts = ok[ok["accuracy"].notna() & ok["packed_bytes"].notna()]
    if pts.empty:
        return None
    models = sorted(pts["model"].dropna().unique())
    colour = _colours(sorted(pts["method"].dropna().unique()))
    symbols = _symbols(sorted(ok["backend_label"].dropna().unique()))
    fig = make_subplots(rows=1, cols=len(models), subplot_titles=models)
    shown: set[str] = set()
    for col, model in enumerate(models, start=1):
        d = pts[pts["model"] == model]
        metric = _model_metric(d)  # one metric per panel's axis
        d = d[d["accuracy_metric"] == metric]
        fig.update_yaxes(title=METRIC_LABEL[metric], tickformat=".0%", row=1, col=col)
        for method in sorted(d["method"].unique()):
            m = d[d["method"] == method]
            fig.add_scatter(
                x=(m["packed_bytes"].astype(float) / 1e6).tolist(),
                y=m["accuracy"].astype(float).tolist(),
                mode="markers",
                name=method,
                legendgroup=method,
                showlegend=method not in shown,
                marker={"color": colour[method], "size": 10,
                        "symbol": [symbols.get(b, "circle") + ("-open" if s else "")
                                   for b, s in zip(m["backend_label"], m["simulated"],
                                                   strict=True)]},
                customdata=[[r.method_label, r.backend_label, METRIC_LABEL.get(
                    r.accuracy_metric, ""), r.execution] for r in m.itertuples()],
                hovertemplate=("<b>%{customdata[0]}</b><br>backend: %{customdata[1]} "
                               "(%{customdata[3]})<br>packed: %{x:.3g} MB"
                               "<br>%{customdata[2]}: %{y:.2%}<extra></extra>"),
                row=1, col=col,
            )  # fmt: skip
            shown.add(method)
        fig.update_xaxes(type="log", tickformat="~g", title="packed size, MB (log)", row=1, col=col)
    fig.update_layout(legend={"title": {"text": "method"}})
    caption = (
        "Accuracy against the theoretical packed size of the weights (bits × weights + "
        "codebooks + scales + zero points; other parameters at 32 bits), which makes simulated "
        "methods (open markers: float weights on disk) comparable with native ones. One panel "
        "per model; top-1 where the data is labelled, else agreement with fp32. Colour = "
        "method, symbol = backend (as in the accuracy chart)."
    )
    return Chart("Accuracy vs packed size", caption, _render(fig, "chart-packed", 440))
