"""The report's device comparison: throughput against power with iso-efficiency lines, latency
and accuracy per device, and efficiency against the datasheet peak.

Shown only when the store's ok rows cover two or more devices, or any row has a power figure.
Simulated rows are left out (float kernels emulating integer ones: their speed is not the
device's). Measured and estimated power are drawn apart (filled vs open markers, "(estimated)"
in legend and hover) and a chart mixing them carries a visible warning: they are not
comparable. Datasheet peaks are read from the device files (devices/NAME.yaml) at report time,
not from the store.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbench.report.charts import METRIC_LABEL, _colours, _i, _render
from qbench.report.data import is_missing
from qbench.report.fmt import esc, num

ISO_EFFICIENCY = (1, 10, 100, 1000)  # inferences per joule
MEASURED, ESTIMATED = "measured", "estimated"
MIXED_WARNING = "measured and estimated power mixed: not comparable"
# Datasheet figure that bounds each compute type, in 10^12 operations per second.
PEAK_KEY = {
    "int8": "peak_int8_tops",
    "fp16": "peak_fp16_tflops",
    "bf16": "peak_bf16_tflops",
    "fp32": "peak_fp32_tflops",
}


@dataclass(frozen=True)
class DevicePeaks:
    """A device's datasheet as the report found it: figures, the file, or why there is none."""

    name: str
    source: str | None = None  # "devices/NAME.yaml"
    datasheet: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


PeakLookup = Callable[[str], DevicePeaks]


def repo_peaks(name: str) -> DevicePeaks:
    """The datasheet of device `name` from devices/NAME.yaml (working directory, then repo)."""
    from qbench.devices import find_device_file, load_device

    path = find_device_file(name, Path.cwd())
    if path is None:
        return DevicePeaks(name, problem=f"no device file devices/{name}.yaml")
    source = f"devices/{path.name}"
    try:
        device = load_device(path)
    except Exception as exc:  # a broken device file must not break the report
        return DevicePeaks(name, source, problem=f"{source} does not load: {exc}")
    return DevicePeaks(name, source, device.datasheet.as_dict())


def show_devices(latest: Any) -> bool:
    ok = _usable(latest)
    return ok["device"].nunique() >= 2 or bool(ok["active_power_w"].notna().any())


def _usable(latest: Any) -> Any:
    import pandas as pd

    ok = latest[latest["status"].astype(object).eq("ok").fillna(False).astype(bool)]
    ok = ok[~ok["simulated"]]
    tput = pd.to_numeric(ok["throughput_ips"], errors="coerce")
    ok = ok[tput > 0].copy()
    ok["throughput_ips"] = tput[ok.index].astype(float)
    power = pd.to_numeric(ok["active_power_w"], errors="coerce")
    prov = ok["power_provenance"].astype(object)
    has = (power > 0) & prov.isin([MEASURED, ESTIMATED])
    ok["active_power_w"] = power.where(has)
    ok["power_provenance"] = prov.where(has)
    return ok


def _label(r: Any) -> str:
    return f"{r.model} · {r.method_label} · {r.backend_label} · b{_i(r.batch)}"


def precision(row: Any) -> str | None:
    """int8 / fp16 / bf16 / fp32: which datasheet peak bounds a native row's kernels."""
    from qbench.report.hardware import compute_type

    kind = compute_type(row.get("act_dtype"), row.get("weight_dtype"))
    if kind:
        return kind
    act = row.get("act_dtype")
    if not is_missing(act):
        return "fp32" if str(act) == "float32" else None
    bits = (_i(row.get("bits_w")), _i(row.get("bits_a")))
    return {(8, 8): "int8", (16, 16): "fp16", (32, 32): "fp32"}.get(bits)  # type: ignore[arg-type]


