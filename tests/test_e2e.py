"""`qbench run` end to end on the digits CNN: real training, real ORT and torch sessions, real
held-out data, the store and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from qbench.hostinfo import cpu_info
from qbench.quant.saturation import u8s8_saturates
from tests.conftest import run_qbench, write_suite


@pytest.mark.slow
def test_digits_suite_end_to_end(tmp_path: Path) -> None:
    suite = write_suite(
        tmp_path,
        """
        name: digits-e2e
        models: [digits_cnn]
        methods: [fp32, static_int8]
        backends: [onnxruntime, torch]
        measurement: {warmup: 5, min_iters: 30, min_seconds: 0.1, timeout_s: 300}
        calibration: {samples: 64}
    """,
    )
    store, report = tmp_path / "store", tmp_path / "reports" / "digits.html"
    proc = run_qbench("run", str(suite), "--store", str(store), "--report", str(report), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["counts"] == {"ok": 4, "failed": 0, "timeout": 0, "skipped": 0}

    rows = pd.read_parquet(store / "results").set_index(["method", "backend"])
    assert set(rows.status) == {"ok"}
    for backend in ("onnxruntime", "torch"):
        fp32, int8 = rows.loc[("fp32", backend)], rows.loc[("static_int8", backend)]
        assert fp32.top1 >= 0.97
        assert abs(int8.top1 - fp32.top1) <= 0.01
        assert fp32.accuracy_samples == fp32.accuracy_groups == 360  # the whole held-out split
        assert fp32.top1_ci_low < fp32.top1 <= fp32.top1_ci_high <= 1.0
        assert int8.fp32_agreement_ci_low < int8.fp32_agreement <= int8.fp32_agreement_ci_high
        assert fp32.fp32_agreement == 1.0 and fp32.output_sqnr_db > 60
        assert int8.quantized_nodes == int8.compute_nodes > 0
        # torch's int8 artifact is a PT2E program: its graph (about 100 kB of JSON) outweighs
        # this 93k-parameter model's int8 weights; its packed weights are a quarter of fp32's
        assert int8.artifact_bytes < fp32.artifact_bytes * (
            0.5 if backend == "onnxruntime" else 0.6
        )
        assert int8.packed_bytes < fp32.packed_bytes / 3
        # 7-bit ONNX weights where this CPU's u8s8 kernels saturate (asked of the probe)
        seven = backend == "onnxruntime" and u8s8_saturates(cpu_info()["cpu_flags"])
        assert int8.execution == "native" and int8.bits_w == (7 if seven else 8)
        assert int8.calib_samples == 64 and int8.calib_sha256
        assert fp32.latency_p50_ms > 0 and fp32.peak_rss_mb > 0
        assert fp32.latency_ci_low_ms <= fp32.latency_p50_ms <= fp32.latency_ci_high_ms
        assert len(fp32.latency_samples_ms) == fp32.iters >= 30

    runs = pd.read_parquet(store / "runs")
    assert runs.suite.tolist() == ["digits-e2e"]
    assert json.loads(runs.packages_json.iloc[0])["onnxruntime"]
    assert runs.cpu_model.iloc[0]

    html = report.read_text()
    for cell_id in doc["rows"]:
        assert f'data-cell-id="{cell_id["cell_id"]}"' in html

    # Second run reuses the cached artifacts (no re-quantization).
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report", "--json")
    assert proc.returncode == 0, proc.stderr
    results = pd.read_parquet(store / "results")
    latest = results[results.run_id == json.loads(proc.stdout)["run_id"]]
    assert latest.artifact_cached.all()
    assert len(results) == 8
