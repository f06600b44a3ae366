"""qbench.regress.dashboard: the page built from a store with known steps and two machines."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qbench.regress.dashboard import build_dashboard_html, history_change_points, write_dashboard
from qbench.regress.history import load_history
from qbench.store.parquet import RunWriter
from tests.test_report import T0, _row, _run

RUNS = [f"202501{d:02d}T100000Z-{d:06x}" for d in range(1, 13)]  # 12 nightly runs
OTHER_RUNS = [f"202501{d:02d}T220000Z-{d:06x}" for d in (3, 6, 9)]  # the other machine
OTHER_CPU = "AMD EPYC 7B13"
STEP_RUN = 6  # cell A: +25 % latency from the 7th run on
IMPROVED_RUN = 4  # cell B: -30 % latency from the 5th run on
FAILED_RUN = 8  # cell C failed in the 9th run
FAIL_REASON = "RuntimeError: arena allocation failed (synthetic)"
SKIP_REASON = "backend litert cannot load an onnx artifact (synthetic)"

CELL_A = "digits_cnn/fp32/onnxruntime/local/b1/t1"
CELL_B = "digits_cnn/static_int8/onnxruntime/local/b1/t1"
CELL_C = "mobilenet_v2/fp32/onnxruntime/local/b1/t1"
CELL_D = "mobilenet_v2/fp32/litert/local/b1/t1"
CELLS = (CELL_A, CELL_B, CELL_C, CELL_D)


def _ok(model: str, method: str, p50: float, top1: float | None) -> dict[str, Any]:
    extra = {"top1": top1} if top1 is not None else {}
    return _row(
        model,
        method,
        "onnxruntime",
        p50=p50,
        latency_ci_low_ms=p50 * 0.97,
        latency_ci_high_ms=p50 * 1.04,
        **extra,
    )


def nightly_rows(n: int, rng: Any, scale: float = 1.0) -> list[dict[str, Any]]:
    """The four cells of run `n` (0-based): A steps up at STEP_RUN, B improves at
    IMPROVED_RUN, C is flat noise but fails once, D is always skipped."""
    noise = np.exp(0.02 * rng.standard_normal(3))
    a = 0.5 * (1.25 if n >= STEP_RUN else 1.0) * noise[0] * scale
    b = 0.4 * (0.7 if n >= IMPROVED_RUN else 1.0) * noise[1] * scale
    c = 8.0 * noise[2] * scale
    rows = [_ok("digits_cnn", "fp32", a, 0.97), _ok("digits_cnn", "static_int8", b, 0.965)]
    if n == FAILED_RUN:
        rows.append(_row("mobilenet_v2", "fp32", "onnxruntime", "failed", error=FAIL_REASON))
    else:
        rows.append(_ok("mobilenet_v2", "fp32", c, None))
    rows.append(_row("mobilenet_v2", "fp32", "litert", "skipped", error=SKIP_REASON))
    return rows


def _write_run(
    root: Path, run_id: str, started: Any, rows: list[dict[str, Any]], **run: Any
) -> None:
    writer = RunWriter(root, {**_run(run_id, started, host=run.pop("host", "ci-1")), **run})
    for row in rows:
        writer.append(row)
    writer.finish(finished_at=started + timedelta(hours=1), cells_total=len(rows), cells_excluded=0)


def write_history_store(root: Path, seed: int = 0) -> Path:
    """12 nightly runs on one machine (a new host name each night, same hardware) and three
    runs in between on another machine that is twice as slow."""
    rng = np.random.default_rng(seed)
    for n, run_id in enumerate(RUNS):
        _write_run(root, run_id, T0 + timedelta(days=n), nightly_rows(n, rng), host=f"ci-{n}")
    for k, run_id in enumerate(OTHER_RUNS):
        started = T0 + timedelta(days=3 * k + 2, hours=12)
        rows = nightly_rows(3 * k + 2, rng, scale=2.0)
        _write_run(root, run_id, started, rows, host="epyc-1", cpu_model=OTHER_CPU)
    return root


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_history(write_history_store(tmp_path_factory.mktemp("store")))


@pytest.fixture(scope="module")
def page(history: Any) -> str:
    return build_dashboard_html(history, title="nightly")


def figure_traces(page: str, div_id: str) -> list[dict[str, Any]]:
    """The trace list handed to Plotly.newPlot for one div."""
    m = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    assert m, div_id
    traces, _ = json.JSONDecoder().raw_decode(page, m.end())
    return traces


def _section(page: str, cell_id: str) -> str:
    """The cell's <section>, opening tag included."""
    cell = re.escape(html.escape(cell_id))
    m = re.search(r'<section class="cell"[^>]*\bdata-cell-id="' + cell + '"', page)
    assert m, cell_id
    start = m.start()
    return page[start : page.index("</section>", start)]


def _change_rows(page: str) -> list[str]:
    start = page.index('<table id="changes">')
    table = page[start : page.index("</table>", start)]
    return re.findall(r"<tr class=\"cp .*?</tr>", table)