def isa_peak(row: Any, kind: str, datasheet: dict[str, Any]) -> tuple[float, str] | None:
    """(estimated peak in 10^12 ops/s, how) of a CPU row: operations per cycle of its ISA
    (qbench.probe.peak_ops_per_cycle) × the threads it ran (at most the datasheet's cores) ×
    the datasheet clock. AMX counts where the CPU has it, unless the row's oneDNN kernels show
    it was not used (an `isa` cap, a kernel without AMX): the peak of what really ran."""
    from qbench.probe import peak_ops_per_cycle
    from qbench.report.hardware import ROW_FLAG_COLUMN, _flags

    flags = _flags(row.get(ROW_FLAG_COLUMN))
    ghz = num(datasheet.get("max_turbo_ghz")) or num(datasheet.get("base_ghz"))
    if not flags or not ghz or str(row.get("device_kind")) != "cpu":
        return None
    kernels = row.get("onednn_kernels")
    amx = is_missing(kernels) or "amx" in str(kernels).lower()
    per_cycle = peak_ops_per_cycle(kind, flags, amx=amx)
    if per_cycle is None:
        return None
    threads = _i(row.get("threads")) or 1
    cores = _i(datasheet.get("cpu_cores"))
    used = min(threads, cores) if cores else threads
    ops, flag = per_cycle
    how = (f"{ops:g} {kind} ops/cycle ({flag}{'' if amx else ', AMX not used'}) × {used} "
           f"core(s) × {ghz:g} GHz")  # fmt: skip
    return ops * used * ghz * 1e9 / 1e12, how


def efficiency_rows(ok: Any, lookup: PeakLookup = repo_peaks) -> tuple[Any, list[str]]:
    """(rows with achieved_ops_s, peak_ops_s, efficiency (0..1), notes on what is missing).

    achieved ops/s = 2 × model_macs × throughput_ips; peak from the device's datasheet for the
    row's compute type (int8 TOPS, fp16 TFLOPS, fp32 TFLOPS) × 10^12.
    """
    import pandas as pd

    peaks = {d: lookup(d) for d in sorted(ok["device"].dropna().unique())}
    out, notes, missing = [], [], set()
    no_macs = 0
    for idx, row in ok.iterrows():
        macs = num(row.get("model_macs"))
        if macs is None or macs <= 0:
            no_macs += 1
            continue
        p = peaks[row["device"]]
        kind = precision(row)
        if p.problem or kind is None:
            missing.add((row["device"], p.problem or "compute type unknown"))
            continue
        peak = p.datasheet.get(PEAK_KEY[kind])
        peak_key, peak_source = PEAK_KEY[kind], p.source
        if not isinstance(peak, int | float) or peak <= 0:
            estimate = isa_peak(row, kind, p.datasheet)
            if estimate is None:
                why = f"no {PEAK_KEY[kind]} in {p.source}, nor a clock and x86 flags to estimate it"
                missing.add((row["device"], why))
                continue
            peak, how = estimate
            peak_key, peak_source = "estimated from ISA", f"{p.source}: {how}"
        achieved = 2.0 * float(macs) * float(row["throughput_ips"])
        out.append(
            {
                "idx": idx,
                "device": row["device"],
                "label": _label(row),
                "cell_id": row["cell_id"],
                "precision": kind,
                "peak_key": peak_key,
                "peak_source": peak_source,
                "peak_ops_s": float(peak) * 1e12,
                "achieved_ops_s": achieved,
                "efficiency": achieved / (float(peak) * 1e12),
            }
        )
    for device, why in sorted(missing):
        notes.append(f"{device}: no datasheet peak ({why})")
    if no_macs:
        notes.append(f"{no_macs} row(s) have no model_macs (op count) and are left out")
    cols = ["idx", "device", "label", "cell_id", "precision", "peak_key", "peak_source",
            "peak_ops_s", "achieved_ops_s", "efficiency"]  # fmt: skip
    return pd.DataFrame(out, columns=cols), notes


def _no_power_reason(rows: Any) -> str:
    notes = [str(n) for n in rows["power_note"].dropna().unique() if str(n)]
    if not notes:
        return "no power figure recorded"
    shown = "; ".join(notes[:2])
    return shown + (f"; and {len(notes) - 2} more" if len(notes) > 2 else "")


