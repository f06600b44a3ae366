"""The report's causal-LM section: speed (decode tokens/s, time to first token) against quality
(perplexity, KL divergence from fp32), and a table of the LLM columns.

Shown only when the store holds ok rows of a causal LM (output_kind token_logits). Colour =
method, symbol = backend; one metric per axis. Simulated rows get open markers.
"""

from __future__ import annotations

from typing import Any

from qbench.report import fmt
from qbench.report.charts import _colours, _render
from qbench.report.fmt import esc, num

SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")
PANELS = (
    ("decode_tps", "decode tokens/s (batch 1)", "perplexity", "perplexity (lower is better)"),
    ("ttft_ms", "time to first token, ms", "kld_mean", "KL divergence from fp32, nats (mean)"),
)


def llm_rows(latest: Any) -> Any:
    if "output_kind" not in latest:
        return latest.iloc[0:0]
    ok = latest["status"].astype(object).eq("ok").fillna(False).astype(bool)
    return latest[ok & latest["output_kind"].astype(object).eq("token_logits").fillna(False)]


def llm_section(latest: Any) -> str:
    rows = llm_rows(latest)
    if rows.empty:
        return ""
    return (
        "<h2>Causal LMs: speed against quality</h2>\n"
        '<p class="caption">Batch 1, greedy decoding with a KV cache. Left: decode tokens/s '
        "against perplexity on the eval text; right: time to first token (prefill of the "
        "longest prompt) against the mean KL divergence of next-token distributions from the "
        "fp32 reference. Colour = method, symbol = backend; open markers are simulated cells. "
        "Best is bottom-right on the left panel, bottom-left on the right. Perplexity and "
        "KLD come from whole windows (one prefill-style call each); the table's token-by-token "
        "column feeds the first window one token at a time through the KV cache, as generation "
        "does: a method that quantizes activations per tensor scores differently there.</p>\n"
        f'<div class="chart">{_chart(rows)}</div>\n{_table(rows)}'
    )


def _chart(rows: Any) -> str:
    from plotly.subplots import make_subplots

    methods = sorted(rows["method_label"].dropna().unique())
    colour = _colours(methods)
    backends = sorted(rows["backend_label"].dropna().unique())
    symbol = {b: SYMBOLS[i % len(SYMBOLS)] for i, b in enumerate(backends)}
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12)
    for col, (x, x_title, y, y_title) in enumerate(PANELS, start=1):
        for (method, backend), part in rows.groupby(["method_label", "backend_label"]):
            pts = part[part[x].notna() & part[y].notna()]
            if pts.empty:
                continue
            fig.add_scatter(
                x=pts[x].astype(float).tolist(),
                y=pts[y].astype(float).tolist(),
                mode="markers",
                name=f"{method} · {backend}",
                legendgroup=f"{method}·{backend}",
                showlegend=col == 1,
                marker={
                    "color": colour[method],
                    "size": 12,
                    "symbol": [symbol[backend] + ("-open" if s else "") for s in pts["simulated"]],
                },
                customdata=[[r.model, r.cell_id] for r in pts.itertuples()],
                hovertemplate=(
                    f"<b>{esc(method)}</b> · {esc(backend)}<br>%{{customdata[0]}}"
                    f"<br>{x_title}: %{{x:.4g}}<br>{y_title}: %{{y:.4g}}"
                    "<extra>%{customdata[1]}</extra>"
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title=x_title, row=1, col=col)
        fig.update_yaxes(title=y_title, row=1, col=col)
    fig.update_layout(legend={"title": {"text": "method · backend"}})
    return _render(fig, "chart-llm", 460)


def _f(value: Any, digits: int = 3) -> str:
    v = num(value)
    return "—" if v is None else f"{v:.{digits}g}"


def _by_token(r: Any) -> str:
    """The token-by-token pass (decode_kld_mean, decode_fp32_agreement), or a dash."""
    agree = num(getattr(r, "decode_fp32_agreement", None))
    if agree is None:
        return "—"
    return f"{_f(getattr(r, 'decode_kld_mean', None))} / {agree:.1%}"


def _table(rows: Any) -> str:
    head = (
        "model",
        "method",
        "backend",
        "prompt",
        "TTFT ms",
        "prefill tok/s",
        "decode tok/s",
        "ms/token p50",
        "ms/token p99",
        "perplexity (fp32)",
        "KLD mean",
        "KLD p99",
        "top-1 agree",
        "token by token: KLD / agree",
        "peak RSS MiB",
        "artifact MB",
    )
    body = []
    for r in rows.sort_values(["model", "backend_label", "method_label"]).itertuples():
        agree = num(getattr(r, "fp32_agreement", None))
        span = fmt.interval(
            getattr(r, "fp32_agreement_ci_low", None), getattr(r, "fp32_agreement_ci_high", None)
        )
        cells = (
            esc(r.model),
            esc(r.method_label),
            esc(r.backend_label),
            fmt.integer(getattr(r, "prompt_tokens", None)),
            _f(r.ttft_ms, 4),
            _f(r.prefill_tps, 4),
            _f(r.decode_tps, 4),
            _f(r.decode_p50_ms, 4),
            _f(r.decode_p99_ms, 4),
            f"{_f(r.perplexity, 4)} ({_f(getattr(r, 'perplexity_fp32', None), 4)})",
            _f(r.kld_mean),
            _f(r.kld_p99),
            "—" if agree is None else f"{agree:.1%}" + (f" [{span}%]" if span else ""),
            _by_token(r),
            fmt.fixed(r.peak_rss_mb, 0),
            fmt.mb(r.artifact_bytes),
        )
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    heads = "".join(f"<th>{esc(h)}</th>" for h in head)
    return (
        f'<div class="scroll"><table id="llm"><thead><tr>{heads}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
