"""The openvino backend and the NNCF methods, for real: OpenVINO's CPU plugin, NNCF's
quantize and compress_weights, on the trained digits CNN and on a two-input ONNX model built
here (a float input and integer token ids)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from qbench.inputs import InputSpec
from qbench.methods.base import MakeContext
from qbench.methods.export import fp32_onnx
from qbench.plan import build_plan
from qbench.plugins import load_all
from qbench.suite.loader import load_suite
from tests import own_models
from tests.conftest import FAST_MEASUREMENT, run_qbench, write_suite

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from qbench.backends.openvino import OpenVinoParams, OpenVinoSession
from qbench.methods import _openvino_ir as ir

FAM = load_all()
BACKEND = FAM.backends.get("openvino")()
NNCF_INT8 = FAM.methods.get("nncf_int8")()
NNCF_WEIGHTS = FAM.methods.get("nncf_weights")()


def host_flags() -> list[str]:
    from qbench.probe import parse_cpuinfo

    try:
        return list(parse_cpuinfo(Path("/proc/cpuinfo").read_text())["flags"])
    except OSError:
        return []


def open_ov(path: Path, fmt: str = "openvino", **params: Any) -> OpenVinoSession:
    session = BACKEND.open(path, fmt, 1, OpenVinoParams(**params))
    assert isinstance(session, OpenVinoSession)
    return session


def build(method: Any, ctx: MakeContext, out: Path, **params: Any) -> dict[str, Any]:
    p = method.Params(**params)
    assert method.unsupported("openvino", p, ctx.source) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = method.make("openvino", p, ctx, out)
    assert out.is_file() and out.stat().st_size > 0
    return meta


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) == b.argmax(1)))


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    """The trained digits CNN, its fp32 ONNX export, calibration and held-out inputs."""
    source = FAM.models.get("digits_cnn")()
    params = source.Params()
    loaded = source.load(params)
    dataset = FAM.datasets.get("digits")()
    calib, _ = dataset.load("calib", 64)
    eval_x, labels = dataset.load("eval", None)
    onnx_path = fp32_onnx(loaded.sha256, loaded.module, (1, 8, 8))
    ctx = MakeContext(
        model_name="digits_cnn",
        source=source,
        model_params=params,
        model=loaded,
        input_shape=(1, 8, 8),
        calib=calib,
        fp32_onnx=lambda: onnx_path,
    )
    return {"ctx": ctx, "onnx": onnx_path, "eval": eval_x, "labels": labels}


@pytest.fixture(scope="module")
def digits_fp32(digits: dict[str, Any]) -> np.ndarray:
    """fp32 outputs of the held-out digits from ONNX Runtime: the reference."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(digits["onnx"]), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: digits["eval"]})[0]


# --- the one-file IR container ---------------------------------------------------------------


def test_container_round_trip_and_corruption_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "m.openvino"
    header = ir.pack(path, b"<net/>", b"\x00\x01weights", {"inference_precision": "bf16"})
    got, xml, weights = ir.unpack(path)
    assert (xml, bytes(weights)) == (b"<net/>", b"\x00\x01weights")
    assert got == header and got["inference_precision"] == "bf16" and got["bin_bytes"] == 9
    assert ir.pack(tmp_path / "e.openvino", b"<net/>", b"", {})["bin_bytes"] == 0
    assert bytes(ir.unpack(tmp_path / "e.openvino")[2]) == b""

    data = path.read_bytes()
    cases = {
        "flipped": data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:],
        "truncated": data[:-1],
        "longer": data + b"x",
        "not_ir": b"<?xml version='1.0'?><net/>",
        "empty": b"",
        "bad_header": ir.MAGIC + (5).to_bytes(8, "little") + b"{nope" + b"<net/>",
    }
    expected = {
        "flipped": "does not match its SHA-256 (corrupted)",
        "truncated": "truncated or damaged",
        "longer": "truncated or damaged",
        "not_ir": "not a qbench OpenVINO IR container",
        "empty": "not a qbench OpenVINO IR container",
        "bad_header": "header unreadable",
    }
    for name, content in cases.items():
        bad = tmp_path / f"{name}.openvino"
        bad.write_bytes(content)
        with pytest.raises(ir.ContainerError) as info:
            ir.unpack(bad)
        message = str(info.value)
        assert expected[name] in message and "\n" not in message, (name, message)
    # the backend refuses it the same way, before anything reaches OpenVINO
    with pytest.raises(ir.ContainerError, match="SHA-256"):
        open_ov(tmp_path / "flipped.openvino")
    with pytest.raises(ValueError, match="inference_precision"):
        ir.pack(tmp_path / "x.openvino", b"", b"", {"inference_precision": "int8"})