def power_chart(ok: Any, colours: dict[str, str]) -> tuple[str, str, str | None]:
    """(caption, figure html, warning or None): throughput against active power, log-log."""
    from plotly.subplots import make_subplots

    powered = ok[ok["active_power_w"].notna()]
    bare = ok[ok["active_power_w"].isna()]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.86, 0.14], shared_yaxes=True,
                        horizontal_spacing=0.02)  # fmt: skip
    for device in sorted(ok["device"].unique()):
        for prov in (MEASURED, ESTIMATED):
            sel = powered[(powered["device"] == device) & (powered["power_provenance"] == prov)]
            if sel.empty:
                continue
            est = prov == ESTIMATED
            custom = [
                [
                    _label(r),
                    prov,
                    "" if is_missing(r.power_note) else str(r.power_note),
                    r.throughput_ips / r.active_power_w,
                ]
                for r in sel.itertuples()
            ]
            fig.add_scatter(
                x=sel["active_power_w"].tolist(), y=sel["throughput_ips"].tolist(),
                mode="markers", name=f"{device} (estimated)" if est else device,
                legendgroup=device,
                marker={"color": colours[device], "size": 11,
                        "symbol": "circle-open" if est else "circle",
                        "line": {"width": 2, "color": colours[device]}},
                customdata=custom,
                hovertemplate=(f"<b>{esc(device)}</b> %{{customdata[0]}}<br>power: %{{x:.3g}} W "
                               "(%{customdata[1]})<br>throughput: %{y:.3g} inferences/s"
                               "<br>%{customdata[3]:.3g} inferences/J<br>%{customdata[2]}"
                               "<extra></extra>"),
                row=1, col=1,
            )  # fmt: skip
    for device in sorted(bare["device"].unique()):
        sel = bare[bare["device"] == device]
        reason = _no_power_reason(sel)
        fig.add_scatter(
            x=["no power figure"] * len(sel), y=sel["throughput_ips"].tolist(), mode="markers",
            name=f"{device} (no power figure)", legendgroup=device,
            marker={"color": colours[device], "size": 10, "symbol": "line-ew-open",
                    "line": {"width": 3, "color": colours[device]}},
            customdata=[[_label(r)] for r in sel.itertuples()],
            hovertemplate=(f"<b>{esc(device)}</b> %{{customdata[0]}}<br>throughput: %{{y:.3g}} "
                           f"inferences/s<br>no power figure: {esc(reason)}<extra></extra>"),
            row=1, col=2,
        )  # fmt: skip
    ys = ok["throughput_ips"].astype(float)
    y_lo, y_hi = math.log10(ys.min()) - 0.3, math.log10(ys.max()) + 0.3
    if not powered.empty:
        xs = powered["active_power_w"].astype(float)
        x_lo, x_hi = math.log10(xs.min()) - 0.3, math.log10(xs.max()) + 0.3
    else:
        x_lo, x_hi = -1.0, 2.0
    for n, k in enumerate(ISO_EFFICIENCY):
        px = [10**x_lo, 10**x_hi]
        fig.add_scatter(
            x=px, y=[k * p for p in px], mode="lines",
            line={"color": "#999", "dash": "dash", "width": 1},
            name="iso-efficiency (inferences per joule)", legendgroup="iso",
            showlegend=n == 0, hoverinfo="skip", row=1, col=1,
        )  # fmt: skip
        # Label each line where it is inside the plotted window.
        for lx in (x_hi - 0.15, x_lo + 0.5 * (x_hi - x_lo)):
            ly = math.log10(k) + lx
            if y_lo < ly < y_hi:
                fig.add_annotation(
                    x=lx, y=ly, text=f"{k:g} inf/J", showarrow=False,
                    font={"size": 10, "color": "#777"}, xref="x", yref="y",
                    xanchor="right", yanchor="bottom",
                )  # fmt: skip
                break
    fig.update_xaxes(type="log", range=[x_lo, x_hi], tickformat="~g",
                     title="average active power, W (log)", row=1, col=1)  # fmt: skip
    fig.update_xaxes(type="category", title="", row=1, col=2)
    fig.update_yaxes(type="log", range=[y_lo, y_hi], tickformat="~g",
                     title="throughput, inferences/s (log)", row=1, col=1)  # fmt: skip
    fig.update_layout(legend={"title": {"text": "device"}})
    provs = set(powered["power_provenance"].unique())
    warning = None
    if {MEASURED, ESTIMATED} <= provs:
        warning = (
            f"⚠ {MIXED_WARNING[0].upper()}{MIXED_WARNING[1:]}. This chart holds both measured "
            "(filled markers) and estimated (open markers, “(estimated)”) power: an estimate "
            "(TDP × CPU utilisation) is no measurement, so do not compare their inferences per "
            f"joule. ({MIXED_WARNING})"
        )
    caption = (
        "One point per device, model, method and backend (latest ok row of each cell): "
        "throughput (batch / mean latency) against the average active power over the timed "
        "window. Dashed lines join points of equal energy efficiency: 1, 10, 100 and 1000 "
        "inferences per joule (throughput ÷ power); further up and left is more efficient. "
        "Filled markers are measured power; open markers are estimated (TDP × CPU "
        "utilisation), marked “(estimated)” in legend and hover."
    )
    if not bare.empty:
        listed = "; ".join(
            f"{d} ({_no_power_reason(bare[bare['device'] == d])})"
            for d in sorted(bare["device"].unique())
        )
        caption += (
            " Rows without a power figure appear on the throughput axis only, in the strip "
            f"at right — no power figure: {listed}."
        )
    return caption, _render(fig, "chart-devices-power", 520), warning


