"""What an artifact really holds, read back from the file (qbench.formats, issue 28): a method
meant to quantize that left every tensor float fails its cell, packed_bytes is the artifact's,
and LiteRT's int8 methods really quantize float .tflite files written by older converters (no
SignatureDef, op codes only in the pre-3a field). Real files, real ai-edge-quantizer and ONNX
Runtime quantizers; no mocks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qbench.formats import contents
from qbench.formats.audit import PhantomQuantization, audit
from qbench.plugins import load_all
from tests import own_models
from tests.conftest import FAST_MEASUREMENT, REPO, run_qbench


def _method(name: str, **params: Any) -> tuple[Any, Any]:
    method = load_all().methods.get(name)()
    return method, method.Params(**params)


@pytest.fixture(scope="module")
def legacy_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Float conv + fully-connected .tflite: no SignatureDef, op codes in the pre-3a field."""
    return own_models.unsigned_tflite(tmp_path_factory.mktemp("legacy"))


@pytest.fixture(scope="module")
def unsigned_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model without SignatureDef, op codes as current converters write them."""
    return own_models.unsigned_tflite(tmp_path_factory.mktemp("unsigned"), legacy=False)


# --- the audit itself ---------------------------------------------------------------------


def test_a_float_onnx_given_as_dynamic_int8_fails(tiny_onnx: Path) -> None:
    method, params = _method("dynamic_int8")
    with pytest.raises(PhantomQuantization) as caught:
        audit(method, "onnx", params, tiny_onnx)
    message = str(caught.value)
    assert message.startswith("dynamic_int8 left every tensor float32")
    assert "float32×4" in message and "\n" not in message
    fp16, fp16_params = _method("fp16")  # a float16 method must hold float16 constants
    with pytest.raises(PhantomQuantization, match="fp16 left every tensor float32"):
        audit(fp16, "onnx", fp16_params, tiny_onnx)


def test_float_and_fake_quant_methods_keep_float_artifacts(tiny_onnx: Path) -> None:
    for name in ("fp32", "uniform", "qat"):  # uniform and qat: fake-quant, float on disk
        method, params = _method(name)
        assert audit(method, "onnx", params, tiny_onnx) == {
            "quantized_tensors": 0,
            "float_tensors": 4,
        }, name  # fmt: skip  (no packed_bytes: theirs stays the method's theoretical one)


def test_real_quantized_onnx_is_counted_and_sized_from_the_file(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.float16 import convert_float_to_float16

    int8 = tmp_path / "int8.onnx"
    quantize_dynamic(str(tiny_onnx), str(int8), weight_type=QuantType.QUInt8)
    method, params = _method("dynamic_int8")
    row = audit(method, "onnx", params, int8)
    found = contents("onnx", int8)
    assert row["quantized_tensors"] == found.quantized_tensors >= 2  # both weights uint8
    assert found.quantized_ops >= 2  # ConvInteger / MatMulInteger / DynamicQuantizeLinear
    assert row["packed_bytes"] == found.stored_bytes
    fp32_bytes = contents("onnx", tiny_onnx).stored_bytes
    assert fp32_bytes == (16 * 9 + 16 + 10 * 16 + 10) * 4
    assert row["packed_bytes"] < fp32_bytes
    half = tmp_path / "fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(tiny_onnx)), keep_io_types=True), half)
    fp16, fp16_params = _method("fp16")
    assert audit(fp16, "onnx", fp16_params, half)["quantized_tensors"] == 4


def test_a_float_tflite_given_as_int8_fails(legacy_tflite: Path) -> None:
    for name in ("dynamic_int8", "static_int8"):
        method, params = _method(name)
        with pytest.raises(PhantomQuantization, match=f"{name} left every tensor float32"):
            audit(method, "tflite", params, legacy_tflite)
    fp32, params = _method("fp32")
    assert audit(fp32, "tflite", params, legacy_tflite) == {
        "quantized_tensors": 0,
        "float_tensors": 8,
    }  # fmt: skip  (4 weights and 4 biases)


def test_openvino_ir_is_read_back(tiny_onnx: Path, tmp_path: Path) -> None:
    import openvino as ov

    from qbench.methods._openvino_ir import save_model

    for half in (False, True):
        save_model(ov.convert_model(str(tiny_onnx)), tmp_path / f"{half}.openvino", {},
                   compress_to_fp16=half)  # fmt: skip
    f32, f16 = tmp_path / "False.openvino", tmp_path / "True.openvino"
    weights, params = _method("nncf_weights")
    with pytest.raises(PhantomQuantization, match="nncf_weights left every tensor float32"):
        audit(weights, "openvino", params, f32)
    fp16, fp16_params = _method("fp16")
    row = audit(fp16, "openvino", fp16_params, f16)
    assert row["quantized_tensors"] == 3 and row["float_tensors"] == 0
    assert row["packed_bytes"] == contents("openvino", f16).stored_bytes
    assert row["packed_bytes"] < contents("openvino", f32).stored_bytes * 0.6
    bf16, bf16_params = _method("bf16")  # its IR keeps float32: the CPU plugin converts it
    assert "packed_bytes" not in audit(bf16, "openvino", bf16_params, f32)


def test_torch_state_dicts_are_read_back(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    convs = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4)).eval()
    method, params = _method("dynamic_int8")
    for name, module in (("convs", convs), ("head", torch.nn.Sequential(convs, head))):
        rebuilt = method.rebuild_torch(module, None, params)  # quantize_dynamic: Linear only
        torch.save({"state_dict": rebuilt.state_dict()}, tmp_path / f"{name}.pt")
    with pytest.raises(PhantomQuantization, match="dynamic_int8 left every tensor float32"):
        audit(method, "torch", params, tmp_path / "convs.pt")  # no Linear: nothing quantized
    row = audit(method, "torch", params, tmp_path / "head.pt")
    # float: the conv's weight and bias, the Linear's bias and its (unused) output scale
    assert row["quantized_tensors"] == 1 and row["float_tensors"] == 4
    assert row["packed_bytes"] < (8 * 3 * 9 + 8 + 288 * 4 + 4) * 4 / 2


# --- the root cause, and LiteRT's quantizers on such files ------------------------------------


def test_ai_edge_quantizer_reads_only_the_current_op_code_field(
    legacy_tflite: Path, tmp_path: Path
) -> None:
    """Why qbench rewrites the file first: on the file as given, ai-edge-quantizer sees every
    op as ADD (builtin_code 0) and writes a float32 model. If this starts failing, the
    quantizer reads the old field itself and quantizer_ready's op-code rewrite can go."""
    from ai_edge_quantizer import quantizer, recipe

    from qbench.methods._litert_quant import dynamic_range

    raw = tmp_path / "raw.tflite"
    qt = quantizer.Quantizer(str(legacy_tflite), recipe.dynamic_wi8_afp32())
    qt.quantize().export_model(str(raw), overwrite=True)
    assert contents("tflite", raw).quantized_tensors == 0
    fixed = tmp_path / "fixed.tflite"
    found = dynamic_range(legacy_tflite, fixed)
    assert contents("tflite", fixed).dtypes["int8"] == 4  # 2 conv + 2 fully-connected weights
    assert any("deprecated_builtin_code" in r for r in found["rewrites"])


