"""`qbench export`: the artifact a measured cell ran, byte for byte, with its metadata."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qbench.store.parquet import load
from tests.conftest import run_qbench, write_suite


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("export")
    suite = write_suite(
        tmp,
        """
        name: ship
        models: [digits_cnn]
        methods: [fp32, {name: dynamic_int8, params: {weight_type: int8, per_channel: true}}]
        backends: [onnxruntime, torch]
        measurement: {warmup: 1, min_iters: 5, min_seconds: 0.05, repeats: 1}
        accuracy: {samples: 100}
        """,
    )
    store = tmp / "store"
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, results = load(store)
    return {"tmp": tmp, "store": store, "results": results, "run": json.loads(proc.stdout)}


def test_a_cell_exports_the_bytes_it_measured(measured: dict[str, Any]) -> None:
    import onnxruntime as ort

    cell = "digits_cnn/dynamic_int8[per_channel=True,weight_type=int8]/onnxruntime/local/b1/t1"
    out = measured["tmp"] / "ship" / "digits_int8.onnx"
    proc = run_qbench("export", cell, "-o", str(out), "--store", str(measured["store"]))
    assert proc.returncode == 0, proc.stderr
    row = measured["results"].set_index("cell_id").loc[cell]
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest.startswith(row.artifact_sha256) and out.stat().st_size == row.artifact_bytes
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["artifact_sha256"] == digest and meta["cell_id"] == cell
    assert meta["method"] == "dynamic_int8" and meta["method_params"]["per_channel"] is True
    assert meta["measured"]["latency_p50_ms"] == pytest.approx(row.latency_p50_ms)
    # the user's runtime runs it: int8 kernels inside
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.zeros([1, *session.get_inputs()[0].shape[1:]], dtype=np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (1, 10)
    assert f"wrote {out}" in proc.stdout


def test_a_run_exports_every_ok_cell_into_a_folder(measured: dict[str, Any]) -> None:
    run_id = measured["run"]["run_id"]
    folder = measured["tmp"] / "all"
    proc = run_qbench("export", run_id, "-o", str(folder), "--store", str(measured["store"]))
    assert proc.returncode == 0, proc.stderr
    ok = measured["results"][measured["results"].status == "ok"]
    artifacts = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".json"))
    assert len(artifacts) == len(ok) and any(a.endswith(".pt") for a in artifacts)
    assert any(a.endswith(".onnx") for a in artifacts)


def test_export_names_what_is_missing_in_one_line(measured: dict[str, Any], tmp_path: Path) -> None:
    store = str(measured["store"])
    proc = run_qbench("export", "nosuch/cell", "-o", str(tmp_path / "x.onnx"), "--store", store)
    assert proc.returncode == 2 and "has no run or cell named 'nosuch/cell'" in proc.stderr
    skipped = measured["results"][measured["results"].status == "skipped"]
    if len(skipped):
        cell = skipped.iloc[0].cell_id
        proc = run_qbench("export", cell, "-o", str(tmp_path / "x"), "--store", store)
        assert proc.returncode == 2 and "has no ok row" in proc.stderr
    # an empty cache (another machine, or cleared): the file is not there to ship
    env_cache = os.environ["QBENCH_CACHE_DIR"]
    os.environ["QBENCH_CACHE_DIR"] = str(tmp_path / "empty-cache")
    try:
        cell = "digits_cnn/fp32/onnxruntime/local/b1/t1"
        proc = run_qbench("export", cell, "-o", str(tmp_path / "x.onnx"), "--store", store)
    finally:
        os.environ["QBENCH_CACHE_DIR"] = env_cache
    assert proc.returncode == 2 and "is not in this machine's cache" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.onnx").exists()
