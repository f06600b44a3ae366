"""The report's Plotly figures, from the latest ok row of each cell.

Each figure becomes a <div> and a Plotly.newPlot call; plotly.js itself is inlined once by
the page (html.py), so every figure is rendered with include_plotlyjs=False.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qbench.report import fmt
from qbench.report.pareto import pareto_front

METRIC_LABEL = {"top1": "top-1", "fp32_agreement": "agreement with fp32"}
METRIC_SYMBOL = {"top1": "circle", "fp32_agreement": "diamond"}
# Point labels naming the backend, where one figure mixes backends and has few enough points.
BACKEND_TAG = {"onnxruntime": "ORT", "torch": "pt", "litert": "LiteRT", "edgetpu": "TPU"}
MAX_LABELLED_POINTS = 60
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
    charts = accuracy_charts(ok)
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


def accuracy_charts(ok: Any) -> list[Chart]:
    """One figure per device: accuracy vs p50 latency, colour = model, Pareto per model."""
    import plotly.graph_objects as go

    pts = ok[ok["accuracy"].notna() & (ok["latency_p50_ms"].astype(float) > 0)]
    colour = _colours(sorted(pts["model"].dropna().unique()))
    charts = []
    for n, device in enumerate(sorted(pts["device"].dropna().unique())):
        d = pts[pts["device"] == device]
        fig = go.Figure()
        tag = d["backend"].nunique() > 1 and len(d) <= MAX_LABELLED_POINTS
        for model in sorted(d["model"].unique()):
            _add_model_traces(fig, d[d["model"] == model], model, colour[model], tag)
        fig.update_xaxes(
            type="log", dtick="D2", tickformat="~g", title="latency p50 per batch, ms (log scale)"
        )
        fig.update_yaxes(title="accuracy: top-1 (●) or agreement with fp32 (◆)", tickformat=".0%")
        fig.update_layout(legend={"title": {"text": "model"}})
        caption = (
            "Each point is one cell (latest ok row). Colour = model; ● top-1 accuracy on "
            "labelled data, ◆ share of inputs whose top-1 class matches fp32 (used where "
            "the dataset has no labels). The dotted line joins each model's Pareto front "
            "on this device: no other native cell of that model is both faster and more "
            "accurate. Open markers are simulated cells (float kernels emulating "
            "integer ones): their latency is not that of real integer kernels, so they "
            "are left out of the front. Latency is per batch, so rows with larger "
            "batches sit further right."
        )
        if tag:
            caption += " Labels name the backend (ORT = ONNX Runtime, pt = PyTorch)."
        charts.append(
            Chart(
                f"Accuracy vs latency — {device}", caption, _render(fig, f"chart-accuracy-{n}", 480)
            )
        )
    if not charts:
        return [Chart("Accuracy vs latency", "No ok cell has both a latency and an accuracy.", "")]
    return charts


def _gaps(values: Any) -> list[float | None]:
    """Error-bar lengths for Plotly: None (no bar) where the interval is missing."""
    return [None if v != v else max(float(v), 0.0) for v in values]


def _interval_text(low: Any, high: Any) -> str:
    span = fmt.interval(low, high)
    return f" (95% interval {span}%)" if span else ""


def _add_model_traces(fig: Any, m: Any, model: str, colour: str, tag: bool = False) -> None:
    shown = False
    for metric in ("top1", "fp32_agreement"):
        for simulated in (False, True):
            sel = m[(m["accuracy_metric"] == metric) & (m["simulated"] == simulated)]
            if sel.empty:
                continue
            custom = [
                [
                    r.model,
                    r.method_label,
                    r.backend_label,
                    _i(r.batch),
                    _i(r.threads),
                    METRIC_LABEL[metric] + (" · SIMULATED, latency not real" if simulated else ""),
                    _interval_text(r.accuracy_ci_low, r.accuracy_ci_high),
                ]
                for r in sel.itertuples()
            ]
            ys = sel["accuracy"].astype(float)
            symbol = METRIC_SYMBOL[metric] + ("-open" if simulated else "")
            fig.add_scatter(
                x=sel["latency_p50_ms"].astype(float).tolist(),
                y=ys.tolist(),
                # the 95% interval of each point (none where the row has none)
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": _gaps(sel["accuracy_ci_high"].astype(float) - ys),
                    "arrayminus": _gaps(ys - sel["accuracy_ci_low"].astype(float)),
                    "color": colour,
                    "thickness": 1,
                    "width": 3,
                },
                mode="markers+text" if tag else "markers",
                text=[BACKEND_TAG.get(b, b) for b in sel["backend"]] if tag else None,
                textposition="middle right",
                textfont={"size": 9, "color": "#555"},
                name=model,
                legendgroup=model,
                showlegend=not shown,
                marker={
                    "color": colour,
                    "symbol": symbol,
                    "size": 10,
                    "line": {"width": 2 if simulated else 0, "color": colour},
                },
                customdata=custom,
                hovertemplate=(
                    "<b>%{customdata[0]}</b><br>method: %{customdata[1]}"
                    "<br>backend: %{customdata[2]}<br>batch %{customdata[3]}, "
                    "threads %{customdata[4]}<br>latency p50: %{x:.3g} ms"
                    "<br>%{customdata[5]}: %{y:.2%}%{customdata[6]}<extra></extra>"
                ),
            )
            shown = True
        native = m[(m["accuracy_metric"] == metric) & ~m["simulated"]]
        xs, ys = native["latency_p50_ms"].astype(float).tolist(), native["accuracy"].tolist()
        front = pareto_front(xs, ys)
        if len(front) >= 2:
            fig.add_scatter(
                x=[xs[i] for i in front],
                y=[ys[i] for i in front],
                mode="lines",
                line={"color": colour, "dash": "dot", "width": 1.5},
                name=f"{model} Pareto front",
                legendgroup=model,
                showlegend=False,
                hoverinfo="skip",
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
    title = "Speedup vs fp32"
    rows = ok[ok["speedup"].notna() & (ok["method"] != "fp32")]
    simulated = ok[ok["simulated"]]
    note = ""
    if not simulated.empty:
        note = (
            f" {len(simulated)} simulated cell(s) are not shown: they run float kernels "
            "that emulate integer ones, so their latency ratio is not a speedup."
        )
    caption = (
        "speedup = p50 latency of the fp32 cell / p50 latency of this cell, for the "
        "same model, backend, device, batch and threads (above 1 = faster than fp32; "
        "dashed line = fp32)." + note
    )
    if rows.empty:
        return Chart(title, "No native ok cell has an fp32 cell to compare with." + note, "")
    rows = rows.sort_values(["backend_label", "model", "method_label"])
    fig = _bars(
        rows, "speedup", colours, "speedup vs fp32 (×)", [f"{v:.2f}×" for v in rows["speedup"]]
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
    """Accuracy against theoretical packed size, one panel per model, colour = method."""
    from plotly.subplots import make_subplots

    pts = ok[ok["accuracy"].notna() & ok["packed_bytes"].notna()]
    if pts.empty:
        return None
    models = sorted(pts["model"].dropna().unique())
    colour = _colours(sorted(pts["method"].dropna().unique()))
    fig = make_subplots(rows=1, cols=len(models), subplot_titles=models, shared_yaxes=True)
    shown: set[str] = set()
    for col, model in enumerate(models, start=1):
        d = pts[pts["model"] == model]
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
                        "symbol": ["circle-open" if s else "circle" for s in m["simulated"]]},
                customdata=[[r.method_label, r.backend_label, METRIC_LABEL.get(
                    r.accuracy_metric, ""), r.execution] for r in m.itertuples()],
                hovertemplate=("<b>%{customdata[0]}</b><br>backend: %{customdata[1]} "
                               "(%{customdata[3]})<br>packed: %{x:.3g} MB"
                               "<br>%{customdata[2]}: %{y:.2%}<extra></extra>"),
                row=1, col=col,
            )  # fmt: skip
            shown.add(method)
        fig.update_xaxes(type="log", tickformat="~g", title="packed size, MB (log)", row=1, col=col)
    fig.update_yaxes(title="top-1 (labelled data) or agreement with fp32", tickformat=".0%",
                     row=1, col=1)  # fmt: skip
    fig.update_layout(legend={"title": {"text": "method"}})
    caption = (
        "Accuracy against the theoretical packed size of the weights (bits × weights + "
        "codebooks + scales + zero points; other parameters at 32 bits), which makes simulated "
        "methods (open markers: float weights on disk) comparable with native ones. One panel "
        "per model; top-1 where the data is labelled, else agreement with fp32."
    )
    return Chart("Accuracy vs packed size", caption, _render(fig, "chart-packed", 440))