def test_real_ir_round_trip_runs_the_same(digits: dict[str, Any], tmp_path: Path) -> None:
    import openvino as ov

    model = ov.convert_model(str(digits["onnx"]))
    path = tmp_path / "fp32.openvino"
    header = ir.save_model(model, path, {"inference_precision": "f32"})
    assert header["openvino"] == ov.__version__ and header["bin_bytes"] > 300_000
    assert list(tmp_path.iterdir()) == [path]  # nothing else left on disk
    loaded, got, keep = ir.read_model(ov.Core(), path)
    assert got == header and keep is not None
    x = digits["eval"][:32]
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    direct = ov.Core().compile_model(model, "CPU", config)({0: x})[0]
    packed = ov.Core().compile_model(loaded, "CPU", config)({0: x})[0]
    assert np.array_equal(direct, packed)  # float32 weights kept as they were


# --- fp32 through OpenVINO's ONNX reader -----------------------------------------------------


def test_fp32_onnx_runs_in_f32_with_inputs_bound_once(
    digits: dict[str, Any], digits_fp32: np.ndarray
) -> None:
    session = open_ov(digits["onnx"], fmt="onnx")
    # the export's batch axis is dynamic: the model is compiled for the bound batch's shapes
    assert session.dynamic and session.compiled is None
    run = session.runner({"input": digits["eval"][:1]})
    run()
    assert session.compile_s is not None and session.compile_s > 0
    assert str(session.compiled.inputs[0].get_partial_shape()) == "[1,1,8,8]"
    # explicitly f32: the CPU plugin's default on AMX / AVX512-BF16 CPUs is bf16
    assert str(session.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert session.compiled.get_property("NUM_STREAMS") == 1
    assert session.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    first = np.array(session.request.get_output_tensor(0).data)
    np.testing.assert_allclose(first, digits_fp32[:1], atol=1e-3)
    # another batch shape gets its own compile; the runner's stays the one inspected
    out = session.predict({"input": digits["eval"]})
    assert out.dtype == np.float32 and out.shape == digits_fp32.shape
    np.testing.assert_allclose(out, digits_fp32, atol=1e-3)
    assert len(session.by_shapes) == 2

    row = session.inspect()
    assert (row["quantized_nodes"], row["compute_nodes"]) == (0, 5)
    assert "execution" not in row  # fp32 keeps the method's own label
    assert row["compile_s"] == session.compile_s
    assert any("execution precision f32 (INFERENCE_PRECISION_HINT read back" in n
               for n in row["notes"])  # fmt: skip
    # with static shapes the plugin fuses the MLP's two MatMuls into one Subgraph (snippets)
    assert any("Convolution f32×3, Subgraph f32×2" in n for n in row["notes"])
    assert any("compiled for static input shapes (1, 1, 8, 8)" in n for n in row["notes"])
    assert BACKEND.version().startswith(("20", "1"))

    throughput = open_ov(digits["onnx"], fmt="onnx", hint="throughput")
    assert any("hint throughput" in n for n in throughput.inspect()["notes"])
    # shapes: dynamic compiles the model as it is, at open, and runs any batch with it
    dynamic = open_ov(digits["onnx"], fmt="onnx", shapes="dynamic")
    assert dynamic.compiled.inputs[0].get_partial_shape().is_dynamic
    np.testing.assert_allclose(dynamic.predict({"input": digits["eval"]}), digits_fp32,
                               atol=1e-3)  # fmt: skip
    dynamic.runner({"input": digits["eval"][:1]})()
    assert len(dynamic.by_shapes) == 1 and dynamic.compile_s is None
    row = dynamic.inspect()
    assert "compile_s" not in row
    assert any("dynamic input shapes (shapes: dynamic)" in n for n in row["notes"])


def test_a_runner_outlives_its_session(digits: dict[str, Any], digits_fp32: np.ndarray) -> None:
    """A caller may keep only the timed callable: the compiled model, core and the input
    memory it reads must stay alive (dropping them segfaulted inside infer)."""
    import gc

    session = open_ov(digits["onnx"], fmt="onnx")
    run = session.runner({"input": np.array(digits["eval"][:1])})  # a copy only it holds
    request = session.request
    del session
    gc.collect()
    for _ in range(50):
        run()
    np.testing.assert_allclose(
        np.array(request.get_output_tensor(0).data), digits_fp32[:1], atol=1e-3
    )


# --- NNCF static int8 --------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["performance", "mixed"])
def test_nncf_int8_runs_int8_kernels_and_agrees_with_fp32(
    preset: str, digits: dict[str, Any], digits_fp32: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "int8.openvino"
    meta = build(NNCF_INT8, digits["ctx"], out, preset=preset)
    assert ir.header_of(out)["inference_precision"] == "f32"
    assert (
        "nncf.quantize" in meta["artifact_notes"][0]
        and f"{preset} preset" in (meta["artifact_notes"][0])
    )
    assert "5 of 5 Convolution/MatMul weights int8" in meta["artifact_notes"][0]
    fp32_packed = FAM.methods.get("fp32")().make("onnx", FAM.methods.get("fp32")().Params(),
                                                 digits["ctx"], tmp_path / "f.onnx")  # fmt: skip
    assert meta["packed_bytes"] < fp32_packed["packed_bytes"] / 3
    assert out.stat().st_size < digits["onnx"].stat().st_size / 2  # int8 weights in the IR

    session = open_ov(out)
    row = session.inspect()
    assert row["quantized_nodes"] == row["compute_nodes"] == 5
    assert row["execution"] == "native"
    assert any("execution precision f32" in n for n in row["notes"])  # non-int8 parts stay f32
    assert agreement(session.predict({"input": digits["eval"]}), digits_fp32) >= 0.97

    # overflow_fix first_layer: 8-bit weights (auto decides per CPU in prepare)
    described = NNCF_INT8.describe(
        "openvino", NNCF_INT8.Params(preset=preset, overflow_fix="first_layer")
    )
    assert described["act_dtype"] == ("int8" if preset == "performance" else "uint8")
    assert (described["bits_w"], described["bits_a"], described["weight_dtype"]) == (8, 8, "int8")
    assert NNCF_INT8.needs_calibration(NNCF_INT8.Params())


ISA_CHILD = """
import json, sys
from pathlib import Path
import numpy as np
from qbench.backends.openvino import OpenVinoParams
from qbench.plugins import load_all
session = load_all().backends.get("openvino")().open(
    Path(sys.argv[1]), "openvino", 1, OpenVinoParams(isa=sys.argv[2]))
session.runner({"input": np.zeros((1, 1, 8, 8), np.float32)})
row = session.inspect()
print(json.dumps({"kernels": row.get("onednn_kernels"), "notes": row["notes"],
                  "quantized": row["quantized_nodes"]}))
"""


def test_isa_cap_runs_the_int8_model_without_amx_and_says_so(
    digits: dict[str, Any], tmp_path: Path
) -> None:
    """`isa` caps the CPU plugin's oneDNN like the torch backend's (ONEDNN_MAX_CPU_ISA, read
    once per process: the cap runs in a fresh interpreter, as a cell's measure process)."""
    import subprocess
    import sys

    out = tmp_path / "int8.openvino"
    build(NNCF_INT8, digits["ctx"], out)
    uncapped = open_ov(out)
    uncapped.runner({"input": digits["eval"][:1]})
    free = uncapped.inspect()["onednn_kernels"]
    assert "convolution" in free and "_i8" in free.lower()  # int8 kernels, by layer type
    done = subprocess.run([sys.executable, "-c", ISA_CHILD, str(out), "avx512_core_vnni"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    capped = json.loads(done.stdout.strip().splitlines()[-1])
    assert capped["quantized"] == 5  # still int8, on other kernels
    assert "amx" not in capped["kernels"].lower()
    assert "oneDNN ISA capped at avx512_core_vnni (ONEDNN_MAX_CPU_ISA)" in capped["notes"]
    if "amx_int8" in host_flags():
        assert "amx" in free.lower()  # what the cap took away


def test_a_cap_that_comes_after_the_plugin_loaded_is_reported_not_applied(
    digits: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "amx_int8" not in host_flags():
        pytest.skip("no AMX-INT8 on this CPU: a cap below AMX changes nothing to detect")
    out = tmp_path / "int8.openvino"
    build(NNCF_INT8, digits["ctx"], out)
    open_ov(out).runner({"input": digits["eval"][:1]})  # the plugin is loaded, uncapped
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "")  # restored after the test: no child inherits
    late = open_ov(out, isa="avx512_core_vnni")
    late.runner({"input": digits["eval"][:1]})
    row = late.inspect()
    assert "amx" in row["onednn_kernels"].lower()
    assert any(n.startswith("oneDNN ISA capped at avx512_core_vnni") and "not applied" in n
               for n in row["notes"])  # fmt: skip


# --- NNCF weight-only compression ------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "fc_bits"), [("int8_sym", {"i8": 2}), ("int4_sym", {"i4": 1, "u8": 1})]
)
def test_nncf_weights_compresses_and_runs_compressed_fully_connected(
    mode: str,
    fc_bits: dict[str, int],
    digits: dict[str, Any],
    digits_fp32: np.ndarray,
    tmp_path: Path,
) -> None:
    out = tmp_path / "w.openvino"
    meta = build(NNCF_WEIGHTS, digits["ctx"], out, mode=mode)
    bits = json.loads(meta["layer_bits_json"])
    assert len(bits) == 5 and set(bits.values()) <= {4, 8}
    # NNCF compresses conv weights in int8 only; in int4 modes the last Linear stays int8
    assert all(bits[f"features.{i}.weight"] == 8 for i in (0, 3, 7))
    if mode.startswith("int4"):
        assert (bits["classifier.1.weight"], bits["classifier.3.weight"]) == (4, 8)
    assert not NNCF_WEIGHTS.needs_calibration(NNCF_WEIGHTS.Params(mode=mode))

    session = open_ov(out)
    row = session.inspect()
    # FullyConnected keeps its integer weights (decompressed in the kernel); the CPU plugin
    # folds compressed Convolution weights back into float weights at compile
    assert (row["quantized_nodes"], row["compute_nodes"], row["execution"]) == (2, 5, "native")
    layers = next(n for n in row["notes"] if n.startswith("runtime graph compute layers"))
    assert "Convolution f32×3" in layers
    for kind, n in fc_bits.items():
        assert f"FullyConnected {kind} weights×{n}" in layers, layers
    assert agreement(session.predict({"input": digits["eval"]}), digits_fp32) >= 0.97


def test_nncf_weights_parameters_that_do_not_apply_are_refused(digits: dict[str, Any]) -> None:
    source = digits["ctx"].source
    reason = NNCF_WEIGHTS.unsupported("openvino", NNCF_WEIGHTS.Params(group_size=64), source)
    assert reason and "group_size applies to the int4 modes" in reason
    assert NNCF_WEIGHTS.unsupported(
        "openvino", NNCF_WEIGHTS.Params(mode="int4_asym", group_size=64, ratio=0.5), source
    ) is None  # fmt: skip
    described = NNCF_WEIGHTS.describe("openvino", NNCF_WEIGHTS.Params(mode="int4_asym"))
    assert (described["bits_w"], described["group_size"], described["weight_dtype"]) == (
        4, 128, "uint4")  # fmt: skip
    tflite = FAM.models.get("tflite_file")()
    assert "OpenVINO artifacts are converted" in NNCF_INT8.unsupported(
        "openvino", NNCF_INT8.Params(), tflite
    )


def test_a_model_with_nothing_to_compress_fails_its_build_with_the_reason(
    tmp_path: Path,
) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    ctx = MakeContext(model_name="relu", source=FAM.models.get("onnx_file")(),
                      model_params=None, model=None, input_shape=(4,),  # type: ignore[arg-type]
                      calib=np.ones((2, 4), np.float32), fp32_onnx=lambda: path)  # fmt: skip
    with pytest.raises(ValueError, match="no Convolution/MatMul/embedding weight that nncf"):
        NNCF_WEIGHTS.make("openvino", NNCF_WEIGHTS.Params(), ctx, tmp_path / "w.openvino")
    with pytest.raises(ValueError, match="NNCF quantized nothing in model relu"):
        NNCF_INT8.make("openvino", NNCF_INT8.Params(), ctx, tmp_path / "q.openvino")


# --- a model of two inputs (float features, integer token ids) --------------------------------


def test_two_input_model_with_integer_ids_through_nncf(tmp_path: Path) -> None:
    import onnxruntime as ort

    path = own_models.two_input_onnx(tmp_path / "two.onnx")
    data = np.load(own_models.two_input_arrays(tmp_path / "two.npz", n=64))
    inputs = {"features": data["features"], "ids": data["ids"]}
    source = FAM.models.get("onnx_file")()
    params = source.Params(path=str(path), dataset="synthetic")
    loaded = source.load(params)
    spec = [InputSpec("features", (6,), "float32"), InputSpec("ids", (None,), "int64")]
    graph = fp32_onnx(loaded.sha256, None, spec, loaded.onnx_path)
    ctx = MakeContext(model_name="two", source=source, model_params=params, model=loaded,
                      input_shape=(6,), calib=None, inputs=spec, calib_inputs=inputs,
                      fp32_onnx=lambda: graph)  # fmt: skip
    reference = ort.InferenceSession(str(path)).run(None, inputs)[0]

    fp32 = open_ov(ctx.fp32_onnx(), fmt="onnx")
    np.testing.assert_allclose(fp32.predict(inputs), reference, atol=1e-4)
    # by position where the names differ (another runtime's names for the same inputs)
    np.testing.assert_allclose(fp32.predict({"a": inputs["features"], "b": inputs["ids"]}),
                               reference, atol=1e-4)  # fmt: skip

    meta = build(NNCF_INT8, ctx, tmp_path / "q.openvino", subset_size=32)
    assert "32 of 64 calibration samples" in meta["artifact_notes"][0]
    int8 = open_ov(tmp_path / "q.openvino")
    row = int8.inspect()
    assert row["quantized_nodes"] == row["compute_nodes"] == 1  # the MatMul; Gather stays
    assert agreement(int8.predict(inputs), reference) >= 0.8

    meta = build(NNCF_WEIGHTS, ctx, tmp_path / "w.openvino", mode="int8_asym")
    # named as the ONNX graph names them (OpenVINO folds the MatMul weight's transpose into a
    # new constant); the embedding table (Gather) is compressed too
    assert json.loads(meta["layer_bits_json"]) == {"w": 8, "emb": 8}
    weights = open_ov(tmp_path / "w.openvino")
    assert weights.inspect()["quantized_nodes"] == 1
    assert agreement(weights.predict(inputs), reference) >= 0.95


# --- bf16 / fp16 IR for the half-precision methods -------------------------------------------


@pytest.mark.parametrize(("method", "precision", "kind"), [("bf16", "bf16", "bf16"),
                                                           ("fp16", "f16", "fp16")])  # fmt: skip
def test_half_precision_ir_runs_in_its_precision(
    method: str,
    precision: str,
    kind: str,
    digits: dict[str, Any],
    digits_fp32: np.ndarray,
    tmp_path: Path,
) -> None:
    from qbench.probe import kernel_readiness

    flags = host_flags()
    why = kernel_readiness(flags)[kind] if flags else "no /proc/cpuinfo flags"
    if why:
        pytest.skip(f"this CPU has {why}: OpenVINO would not run {precision}")
    out = tmp_path / f"{method}.openvino"
    meta = ir.make_precision_ir(digits["ctx"], out, method)
    assert precision in meta["artifact_notes"][0]
    assert ir.header_of(out)["inference_precision"] == precision
    if method == "fp16":  # float16 weights in the file
        assert out.stat().st_size < digits["onnx"].stat().st_size * 0.6

    session = open_ov(out)
    session.runner({"input": digits["eval"][:1]})
    used = session.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    assert used == precision
    row = session.inspect()
    assert row["execution"] == "native" and row["quantized_nodes"] == 0
    assert any(f"execution precision {precision}" in n for n in row["notes"])
    assert any(f"Convolution {precision}×3" in n for n in row["notes"])
    assert agreement(session.predict({"input": digits["eval"]}), digits_fp32) >= 0.97

    # inference_precision: f32 overrides the IR's own precision, and the row says so
    forced = open_ov(out, inference_precision="f32")
    forced.runner({"input": digits["eval"][:1]})
    assert forced.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    row = forced.inspect()
    assert row["execution"] == "simulated"
    assert any(f"the IR is meant to run in {precision}; the CPU plugin runs f32" in n
               for n in row["notes"])  # fmt: skip


def test_half_precision_is_refused_where_the_cpu_has_no_kernels() -> None:
    params = OpenVinoParams()
    no_half = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"]
    bf16 = FAM.methods.get("bf16")()
    reason = BACKEND.refuses("bf16", bf16.Params(), "openvino", params, no_half)
    assert reason and "no AVX512-BF16/AMX-BF16" in reason
    reason = BACKEND.refuses("fp32", bf16.Params(), "onnx", OpenVinoParams(
        inference_precision="f16"), no_half)  # fmt: skip
    assert reason and "no AVX512-FP16/AMX-FP16" in reason and "bf16" in reason
    assert (
        BACKEND.refuses("bf16", bf16.Params(), "openvino", params, [*no_half, "amx_bf16"]) is None
    )
    assert BACKEND.refuses("bf16", bf16.Params(), "openvino", params, []) is None  # unknown CPU
    assert BACKEND.refuses("fp32", bf16.Params(), "onnx", params, no_half) is None


# --- ONNX artifacts of other methods ---------------------------------------------------------


def test_onnx_runtime_artifacts_that_openvino_runs_or_labels(
    digits: dict[str, Any], digits_fp32: np.ndarray, tmp_path: Path
) -> None:
    ctx = digits["ctx"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weight_only = FAM.methods.get("weight_only")()
        weight_only.make("onnx", weight_only.Params(), ctx, tmp_path / "wo.onnx")
        dynamic = FAM.methods.get("dynamic_int8")()
        dynamic.make("onnx", dynamic.Params(), ctx, tmp_path / "dyn.onnx")
        static = FAM.methods.get("static_int8")()
        static.make("onnx", static.Params(), ctx, tmp_path / "qdq.onnx")
    # MatMulNBits (com.microsoft) is converted: FullyConnected with 4-bit weights
    row = open_ov(tmp_path / "wo.onnx", fmt="onnx").inspect()
    assert (row["quantized_nodes"], row["execution"]) == (2, "native")
    assert any("FullyConnected u4 weights×2" in n for n in row["notes"])
    # ConvInteger / MatMulInteger are read but run as float kernels: labelled simulated
    session = open_ov(tmp_path / "dyn.onnx", fmt="onnx")
    row = session.inspect()
    assert (row["quantized_nodes"], row["execution"]) == (0, "simulated")
    assert agreement(session.predict({"input": digits["eval"]}), digits_fp32) >= 0.97
    # ONNX Runtime's QDQ U8S8 graph becomes OpenVINO int8 kernels
    session = open_ov(tmp_path / "qdq.onnx", fmt="onnx")
    row = session.inspect()
    assert row["quantized_nodes"] == row["compute_nodes"] == 5 and row["execution"] == "native"
    assert agreement(session.predict({"input": digits["eval"]}), digits_fp32) >= 0.97


def test_plan_skips_what_openvino_cannot_run_with_reasons(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, """
        name: ov-plan
        models: [digits_cnn]
        methods:
          - fp32
          - weight_only
          - nncf_int8
          - {name: nncf_weights, params: {mode: int8_sym, group_size: 32}}
          - {name: static_int8, label: qop, params: {quant_format: qoperator}}
          - {name: static_int8, label: s16, params: {activations: int16}}
          - {name: static_int8, label: grouped, params: {group_size: 16}}
        backends: [openvino, onnxruntime]
    """)  # fmt: skip
    cells = {c.cell_id: c for c in build_plan(*load_suite(suite)).cells}

    def cell(method: str, backend: str = "openvino") -> Any:
        return next(c for i, c in cells.items() if i.startswith(f"digits_cnn/{method}")
                    and f"/{backend}/" in i)  # fmt: skip

    assert cell("fp32").skip_reason is None and cell("fp32").artifact_format == "onnx"
    assert cell("weight_only").skip_reason is None  # OpenVINO converts MatMulNBits
    assert cell("nncf_int8").skip_reason is None and cell("nncf_int8").artifact_format == (
        "openvino"
    )
    assert "produces openvino artifacts; backend onnxruntime loads onnx" in (
        cell("nncf_int8", "onnxruntime").skip_reason
    )
    assert "group_size applies to the int4 modes" in cell("nncf_weights").skip_reason
    assert "does not convert QOperator graphs" in cell("qop").skip_reason
    assert cell("qop", "onnxruntime").skip_reason is None
    assert "computes them wrongly" in cell("s16").skip_reason
    assert "blocked" in cell("grouped").skip_reason


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.slow
def test_openvino_cells_end_to_end(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, f"""
        name: ov-e2e
        models: [digits_cnn]
        methods: [fp32, nncf_int8, {{name: nncf_weights, params: {{mode: int4_sym}}}}]
        backends: [openvino]
        {FAST_MEASUREMENT}
        calibration: {{samples: 64}}
    """)  # fmt: skip
    store = tmp_path / "store"
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"] == {"ok": 3, "failed": 0, "timeout": 0,
                                                 "skipped": 0}  # fmt: skip
    rows = pd.read_parquet(store / "results").set_index("method")
    fp32, int8, weights = rows.loc["fp32"], rows.loc["nncf_int8"], rows.loc["nncf_weights"]
    assert fp32.top1 >= 0.97 and fp32.fp32_agreement == 1.0 and fp32.artifact_format == "onnx"
    assert int8.artifact_format == "openvino" and int8.execution == "native"
    assert int8.quantized_nodes == int8.compute_nodes == 5 and int8.fp32_agreement >= 0.97
    assert int8.artifact_bytes < fp32.artifact_bytes / 2 and int8.calib_samples == 64
    # NNCF compresses both Linear layers; compiled for batch 1 the plugin may decompress the
    # small int4 classifier into float weights at compile (the row counts what runs)
    assert 1 <= weights.quantized_nodes <= 2 and weights.fp32_agreement >= 0.97
    assert any("FullyConnected u8 weights×1" in n for n in weights.notes)
    assert json.loads(weights.layer_bits_json)["classifier.1.weight"] == 4
    assert all(r.startswith("20") for r in rows.runtime_version)
    assert any("execution precision f32" in n for n in fp32.notes)