def latency_accuracy_chart(ok: Any, colours: dict[str, str]) -> str:
    """Grouped bars per model/method/backend, one bar per device: latency above, accuracy below."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("latency p50 per batch, ms (log)",
                                        "accuracy: top-1, agreement or within tol"))  # fmt: skip
    order = sorted({_label(r) for r in ok.itertuples()})
    for device in sorted(ok["device"].unique()):
        d = ok[ok["device"] == device]
        labels = [_label(r) for r in d.itertuples()]
        metric = [METRIC_LABEL.get(m, "none") if m else "none"
                  for m in d["accuracy_metric"]]  # fmt: skip
        power = [
            f"{p:.3g} W ({v})" if v in (MEASURED, ESTIMATED) else "no power figure"
            for p, v in zip(d["active_power_w"], d["power_provenance"], strict=True)
        ]
        custom = [[m, p] for m, p in zip(metric, power, strict=True)]
        fig.add_bar(x=labels, y=d["latency_p50_ms"].astype(float).tolist(), name=device,
                    legendgroup=device, marker_color=colours[device], customdata=custom,
                    hovertemplate=f"<b>{esc(device)}</b> %{{x}}<br>latency p50: %{{y:.3g}} ms"
                    "<br>power: %{customdata[1]}<extra></extra>", row=1, col=1)  # fmt: skip
        acc = d["accuracy"].astype(float)
        fig.add_bar(x=labels, y=acc.where(acc.notna(), None).tolist(), name=device,
                    legendgroup=device, showlegend=False, marker_color=colours[device],
                    customdata=custom, hovertemplate=f"<b>{esc(device)}</b> %{{x}}<br>"
                    "%{customdata[0]}: %{y:.2%}<extra></extra>", row=2, col=1)  # fmt: skip
    fig.update_layout(barmode="group", legend={"title": {"text": "device"}})
    fig.update_xaxes(categoryorder="array", categoryarray=order)
    fig.update_yaxes(type="log", tickformat="~g", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", row=2, col=1)
    return _render(fig, "chart-devices-latency", 560)


def efficiency_chart(eff: Any, colours: dict[str, str]) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for device in sorted(eff["device"].unique()):
        d = eff[eff["device"] == device]
        custom = [[r.precision, r.achieved_ops_s / 1e9, r.peak_ops_s / 1e12, r.peak_key,
                   r.peak_source] for r in d.itertuples()]  # fmt: skip
        fig.add_bar(
            x=d["label"].tolist(), y=(100 * d["efficiency"]).tolist(), name=device,
            marker_color=colours[device], customdata=custom,
            text=[f"{100 * v:.3g}%" for v in d["efficiency"]], textposition="outside",
            cliponaxis=False,
            hovertemplate=(f"<b>{esc(device)}</b> %{{x}}<br>efficiency: %{{y:.3g}}% of the "
                           "%{customdata[0]} peak<br>achieved: %{customdata[1]:.3g} G ops/s"
                           "<br>peak: %{customdata[2]:.4g} T ops/s (%{customdata[3]}, "
                           "from %{customdata[4]})<extra></extra>"),
        )  # fmt: skip
    fig.update_layout(barmode="group", legend={"title": {"text": "device"}})
    fig.update_yaxes(type="log", tickformat="~g", title="achieved ÷ datasheet peak, % (log)")
    fig.update_xaxes(title="model · method · backend · batch", categoryorder="array",
                     categoryarray=sorted(set(eff["label"])))  # fmt: skip
    return _render(fig, "chart-devices-efficiency", 460)


def devices_section(latest: Any, lookup: PeakLookup = repo_peaks) -> str:
    """The page's "Devices" section, or "" when the store has one device and no power figure."""
    if not show_devices(latest):
        return ""
    ok = _usable(latest)
    colours = _colours(sorted(ok["device"].unique()))
    parts = [
        '<h2 id="devices">Devices</h2>',
        '<p class="caption">Edge processors compared: from native ok cells only (simulated '
        "cells run float kernels emulating integer ones, so their speed is not the device's), "
        "the latest row of each cell.</p>",
    ]
    caption, fig, warning = power_chart(ok, colours)
    parts.append("<h3>Throughput vs power</h3>")
    if warning:
        parts.append(f'<div class="hwwarn" id="power-mixed">{esc(warning)}</div>')
    parts.append(f'<p class="caption">{esc(caption)}</p>\n<div class="chart">{fig}</div>')
    parts.append("<h3>Latency and accuracy per device</h3>")
    parts.append(
        '<p class="caption">Grouped bars: one bar per device for each model, method, backend '
        "and batch. Above: median latency of one batch (log scale). Below: top-1 accuracy on "
        "labelled data, else the share of inputs whose top-1 class matches fp32; hover names "
        "which, and the row's power figure with its provenance (measured or estimated).</p>"
        f'\n<div class="chart">{latency_accuracy_chart(ok, colours)}</div>'
    )
    eff, notes = efficiency_rows(ok, lookup)
    parts.append("<h3>Efficiency vs datasheet peak</h3>")
    sources = sorted({s for s in eff["peak_source"].dropna()}) if len(eff) else []
    cap = (
        "Achieved operations per second ÷ the datasheet peak for the row's compute type (int8 "
        "TOPS for int8 kernels, fp16 TFLOPS for fp16, fp32 TFLOPS for fp32). Achieved = 2 × "
        "the model's multiply-accumulates (model_macs, counted from the fp32 ONNX graph at "
        "batch 1: Conv, Gemm, MatMul) × throughput (inferences/s). Peaks are read at report "
        "time from the device files, not from the store"
        + (f": peaks from {', '.join(sources)}." if sources else ".")
    )
    if notes:
        cap += " Not shown: " + "; ".join(notes) + "."
    parts.append(f'<p class="caption">{esc(cap)}</p>')
    if len(eff):
        parts.append(f'<div class="chart">{efficiency_chart(eff, colours)}</div>')
    return "\n".join(parts)
