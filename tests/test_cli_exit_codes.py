"""`qbench run`'s outputs that scripts and CI read: `--dry-run > suite.yaml` saves a suite that
runs (the plan goes to stderr), and a run with no ok cell exits 4 (issue 28)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from tests.conftest import FAST_MEASUREMENT, make_tiny_onnx, run_qbench, write_suite

EXIT_NO_RESULT = 4  # qbench.cli.EXIT_NO_RESULT, as the README documents it


def _plan_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if "/local/b1/t1  " in ln or " to run, " in ln]


def test_dry_run_with_model_writes_a_suite_that_runs_again(tmp_path: Path) -> None:
    make_tiny_onnx(tmp_path / "tiny.onnx")
    proc = run_qbench("run", "--model", "tiny.onnx", "--data", "synthetic", "--methods",
                      "fp32,dynamic_int8", "--dry-run", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    suite = yaml.safe_load(proc.stdout)  # stdout is the suite alone: valid YAML
    assert suite["name"] == "tiny" and suite["methods"] == ["fp32", "dynamic_int8"]
    assert suite["models"][0]["params"]["path"] == str(tmp_path / "tiny.onnx")
    plan = _plan_lines(proc.stderr)  # the plan went to stderr
    assert "tiny/fp32/onnxruntime/local/b1/t1  run (onnx)" in plan
    assert plan[-1] == "2 to run, 0 skipped, 0 excluded"
    assert not _plan_lines(proc.stdout)
    # what `> suite.yaml` saved plans the same cells as the flags did
    saved = tmp_path / "suite.yaml"
    saved.write_text(proc.stdout)
    again = run_qbench("run", str(saved), "--dry-run", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _plan_lines(again.stdout) == plan  # a suite file's plan is its output (stdout)
    # --json: one document with the suite and the plan, nothing else on stdout
    as_json = run_qbench("run", "--model", "tiny.onnx", "--data", "synthetic", "--methods",
                         "fp32,dynamic_int8", "--dry-run", "--json", cwd=tmp_path)  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["suite"] == proc.stdout
    assert doc["counts"] == {"run": 2, "skipped": 0, "excluded": 0}
    assert [c["cell_id"] for c in doc["cells"]] == [ln.split("  ")[0] for ln in plan[:-1]]
    assert not as_json.stderr.strip()


def _reshape_to_65(path: Path) -> Path:
    """A graph that loads and plans (its batch axis is dynamic) but fails whenever it runs:
    it reshapes 64 values per input into rows of 65."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([-1, 65], np.int64), "shape")
    w = numpy_helper.from_array(np.ones((65, 10), np.float32), "w")
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["logits"])]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "reshape65",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [shape, w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _suite(folder: Path, model: Path, backends: str) -> Path:
    return write_suite(folder, f"""
        name: no_result
        models:
          - {{name: onnx_file, params: {{path: {model}, dataset: digits}}}}
        methods: [fp32, dynamic_int8]
        backends: {backends}
        {FAST_MEASUREMENT}
        accuracy: {{samples: 20}}
        calibration: {{samples: 8}}
        power: off
    """)  # fmt: skip


def test_a_run_in_which_every_cell_failed_exits_4(tmp_path: Path) -> None:
    suite = _suite(tmp_path, _reshape_to_65(tmp_path / "bad.onnx"), "[onnxruntime]")
    store = tmp_path / "store"
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report", "--json")
    assert proc.returncode == EXIT_NO_RESULT, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)  # the document is still printed, whole
    assert doc["counts"] == {"ok": 0, "failed": 2, "timeout": 0, "skipped": 0}
    assert "Traceback" not in proc.stderr
    assert "no cell succeeded (2 failed, 0 timed out, 0 skipped); exit 4" in proc.stderr
    rows = pd.read_parquet(store / "results")  # the failures are stored, as always
    assert sorted(rows.status) == ["failed", "failed"]
    assert rows.error.str.contains("Reshape").all()  # the runtime's own words, one line


def test_a_run_of_only_skipped_cells_exits_4(tmp_path: Path) -> None:
    # an ONNX file on torch alone: every cell skipped at plan time, nothing measured
    suite = _suite(tmp_path, make_tiny_onnx(tmp_path / "tiny.onnx"), "[torch]")
    proc = run_qbench("run", str(suite), "--store", str(tmp_path / "store"), "--no-report", "-q")
    assert proc.returncode == EXIT_NO_RESULT, proc.stderr[-3000:]
    assert proc.stdout == ""  # --quiet: only the reason, on stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "qbench: no cell succeeded (0 failed, 0 timed out, 2 skipped); exit 4"
    )
    # the plan alone is no run: --dry-run of the same suite exits 0
    assert run_qbench("run", str(suite), "--dry-run").returncode == 0
