"""`qbench tune` on the digits CNN: its screen's pruning rules, the budget judged at the lower
bound, the time budget, every trial in the store, and a winner suite that reproduces the
winner's cell and artifact."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from qbench.cli_tune import duration
from qbench.report.data import prepare, time_per_input
from qbench.store.parquet import load
from qbench.tune.search import (
    CLOSE_FP32,
    KEPT,
    REFERENCE,
    SURVIVES,
    Trial,
    nothing_qualifies,
    screen_verdicts,
)
from tests.conftest import make_tiny_onnx, run_qbench, write_suite
from tests.test_cli_exit_codes import _reshape_to_65
from tests.test_report import _row


def _screen(rows: list[dict[str, Any]]) -> dict[str, str]:
    df = prepare(pd.DataFrame(rows))
    df["_ms"] = time_per_input(df)
    return screen_verdicts(df, 0.01)


def test_the_screen_prunes_what_cannot_win() -> None:
    def ci(top1: float, low: float, high: float) -> dict[str, Any]:
        return {"top1": top1, "top1_ci_low": low, "top1_ci_high": high, "accuracy_samples": 64}

    verdicts = _screen([
        _row("digits_cnn", "fp32", "onnxruntime", p50=0.5, **ci(0.97, 0.89, 0.99)),
        _row("digits_cnn", "fp32", "torch", p50=0.8, **ci(0.97, 0.89, 0.99)),
        _row("digits_cnn", "fp32", "litert", p50=0.55, **ci(0.97, 0.89, 0.99)),
        # fast, and its upper bound (0.93) is below 0.96: it fails on any number of inputs
        _row("digits_cnn", "static_int8", "onnxruntime", p50=0.2, **ci(0.80, 0.69, 0.93)),
        # a wide interval that reaches the budget: kept for the full evaluation
        _row("digits_cnn", "dynamic_int8", "onnxruntime", p50=0.3, **ci(0.90, 0.80, 0.965)),
        _row("digits_cnn", "static_int8", "torch", p50=0.1, execution="simulated",
             **ci(0.97, 0.89, 0.99)),
        _row("digits_cnn", "fp16", "onnxruntime", p50=0.55, **ci(0.97, 0.89, 0.99)),
        _row("digits_cnn", "bf16", "onnxruntime", "skipped", error="no bf16 kernels"),
    ])  # fmt: skip
    cell = "digits_cnn/{}/local/b1/t1".format
    assert verdicts[cell("fp32/onnxruntime")] == REFERENCE
    assert verdicts[cell("fp32/torch")].startswith("pruned: fp32, slower than the reference")
    assert verdicts[cell("fp32/litert")] == CLOSE_FP32  # 10% slower: the full run decides
    assert "95% upper bound 0.930 < 0.960" in verdicts[cell("static_int8/onnxruntime")]
    assert "on 64 screen inputs" in verdicts[cell("static_int8/onnxruntime")]
    assert verdicts[cell("dynamic_int8/onnxruntime")] == SURVIVES
    assert verdicts[cell("static_int8/torch")].startswith("pruned: simulated")
    assert verdicts[cell("fp16/onnxruntime")].startswith("pruned: not faster than the best fp32")
    assert verdicts[cell("bf16/onnxruntime")] == "skipped: no bf16 kernels"


def test_time_budgets_read_as_durations() -> None:
    assert duration("30m") == 1800 and duration("1h30m") == 5400 and duration("90s") == 90
    assert duration("45") == 45 and duration("0.5h") == 1800
    for bad in ("", "soon", "0s", "-5m"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)


DIGITS = """
    name: digits-tune
    models: [digits_cnn]
    accuracy: {samples: 240}
    calibration: {samples: 64}
    measurement: {warmup: 2, min_iters: 20, min_seconds: 0.1, repeats: 2}
