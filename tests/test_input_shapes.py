"""Inputs that are not a batch, and the shapes qbench feeds (issue 28).

Each model is built here (tests/own_models.py) with the property a user's model had: a state
input whose fixed first axis is not a batch, a scalar sample rate, dynamic sides that must be
multiples of 32, a channels-last input fed channels-first data. They run through `qbench run`
on ONNX Runtime, and the rows say which shape each input was fed at.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qbench.inputs import Fixed, InputSpec, batch_of, bind, binding_notes, chunks, count, take
from tests import own_models
from tests.conftest import run_qbench

METHODS = "fp32,dynamic_int8,static_int8"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("input_shapes")
    own_models.state_input_onnx(folder / "state.onnx")  # x [N, 16], h [2, 1, 8]
    own_models.state_input_onnx(folder / "state1.onnx", batch=1)  # x [1, 16], h [2, 1, 8]
    own_models.scalar_input_onnx(folder / "vad.onnx")  # x [N, 16], sr scalar
    own_models.stride32_onnx(folder / "detector.onnx")  # x [N, 3, H, W], H, W multiples of 32
    own_models.nhwc_onnx(folder / "nhwc.onnx")  # x [N, 8, 8, 3]
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (24, 16)).astype(np.float32)
    np.savez(folder / "vad.npz", x=x, sr=np.full(24, 16000, np.int64))
    np.savez(folder / "images.npz", x=rng.uniform(0, 1, (12, 3, 8, 8)).astype(np.float32))
    return folder


def _run(folder: Path, name: str, *args: str) -> tuple[int, dict, dict[str, dict]]:
    """(exit code, the --json document, rows by cell id) of one `qbench run --json`."""
    from qbench.store.parquet import load

    store = folder / f"store_{name}"
    proc = run_qbench("run", *args, "--backends", "onnxruntime", "--no-confirm", "--json",
                      "--store", str(store), "--report", str(folder / f"{name}.html"),
                      cwd=folder)  # fmt: skip
    assert proc.returncode in (0, 4), proc.stderr
    _, results = load(store)
    rows = {r["cell_id"]: r for r in results.to_dict("records")}
    return proc.returncode, json.loads(proc.stdout), rows


def _one_line_error(proc: object) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)  # type: ignore[attr-defined]
    err = proc.stderr.strip()  # type: ignore[attr-defined]
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# --- deciding which inputs are a batch ------------------------------------------------------


def test_a_fixed_input_beside_the_data_is_no_batch(models: Path) -> None:
    from qbench.models.onnx_file import read_onnx_facts

    facts = read_onnx_facts(str(models / "state.onnx"))
    assert facts.inputs == (InputSpec("x", (16,)), InputSpec("h", (2, 1, 8), batch_axis=None))
    assert facts.fixed_batch is None  # the state's 2 is not "a fixed batch of 2"
    fixed1 = read_onnx_facts(str(models / "state1.onnx"))
    assert fixed1.inputs[1].batch_axis is None and fixed1.fixed_batch == 1
    vad = read_onnx_facts(str(models / "vad.onnx"))  # a scalar input was refused at plan time
    assert vad.inputs[1] == InputSpec("sr", (), "int64", batch_axis=None)
    assert vad.fixed_batch is None


def test_declared_batch_axes_override_the_choice(models: Path) -> None:
    from tests.conftest import write_suite

    def suite(axes: str) -> Path:
        return write_suite(models, f"""
            name: declared
            models:
              - name: onnx_file
                params: {{path: state.onnx, dataset: synthetic, batch_axes: {axes}}}
            methods: [fp32]
            backends: [onnxruntime]
            scenario: {{batch: [1, 2]}}
        """, name="declared.yaml")  # fmt: skip

    # h declared a batch: its fixed 2 is then the graph's batch, and batch 1 cannot run
    proc = run_qbench("run", str(suite("{h: 0}")), "--dry-run", cwd=models)
    assert proc.returncode == 0, proc.stderr
    assert "takes a fixed batch of 2; batch 1 cannot run" in proc.stderr + proc.stdout
    err = _one_line_error(run_qbench("run", str(suite("{h: 1}")), "--dry-run", cwd=models))
    assert "batch_axes: h: 1: expected 0 (a batch along axis 0) or null" in err
    err = _one_line_error(run_qbench("run", str(suite("{c: null}")), "--dry-run", cwd=models))
    assert "batch_axes: c: no such input (inputs: x, h)" in err


def test_batches_feed_a_fixed_input_whole() -> None:
    spec = [InputSpec("x", (4,)), InputSpec("h", (2, 1, 3), batch_axis=None),
            InputSpec("sr", (), "int64", None, 16000)]  # fmt: skip
    data = {"x": np.arange(20, dtype=np.float32).reshape(5, 4),
            "h": np.arange(30, dtype=np.float32).reshape(5, 2, 1, 3)}  # fmt: skip
    x = bind(spec, data)
    assert isinstance(x["h"], Fixed) and x["h"].shape == (2, 1, 3)
    assert np.array_equal(x["h"], data["h"][0]) and x["sr"].shape == () and x["sr"] == 16000
    assert count(x) == 5
    for batch in (take(x, 0, 2), batch_of(x, 8), *chunks(x, 3)):
        assert batch["h"].shape == (2, 1, 3) and batch["sr"].shape == ()
    assert batch_of(x, 8)["x"].shape == (8, 4) and [c["x"].shape[0] for c in chunks(x, 3)] == [3, 3]
    # ORT's calibration reader cuts one sample with x[i:i+1]: a fixed input stays whole
    assert x["h"][1:2].shape == (2, 1, 3) and x["x"][1:2].shape == (1, 4)


# slow: three real runs (40 s); test_batches_feed_a_fixed_input_whole checks the binding
# in the default run
@pytest.mark.slow
def test_state_input_runs_at_its_declared_shape(models: Path) -> None:
    # the plan: the sibling with a dynamic batch runs every batch; the data fixed at 1 runs 1
    proc = run_qbench("run", "--model", "state.onnx", "--model", "state1.onnx", "--data",
                      "synthetic", "--methods", METHODS, "--backends", "onnxruntime", "--batch",
                      "1,3", "--dry-run", cwd=models)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "fixed batch of 2" not in proc.stderr + proc.stdout
    code, doc, rows = _run(models, "state", "--model", "state.onnx", "--model", "state1.onnx",
                           "--data", "synthetic", "--methods", METHODS, "--batch",
                           "1,3")  # fmt: skip
    assert code == 0 and doc["counts"]["failed"] == 0, doc["rows"]
    for method in METHODS.split(","):
        for batch in (1, 3):
            row = rows[f"state/{method}/onnxruntime/local/b{batch}/t1"]
            assert row["status"] == "ok", row["error"]
            assert json.loads(row["input_shapes_json"]) == {"x": [batch, 16], "h": [2, 1, 8]}
            assert any("input h is not a batch: fed at its declared shape [2, 1, 8]" in n
                       for n in row["notes"])  # fmt: skip
        one = rows[f"state1/{method}/onnxruntime/local/b1/t1"]
        assert one["status"] == "ok", one["error"]
        assert json.loads(one["input_shapes_json"]) == {"x": [1, 16], "h": [2, 1, 8]}
        three = rows[f"state1/{method}/onnxruntime/local/b3/t1"]
        assert three["status"] == "skipped"
        assert "takes a fixed batch of 1; batch 3 cannot run" in three["error"]
    assert rows["state/static_int8/onnxruntime/local/b3/t1"]["quantized_nodes"] >= 1


# --- scalar inputs ---------------------------------------------------------------------------


# slow: real runs (35 s); the default run's benchmark smoke test runs a scalar input
@pytest.mark.slow
def test_scalar_input_from_the_data_or_a_constant(models: Path) -> None:
    # from the data: one sample rate per sample in the .npz, fed as a scalar
    code, doc, rows = _run(models, "vad", "--model", "vad.onnx", "--data", "vad.npz",
                           "--methods", METHODS)  # fmt: skip
    assert code == 0 and doc["counts"]["failed"] == 0, doc["rows"]
    for method in METHODS.split(","):
        row = rows[f"vad/{method}/onnxruntime/local/b1/t1"]
        assert row["status"] == "ok", row["error"]
        assert json.loads(row["input_shapes_json"]) == {"x": [1, 16], "sr": []}
        assert row["output_sqnr_db"] > 10, method  # compared with fp32 on real outputs
    # a constant on the command line; synthetic data would draw the rate at random
    code, _, rows = _run(models, "vad_const", "--model", "vad.onnx", "--data", "synthetic",
                         "--input", "sr=16000", "--methods", "fp32,static_int8")  # fmt: skip
    assert code == 0
    row = rows["vad/static_int8/onnxruntime/local/b1/t1"]
    assert row["status"] == "ok", row["error"]
    assert any("input sr: the constant 16000" in n for n in row["notes"])
    code, _, rows = _run(models, "vad_random", "--model", "vad.onnx", "--data", "synthetic",
                         "--methods", "fp32")  # fmt: skip
    error = rows["vad/fp32/onnxruntime/local/b1/t1"]["error"]
    assert code == 4 and "sr int64[]" in error and "--input NAME=VALUE" in error
    assert "\n" not in error
    # a constant that does not fit, or names no input: one line before anything runs
    err = _one_line_error(run_qbench("run", "--model", "vad.onnx", "--data", "synthetic",
                                     "--input", "sr=[1, 2]", "--dry-run",
                                     cwd=models))  # fmt: skip
    assert "qbench run: --input: sr: the value's shape [2] does not fit" in err
    err = _one_line_error(run_qbench("run", "--model", "vad.onnx", "--data", "synthetic",
                                     "--input", "rate=16000", "--dry-run",
                                     cwd=models))  # fmt: skip
    assert "rate: no such input (inputs: x, sr)" in err
    err = _one_line_error(run_qbench("run", "--model", "vad.onnx", "--input", "x:16",
                                     "--dry-run", cwd=models))  # fmt: skip
    assert "NAME=VALUE" in err


# --- dynamic sizes ---------------------------------------------------------------------------


# slow: 15 s; the default run is near its 15-minute budget
@pytest.mark.slow
def test_dynamic_size_error_names_the_shape_and_the_parameter(models: Path) -> None:
    code, _, rows = _run(models, "det16", "--model", "detector.onnx", "--data", "synthetic",
                         "--methods", "fp32")  # fmt: skip
    row = rows["detector/fp32/onnxruntime/local/b1/t1"]
    assert code == 4 and row["status"] == "failed"
    assert "x float32[" in row["error"] and ", 3, 16, 16]" in row["error"]
    assert "dynamic_size=16" in row["error"] and "--data-param dynamic_size=N" in row["error"]
    code, _, rows = _run(models, "det32", "--model", "detector.onnx", "--data", "synthetic",
                         "--data-param", "dynamic_size=32", "--methods",
                         "fp32,static_int8")  # fmt: skip
    assert code == 0
    for method in ("fp32", "static_int8"):
        row = rows[f"detector/{method}/onnxruntime/local/b1/t1"]
        assert row["status"] == "ok", row["error"]
        assert json.loads(row["input_shapes_json"]) == {"x": [1, 3, 32, 32]}


# --- layouts ---------------------------------------------------------------------------------


def test_nchw_data_for_an_nhwc_model_is_noted(models: Path) -> None:
    spec = [InputSpec("x", (8, 8, 3))]
    notes = binding_notes(spec, [InputSpec("x", (3, 8, 8))])
    assert notes == ["input x: data field x is channels-first (NCHW); transposed to the "
                     "model's channels-last (NHWC) [8, 8, 3]"]  # fmt: skip
    assert binding_notes(spec, [InputSpec("x", (8, 8, 3))]) == []
    code, _, rows = _run(models, "nhwc", "--model", "nhwc.onnx", "--data", "images.npz",
                         "--methods", "fp32")  # fmt: skip
    row = rows["nhwc/fp32/onnxruntime/local/b1/t1"]
    assert code == 0 and row["status"] == "ok", row["error"]
    assert any("transposed to the model's channels-last" in n for n in row["notes"])
    assert json.loads(row["input_shapes_json"]) == {"x": [1, 8, 8, 3]}
