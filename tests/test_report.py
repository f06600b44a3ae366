"""qbench.report: Pareto front, speedups, and the page built from a synthetic store."""

from __future__ import annotations

import html
import json
import math
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qbench.report import build_report_html, write_report
from qbench.report.data import compute_speedups, latest_per_cell, prepare, split_cell_id
from qbench.report.pareto import pareto_front
from qbench.store.parquet import RunWriter, load

RUN_1 = "20250101T100000Z-aaaaaa"
RUN_2 = "20250102T100000Z-bbbbbb"
T0 = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)


def _run(run_id: str, started: datetime, host: str = "bench-1") -> dict[str, Any]:
    return {
        "run_id": run_id,
        "suite": "cnn",
        "suite_path": "suites/cnn.yaml",
        "suite_sha256": "ab" * 32,
        "started_at": started,
        "git_sha": "0123abc+dirty",
        "host": host,
        "cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
        "cpu_flags": ["avx2", "fma", "avx512f", "avx512_vnni", "amx_int8"],
        "cores_logical": 16,
        "cores_physical": 8,
        "ram_gb": 125.7,
        "os": "Linux 6.1.0-18-amd64",
        "python": "3.11.9",
        "packages_json": json.dumps({"onnxruntime": "1.20.1", "torch": "2.13.0"}),
    }


