"""Matrix expansion: list parameters, include/exclude rules, and skipped cells with reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from qbench.plan import build_plan, expand_params
from qbench.suite.loader import load_suite
from tests.conftest import write_suite


@pytest.fixture(autouse=True)
def _test_plugins() -> None:
    import tests.plugins.faulty  # noqa: F401  registers faulty and needs_missing


def plan_of(tmp_path: Path, text: str):
    return build_plan(*load_suite(write_suite(tmp_path, text)))


def test_expand_params_is_a_cartesian_product() -> None:
    out = expand_params({"a": [1, 2], "b": "x", "c": [True, False]})
    assert out == [
        {"a": 1, "b": "x", "c": True},
        {"a": 1, "b": "x", "c": False},
        {"a": 2, "b": "x", "c": True},
        {"a": 2, "b": "x", "c": False},
    ]


def test_list_values_expand_into_cells(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        name: t
        models: [digits_cnn]
        methods:
          - fp32
          - name: static_int8
            params: {calibrator: [minmax, entropy], per_channel: [true, false]}
        backends: [onnxruntime]
        scenario: {batch: [1, 8], threads: 1}
    """,
    )
    assert len(plan.cells) == (1 + 4) * 2
    ids = {c.cell_id for c in plan.cells}
    assert (
        "digits_cnn/static_int8[calibrator=entropy,per_channel=False]/onnxruntime/local/b8/t1"
        in ids
    )
    # Default-valued parameters do not appear in the id; the full set is in the cell.
    assert "digits_cnn/static_int8/onnxruntime/local/b1/t1" in ids
    cell = next(c for c in plan.cells if c.cell_id.endswith("static_int8/onnxruntime/local/b1/t1"))
    assert cell.method_params["percentile"] == 99.999
    assert all(c.skip_reason is None for c in plan.cells)


def test_include_and_exclude_rules(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        name: t
        models: [digits_cnn, resnet18, mobilenet_v2]
        methods: [fp32, static_int8]
        backends: [onnxruntime, torch]
        include:
          - {model: "digits*"}
          - {model: resnet18, backend: onnxruntime}
        exclude:
          - {method: static_int8, backend: torch}
    """,
    )
    ids = sorted(c.cell_id for c in plan.cells)
    assert ids == sorted(
        [
            "digits_cnn/fp32/onnxruntime/local/b1/t1",
            "digits_cnn/fp32/torch/local/b1/t1",
            "digits_cnn/static_int8/onnxruntime/local/b1/t1",
            "resnet18/fp32/onnxruntime/local/b1/t1",
            "resnet18/static_int8/onnxruntime/local/b1/t1",
        ]
    )
    assert plan.excluded == 3 * 2 * 2 - 5


def test_cells_that_cannot_run_are_kept_with_reasons(tmp_path: Path, tiny_onnx: Path) -> None:
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "ortonly.yaml").write_text(
        "name: ortonly\nkind: cpu\nbackends: [onnxruntime, needs_missing]\n"
    )
    plan = plan_of(
        tmp_path,
        f"""
        name: t
        models:
          - digits_cnn
          - name: onnx_file
            label: tiny
            params: {{path: {tiny_onnx}, dataset: digits}}
        methods: [fp32, {{name: static_int8, params: {{calibrator: entropy}}}}]
        backends: [onnxruntime, torch, needs_missing]
        devices: [local, ortonly]
    """,
    )
    reasons = {c.cell_id: c.skip_reason for c in plan.cells}
    assert len(reasons) == 2 * 2 * 3 * 2
    assert reasons["digits_cnn/fp32/onnxruntime/local/b1/t1"] is None
    assert reasons["digits_cnn/fp32/torch/ortonly/b1/t1"] == (
        "device ortonly has no backend torch (it has: onnxruntime, needs_missing)"
    )
    assert reasons["digits_cnn/fp32/needs_missing/ortonly/b1/t1"] == (
        "backend needs_missing needs Python package(s) qbench_no_such_package_xyz, not installed"
    )
    assert (
        reasons["tiny/fp32/torch/local/b1/t1"]
        == "model onnx_file is an ONNX file; it has no torch module"
    )
    assert "takes no calibrator setting" in (
        reasons["digits_cnn/static_int8[calibrator=entropy]/torch/local/b1/t1"] or ""
    )
    assert reasons["tiny/static_int8[calibrator=entropy]/onnxruntime/local/b1/t1"] is None
    assert len(plan.runnable) + len(plan.skipped) == len(plan.cells)


def test_format_mismatch_is_a_skip_reason(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        name: t
        models: [digits_cnn]
        methods: [tflite_only]
        backends: [onnxruntime]
    """,
    )
    assert (
        plan.cells[0].skip_reason
        == "method tflite_only produces tflite artifacts; backend onnxruntime loads onnx"
    )


def test_outlier_fractions_expand_only_calibrating_methods(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        name: t
        models: [digits_cnn]
        methods: [fp32, {name: static_int8, params: {calibrator: percentile}}]
        backends: [onnxruntime]
        calibration: {outlier_fraction: [0, 0.05]}
    """,
    )
    ids = sorted(c.cell_id for c in plan.cells)
    assert ids == [
        "digits_cnn/fp32/onnxruntime/local/b1/t1",
        "digits_cnn/static_int8[calibrator=percentile]/onnxruntime/local/b1/t1",
        "digits_cnn/static_int8[calibrator=percentile]{outliers=0.05}/onnxruntime/local/b1/t1",
    ]
    fractions = {c.cell_id: c.calibration["outlier_fraction"] for c in plan.cells}
    assert fractions[ids[2]] == 0.05 and fractions[ids[1]] == 0.0