def test_static_int8_calibrates_a_tflite_without_signature(
    unsigned_tflite: Path, tmp_path: Path
) -> None:
    from qbench.methods._litert_quant import full_integer

    calib = np.random.default_rng(0).random((8, 3, own_models.SIZE, own_models.SIZE))
    out = tmp_path / "static.tflite"
    found = full_integer(unsigned_tflite, out, calib.astype(np.float32))
    assert found["input"]["dtype"] == found["output"]["dtype"] == "int8"
    assert found["rewrites"] == ["no SignatureDef: added 'serving_default' over the model's "
                                 "inputs and outputs"]  # fmt: skip
    held = contents("tflite", out)
    assert held.dtypes["int8"] == 4 and held.float_tensors == 0


# --- end to end ---------------------------------------------------------------------------


def _run(model: Path, methods: str, store: Path, plugins: str = "") -> list[dict[str, Any]]:
    """`qbench run --model MODEL --data synthetic --methods METHODS --backends litert`, with
    the fast measurement settings (the suite the flags make, saved and run)."""
    dry = run_qbench("run", "--model", str(model), "--data", "synthetic", "--methods", methods,
                     "--backends", "litert", "--dry-run", plugins=plugins)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    suite = store.parent / f"{store.name}.yaml"
    suite.write_text(f"{dry.stdout}\n{FAST_MEASUREMENT}\n")
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report", plugins=plugins)
    assert "Traceback" not in proc.stderr, proc.stderr
    from qbench.store.parquet import load

    _, results = load(store)
    return [dict(r) for _, r in results.iterrows()]