def _row(
    model: str,
    method: str,
    backend: str,
    status: str = "ok",
    *,
    mparams: str = "",
    device: str = "local",
    batch: int = 1,
    threads: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    method_part = f"{method}[{mparams}]" if mparams else method
    int8 = method == "static_int8"
    row: dict[str, Any] = {
        "cell_id": f"{model}/{method_part}/{backend}/{device}/b{batch}/t{threads}",
        "suite": "cnn",
        "model": model,
        "method": method,
        "method_params_json": json.dumps({"per_channel": "per_channel" in mparams}),
        "bits_w": 8 if int8 else 32,
        "bits_a": 8 if int8 else 32,
        "backend": backend,
        "device": device,
        "device_kind": "cpu",
        "transport": "subprocess",
        "batch": batch,
        "threads": threads,
        "status": status,
        "artifact_format": "onnx" if backend == "onnxruntime" else "torch",
        "started_at": T0 + timedelta(minutes=len(model) + len(method_part) + len(backend)),
    }
    if status == "ok":
        p50 = extra.pop("p50")
        row.update(
            {
                "execution": "native",
                "latency_p50_ms": p50,
                "latency_p90_ms": p50 * 1.1,
                "latency_p99_ms": p50 * 1.3,
                "latency_mean_ms": p50 * 1.02,
                "throughput_ips": batch / (p50 * 1.02) * 1000,
                "load_s": 0.05,
                "peak_rss_mb": 310.0,
                "artifact_bytes": 4_000_000 if int8 else 16_000_000,
                "quantized_nodes": 5 if int8 else 0,
                "compute_nodes": 5,
                "fp32_agreement": 1.0 if not int8 else 0.98,
                "output_sqnr_db": None if not int8 else 31.5,
                "notes": [],
            }
        )
    row.update(extra)
    return row


def synthetic_rows() -> list[dict[str, Any]]:
    """Two models × fp32/static_int8 × onnxruntime/torch_eager, plus every kind of outcome."""
    return [
        _row("digits_cnn", "fp32", "onnxruntime", p50=0.5, top1=0.97),
        _row("digits_cnn", "static_int8", "onnxruntime", p50=0.25, top1=0.965),
        _row(
            "digits_cnn",
            "static_int8",
            "onnxruntime",
            mparams="per_channel=True",
            p50=0.3125,
            top1=0.968,
        ),
        _row("digits_cnn", "fp32", "torch_eager", p50=0.8, top1=0.97),
        _row(
            "digits_cnn",
            "static_int8",
            "torch_eager",
            p50=0.9,
            top1=0.96,
            execution="simulated",
            notes=["fake-quant: float kernels"],
        ),
        _row("mobilenet_v2", "fp32", "onnxruntime", p50=8.0),
        _row("mobilenet_v2", "static_int8", "onnxruntime", p50=3.2, fp32_agreement=0.9),
        _row("mobilenet_v2", "fp32", "torch_eager", p50=10.0),
        _row(
            "mobilenet_v2",
            "static_int8",
            "torch_eager",
            "failed",
            execution="native",
            error="RuntimeError: quantized::conv2d found no engine for this CPU",
        ),
        _row(
            "mobilenet_v2",
            "static_int8",
            "onnxruntime",
            "timeout",
            mparams="per_channel=True",
            execution="native",
            error="cell exceeded its 600 s timeout",
        ),
        _row(
            "digits_cnn",
            "fp32",
            "torch_eager",
            "skipped",
            device="phone",
            error="device phone has no backend torch_eager (it has: onnxruntime)",
        ),
    ]


def write_store(
    root: Path,
    rows: list[dict[str, Any]] | None = None,
    *,
    run_id: str = RUN_1,
    started: datetime = T0,
) -> Path:
    writer = RunWriter(root, _run(run_id, started))
    for row in synthetic_rows() if rows is None else rows:
        writer.append(row)
    writer.finish(
        finished_at=started + timedelta(hours=1), cells_total=len(writer.rows), cells_excluded=0
    )
    return root


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return write_store(tmp_path / "store")


@pytest.fixture
def page(store: Path) -> str:
    runs, results = load(store)
    return build_report_html(runs, results, title="synthetic")


# --- Pareto front ----------------------------------------------------------------------------


def test_pareto_front_known_answer() -> None:
    # (latency, accuracy): lower latency and higher accuracy are better.
    xs = [1.0, 2.0, 3.0, 1.5, 4.0, 2.5, 3.0]
    ys = [0.70, 0.80, 0.90, 0.65, 0.85, 0.80, 0.90]
    # 3 is dominated by 0 (slower, less accurate); 4 by 2; 5 by 1; 6 duplicates 2.
    assert pareto_front(xs, ys) == [0, 1, 2]


def test_pareto_front_edge_cases() -> None:
    assert pareto_front([], []) == []
    assert pareto_front([5.0], [0.5]) == [0]
    # Same latency: only the more accurate survives. Missing values are ignored.
    assert pareto_front([1.0, 1.0, 2.0], [0.5, 0.6, 0.7]) == [1, 2]
    assert pareto_front([1.0, math.nan, 0.5, None], [0.5, 0.9, None, 0.99]) == [0]
    # Returned in order of increasing latency, whatever the input order.
    assert pareto_front([3.0, 1.0, 2.0], [0.9, 0.7, 0.8]) == [1, 2, 0]
    with pytest.raises(ValueError):
        pareto_front([1.0], [])


# --- speedup ---------------------------------------------------------------------------------


def _by_cell(df: Any, values: Any) -> dict[str, float]:
    return dict(zip(df["cell_id"], values, strict=True))


def test_speedups_exact(store: Path) -> None:
    _, results = load(store)
    got = _by_cell(results, compute_speedups(results))
    assert got["digits_cnn/fp32/onnxruntime/local/b1/t1"] == 1.0
    assert got["digits_cnn/static_int8/onnxruntime/local/b1/t1"] == 0.5 / 0.25 == 2.0
    assert got["digits_cnn/static_int8[per_channel=True]/onnxruntime/local/b1/t1"] == 0.5 / 0.3125
    assert got["mobilenet_v2/static_int8/onnxruntime/local/b1/t1"] == 8.0 / 3.2
    assert got["mobilenet_v2/static_int8/onnxruntime/local/b1/t1"] == pytest.approx(2.5)
    assert got["digits_cnn/fp32/torch_eager/local/b1/t1"] == 1.0
    # Simulated, failed, timed-out and skipped cells get no speedup.
    for cid in (
        "digits_cnn/static_int8/torch_eager/local/b1/t1",
        "mobilenet_v2/static_int8/torch_eager/local/b1/t1",
        "mobilenet_v2/static_int8[per_channel=True]/onnxruntime/local/b1/t1",
        "digits_cnn/fp32/torch_eager/phone/b1/t1",
    ):
        assert math.isnan(got[cid]), cid


def test_speedup_prefers_same_run_and_falls_back_to_latest(tmp_path: Path) -> None:
    root = tmp_path / "store"
    write_store(root)
    later = [
        _row("digits_cnn", "static_int8", "onnxruntime", p50=0.2, top1=0.965),
        _row("mobilenet_v2", "fp32", "onnxruntime", p50=6.4),
        _row("mobilenet_v2", "static_int8", "onnxruntime", p50=3.2),
    ]
    write_store(root, later, run_id=RUN_2, started=T0 + timedelta(days=1))
    _, results = load(root)
    df = prepare(results)
    run2 = df[df["run_id"] == RUN_2]
    got = _by_cell(run2, run2["speedup"])
    assert got["mobilenet_v2/static_int8/onnxruntime/local/b1/t1"] == 6.4 / 3.2  # same run
    assert got["digits_cnn/static_int8/onnxruntime/local/b1/t1"] == 0.5 / 0.2  # run 1's fp32
    latest = latest_per_cell(df)
    assert len(latest) == df["cell_id"].nunique()
    row = latest[latest["cell_id"] == "digits_cnn/static_int8/onnxruntime/local/b1/t1"]
    assert row["run_id"].tolist() == [RUN_2]


def test_split_cell_id_keeps_parameters() -> None:
    assert split_cell_id(
        "m/static_int8[per_channel=True]/onnxruntime[opt=all]/cpu/b1/t4",
        "m",
        "onnxruntime",
        "cpu",
        1,
        4.0,
    ) == ("static_int8[per_channel=True]", "onnxruntime[opt=all]")
    assert split_cell_id("a/b/fp32/torch/dev/b8/t1", "a/b", "torch", "dev", 8, 1) == (
        "fp32",
        "torch",
    )
    assert split_cell_id("other", "m", "torch", "dev", 1, 1) == (None, None)


# --- the page --------------------------------------------------------------------------------


def test_plotly_inlined_once_and_no_network(page: str) -> None:
    import plotly.offline

    banner = plotly.offline.get_plotlyjs()[:200].split("*/")[0]
    assert "plotly.js v" in banner
    assert page.count(banner) == 1
    assert page.count("plotly.js v") == 1
    refs = re.findall(
        r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?([^\"' >]+)",
        page,
        flags=re.I,
    )
    assert all(not r.lower().startswith(("http:", "https:", "//")) for r in refs), refs
    assert not re.search(r"@import|@font-face|url\(\s*[\"']?https?:", page.split("<script>")[0])
    assert page.count('class="plotly-graph-div"') >= 3


def _table(page: str) -> str:
    start = page.index('<table id="results">')
    return page[start : page.index("</table>", start)]


def test_every_cell_and_reason_in_table(page: str) -> None:
    table = _table(page)
    rows = synthetic_rows()
    for row in rows:
        assert f'data-cell-id="{html.escape(row["cell_id"])}"' in table, row["cell_id"]
        if row.get("error"):
            assert html.escape(row["error"]) in table
    assert table.count("<tr data-cell-id=") == len(rows)
    for status in ("ok", "failed", "timeout", "skipped"):
        assert f'<span class="badge {status}">{status}</span>' in table
    assert "ok: 8" in page and "failed: 1" in page and "timeout: 1" in page
    assert "skipped: 1" in page


def test_no_nan_and_simulated_is_not_a_speedup(page: str) -> None:
    body = page[page.index("<body>") :]
    text = re.sub(r"<script>.*?</script>", "", body, flags=re.S)
    assert not re.search(r"\bnan\b", text, flags=re.I)
    table = _table(page)
    sim = re.search(
        r'<tr data-cell-id="digits_cnn/static_int8/torch_eager/local/b1/t1".*?</tr>', table
    ).group(0)
    assert "simulated" in sim and "simulated: not a speedup" in sim
    assert "×" not in sim  # no speedup figure for a simulated cell
    ok = re.search(
        r'<tr data-cell-id="digits_cnn/static_int8/onnxruntime/local/b1/t1".*?</tr>', table
    ).group(0)
    assert "2.00×" in ok


def test_hosts_and_header(page: str) -> None:
    assert "Intel(R) Xeon(R) Platinum 8480+" in page
    assert "avx512_vnni" in page and "0123abc+dirty" in page
    assert "&quot;onnxruntime&quot;: &quot;1.20.1&quot;" in page  # pretty-printed JSON
    assert RUN_1 in page and "2025-01-01 10:00 UTC" in page


def test_write_report(tmp_path: Path, store: Path) -> None:
    out = write_report(store, tmp_path / "deep" / "dir" / "report.html")
    assert out.is_file() and out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    empty = tmp_path / "empty"
    write_store(empty, [], run_id=RUN_2)
    with pytest.raises(ValueError, match="no results"):
        write_report(empty, tmp_path / "x.html")


def test_several_runs_table_lists_all_rows(tmp_path: Path) -> None:
    root = write_store(tmp_path / "store")
    again = [_row("digits_cnn", "fp32", "onnxruntime", p50=0.45, top1=0.97)]
    write_store(root, again, run_id=RUN_2, started=T0 + timedelta(days=1))
    page = build_report_html(*load(root))
    table = _table(page)
    assert table.count('data-cell-id="digits_cnn/fp32/onnxruntime/local/b1/t1"') == 2
    assert f'data-run-id="{RUN_2}"' in table and "latest row of each cell" in page
    assert page.index(RUN_2) < page.index(RUN_1)  # latest run first


def test_import_is_cheap() -> None:
    code = (
        "import sys, qbench.report; "
        "assert not {'pandas', 'plotly', 'pyarrow'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_accuracy_chart_colours_methods_and_marks_backends(store: Path) -> None:
    """One panel per model, x = speed-up over the best fp32 of any backend, colour = method,
    symbol = backend, one metric per panel's axis; simulated cells are left out."""
    from qbench.report.charts import accuracy_charts
    from qbench.report.data import latest_per_cell, prepare
    from qbench.store.parquet import load

    latest = latest_per_cell(prepare(load(store)[1]))
    ok = latest[latest["status"] == "ok"]
    (chart,) = accuracy_charts(ok)
    traces = chart.html.split("Plotly.newPlot(", 1)[1].split(",", 1)[1].lstrip()
    figure, _ = json.JSONDecoder().raw_decode(traces)
    markers = [t for t in figure if t.get("mode") == "markers"]
    assert {t["name"] for t in markers} == {"fp32 · onnxruntime", "fp32 · torch_eager",
        "static_int8 · onnxruntime", "static_int8[per_channel=True] · onnxruntime"}  # fmt: skip
    # panel 1 (x axis "x") is digits_cnn, whose best fp32 is ORT's 0.5 ms: torch fp32 (0.8 ms)
    # sits at 0.625; panel 2 is mobilenet_v2 (ORT fp32 8 ms, torch 10 ms: 0.8)
    digits = {t["name"]: t for t in markers if t["xaxis"] == "x"}
    mobile = {t["name"]: t for t in markers if t["xaxis"] == "x2"}
    assert digits["fp32 · torch_eager"]["x"] == [0.625] and mobile["fp32 · torch_eager"]["x"] == [
        0.8
    ]
    assert sorted(digits["static_int8 · onnxruntime"]["x"]) == [2.0]
    assert mobile["static_int8 · onnxruntime"]["x"] == [2.5]
    symbol = {t["name"]: t["marker"]["symbol"] for t in markers}
    assert symbol["fp32 · onnxruntime"] == symbol["static_int8 · onnxruntime"]
    assert symbol["fp32 · onnxruntime"] != symbol["fp32 · torch_eager"]
    colour = {t["name"]: t["marker"]["color"] for t in markers}
    assert colour["fp32 · onnxruntime"] == colour["fp32 · torch_eager"]
    assert colour["fp32 · onnxruntime"] != colour["static_int8 · onnxruntime"]
    assert "1 simulated cell(s) are left out" in chart.caption
    assert '"text":"top-1"' in chart.html and '"text":"agreement with fp32"' in chart.html


def test_accuracy_intervals_in_table_and_chart(tmp_path: Path) -> None:
    """A row's 95% accuracy interval shows under its value in the table and as the error bar
    of its point in the accuracy chart; a row without one gets neither."""
    from qbench.report.charts import accuracy_charts
    from qbench.report.data import latest_per_cell, prepare
    from qbench.store.parquet import load

    rows = [
        _row("mobilenet_v2", "fp32", "onnxruntime", p50=8.0),
        _row("mobilenet_v2", "static_int8", "onnxruntime", p50=3.2, fp32_agreement=0.9,
             fp32_agreement_ci_low=0.819, fp32_agreement_ci_high=0.97, accuracy_groups=17),
        _row("digits_cnn", "fp32", "onnxruntime", p50=0.5, top1=0.97, top1_ci_low=0.952,
             top1_ci_high=0.981),
    ]  # fmt: skip
    store = write_store(tmp_path / "store", rows)
    runs, results = load(store)
    html = build_report_html(runs, results, title="intervals")
    assert '<span class="ci" title="95% interval">81.9–97.0</span>' in html
    assert '<span class="ci" title="95% interval">95.2–98.1</span>' in html
    assert html.count('class="ci"') == 2  # the fp32 rows without intervals show none

    latest = latest_per_cell(prepare(results))
    assert latest["accuracy_ci_low"].notna().sum() == 2
    chart = accuracy_charts(latest[latest["status"] == "ok"])[0].html
    import re

    bars = re.findall(r'"arrayminus":\[([^\]]*)\]', chart)
    assert sorted(bars) == ["0.018000000000000016", "0.08100000000000007", "null"]
    assert "95% interval 81.9\\u201397.0%" in chart  # Plotly's JSON escapes the en dash