"""


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("tune")
    suite = write_suite(tmp, DIGITS, "digits.yaml")
    store, winner = tmp / "store", tmp / "winner.yaml"
    proc = run_qbench("tune", str(suite), "--methods", "fp32,fp16,static_int8",
                      "--backends", "onnxruntime", "--budget", "0.02", "--rounds", "3",
                      "--screen-samples", "48",
                      "--store", str(store), "--report", str(tmp / "tune.html"),
                      "--suite-out", str(winner), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"doc": json.loads(proc.stdout), "store": store, "winner": winner, "tmp": tmp}


# slow: a whole tune (screen, full run, finals: 50 s)
@pytest.mark.slow
def test_every_trial_is_a_row_and_the_winner_meets_the_budget(tuned: dict[str, Any]) -> None:
    doc, store = tuned["doc"], tuned["store"]
    runs, results = load(store)
    assert set(runs.run_id) == {doc["runs"]["screen"], doc["runs"]["full"]}
    screen = results[results.run_id == doc["runs"]["screen"]]
    full = results[results.run_id == doc["runs"]["full"]]
    # fp32, fp16 (simulated on ORT's CPU EP: pruned) and 2x2 static_int8: every one is a row
    # of the screen
    assert len(screen) == 6 and (screen.status == "ok").all()
    verdicts = {t["cell_id"]: t["verdict"] for t in doc["trials"] if t["stage"] == "screen"}
    assert set(verdicts) == set(screen.cell_id)
    assert verdicts["digits_cnn/fp16/onnxruntime/local/b1/t1"].startswith("pruned: simulated")
    survivors = {c for c, v in verdicts.items() if v in KEPT}
    assert set(full.cell_id) == survivors and len(survivors) >= 2
    assert sum(v == REFERENCE for v in verdicts.values()) == 1
    assert all(s.accuracy_samples == 48 for s in screen.itertuples() if s.status == "ok")
    assert all(f.accuracy_samples == 240 for f in full.itertuples() if f.status == "ok")
    winner = doc["winner"]
    row = full[full.cell_id == winner["cell_id"]].iloc[0]
    reference = full[full.cell_id == doc["reference"]["cell_id"]].iloc[0]
    # the budget, judged at the interval's lower bound, for every cell of the full run
    for t in doc["trials"]:
        if t["stage"] == "full" and t["status"] == "ok":
            cell = full[full.cell_id == t["cell_id"]].iloc[0]
            meets = cell.method == "fp32" or cell.top1_ci_low >= reference.top1 - 0.02 - 1e-12
            assert (t["verdict"] == "meets the budget") == meets, t
    assert [t["verdict"] for t in doc["trials"] if t["cell_id"] == winner["cell_id"]][-1] == (
        "meets the budget"
    )
    assert row.execution == "native"
    assert winner["speedup"] == pytest.approx(reference.latency_p50_ms / row.latency_p50_ms)
    assert doc["pareto"] and doc["pareto"][0]["ms_per_input"] <= winner["ms_per_input"]
    # the cells that miss the budget say by how much
    full_verdicts = [t["verdict"] for t in doc["trials"] if t["stage"] == "full"]
    assert all(v == "meets the budget" or v.startswith(("misses", "failed")) for v in full_verdicts)
    assert 'id="summary"' in (tuned["tmp"] / "tune.html").read_text()


# slow: reruns the tune's winner
@pytest.mark.slow
def test_the_winner_suite_reproduces_the_winner(tuned: dict[str, Any]) -> None:
    doc, tmp = tuned["doc"], tuned["tmp"]
    again = tmp / "again"
    proc = run_qbench("run", str(tuned["winner"]), "--store", str(again), "--no-report", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(proc.stdout)["rows"]
    assert row["cell_id"] == doc["winner"]["cell_id"] and row["status"] == "ok"
    _, results = load(again)
    assert results.iloc[0].artifact_sha256 == doc["winner"]["artifact_sha256"]


# slow: 9 s; the default run is near its 15-minute budget
@pytest.mark.slow
def test_a_spent_time_budget_skips_the_rest_with_the_reason(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, DIGITS, "digits.yaml")
    proc = run_qbench("tune", str(suite), "--methods", "fp32,dynamic_int8", "--backends",
                      "onnxruntime", "--time-budget", "1s", "--store", str(tmp_path / "s"),
                      "--report", str(tmp_path / "t.html"), "--json")  # fmt: skip
    assert proc.returncode == 4, proc.stderr[-3000:]  # no result (README: exit codes)
    doc = json.loads(proc.stdout)
    assert doc["winner"] is None and "time budget" in doc["why"]
    _, results = load(tmp_path / "s")
    skipped = results[results.status == "skipped"]
    assert len(results) == 5 and len(skipped) == 4  # the first cell ran, then time was up
    assert skipped.error.str.contains(r"time budget \(1s\) was spent").all()


def test_tune_names_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    two = write_suite(tmp_path, "name: two\nmodels: [digits_cnn, mobilenet_v2]\n", "two.yaml")
    proc = run_qbench("tune", str(two), "--store", str(tmp_path / "s"))
    assert proc.returncode == 2 and "lists 2 models; tune takes one" in proc.stderr
    proc = run_qbench("tune", "digits_cnn", "--methods", "fp32,nosuch", "--store",
                      str(tmp_path / "s"))  # fmt: skip
    assert proc.returncode == 2 and "--methods: no such member 'nosuch'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_nothing_qualifies_on_synthetic_data_says_so_and_keeps_the_rows(tmp_path: Path) -> None:
    """A user's ONNX model with `--data synthetic`: random inputs give no accuracy, so no
    configuration can be judged against the budget (once an IndexError traceback)."""
    make_tiny_onnx(tmp_path / "tiny.onnx")
    store = tmp_path / "s"
    proc = run_qbench("tune", "tiny.onnx", "--data", "synthetic", "--methods", "fp32",
                      "--backends", "onnxruntime", "--time-budget", "2m", "--store", str(store),
                      "--report", str(tmp_path / "t.html"), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("nothing qualifies")]
    assert "synthetic data leaves no accuracy to judge" in line and "--data" in line
    runs, results = load(store)  # the screen's rows stay in the store
    assert len(runs) == 1 and list(results.status) == ["ok"]
    assert (tmp_path / "t.html").is_file()


def test_nothing_qualifies_when_every_cell_fails_names_them(tmp_path: Path) -> None:
    bad = _reshape_to_65(tmp_path / "bad.onnx")  # plans, then fails whenever it runs
    suite = write_suite(tmp_path, f"""
        name: bad-tune
        models: [{{name: onnx_file, params: {{path: {bad}, dataset: digits}}}}]
        accuracy: {{samples: 20}}
        measurement: {{warmup: 2, min_iters: 10, min_seconds: 0.05, timeout_s: 120}}
    """)  # fmt: skip
    proc = run_qbench("tune", str(suite), "--methods", "fp32", "--backends", "onnxruntime",
                      "--store", str(tmp_path / "s"), "--report", str(tmp_path / "t.html"),
                      "--json")  # fmt: skip
    assert proc.returncode == 4, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["winner"] is None and doc["suite_file"] is None
    assert doc["why"].startswith("no cell survived the screen; 1 cell failed or timed out "
                                 "(bad/fp32/onnxruntime/local/b1/t1)")  # fmt: skip
    (trial,) = doc["trials"]
    assert trial["status"] == "failed" and "Reshape" in trial["verdict"]
    _, results = load(tmp_path / "s")
    assert list(results.status) == ["failed"]


def test_the_reason_counts_failures_budget_misses_and_skips_by_last_verdict() -> None:
    trials = [
        Trial("a/fp32", "screen", "ok", REFERENCE),
        Trial("a/int8", "screen", "ok", SURVIVES),
        Trial("a/int8", "full", "ok", "misses the budget: top1 lower bound 0.900 < 0.960"),
        Trial("a/int8pt", "screen", "ok", "pruned: top1 0.8, 95% upper bound 0.9 < 0.96 (...)"),
        Trial("a/ov", "screen", "failed", "failed: prepare: shape 16 too small"),
        Trial("a/ov2", "screen", "timeout", "timeout: killed after 900 s"),
        Trial("a/bf16", "screen", "skipped", "skipped: no bf16 kernels"),
        Trial("a/fp32", "full", "ok", "meets the budget"),
    ]
    why = nothing_qualifies("head", trials, None)
    assert why == (
        "head; 2 cells failed or timed out (a/ov, a/ov2); 2 cells missed the budget "
        "(a/int8, a/int8pt); 1 cell skipped (a/bf16) (each trial's verdict says why)"
    )
    many = [Trial(f"c{i}", "screen", "failed", "failed: x") for i in range(5)]
    assert "5 cells failed or timed out (c0, c1, c2 and 2 more)" in nothing_qualifies(
        "h", many, "synthetic data leaves no accuracy to judge"
    )
