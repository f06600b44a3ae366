"""The summary at the top of the report, of `qbench run` and of its --json: the fastest
configuration, the fastest within the accuracy budget (judged on the interval's lower bound),
speed-ups against the best fp32 of any backend, simulated cells never chosen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qbench.report.data import latest_per_cell, prepare
from qbench.report.summary import summarize
from qbench.report.summary_view import summary_section, text_lines
from qbench.store.parquet import load
from tests.conftest import run_qbench
from tests.test_report import _row, write_store


def known_rows() -> list[dict[str, Any]]:
    """digits on one device: ORT fp32 is the best fp32 (0.5 ms; torch fp32 0.8 ms); a
    simulated cell is fastest of all; static_int8 is the fastest native cell but its interval
    reaches 3 points below fp32; per-channel static_int8 stays within one point."""

    def ci(top1: float, low: float, high: float) -> dict[str, float]:
        return {"top1": top1, "top1_ci_low": low, "top1_ci_high": high}

    return [
        _row("digits_cnn", "fp32", "onnxruntime", p50=0.5, **ci(0.97, 0.955, 0.98)),
        _row("digits_cnn", "fp32", "torch", p50=0.8, **ci(0.97, 0.955, 0.98)),
        _row("digits_cnn", "static_int8", "onnxruntime", p50=0.2, **ci(0.955, 0.94, 0.97)),
        _row(
            "digits_cnn",
            "static_int8",
            "onnxruntime",
            mparams="per_channel=True",
            p50=0.25,
            **ci(0.968, 0.962, 0.975),
        ),
        _row(
            "digits_cnn",
            "static_int8",
            "torch",
            p50=0.1,
            execution="simulated",
            **ci(0.97, 0.96, 0.98),
        ),
        _row(
            "digits_cnn",
            "static_int8",
            "torch",
            mparams="per_channel=True",
            p50=0.4,
            **ci(0.97, 0.962, 0.978),
        ),
        # a second model with agreement only, and a batched cell: time per input = p50 / batch
        _row("mobilenet_v2", "fp32", "onnxruntime", p50=8.0),
        _row(
            "mobilenet_v2",
            "static_int8",
            "onnxruntime",
            p50=3.2,
            fp32_agreement=0.95,
            fp32_agreement_ci_low=0.93,
            fp32_agreement_ci_high=0.97,
        ),
        _row("mobilenet_v2", "fp32", "onnxruntime", batch=8, p50=40.0),
    ]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return write_store(tmp_path / "store", known_rows())


def _summaries(store: Path, budget: float = 0.01) -> dict[str, Any]:
    _, results = load(store)
    return {s.model: s for s in summarize(latest_per_cell(prepare(results)), budget)}


def test_fastest_and_within_budget_of_a_known_store(store: Path) -> None:
    digits = _summaries(store)["digits_cnn"]
    assert digits.metric == "top1" and digits.reference_accuracy == 0.97
    assert digits.reference.cell_id == "digits_cnn/fp32/onnxruntime/local/b1/t1"
    # the simulated cell (0.1 ms) is never a candidate
    assert digits.fastest.cell_id == "digits_cnn/static_int8/onnxruntime/local/b1/t1"
    assert digits.fastest.speedup == pytest.approx(0.5 / 0.2)
    assert digits.fastest.accuracy_change == pytest.approx(-0.015)
    # static_int8's lower bound (0.94) is 3 points below: out; per-channel's (0.962) is in
    assert digits.within_budget.method == "static_int8[per_channel=True]"
    assert digits.within_budget.backend == "onnxruntime"
    assert digits.within_budget.speedup == pytest.approx(2.0)
    assert digits.candidates == 5 and any("1 simulated" in n for n in digits.notes)


def test_the_budget_is_judged_on_the_lower_bound(store: Path) -> None:
    # a budget of 4 points admits the faster static_int8 (its lower bound is 3 points down)
    loose = _summaries(store, budget=0.04)["digits_cnn"]
    assert loose.within_budget.cell_id == "digits_cnn/static_int8/onnxruntime/local/b1/t1"
    # no budget at all: only fp32 qualifies, with the reason
    strict = _summaries(store, budget=0.0)["digits_cnn"]
    assert strict.within_budget.method == "fp32" and strict.within_budget.speedup == 1.0
    assert any("no configuration faster than the best fp32" in n for n in strict.notes)


def test_speedups_are_against_the_best_fp32_of_any_backend_per_input(store: Path) -> None:
    mobile = _summaries(store)["mobilenet_v2"]
    # batch 8 at 40 ms is 5 ms per input: the best fp32, ahead of batch 1 at 8 ms
    assert mobile.reference.cell_id == "mobilenet_v2/fp32/onnxruntime/local/b8/t1"
    assert mobile.reference.ms_per_input == 5.0
    assert mobile.fastest.speedup == pytest.approx(5.0 / 3.2)
    assert mobile.metric == "fp32_agreement" and mobile.reference_accuracy == 1.0
    # agreement 0.95 [0.93, 0.97]: 7 points down at the lower bound
    assert mobile.within_budget.method == "fp32"
    lines = text_lines(list(_summaries(store).values()))
    assert any("fastest static_int8 on onnxruntime, 1 thread, batch 1: 2.50×" in x for x in lines)
    html = summary_section(list(_summaries(store).values()))
    assert html.count('class="pick-fastest"') == 2 and "-1.5 [-3.0, +0.0]" in html


def test_run_prints_and_returns_the_summary(tmp_path: Path) -> None:
    from tests.conftest import write_suite

    suite = write_suite(
        tmp_path,
        """
        name: glance
        models: [digits_cnn]
        methods: [fp32, dynamic_int8]
        backends: [onnxruntime]
        measurement: {warmup: 1, min_iters: 5, min_seconds: 0.05, repeats: 1}
        accuracy: {samples: 200}
        """,
    )
    store, report = tmp_path / "store", tmp_path / "glance.html"
    proc = run_qbench("run", str(suite), "--store", str(store), "--report", str(report),
                      "--json", "--budget", "2%")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (only,) = doc["summary"]
    assert only["model"] == "digits_cnn" and only["budget"] == 0.02
    rows = {r["cell_id"]: r for r in doc["rows"] if r["status"] == "ok"}
    fastest = min(rows.values(), key=lambda r: r["latency_p50_ms"])
    assert only["fastest"]["cell_id"] == fastest["cell_id"]
    assert only["reference"]["method"] == "fp32"
    assert only["within_budget"]["configuration"].endswith("1 thread, batch 1")
    assert 'id="summary"' in report.read_text()
    text = run_qbench("report", str(store), "-o", str(tmp_path / "r.html"), "--budget", "x")
    assert text.returncode == 2 and "Traceback" not in text.stderr
    (line,) = text.stderr.strip().splitlines()  # one line, no usage block
    assert "--budget: 'x' is no number (e.g. 0.01 or 1%)" in line


def test_the_budget_can_be_judged_on_agreement(store: Path) -> None:
    _, results = load(store)
    (digits, _) = summarize(latest_per_cell(prepare(results)), 0.01, metric="fp32_agreement")
    # agreement 0.98 without an interval: nothing shows it, so only fp32 qualifies
    assert digits.metric == "fp32_agreement" and digits.reference_accuracy == 1.0
    assert digits.within_budget.method == "fp32"
    with pytest.raises(ValueError, match="expected one of top1, fp32_agreement, fp32_within_tol"):
        summarize(latest_per_cell(prepare(results)), 0.01, metric="f1")


def test_a_paired_change_judges_the_top1_budget(tmp_path: Path) -> None:
    """The cell's own top-1 interval is too wide to show anything, but its paired change
    against fp32 on the same inputs is tight: within budget at -0.4 [-0.8, 0.0]; a cell whose
    paired interval reaches below -1 point is not, however good its own interval looks."""

    def acc(top1: float, low: float, high: float, change: tuple[float, float, float] | None
            ) -> dict[str, float]:  # fmt: skip
        row = {"top1": top1, "top1_ci_low": low, "top1_ci_high": high}
        if change:
            row.update(zip(("top1_change", "top1_change_ci_low", "top1_change_ci_high"),
                           change, strict=True))  # fmt: skip
        return row

    rows = [
        _row("m", "fp32", "onnxruntime", p50=1.0, **acc(0.80, 0.70, 0.88, (0.0, -0.003, 0.003))),
        _row(
            "m",
            "static_int8",
            "onnxruntime",
            p50=0.4,
            **acc(0.796, 0.69, 0.88, (-0.004, -0.008, 0.0)),
        ),
        _row(
            "m", "static_int8", "openvino", p50=0.3, **acc(0.80, 0.795, 0.805, (0.0, -0.02, 0.02))
        ),
    ]
    _, results = load(write_store(tmp_path / "s", rows))
    (m,) = summarize(latest_per_cell(prepare(results)), 0.01)
    assert m.metric == "top1"
    assert m.within_budget.backend == "onnxruntime" and m.within_budget.method == "static_int8"
    assert (m.within_budget.change_ci_low, m.within_budget.change_ci_high) == (-0.008, 0.0)
    assert m.within_budget.accuracy_change == pytest.approx(-0.004)
    assert "-0.4 [-0.8, +0.0]" in "\n".join(text_lines([m]))
    assert m.fastest.backend == "openvino"  # fastest, but its paired interval reaches -2 points
