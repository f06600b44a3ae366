"""weight_only: ONNX Runtime's MatMulNBits on real models — the Gemm -> MatMul rewrite it needs,
the artifact ORT runs, its packed size, what it describes, and models it cannot quantize."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from qbench.backends.onnxruntime import OrtParams, OrtSession
from qbench.measure.fidelity import fidelity
from qbench.methods.base import MakeContext
from qbench.methods.export import fp32_onnx
from qbench.methods.weight_only import (
    WeightOnlyParams,
    gemm_to_matmul,
    matmul_nbits_bits,
    weight_matrices,
)
from qbench.plugins import load_all
from qbench.store.schema import RESULT_COLUMN_NAMES
from tests.conftest import write_suite

FAM = load_all()
WEIGHT_ONLY = FAM.methods.get("weight_only")()
FP32 = FAM.methods.get("fp32")()


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    dataset = FAM.datasets.get("digits")()
    eval_x, eval_y = dataset.load("eval", None)
    return {"x": eval_x, "y": eval_y}


def ort(path: Path, **params: Any) -> OrtSession:
    session = FAM.backends.get("onnxruntime")().open(path, "onnx", 1, OrtParams(**params))
    assert isinstance(session, OrtSession)
    return session


def run_model(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort_

    options = ort_.SessionOptions()
    options.graph_optimization_level = ort_.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort_.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": x})[0]


def onnx_context(path: Path) -> MakeContext:
    """What the agent builds for an onnx_file model (qbench/agent.py prepare)."""
    source = FAM.models.get("onnx_file")()
    params = source.Params(path=str(path), dataset="digits")
    loaded = source.load(params)
    return MakeContext(model_name="onnx_file", source=source, model_params=params, model=loaded,
                       input_shape=(1, 8, 8), calib=None,
                       fp32_onnx=lambda: fp32_onnx(loaded.sha256, None, (1, 8, 8),
                                                   loaded.onnx_path))  # fmt: skip


def build(ctx: MakeContext, out: Path, **params: Any) -> dict[str, Any]:
    p = WEIGHT_ONLY.Params(**params)
    assert WEIGHT_ONLY.unsupported("onnx", p, ctx.source) is None
    meta = WEIGHT_ONLY.make("onnx", p, ctx, out)
    assert out.is_file() and out.stat().st_size > 0
    return meta


def nbits_nodes(path: Path) -> list[dict[str, Any]]:
    return [{a.name: helper.get_attribute_value(a) for a in n.attribute}
            for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"]  # fmt: skip


# --- the Gemm -> MatMul rewrite ---------------------------------------------------------------


def gemm_model() -> onnx.ModelProto:
    """x[b,16] -> Gemm(transB=1, bias) -> Relu -> Gemm(transB=0, no bias) -> Gemm(alpha=0.5),
    and a second Gemm sharing the first one's weight (transB=1)."""
    rng = np.random.default_rng(0)
    arrays = {
        "w1": rng.normal(0, 0.5, (32, 16)),  # [N, K]: transB=1
        "b1": rng.normal(0, 0.5, 32),
        "w2": rng.normal(0, 0.5, (32, 8)),  # [K, N]
        "w3": rng.normal(0, 0.5, (8, 4)),
        "b3": rng.normal(0, 0.5, 4),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="fc1", transB=1),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Gemm", ["r1", "w2"], ["h2"], name="fc2"),
        helper.make_node("Gemm", ["h2", "w3", "b3"], ["y"], name="scaled", alpha=0.5),
        helper.make_node("Gemm", ["x", "w1"], ["z"], transB=1),  # unnamed, shares w1
    ]
    graph = helper.make_graph(
        nodes,
        "gemms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 32])],
        [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_gemm_to_matmul_computes_the_same_outputs() -> None:
    model = gemm_model()
    rewritten, count, origin = gemm_to_matmul(model)
    onnx.checker.check_model(rewritten)
    assert count == 3  # fc1, fc2 and the unnamed one; alpha=0.5 stays a Gemm
    assert origin == {"w1_transposed": "w1"}
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops == ["MatMul", "Add", "Relu", "MatMul", "Gemm", "MatMul"]
    assert [n.op_type for n in model.graph.node].count("Gemm") == 4  # the input is untouched
    inits = {i.name: numpy_helper.to_array(i) for i in rewritten.graph.initializer}
    # One transposed copy of w1 serves both of its Gemms; the [N, K] original is dropped.
    assert "w1" not in inits and inits["w1_transposed"].shape == (16, 32)
    np.testing.assert_array_equal(inits["w1_transposed"], numpy_helper.to_array(
        next(i for i in model.graph.initializer if i.name == "w1")).T)  # fmt: skip
    assert inits["w2"].shape == (32, 8)
    names = [n.name for n in rewritten.graph.node]
    assert len(set(names)) == len(names) and "fc1_matmul" in names

    x = np.random.default_rng(1).normal(0, 1, (7, 16)).astype(np.float32)
    for expected, got in zip(run_model(model, x), run_model(rewritten, x), strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # MatMulNBits can take every rewritten weight, keyed by its [K, N] shape.
    assert weight_matrices(model) == {"w1": (16, 32), "w2": (32, 8)}
    assert weight_matrices(rewritten) == {"w1_transposed": (16, 32), "w2": (32, 8)}


def test_gemm_model_builds_with_a_shared_weight(tmp_path: Path) -> None:
    path = tmp_path / "gemms.onnx"
    onnx.save(gemm_model(), path)
    ctx = onnx_context(path)
    artifact = tmp_path / "q.onnx"
    meta = build(ctx, artifact, block_size=16)
    assert meta["artifact_notes"] == [
        "MatMulNBits covers MatMul/Gemm layers only: 3 of 4 compute nodes quantized "
        "(3 Gemm rewritten as MatMul for it); Gemm×1 stay float32"
    ]
    # The two Gemms that share w1 share one quantized copy of it.
    inits = [i.name for i in onnx.load(str(artifact)).graph.initializer]
    assert inits.count("w1_transposed_Q4") == 1 and "w1" not in inits
    assert [n["K"] for n in nbits_nodes(artifact)] == [16, 32, 16]
    # Theoretical size counts w1 once: 4 bits per weight and a float32 scale per 16 inputs.
    w1 = 16 * 32 * 4 + 32 * 32
    w2 = 32 * 8 * 4 + 8 * 2 * 32
    assert meta["packed_bytes"] == (w1 + w2 + (32 + 8 * 4 + 4) * 32) // 8
    x = np.random.default_rng(2).normal(0, 1, (64, 16)).astype(np.float32)
    ref, out = ort(ctx.fp32_onnx()).predict(x), ort(artifact).predict(x)
    assert fidelity(ref, out)["output_cosine"] > 0.98
    assert ort(artifact).inspect()["quantized_nodes"] == 3


# --- building on real models ------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_ctx() -> MakeContext:
    torch = pytest.importorskip("torch")
    source = FAM.models.get("digits_cnn")()
    params = source.Params(epochs=3)  # about a second on one thread; 98.6% top-1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loaded = source.load(params)
    finally:
        torch.set_num_threads(threads)
    return MakeContext(model_name="digits_cnn", source=source, model_params=params,
                       model=loaded, input_shape=(1, 8, 8), calib=None,
                       fp32_onnx=lambda: fp32_onnx(loaded.sha256, loaded.module,
                                                   (1, 8, 8)))  # fmt: skip


def test_digits_cnn_runs_matmul_nbits_close_to_fp32(
    digits_ctx: MakeContext, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    artifact = tmp_path / "w4.onnx"
    meta = build(digits_ctx, artifact)
    # Both Linear layers (exported as Gemm) became 4-bit MatMulNBits; the convolutions did not.
    graph_ops = [n.op_type for n in onnx.load(str(artifact)).graph.node]
    assert "Gemm" not in graph_ops and graph_ops.count("Conv") == 3
    assert nbits_nodes(artifact) == [
        {"K": 256, "N": 128, "bits": 4, "block_size": 32},
        {"K": 128, "N": 10, "bits": 4, "block_size": 32},
    ]
    assert meta["artifact_notes"] == [
        "MatMulNBits covers MatMul/Gemm layers only: 2 of 5 compute nodes quantized "
        "(2 Gemm rewritten as MatMul for it); Conv×3 stay float32"
    ]
    session = ort(artifact)
    info = session.inspect()
    assert info["quantized_nodes"] == 2 and info["compute_nodes"] == 5
    assert "MatMulNBits×2" in info["notes"][0] and "Conv×3" in info["notes"][0]

    x = digits["x"]
    ref, out = ort(digits_ctx.fp32_onnx()).predict(x), session.predict(x)
    assert out.dtype == np.float32 and out.shape == ref.shape == (len(x), 10)
    fid = fidelity(ref, out)
    assert fid["fp32_agreement"] >= 0.95 and fid["output_cosine"] > 0.99
    assert 15 < fid["output_sqnr_db"] < 60  # quantized: close, not identical
    assert (out.argmax(1) == digits["y"]).mean() >= (ref.argmax(1) == digits["y"]).mean() - 0.03

    # Theoretical size: the two Linear weights at 4 bits plus one float32 scale per block of
    # 32 inputs; every other parameter (convolutions, BatchNorm, biases) stays float32.
    fp32_bytes = FP32.make("onnx", FP32.Params(), digits_ctx, tmp_path / "fp32.onnx")
    fp32_bytes = fp32_bytes["packed_bytes"]
    fc1 = 256 * 128 * 4 + 128 * (256 // 32) * 32
    fc2 = 128 * 10 * 4 + 10 * (128 // 32) * 32
    saved = (256 * 128 + 128 * 10) * 32 - fc1 - fc2
    assert meta["packed_bytes"] == fp32_bytes - saved // 8 < fp32_bytes


@pytest.mark.parametrize(
    "params",
    [{"symmetric": False}, {"accuracy_level": 4}, {"bits": 8, "accuracy_level": 4},
     {"bits": 8}, {"block_size": 128}],
    ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()),
)  # fmt: skip
def test_digits_cnn_variants(
    params: dict[str, Any],
    digits_ctx: MakeContext,
    digits: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    artifact = tmp_path / "v.onnx"
    build(digits_ctx, artifact, **params)
    nodes = nbits_nodes(artifact)
    assert len(nodes) == 2
    assert all(n["bits"] == params.get("bits", 4) for n in nodes)
    assert all(n["block_size"] == params.get("block_size", 32) for n in nodes)
    # ORT writes accuracy_level only when it is set (not 0/None).
    assert all(n.get("accuracy_level") == params.get("accuracy_level") for n in nodes)
    inits = {i.name: i for i in onnx.load(str(artifact)).graph.initializer}
    asymmetric = not params.get("symmetric", True)
    assert any(name.endswith("_zero_points") for name in inits) == asymmetric
    x = digits["x"]
    fid = fidelity(ort(digits_ctx.fp32_onnx()).predict(x), ort(artifact).predict(x))
    assert fid["fp32_agreement"] >= 0.95 and fid["output_cosine"] > 0.99


def test_tiny_model_packed_bytes_by_hand(tiny_onnx: Path, tmp_path: Path) -> None:
    # Conv(16x1x3x3 + 16 bias) -> pool -> Gemm(fc 10x16, transB=1, 10 bias): K=16 is shorter
    # than one block of 32, which ORT pads; the size counts the 16 real weights per column.
    ctx = onnx_context(tiny_onnx)
    float_params = 16 * 9 + 16 + 10
    fp32 = FP32.make("onnx", FP32.Params(), ctx, tmp_path / "fp32.onnx")["packed_bytes"]
    assert fp32 == (float_params + 160) * 4 == 1320
    sym = build(ctx, tmp_path / "sym.onnx")
    assert sym["artifact_notes"] == [
        "MatMulNBits covers MatMul/Gemm layers only: 1 of 2 compute nodes quantized "
        "(1 Gemm rewritten as MatMul for it); Conv×1 stay float32"
    ]
    assert sym["packed_bytes"] == (float_params * 32 + 160 * 4 + 10 * 32) // 8 == 800
    asym = build(ctx, tmp_path / "asym.onnx", symmetric=False)
    assert asym["packed_bytes"] == -(-(float_params * 32 + 160 * 4 + 10 * (32 + 4)) // 8) == 805
    w8 = build(ctx, tmp_path / "w8.onnx", bits=8, block_size=16)
    assert w8["packed_bytes"] == (float_params * 32 + 160 * 8 + 10 * 32) // 8 == 880
    assert matmul_nbits_bits(16, 10, WeightOnlyParams()) == 160 * 4 + 10 * 32
    assert matmul_nbits_bits(100, 3, WeightOnlyParams(block_size=64, symmetric=False)) == (
        300 * 4 + 3 * 2 * (32 + 4)
    )

    # The padded block runs: MatMulNBits with K=16, block_size=32.
    assert nbits_nodes(tmp_path / "sym.onnx") == [{"K": 16, "N": 10, "bits": 4, "block_size": 32}]
    x = np.random.default_rng(0).uniform(0, 1, (32, 1, 8, 8)).astype(np.float32)
    fid = fidelity(ort(ctx.fp32_onnx()).predict(x), ort(tmp_path / "sym.onnx").predict(x))
    assert fid["output_cosine"] > 0.99


# --- models it cannot quantize ----------------------------------------------------------------


def conv_only_onnx(path: Path) -> Path:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_only",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(rng.normal(0, 0.5, (10, 1, 3, 3)).astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_conv_only_model_fails_with_a_reason(tmp_path: Path) -> None:
    ctx = onnx_context(conv_only_onnx(tmp_path / "conv.onnx"))
    with pytest.raises(ValueError, match="model onnx_file has no MatMul/Gemm layer"):
        WEIGHT_ONLY.make("onnx", WEIGHT_ONLY.Params(), ctx, tmp_path / "q.onnx")


def test_conv_only_cell_is_failed_and_torch_backend_skipped(tmp_path: Path) -> None:
    """Through the planner and the agent's prepare stage, as a run records it."""
    from qbench import agent
    from qbench.plan import build_plan
    from qbench.suite.loader import load_suite

    model = conv_only_onnx(tmp_path / "conv.onnx")
    suite = write_suite(tmp_path, f"""
        name: wo
        models: [{{name: onnx_file, params: {{path: {model}, dataset: digits}}}}]
        methods: [weight_only]
        backends: [onnxruntime, torch]
        accuracy: {{samples: 16}}
    """)  # fmt: skip
    cells = {c.backend: c for c in build_plan(*load_suite(suite)).cells}
    assert cells["torch"].skip_reason == (
        "method weight_only produces onnx/tflite artifacts; backend torch loads torch"
    )
    cell = cells["onnxruntime"]
    assert cell.skip_reason is None and cell.artifact_format == "onnx"
    cell_path, out = tmp_path / "cell.json", tmp_path / "out.json"
    cell_path.write_text(json.dumps(cell.to_json()))
    with warnings.catch_warnings():
        assert agent.main(["prepare", str(cell_path), str(out)]) == 1
    result = json.loads(out.read_text())
    assert result["status"] == "failed"
    assert result["error"].startswith(
        "ValueError: model onnx_file has no MatMul/Gemm layer with a constant 2-D float32 weight"
    )


# --- parameters, description, registration ----------------------------------------------------


def described(**params: Any) -> dict[str, Any]:
    out = WEIGHT_ONLY.describe("onnx", WEIGHT_ONLY.Params(**params))
    assert set(out) <= set(RESULT_COLUMN_NAMES)  # the store accepts every key
    return out


def test_describe_execution_and_params() -> None:
    assert "weight_only" in FAM.methods and WEIGHT_ONLY.produces == ("onnx", "tflite")
    assert not WEIGHT_ONLY.uses_calibration
    out = described()
    notes = out.pop("notes", [])
    assert out == {
        "bits_w": 4,
        "bits_a": 32,
        "granularity": "per_group",
        "group_size": 32,
        "symmetric_weights": True,
        "act_dtype": "float32",
        "weight_dtype": "int4",
        "weight_scheme": "uniform",
    }
    assert notes == []  # the artifact's note says which layers MatMulNBits took
    assert WEIGHT_ONLY.execution("onnx", WEIGHT_ONLY.Params()) == "native"

    int8 = described(accuracy_level=4, symmetric=False, block_size=64)
    assert (int8["bits_a"], int8["act_dtype"], int8["calibrator"]) == (8, "int8", "dynamic")
    assert (int8["weight_dtype"], int8["group_size"]) == ("uint4", 64)
    for level in (None, 0, 1, 2, 3):  # ORT's x86 CPU computes in float32 at each of these
        assert described(accuracy_level=level)["bits_a"] == 32

    # 8-bit and 2-bit weights have no float-compute CPU kernel: ORT dequantizes each run.
    for params in ({"bits": 8}, {"bits": 2}, {"bits": 2, "accuracy_level": 4, "block_size": 16}):
        assert WEIGHT_ONLY.execution("onnx", WEIGHT_ONLY.Params(**params)) == "simulated"
        assert any("dequantizes the weights" in n for n in described(**params)["notes"])
    for params in ({"bits": 8, "accuracy_level": 4}, {"bits": 2, "accuracy_level": 4}):
        assert WEIGHT_ONLY.execution("onnx", WEIGHT_ONLY.Params(**params)) == "native"
        assert described(**params)["bits_a"] == 8
    assert described(bits=2, accuracy_level=4, block_size=256)["bits_a"] == 32

    for bad in ({"bits": 3}, {"block_size": 48}, {"block_size": 512}, {"accuracy_level": 5}):
        with pytest.raises(ValidationError):
            WEIGHT_ONLY.Params(**bad)

    digits_cnn = FAM.models.get("digits_cnn")()
    assert WEIGHT_ONLY.unsupported("onnx", WEIGHT_ONLY.Params(), digits_cnn) is None
    reason = WEIGHT_ONLY.unsupported("torch", WEIGHT_ONLY.Params(), digits_cnn)
    assert reason and "ONNX" in reason


def test_listed_with_its_parameters() -> None:
    from tests.conftest import run_qbench

    result = run_qbench("list", "methods", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "weight_only" in result.stdout and "MatMulNBits" in result.stdout
