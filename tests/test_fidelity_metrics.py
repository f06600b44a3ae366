"""The fidelity metric fits the output: argmax agreement where an output is a class
distribution, an error measure where it is one value per input (a regression or a score), and
a budget that an output SQNR below the floor never meets, whatever the metric says."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from qbench.measure.fidelity import (
    WITHIN_TOLERANCE,
    accuracy,
    fidelity,
    paired_change,
    relative_rms_error,
    sqnr_db,
    wilson_interval,
)
from qbench.report.data import latest_per_cell, prepare
from qbench.report.summary import DEFAULT_SQNR_FLOOR_DB, summarize
from qbench.report.summary_view import summary_section, text_lines
from qbench.store.parquet import load
from tests.conftest import run_qbench
from tests.own_models import REGRESSION_INPUTS, regression_onnx
from tests.test_report import _row, write_store

# --- the metric per output ------------------------------------------------------------------


def test_a_scalar_output_gets_no_argmax_agreement_and_no_cosine() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(200, 1))
    test = reference + rng.normal(scale=2.0, size=reference.shape)  # noise louder than signal
    notes: list[str] = []
    out = fidelity(reference, test, notes=notes)
    # argmax of one value is always 0 and its cosine ±1: both would say 1.000
    assert "fp32_agreement" not in out and "output_cosine" not in out
    assert any("one value per input" in n and "fp32_within_tol" in n for n in notes)
    assert out["output_sqnr_db"] < 0
    assert out["output_rel_rmse"] == pytest.approx(
        np.linalg.norm(reference - test) / np.linalg.norm(reference)
    )
    # within tolerance: |test - ref| <= 0.1 x std(ref), counted by hand
    limit = WITHIN_TOLERANCE * reference.std()
    hits = np.abs(test - reference)[:, 0] <= limit
    assert out["fp32_tolerance"] == pytest.approx(limit)
    assert out["fp32_within_tol"] == pytest.approx(hits.mean())
    low, high = wilson_interval(hits.mean(), len(hits))
    assert out["fp32_within_tol_ci_low"] == pytest.approx(low)
    assert out["fp32_within_tol_ci_high"] == pytest.approx(high)
    assert out["fp32_within_tol_ci_high"] < 0.5  # it sees the error
    # shaped [N] the same, and fp32 against itself agrees everywhere
    same = fidelity(reference[:, 0], reference[:, 0])
    assert same["fp32_within_tol"] == 1.0 and same["output_rel_rmse"] == 0.0
    assert "fp32_agreement" not in same


def test_a_scalar_output_has_no_top1_and_a_constant_one_no_tolerance() -> None:
    notes: list[str] = []
    assert accuracy(np.ones((10, 1)), np.zeros(10, np.int64), notes=notes) == {}
    assert any("top1 empty" in n for n in notes)
    notes = []
    out = fidelity(np.full((10, 1), 3.0), np.full((10, 1), 2.0), notes=notes)
    assert "fp32_within_tol" not in out and any("same output for every input" in n
                                                for n in notes)  # fmt: skip


def test_classifiers_keep_argmax_agreement_and_cosine() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(50, 10))
    out = fidelity(reference, reference + 0.01)
    assert out["fp32_agreement"] == 1.0 and out["output_cosine"] > 0.99
    assert "fp32_within_tol" not in out
    assert out["output_rel_rmse"] == pytest.approx(10 ** (-out["output_sqnr_db"] / 20))
    assert relative_rms_error(reference, reference) == 0.0


# --- the summary: the floor, and the metric it states ------------------------------------------


def _ci(name: str, value: float, low: float, high: float) -> dict[str, float]:
    return {name: value, f"{name}_ci_low": low, f"{name}_ci_high": high}


def _summaries(tmp_path: Path, rows: list[dict], **kw: object) -> dict[str, object]:
    store = write_store(tmp_path / "store", rows)
    _, results = load(store)
    return {s.model: s for s in summarize(latest_per_cell(prepare(results)), **kw)}


def test_a_cell_below_the_sqnr_floor_is_never_within_budget(tmp_path: Path) -> None:
    """static_int8's top-1 and agreement intervals would pass (as a one-value output's did
    before: argmax 0 everywhere), but its output SQNR is 2.6 dB: never within budget."""
    rows = [
        _row("vad", "fp32", "onnxruntime", p50=1.0, output_sqnr_db=math.inf,
             **_ci("top1", 0.9, 0.89, 0.91), **_ci("fp32_agreement", 1.0, 0.999, 1.0)),
        _row("vad", "static_int8", "onnxruntime", p50=0.5, output_sqnr_db=2.6,
             **_ci("top1", 0.9, 0.895, 0.905), **_ci("fp32_agreement", 1.0, 0.999, 1.0)),
        _row("vad", "dynamic_int8", "onnxruntime", p50=0.8, output_sqnr_db=25.0,
             **_ci("top1", 0.9, 0.895, 0.905), **_ci("fp32_agreement", 0.999, 0.995, 1.0)),
    ]  # fmt: skip
    for metric in ("top1", "fp32_agreement"):
        vad = _summaries(tmp_path / metric, rows, metric=metric)["vad"]
        assert vad.metric == metric
        assert vad.fastest.method == "static_int8"
        assert vad.within_budget.method == "dynamic_int8", metric
        assert any("below the 10 dB floor" in n and "static_int8 on onnxruntime 2.6 dB" in n
                   for n in vad.notes)  # fmt: skip
    # the floor is a parameter: at 0 dB the same cell is within budget
    loose = _summaries(tmp_path / "loose", rows, sqnr_floor_db=0.0)["vad"]
    assert loose.within_budget.method == "static_int8"
    # and at 30 dB only fp32 is left
    strict = _summaries(tmp_path / "strict", rows, sqnr_floor_db=30.0)["vad"]
    assert strict.within_budget.method == "fp32" and strict.sqnr_floor_db == 30.0
    assert DEFAULT_SQNR_FLOOR_DB == 10.0


def test_a_scalar_model_is_judged_within_tolerance_and_says_so(tmp_path: Path) -> None:
    """No top-1 and no agreement (one value per input): within tolerance judges, and the
    summary, its text and its HTML name that metric."""
    rows = [
        _row("reg", "fp32", "onnxruntime", p50=1.0, output_sqnr_db=math.inf,
             fp32_agreement=None, **_ci("fp32_within_tol", 1.0, 0.996, 1.0)),
        _row("reg", "static_int8", "onnxruntime", p50=0.4, output_sqnr_db=12.0,
             fp32_agreement=None, **_ci("fp32_within_tol", 0.6, 0.57, 0.63)),
        _row("reg", "dynamic_int8", "onnxruntime", p50=0.7, output_sqnr_db=40.0,
             fp32_agreement=None, **_ci("fp32_within_tol", 1.0, 0.996, 1.0)),
    ]  # fmt: skip
    summaries = _summaries(tmp_path, rows)
    reg = summaries["reg"]
    assert reg.metric == "fp32_within_tol" and reg.reference_accuracy == 1.0
    assert reg.fastest.method == "static_int8" and reg.fastest.accuracy == 0.6
    assert reg.within_budget.method == "dynamic_int8"
    lines = text_lines(list(summaries.values()))
    assert lines[0].startswith("  reg on local (judged on outputs within tolerance of fp32)")
    assert "outputs within tolerance of fp32 -40.0 [-43.0, -37.0] pt" in lines[0]
    html = summary_section(list(summaries.values()))
    assert "judged on outputs within tolerance of fp32" in html
    assert "output SQNR at least 10 dB" in html
    # the row's chart and table metric is the same
    _, results = load(tmp_path / "store")
    df = prepare(results)
    assert set(df["accuracy_metric"]) == {"fp32_within_tol"}


# --- end to end: a regression model through real ONNX Runtime ---------------------------------

N_IN = REGRESSION_INPUTS


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("regression")
    regression_onnx(folder / "reg.onnx")
    x = np.random.default_rng(0).normal(size=(1200, N_IN)).astype(np.float32)
    np.savez(folder / "reg.npz", x=x)
    store, report = folder / "store", folder / "reg.html"
    proc = run_qbench(
        "run", "--model", str(folder / "reg.onnx"), "--data", str(folder / "reg.npz"),
        "--methods", "fp32,dynamic_int8,static_int8", "--backends", "onnxruntime",
        "--store", str(store), "--report", str(report), "--no-confirm", "--json", cwd=folder,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _, results = load(store)
    rows = {r["method"]: r for r in results.to_dict("records")}
    return {"folder": folder, "x": x, "doc": json.loads(proc.stdout), "rows": rows,
            "report": report, "store": store}  # fmt: skip


def test_a_regression_model_is_judged_on_its_error(regression_run: dict) -> None:
    rows, x = regression_run["rows"], regression_run["x"]
    assert {m: r["status"] for m, r in rows.items()} == dict.fromkeys(
        ("fp32", "dynamic_int8", "static_int8"), "ok"
    ), {m: r.get("error") for m, r in rows.items()}
    for method, row in rows.items():
        # no argmax agreement, no top-1, no cosine: each empty with the reason
        assert np.isnan(row["fp32_agreement"]) and np.isnan(row["top1"]), method
        assert np.isnan(row["output_cosine"]) and np.isnan(row["output_cosine_p1"]), method
        notes = list(row["notes"])
        assert any("fp32_agreement and output_cosine empty: the output holds one value per "
                   "input" in n for n in notes), notes  # fmt: skip
        assert row["accuracy_samples"] == 500  # the suite's default cap on evaluation inputs
    fp32 = rows["fp32"]
    assert fp32["fp32_within_tol"] == 1.0 and fp32["output_rel_rmse"] == 0.0
    # what the int8 cells really did, computed here from the artifacts they ran
    eval_x = x[:500]
    reference = _ort(regression_run["folder"] / "reg.onnx", eval_x)
    for method in ("dynamic_int8", "static_int8"):
        row = rows[method]
        out = _ort(Path(_artifact(regression_run, row)), eval_x)
        rel = float(np.linalg.norm(out - reference) / np.linalg.norm(reference))
        assert row["output_rel_rmse"] == pytest.approx(rel, rel=1e-4), method
        assert row["output_sqnr_db"] == pytest.approx(sqnr_db(reference, out), abs=1e-3)
        limit = WITHIN_TOLERANCE * float(reference.std())
        assert row["fp32_tolerance"] == pytest.approx(limit, rel=1e-5)
        share = float(np.mean(np.abs(out - reference)[:, 0] <= limit))
        assert row["fp32_within_tol"] == pytest.approx(share), method
        assert row["fp32_within_tol_ci_low"] <= share <= row["fp32_within_tol_ci_high"]
    # the model is built so that static int8 breaks it: the metric has to see it
    static = rows["static_int8"]
    assert static["output_sqnr_db"] < DEFAULT_SQNR_FLOOR_DB
    assert static["fp32_within_tol_ci_high"] < 0.9


def _artifact(run: dict, row: dict) -> Path:
    """The artifact a cell ran, written out by `qbench export` (checked against its hash)."""
    out = Path(run["folder"]) / f"{row['method']}.onnx"
    proc = run_qbench("export", row["cell_id"], "-o", str(out), "--store", str(run["store"]))
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_summary_judges_the_regression_model_on_its_error(regression_run: dict) -> None:
    (summary,) = regression_run["doc"]["summary"]
    assert summary["metric"] == "fp32_within_tol" and summary["reference_accuracy"] == 1.0
    within = summary["within_budget"]
    assert within is None or within["method"] != "static_int8", within
    html = Path(regression_run["report"]).read_text()
    assert "judged on outputs within tolerance of fp32" in html
    # the per-cell lines of `qbench run`'s --json rows carry the metric
    rows = {r["cell_id"]: r for r in regression_run["doc"]["rows"]}
    assert all(r.get("fp32_within_tol") is not None for r in rows.values())


def test_a_model_of_several_outputs_says_which_one_is_judged(tmp_path: Path) -> None:
    """Every backend compares output 0: the notes say so where there are more."""
    import onnx
    from onnx import TensorProto, helper

    from qbench.measure.fidelity import judged_output_note

    def model(outputs: list[str]) -> Path:
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], [name]) for name in outputs], "several",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1]) for n in outputs],
        )  # fmt: skip
        path = tmp_path / f"{len(outputs)}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
                  str(path))  # fmt: skip
        return path

    note = judged_output_note(model(["score", "state"]))
    assert note is not None and "output 0 ('score') of 2 outputs" in note and "'state'" in note
    assert judged_output_note(model(["score"])) is None
    assert judged_output_note(tmp_path / "model.xml") is None  # a format it cannot read: silent


# --- paired change of top-1 against fp32 --------------------------------------------------------


def test_paired_change_counts_only_the_inputs_that_differ() -> None:
    n = 1000
    ref = np.zeros(n, bool)
    ref[:800] = True  # fp32 right on 80%
    cell = ref.copy()
    cell[:10] = False  # the cell loses 10 inputs fp32 had right and gains 4
    cell[800:804] = True
    out = paired_change("top1_change", cell, ref)
    assert out["top1_change"] == pytest.approx(-6 / n)
    half = out["top1_change_ci_high"] - out["top1_change"]
    assert out["top1_change"] - out["top1_change_ci_low"] == pytest.approx(half)
    # 14 discordant of 1000: about ±0.7 points, far narrower than top-1's own ±2.5
    assert 0.005 < half < 0.009
    low, high = wilson_interval(cell.mean(), n)
    assert half < (high - low) / 4


def test_no_discordant_input_is_not_proof_of_no_change() -> None:
    """Identical predictions on 200 inputs: the interval still spans about ±3/n (the rule of
    three), not [0, 0]."""
    hits = np.arange(200) % 3 == 0
    out = paired_change("c", hits, hits)
    assert out["c"] == 0.0
    assert out["c_ci_low"] < -0.01 and out["c_ci_high"] > 0.01
    # grouped: no spread to measure the clustering by; as wide as three discordant crops in
    # three photos would make it (Student's t with 19 degrees of freedom, not the normal)
    grouped = paired_change("c", hits, hits, np.arange(200) // 10)
    assert out["c_ci_low"] > grouped["c_ci_low"] > 1.1 * out["c_ci_low"]
    three = hits.copy()
    three[[0, 30, 60]] = False  # three losses, in three photos
    assert paired_change("c", three, hits, np.arange(200) // 10)["c_ci_low"] < grouped["c_ci_low"]


def test_paired_change_of_clustered_inputs_is_wider() -> None:
    """Every loss in two of twenty photos: counting the photos as the draws widens the interval."""
    n = 400
    ref = np.ones(n, bool)
    cell = ref.copy()
    groups = np.arange(n) // 20
    cell[:30] = False  # photos 0 and 1
    iid = paired_change("c", cell, ref)
    clustered = paired_change("c", cell, ref, groups)
    assert iid["c"] == clustered["c"] == pytest.approx(-30 / n)
    assert clustered["c_ci_low"] < iid["c_ci_low"] - 0.02


def test_accuracy_adds_the_paired_change_with_a_reference() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 300)
    reference = rng.normal(size=(300, 10))
    reference[np.arange(300), labels] += 2.0  # fp32 mostly right
    cell = reference.copy()
    cell[:15] = rng.normal(size=(15, 10))  # 15 inputs scrambled
    out = accuracy(cell, labels, reference=reference)
    expected = float(np.mean(cell.argmax(1) == labels) - np.mean(reference.argmax(1) == labels))
    assert out["top1_change"] == pytest.approx(expected) and expected < 0
    assert out["top1_change_ci_low"] < expected < out["top1_change_ci_high"]
    assert "top1_change" not in accuracy(cell, labels)