@pytest.fixture(scope="module")
def litert_store(legacy_tflite: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("runs") / "legacy"
    _run(legacy_tflite, "fp32,dynamic_int8,static_int8", store)
    return store


def test_litert_int8_cells_of_an_old_float_tflite_are_really_int8(
    litert_store: Path, legacy_tflite: Path
) -> None:
    from qbench.store.parquet import load

    _, results = load(litert_store)
    rows = {r["method"]: r for _, r in results.iterrows()}
    assert set(rows) == {"fp32", "dynamic_int8", "static_int8"}
    assert rows["fp32"]["status"] == "ok" and rows["fp32"]["quantized_tensors"] == 0
    float_bytes = legacy_tflite.stat().st_size
    for name in ("dynamic_int8", "static_int8"):
        row = rows[name]
        # never ok with zero quantized tensors; here the fix makes both really int8
        assert row["status"] == "ok", (name, row["error"])
        assert row["quantized_tensors"] == 4, name
        assert row["packed_bytes"] < float_bytes / 3.5, name  # int8 weights, read back
        assert row["artifact_bytes"] < float_bytes / 3, name
        assert any("deprecated_builtin_code" in n for n in row["notes"]), name
    assert rows["static_int8"]["float_tensors"] == 0
    assert rows["dynamic_int8"]["float_tensors"] == 4  # float32 biases of the hybrid kernels


def test_a_method_that_quantizes_nothing_fails_and_is_not_cached(
    legacy_tflite: Path, tmp_path: Path
) -> None:
    for attempt in ("first", "again"):  # a failed build is never reused as a success
        rows = _run(legacy_tflite, "fp32,phantom_int8", tmp_path / attempt,
                    plugins="tests.plugins.phantom")  # fmt: skip
        phantom = next(r for r in rows if r["method"] == "phantom_int8")
        assert phantom["status"] == "failed", attempt
        assert phantom["error"].startswith(
            "prepare: PhantomQuantization: phantom_int8 left every tensor float32: its tflite "
            "quantizer quantized nothing (float32×8, int32×4 constants, 0 quantized ops)"
        ), phantom["error"]
        assert "\n" not in phantom["error"]
        assert next(r for r in rows if r["method"] == "fp32")["status"] == "ok"


# --- benchmarks/phantom_quantization.py -------------------------------------------------------

SCRIPT = REPO / "benchmarks" / "phantom_quantization.py"


def _script(*stores: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the test session's cache (conftest)
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, stores)], capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip


def test_phantom_benchmark_counts_none_in_a_real_store(litert_store: Path) -> None:
    proc = _script(litert_store)
    assert proc.returncode == 0, proc.stderr
    assert ("3 ok cells, 2 of a quantizing method; phantom (no quantized tensor): 0 (counts in "
            "rows 2, artifacts re-read 2, unread 0)") in proc.stdout  # fmt: skip


@pytest.fixture(scope="module")
def old_store(litert_store: Path, legacy_tflite: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Path:  # fmt: skip
    """A store as qbench wrote them before the audit: dynamic_int8 ok with 0 quantized tensors,
    its artifact (still in the cache) the float file (the real run's rows, rewritten)."""
    from qbench.cache import cached_file, recorded_sha256
    from qbench.store.parquet import RunWriter, load, run_rows

    def build(tmp: Path) -> None:
        shutil.copyfile(legacy_tflite, tmp)

    entry = cached_file("artifacts", {"test": "a float artifact of an int8 row"}, ".tflite",
                        build)  # fmt: skip
    sha = recorded_sha256(entry.path)
    assert sha is not None
    runs, _ = load(litert_store)
    run, rows = run_rows(litert_store, str(runs["run_id"].iloc[0]))
    store = tmp_path_factory.mktemp("old") / "store"
    writer = RunWriter(store, {**run, "run_id": "phantom-run"})
    for row in rows:
        if row["method"] == "dynamic_int8":
            row = {**row, "quantized_tensors": None, "float_tensors": None,
                   "artifact_sha256": sha[:16]}  # fmt: skip
        writer.append({**row, "run_id": "phantom-run"})
    writer.finish()
    return store


def test_phantom_benchmark_finds_an_ok_cell_whose_artifact_is_float(
    litert_store: Path, old_store: Path
) -> None:
    proc = _script(litert_store, old_store)
    assert proc.returncode == 1, proc.stderr
    assert ("phantom (no quantized tensor): 1 (counts in rows 1, artifacts re-read 2, unread "
            "0)") in proc.stdout  # fmt: skip
    assert "  phantom: conv_fc_legacy/dynamic_int8/litert/local/b1/t1" in proc.stdout


def test_export_refuses_a_float_artifact_of_an_int8_row(
    litert_store: Path, old_store: Path, tmp_path: Path
) -> None:
    from qbench.artifact_export import export

    cell = "conv_fc_legacy/dynamic_int8/litert/local/b1/t1"
    with pytest.raises(ValueError, match=f"cell {cell}: not exported: dynamic_int8 left every "
                       "tensor float32"):  # fmt: skip
        export(old_store, cell, tmp_path / "phantom.tflite")
    assert not (tmp_path / "phantom.tflite").exists()
    written = export(litert_store, cell, tmp_path / "int8.tflite")
    side = json.loads(written[-1].read_text())
    assert side["holds"]["quantized_tensors"] == 4
    assert side["holds"]["packed_bytes"] == contents("tflite", written[0]).stored_bytes
