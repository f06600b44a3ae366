"""Cells run in child processes: a crash, a hang or an exception ends up in that cell's row and
the run goes on; rows already measured are never lost."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_qbench, write_suite


# slow: 20 s of hang timeouts; tests/test_faults.py covers crash and raise in the default run
@pytest.mark.slow
def test_crash_hang_and_raise_do_not_stop_the_run(tmp_path: Path, tiny_onnx: Path) -> None:
    suite = write_suite(
        tmp_path,
        f"""
        name: faults
        models:
          - name: onnx_file
            label: tiny
            params: {{path: {tiny_onnx}, dataset: digits}}
        methods: [fp32]
        backends:
          - name: faulty
            params: {{mode: [crash, hang, raise]}}
          - onnxruntime
        measurement: {{warmup: 2, min_iters: 10, min_seconds: 0.05, timeout_s: 12}}
        accuracy: {{samples: 50}}
    """,
    )
    store = tmp_path / "store"
    proc = run_qbench(
        "run",
        str(suite),
        "--store",
        str(store),
        "--no-report",
        "--json",
        plugins="tests.plugins.faulty",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["counts"] == {"ok": 1, "failed": 2, "timeout": 1, "skipped": 0}

    results = pd.read_parquet(store / "results")
    by_id = results.set_index("cell_id")
    crash = by_id.loc["tiny/fp32/faulty[mode=crash]/local/b1/t1"]
    assert crash.status == "failed"
    assert "killed by SIGABRT" in crash.error
    hang = by_id.loc["tiny/fp32/faulty[mode=hang]/local/b1/t1"]
    assert hang.status == "timeout"
    assert "exceeded the cell's time limit" in hang.error
    raised = by_id.loc["tiny/fp32/faulty[mode=raise]/local/b1/t1"]
    assert raised.status == "failed"
    assert raised.error == "measure: RuntimeError: faulty backend raised on purpose"
    for row in (crash, hang, raised):  # nothing ran to be native or simulated
        assert row.execution is None or pd.isna(row.execution)
        assert "execution empty: the cell did not finish (planned: native)" in list(row.notes)
    ok = by_id.loc["tiny/fp32/onnxruntime/local/b1/t1"]
    assert ok.status == "ok"
    assert ok.latency_p50_ms > 0
    assert len(ok.latency_samples_ms) == ok.iters >= 10
    assert ok.fp32_agreement == 1.0
    assert 0 <= ok.top1 <= 1


def test_interrupted_run_keeps_measured_rows(tmp_path: Path, tiny_onnx: Path) -> None:
    """Kill the parent while a cell hangs: the rows measured before it survive."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    suite = write_suite(
        tmp_path,
        f"""
        name: killed
        models:
          - name: onnx_file
            label: tiny
            params: {{path: {tiny_onnx}, dataset: digits}}
        methods: [fp32]
        backends: [onnxruntime, {{name: faulty, params: {{mode: hang}}}}]
        measurement: {{warmup: 2, min_iters: 10, min_seconds: 0.05, timeout_s: 600}}
        accuracy: {{samples: 50}}
    """,
    )
    store = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=str(REPO), QBENCH_PLUGINS="tests.plugins.faulty")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qbench.cli",
            "run",
            str(suite),
            "--store",
            str(store),
            "--quiet",
            "--no-report",
        ],
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    journal = store / "journal"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the first row is journalled
        files = list(journal.glob("*.jsonl")) if journal.exists() else []
        if files and '"kind": "result"' in files[0].read_text():
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    from qbench.store.parquet import load, recover_journals

    runs, results = load(store)  # a reader: shows the killed run's rows, writes nothing
    assert list(results.cell_id) == ["tiny/fp32/onnxruntime/local/b1/t1"]
    assert results.status.iloc[0] == "ok"
    assert runs.finished_at.isna().all()
    assert list(runs.run_state) == ["interrupted"]
    assert list(journal.glob("*.jsonl"))
    assert recover_journals(store)  # what the next run does first: the journal becomes Parquet
    assert not list(journal.glob("*.jsonl"))
    runs, results = load(store)
    assert list(results.cell_id) == ["tiny/fp32/onnxruntime/local/b1/t1"]