def test_plotly_inlined_once_and_no_network(page: str) -> None:
    import plotly.offline

    banner = plotly.offline.get_plotlyjs()[:200].split("*/")[0]
    assert "plotly.js v" in banner
    assert page.count(banner) == 1 and page.count("plotly.js v") == 1
    refs = re.findall(
        r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?([^\"' >]+)",
        page,
        flags=re.I,
    )
    assert all(not r.lower().startswith(("http:", "https:", "//")) for r in refs), refs
    assert not re.search(r"@import|@font-face|url\(\s*[\"']?https?:", page.split("<script>")[0])
    # One figure per cell and machine that measured: A, B, C on both machines; D never ran.
    assert page.count('class="plotly-graph-div"') == 6
    assert page.count("Plotly.newPlot(") == 6


def test_every_cell_present(page: str) -> None:
    assert page.count('<section class="cell" id="cell-') == len(CELLS)
    for cell in CELLS:
        model, method, backend, device = cell.split("/")[:4]
        opening = _section(page, cell).split(">", 1)[0]
        for key, value in (("model", model), ("method", method), ("backend", backend)):
            assert f'data-{key}="{value}"' in opening, (cell, key)
        assert f'data-device="{device}"' in opening


def test_change_points_found_where_the_steps_are(history: Any) -> None:
    found = {
        (f.cell_id, f.point.metric, f.fingerprint_label.split(",")[0]): f
        for f in history_change_points(history)
    }
    intel = "Intel(R) Xeon(R) Platinum 8480+"
    assert set(found) == {
        (CELL_A, "latency_p50_ms", intel),
        (CELL_A, "throughput_ips", intel),
        (CELL_B, "latency_p50_ms", intel),
        (CELL_B, "throughput_ips", intel),
    }
    a = found[(CELL_A, "latency_p50_ms", intel)].point
    assert (a.run_id, a.kind) == (RUNS[STEP_RUN], "regression")
    assert a.ratio == pytest.approx(1.25, rel=0.05)
    assert found[(CELL_A, "throughput_ips", intel)].point.kind == "regression"
    b = found[(CELL_B, "latency_p50_ms", intel)].point
    assert (b.run_id, b.kind) == (RUNS[IMPROVED_RUN], "improvement")
    assert found[(CELL_A, "latency_p50_ms", intel)].when.day == STEP_RUN + 1


def test_change_table_lists_regressions_first(page: str) -> None:
    rows = _change_rows(page)
    kinds = [re.match(r'<tr class="cp (\w+)"', r).group(1) for r in rows]
    assert kinds == ["regression", "regression", "improvement", "improvement"]
    latency = next(r for r in rows if 'data-metric="latency_p50_ms"' in r and CELL_A in r)
    assert RUNS[STEP_RUN] in latency and "2025-01-07" in latency
    change = float(re.search(r">([+-]\d+(?:\.\d)?)%<", latency).group(1))
    assert 20 <= change <= 30
    assert 'href="#' in latency
    improvement = next(r for r in rows if 'data-metric="latency_p50_ms"' in r and CELL_B in r)
    assert RUNS[IMPROVED_RUN] in improvement and ">-" in improvement


def test_change_point_marked_on_its_figure(page: str) -> None:
    section = _section(page, CELL_A)
    assert f"regression at run {RUNS[STEP_RUN]}" in section
    assert "regression at run" not in _section(page, CELL_C)


def test_fingerprints_drawn_apart(page: str) -> None:
    section = _section(page, CELL_A)
    blocks = re.findall(r'<div class="hw" data-hardware="(\w+)"', section)
    assert len(blocks) == 2 and blocks[0] != blocks[1]
    assert "Intel(R) Xeon(R) Platinum 8480+" in section and OTHER_CPU in section
    div_ids = re.findall(r'<div id="([\w-]+)" class="plotly-graph-div"', section)
    assert len(div_ids) == 2
    # The latency line (first trace) holds each machine's own runs, never the other's.
    intel, amd = (figure_traces(section, d)[0] for d in div_ids)
    assert intel["customdata"] == RUNS and amd["customdata"] == OTHER_RUNS
    assert max(intel["y"]) < min(amd["y"])  # the slow machine did not pollute the fast line


def test_not_measured_runs_are_shown_with_their_reason(page: str) -> None:
    c = _section(page, CELL_C)
    assert "failed" in c and html.escape(FAIL_REASON) in c and "in 1 run(s)" in c
    div_id = re.search(r'<div id="([\w-]+)" class="plotly-graph-div"', c).group(1)
    markers = [t for t in figure_traces(c, div_id) if t.get("name") == "failed"]
    assert len(markers) == 1 and RUNS[FAILED_RUN] in markers[0]["customdata"][0]
    d = _section(page, CELL_D)
    assert "in 12 run(s)" in d and "in 3 run(s)" in d and html.escape(SKIP_REASON) in d
    assert "No ok run on this hardware" in d


def test_latency_has_confidence_whiskers(page: str) -> None:
    section = _section(page, CELL_C)
    div_id = re.search(r'<div id="([\w-]+)" class="plotly-graph-div"', section).group(1)
    line = figure_traces(section, div_id)[0]
    err = line["error_y"]
    assert err["array"][0] == pytest.approx(line["y"][0] * 0.04, rel=1e-6)
    assert err["arrayminus"][0] == pytest.approx(line["y"][0] * 0.03, rel=1e-6)


def test_filters_offer_each_value(page: str) -> None:
    for name, values in {
        "model": ["digits_cnn", "mobilenet_v2"],
        "backend": ["litert", "onnxruntime"],
        "method": ["fp32", "static_int8"],
        "device": ["local"],
    }.items():
        m = re.search(rf'<select data-dash-filter="{name}">(.*?)</select>', page)
        assert m, name
        assert re.findall(r'<option value="([^"]+)">', m.group(1)) == values
    hw = re.search(r'<select data-dash-filter="hardware">(.*?)</select>', page).group(1)
    assert OTHER_CPU in hw and hw.count("<option") == 3


def test_flat_store_has_no_change_point(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "store"
    for n, run_id in enumerate(RUNS):
        rows = [_ok("digits_cnn", "fp32", 0.5 * float(np.exp(0.02 * rng.standard_normal())), 0.97)]
        _write_run(root, run_id, T0 + timedelta(days=n), rows)
    page = build_dashboard_html(load_history(root), "flat")
    assert 'id="no-changes"' in page and '<table id="changes">' not in page


def test_write_dashboard_creates_parents(tmp_path: Path) -> None:
    store = write_history_store(tmp_path / "store")
    out = write_dashboard(store, tmp_path / "reports" / "deep" / "nightly.html")
    assert out == tmp_path / "reports" / "deep" / "nightly.html" and out.is_file()
    text = out.read_text(encoding="utf-8")
    assert "<title>qbench dashboard — store</title>" in text
    assert not list(out.parent.glob("*.tmp"))
    titled = write_dashboard(store, tmp_path / "t.html", title="Nightly <x>")
    assert "<title>Nightly &lt;x&gt;</title>" in titled.read_text(encoding="utf-8")


def test_empty_store_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(ValueError, match="no results"):
        write_dashboard(empty, tmp_path / "out.html")


def test_import_is_cheap() -> None:
    code = (
        "import sys, qbench.regress.dashboard; "
        "heavy = {'numpy', 'pandas', 'plotly', 'pyarrow'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_time_axis_spans_the_runs_even_with_an_empty_panel(tmp_path: Path) -> None:
    """A panel without values (the null backend has no accuracy) must not pull Plotly's
    default date range into the shared time axis (it once stretched it back to 1970)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "store"
    for n, run_id in enumerate(RUNS[:4]):
        p50 = 2.0 * float(np.exp(0.01 * rng.normal()))
        rows = [_row("digits_cnn", "fp32", "null", p50=p50, fp32_agreement=None)]
        _write_run(root, run_id, T0 + timedelta(days=n), rows)
    page = build_dashboard_html(load_history(root), title="null")
    assert "no values recorded" in page
    ids = re.findall(r'Plotly\.newPlot\(\s*"([^"]+)"', page)
    assert ids
    for div_id in ids:
        m = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
        assert m
        decoder = json.JSONDecoder()
        _, end = decoder.raw_decode(page, m.end())
        layout, _ = decoder.raw_decode(page, page.index("{", end))
        for axis in ("xaxis", "xaxis4"):
            low, high = (datetime.fromisoformat(t) for t in layout[axis]["range"])
            assert T0 - timedelta(days=1) < low < T0
            assert T0 + timedelta(days=3) < high < T0 + timedelta(days=4)


def test_accuracy_steps_only_within_one_metric_and_dataset() -> None:
    """A model moved to other evaluation data (sample_photos' agreement -> imagenet_samples'
    top-1) is no accuracy change; the same step on the same data is."""
    import pandas as pd

    from qbench.regress.dashboard import _series_changes

    wobble = [0.001 * (i % 3) for i in range(6)]
    moved = pd.DataFrame({
        "run_id": [f"r{i}" for i in range(12)],
        "accuracy": [0.60 + w for w in wobble] + [0.90 + w for w in wobble],
        "accuracy_metric": ["fp32_agreement"] * 6 + ["top1"] * 6,
        "accuracy_dataset": ["sample_photos"] * 6 + ["imagenet_samples"] * 6,
    })  # fmt: skip
    assert [p for p in _series_changes(moved) if p.metric == "accuracy"] == []
    same = moved.assign(accuracy_metric="top1", accuracy_dataset="imagenet_samples")
    steps = [p for p in _series_changes(same) if p.metric == "accuracy"]
    assert [(p.index, p.kind) for p in steps] == [(6, "improvement")]
