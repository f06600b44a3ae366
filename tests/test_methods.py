"""Real quantization of tiny models through the plugin API: static int8 on ONNX and torch,
what the backends report about the artifacts, and how methods describe themselves."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qbench.backends.onnxruntime import OrtParams, OrtSession, count_compute_nodes
from qbench.measure.fidelity import fidelity
from qbench.methods.base import MakeContext
from qbench.methods.export import fp32_onnx
from qbench.models.base import LoadedModel
from qbench.plugins import load_all
from qbench.store.schema import RESULT_COLUMN_NAMES
from tests.conftest import make_tiny_onnx

FAM = load_all()
STATIC = FAM.methods.get("static_int8")()
FP32 = FAM.methods.get("fp32")()


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    dataset = FAM.datasets.get("digits")()
    calib, _ = dataset.load("calib", 64)
    eval_x, _ = dataset.load("eval", 120)
    return {"calib": calib, "eval": eval_x}


def onnx_context(path: Path, calib: np.ndarray) -> MakeContext:
    """What the agent builds for an onnx_file model (qbench/agent.py prepare)."""
    source = FAM.models.get("onnx_file")()
    params = source.Params(path=str(path), dataset="digits")
    loaded = source.load(params)
    return MakeContext(
        model_name="onnx_file",
        source=source,
        model_params=params,
        model=loaded,
        input_shape=(1, 8, 8),
        calib=calib,
        fp32_onnx=lambda: fp32_onnx(loaded.sha256, None, (1, 8, 8), loaded.onnx_path),
    )


@pytest.fixture(scope="module")
def tiny_ctx(tiny_onnx: Path, digits: dict[str, np.ndarray]) -> MakeContext:
    return onnx_context(tiny_onnx, digits["calib"])


def build(ctx: MakeContext, out: Path, fmt: str = "onnx", method: Any = STATIC, **params: Any):
    p = method.Params(**params)
    assert method.unsupported(fmt, p, ctx.source) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method.make(fmt, p, ctx, out)
    assert out.is_file() and out.stat().st_size > 0
    return out


def ort(path: Path, **params: Any) -> OrtSession:
    session = FAM.backends.get("onnxruntime")().open(path, "onnx", 1, OrtParams(**params))
    assert isinstance(session, OrtSession)
    return session


INSPECT_CHILD = """
import json, sys
from pathlib import Path
from qbench.backends.onnxruntime import OrtParams
from qbench.plugins import load_all
session = load_all().backends.get("onnxruntime")().open(Path(sys.argv[1]), "onnx", 1, OrtParams())
print(json.dumps({"info": session.inspect(), "onnx": "onnx" in sys.modules}))
"""


def test_ort_graph_counts_are_cached_per_file_and_recounted_when_it_changes(
    tmp_path: Path,
) -> None:
    """The optimised graph is read once per file (a second session and the onnx package);
    a later measure process of the same file gets the same counts without either."""
    import json
    import subprocess
    import sys

    model = make_tiny_onnx(tmp_path / "m.onnx")

    def inspect_in_a_fresh_process() -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-c", INSPECT_CHILD, str(model)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = inspect_in_a_fresh_process(), inspect_in_a_fresh_process()
    assert first["info"]["compute_nodes"] == 2 and first["info"]["quantized_nodes"] == 0
    assert second["info"] == first["info"]
    assert first["onnx"] and not second["onnx"]  # counted once, then read from the cache
    make_tiny_onnx(model, classes=5)  # the same file rewritten: counted again
    assert inspect_in_a_fresh_process()["onnx"]


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}


def op_types(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(path).graph.node]


# --- (a) ONNX path ----------------------------------------------------------------------------


def test_static_int8_qdq_u8s8_per_channel(
    tiny_ctx: MakeContext, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    artifact = build(tiny_ctx, tmp_path / "q.onnx")
    # QDQ form: float Conv/Gemm wrapped in QuantizeLinear/DequantizeLinear pairs, with uint8
    # activations and int8 per-channel symmetric weights.
    ops = op_types(artifact)
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= set(ops)
    inits = initializers(artifact)
    assert inits["input_zero_point"].dtype == np.uint8
    assert inits["w_quantized"].dtype == np.int8
    assert inits["w_scale"].shape == (16,)  # one scale per output channel
    assert not inits["w_zero_point"].any()  # symmetric
    assert np.abs(inits["w_quantized"]).max() == 127

    fp32 = ort(tiny_ctx.fp32_onnx())
    assert fp32.inspect()["quantized_nodes"] == 0 and fp32.inspect()["compute_nodes"] == 2
    session = ort(artifact)
    info = session.inspect()
    # ORT fuses every QDQ Conv and Gemm into QLinearConv / QGemm: all compute runs in int8.
    assert info["quantized_nodes"] >= 1
    assert info["quantized_nodes"] == info["compute_nodes"] == 2
    assert "QLinearConv×1" in info["notes"][0] and "QGemm×1" in info["notes"][0]

    # Without graph optimisation the same file runs float Conv/Gemm between Q/DQ pairs.
    plain = ort(artifact, graph_optimization="disable").inspect()
    assert plain["quantized_nodes"] == 0 and plain["compute_nodes"] == 2

    ref, out = fp32.predict(digits["eval"]), session.predict(digits["eval"])
    assert out.dtype == np.float32 and out.shape == ref.shape == (120, 10)
    fid = fidelity(ref, out)
    assert fid["output_cosine"] > 0.99
    assert fid["fp32_agreement"] >= 0.95
    assert 15 < fid["output_sqnr_db"] < 60  # quantized: close, but not identical
    # The simulated graph gives the same numbers as the fused integer kernels, near enough.
    simulated = ort(artifact, graph_optimization="disable").predict(digits["eval"])
    assert fidelity(out, simulated)["output_cosine"] > 0.999


def test_static_int8_artifact_is_smaller_than_fp32(
    tmp_path: Path, digits: dict[str, np.ndarray]
) -> None:
    # The 1.6 kB tiny net is mostly graph and Q/DQ scales (its QDQ file is about twice the
    # fp32 one); a wider Gemm shows the weight saving. Each of its 256 output channels has only
    # 16 weights, so per-channel scales and the int32 bias keep the ratio well above 1/4.
    wide = make_tiny_onnx(tmp_path / "wide.onnx", classes=256)
    ctx = onnx_context(wide, digits["calib"])
    fp32_bytes = ctx.fp32_onnx().stat().st_size
    for quant_format in ("qdq", "qoperator"):
        artifact = build(ctx, tmp_path / f"{quant_format}.onnx", quant_format=quant_format)
        assert artifact.stat().st_size < 0.7 * fp32_bytes, quant_format
        assert initializers(artifact)["fc_quantized"].dtype == np.int8
        ref = ort(ctx.fp32_onnx()).predict(digits["eval"])
        assert fidelity(ref, ort(artifact).predict(digits["eval"]))["output_cosine"] > 0.99


def test_static_int8_qoperator(
    tiny_ctx: MakeContext, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    artifact = build(tiny_ctx, tmp_path / "qop.onnx", quant_format="qoperator")
    ops = op_types(artifact)
    assert "QLinearConv" in ops and "QGemm" in ops
    assert "Conv" not in ops and "Gemm" not in ops
    info = ort(artifact).inspect()
    assert info["quantized_nodes"] == info["compute_nodes"] == 2
    ref = ort(tiny_ctx.fp32_onnx()).predict(digits["eval"])
    assert fidelity(ref, ort(artifact).predict(digits["eval"]))["output_cosine"] > 0.99


@pytest.mark.parametrize(
    "params",
    [
        {"calibrator": "entropy"},
        {"calibrator": "percentile"},
        {"calibrator": "percentile", "percentile": 99.0},
        {"per_channel": False},
        {"activations": "int8"},
        {"reduce_range": True},
    ],
    ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()),
)
def test_static_int8_variants_build_and_stay_close(
    params: dict[str, Any],
    tiny_ctx: MakeContext,
    digits: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    artifact = build(tiny_ctx, tmp_path / "v.onnx", **params)
    info = ort(artifact).inspect()
    assert info["quantized_nodes"] == info["compute_nodes"] == 2
    ref = ort(tiny_ctx.fp32_onnx()).predict(digits["eval"])
    assert fidelity(ref, ort(artifact).predict(digits["eval"]))["output_cosine"] > 0.99
    inits = initializers(artifact)
    if params.get("per_channel") is False:
        assert inits["w_scale"].shape == ()
    if "activations" in params:
        assert inits["input_zero_point"].dtype == np.int8
    if params.get("reduce_range"):
        assert np.abs(inits["w_quantized"]).max() <= 64  # 7-bit weights


def test_percentile_calibration_clips_activation_ranges(
    tiny_ctx: MakeContext, tmp_path: Path
) -> None:
    minmax = initializers(build(tiny_ctx, tmp_path / "mm.onnx"))
    pct = initializers(
        build(tiny_ctx, tmp_path / "p.onnx", calibrator="percentile", percentile=99.0)
    )
    for tensor in ("input", "r", "logits"):
        assert pct[f"{tensor}_scale"] < minmax[f"{tensor}_scale"], tensor
    # The model output's range, whatever chose it, is widened by output_range_scale (default
    # 2): clipping the logits merges the highest scores.
    kept = initializers(build(tiny_ctx, tmp_path / "kept.onnx", output_range_scale=1.0))
    np.testing.assert_allclose(minmax["logits_scale"], 2 * kept["logits_scale"], rtol=1e-5)
    assert kept["input_scale"] == minmax["input_scale"]


def test_entropy_calibration_differs_from_minmax(tiny_ctx: MakeContext, tmp_path: Path) -> None:
    # ORT's own entropy defaults (num_bins == num_quantized_bins == 128) leave the full range as
    # the only candidate; static_int8 calibrates with 2048 histogram bins itself.
    minmax = initializers(build(tiny_ctx, tmp_path / "mm.onnx"))
    entropy = initializers(build(tiny_ctx, tmp_path / "e.onnx", calibrator="entropy"))
    activation_scales = ("input_scale", "r_scale", "g_scale", "logits_scale")
    assert any(entropy[n] != minmax[n] for n in activation_scales)


def test_fp32_onnx_artifact_is_the_preprocessed_model(
    tiny_ctx: MakeContext, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    artifact = build(tiny_ctx, tmp_path / "fp32.onnx", method=FP32)
    assert artifact.read_bytes() == tiny_ctx.fp32_onnx().read_bytes()
    raw = ort(tiny_ctx.model.onnx_path).predict(digits["eval"])
    np.testing.assert_allclose(ort(artifact).predict(digits["eval"]), raw, rtol=1e-5, atol=1e-6)


# --- (b) counting compute nodes ---------------------------------------------------------------


def test_count_compute_nodes_hand_written() -> None:
    assert count_compute_nodes([]) == (0, 0, {})
    assert count_compute_nodes(["Relu", "QuantizeLinear", "Flatten"]) == (0, 0, {})
    # A QDQ graph ORT did not fuse: float compute between Q/DQ pairs.
    assert count_compute_nodes(["QuantizeLinear", "DequantizeLinear", "Conv", "Relu"]) == (
        0,
        1,
        {"Conv": 1},
    )
    ops = [
        "QuantizeLinear",
        "QLinearConv",
        "QLinearConv",
        "Relu",
        "QGemm",
        "DequantizeLinear",
        "FusedConv",
        "MatMulInteger",
        "Gemm",
        "QLinearAdd",  # quantized, but not a compute (Conv/MatMul/Gemm) node
        "ConvTranspose",
        "QLinearConvTranspose",
    ]
    quantized, compute, hist = count_compute_nodes(ops)
    assert quantized == 5
    assert compute == 8
    assert hist == {
        "QLinearConv": 2,
        "QGemm": 1,
        "FusedConv": 1,
        "MatMulInteger": 1,
        "Gemm": 1,
        "ConvTranspose": 1,
        "QLinearConvTranspose": 1,
    }


def test_count_compute_nodes_weight_only_and_dynamic_forms() -> None:
    ops = ["DynamicQuantizeMatMul", "MatMulNBits", "MatMulIntegerToFloat", "MatMul", "FusedMatMul"]
    assert count_compute_nodes(ops)[:2] == (3, 5)


# --- (c) torch path ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_ctx(digits: dict[str, np.ndarray]) -> MakeContext:
    torch = pytest.importorskip("torch")
    from qbench.models._architectures import DigitsCNN

    torch.manual_seed(0)
    module = DigitsCNN().eval()  # random init, BatchNorm with its default statistics
    source = FAM.models.get("digits_cnn")()

    def no_onnx() -> Path:
        raise AssertionError("the torch path must not export ONNX")

    return MakeContext(
        model_name="digits_cnn",
        source=source,
        model_params=source.Params(),
        model=LoadedModel(weights="test", sha256="x", module=module),
        input_shape=(1, 8, 8),
        calib=digits["calib"],
        fp32_onnx=no_onnx,
    )


def quantize_in_memory(ctx: MakeContext) -> Any:
    """The module static_int8 builds, kept in memory (the same steps as its _make_torch)."""
    import copy

    import torch
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from qbench.methods.static_int8 import _torch_qconfig_mapping

    torch.backends.quantized.engine = "x86"
    module = copy.deepcopy(ctx.model.module).eval()
    example = (torch.as_tensor(ctx.calib[:1]),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(module, _torch_qconfig_mapping(), example)
        with torch.no_grad():
            for start in range(0, len(ctx.calib), 16):
                prepared(torch.as_tensor(ctx.calib[start : start + 16]))
        return convert_fx(prepared)


def open_torch(artifact: Path) -> Any:
    from qbench.backends.torch_eager import TorchParams

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FAM.backends.get("torch")().open(artifact, "torch", 1, TorchParams())


def test_torch_static_int8_artifact_reloads_exactly(
    torch_ctx: MakeContext, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    import torch

    x = digits["eval"]
    with torch.inference_mode():
        fp32_out = torch_ctx.model.module(torch.as_tensor(x)).numpy()

    # the FX path's artifact is a state dict rebuilt into its module (PT2E: tests/test_pt2e.py)
    artifact = build(torch_ctx, tmp_path / "q.pt", fmt="torch", torch_flow="fx")
    with torch.inference_mode():  # building did not touch the fp32 module
        assert np.array_equal(torch_ctx.model.module(torch.as_tensor(x)).numpy(), fp32_out)

    # The backend rebuilds the module from the artifact (architecture + rebuild_torch +
    # load_state_dict): it must compute exactly what the quantized module computed.
    session = open_torch(artifact)
    out = session.predict(x)
    with torch.inference_mode():
        expected = quantize_in_memory(torch_ctx)(torch.as_tensor(x)).numpy()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)

    fid = fidelity(fp32_out, out)
    assert fid["output_cosine"] > 0.99 and fid["fp32_agreement"] >= 0.9
    assert fid["output_sqnr_db"] < 80  # it really is quantized, not fp32 reloaded

    fp32_artifact = build(torch_ctx, tmp_path / "fp32.pt", fmt="torch", method=FP32)
    assert artifact.stat().st_size < 0.5 * fp32_artifact.stat().st_size
    np.testing.assert_array_equal(open_torch(fp32_artifact).predict(x), fp32_out)


def _conv_linear_count(module: Any) -> int:
    import torch

    return sum(isinstance(m, torch.nn.Conv2d | torch.nn.Linear) for m in module.modules())


def test_torch_inspect_shows_quantized_modules(torch_ctx: MakeContext, tmp_path: Path) -> None:
    import torch

    session = open_torch(build(torch_ctx, tmp_path / "q.pt", fmt="torch", torch_flow="fx"))
    info = session.inspect()
    assert info["quantized_nodes"] >= 1
    assert info["quantized_nodes"] == info["compute_nodes"]
    kinds = {
        type(m).__name__ for m in session.module.modules() if ".quantized" in type(m).__module__
    }
    assert {"ConvReLU2d", "LinearReLU", "Linear"} <= kinds
    assert not any(isinstance(m, torch.nn.Conv2d) for m in session.module.modules())

    fp32 = open_torch(build(torch_ctx, tmp_path / "f.pt", fmt="torch", method=FP32)).inspect()
    assert (fp32["quantized_nodes"], fp32["compute_nodes"]) == (0, 5)


def test_torch_inspect_counts_each_layer_once(torch_ctx: MakeContext, tmp_path: Path) -> None:
    session = open_torch(build(torch_ctx, tmp_path / "q.pt", fmt="torch"))
    assert session.inspect()["compute_nodes"] == _conv_linear_count(torch_ctx.model.module) == 5


# --- (d) describe and unsupported -------------------------------------------------------------

DESCRIBED = ("bits_w", "bits_a", "granularity", "calibrator", "act_dtype", "weight_dtype")


def described(method: Any, fmt: str, **params: Any) -> dict[str, Any]:
    out = method.describe(fmt, method.Params(**params))
    assert set(out) <= set(RESULT_COLUMN_NAMES)  # the store accepts every key
    return out


def test_fp32_describe() -> None:
    for fmt in ("onnx", "torch"):
        out = described(FP32, fmt)
        assert out == {
            "bits_w": 32,
            "bits_a": 32,
            "act_dtype": "float32",
            "weight_dtype": "float32",
        }
        assert FP32.execution(fmt, FP32.Params()) == "native"


def test_static_int8_describe_onnx() -> None:
    # reduce_range auto: 7 or 8 weight bits is decided for the device's CPU in prepare
    assert described(STATIC, "onnx")["bits_w"] is None
    out = described(STATIC, "onnx", reduce_range=False)
    assert {k: out.get(k) for k in DESCRIBED} == {
        "bits_w": 8,
        "bits_a": 8,
        "granularity": "per_channel",
        "calibrator": "minmax",
        "act_dtype": "uint8",
        "weight_dtype": "int8",
    }
    assert out["symmetric_weights"] is True
    out = described(STATIC, "onnx", calibrator="entropy", per_channel=False, activations="int8")
    assert (out["calibrator"], out["granularity"], out["act_dtype"]) == (
        "entropy",
        "per_tensor",
        "int8",
    )
    assert described(STATIC, "onnx", quant_format="qoperator")["bits_a"] == 8


def test_static_int8_describe_torch() -> None:
    pt2e = described(STATIC, "torch", reduce_range=False)  # auto: decided per CPU in prepare
    assert {k: pt2e.get(k) for k in DESCRIBED} == {
        "bits_w": 8,
        "bits_a": 8,  # X86InductorQuantizer: the full uint8 grid
        "granularity": "per_channel",
        "calibrator": "histogram",
        "act_dtype": "uint8",
        "weight_dtype": "int8",
    }
    assert any("PT2E" in note for note in pt2e["notes"])
    out = described(STATIC, "torch", torch_flow="fx")
    assert any("legacy" in note for note in out["notes"])
    assert {k: out.get(k) for k in DESCRIBED} == {
        "bits_w": 8,
        "bits_a": 7,  # torch's x86 engine reduces the activation range
        "granularity": "per_channel",
        "calibrator": "minmax",
        "act_dtype": "uint8",
        "weight_dtype": "int8",
    }
    assert any("reduce_range" in note for note in out["notes"])


def test_unsupported_reasons(tiny_ctx: MakeContext) -> None:
    digits_cnn = FAM.models.get("digits_cnn")()
    onnx_file = tiny_ctx.source
    default = STATIC.Params()
    assert STATIC.unsupported("onnx", default, digits_cnn) is None
    assert STATIC.unsupported("torch", default, digits_cnn) is None
    assert STATIC.unsupported("onnx", default, onnx_file) is None

    entropy = STATIC.unsupported("torch", STATIC.Params(calibrator="entropy"), digits_cnn)
    assert entropy and "minmax" in entropy
    assert STATIC.unsupported("torch", STATIC.Params(activations="int8"), digits_cnn)
    for kw in ({"per_channel": False}, {"quant_format": "qoperator"}):
        assert STATIC.unsupported("torch", STATIC.Params(**kw), digits_cnn), kw
    # reduce_range: PT2E takes it (7-bit activations), the legacy FX path does not
    assert STATIC.unsupported("torch", STATIC.Params(reduce_range=True), digits_cnn) is None
    fx = STATIC.Params(reduce_range=True, torch_flow="fx")
    assert STATIC.unsupported("torch", fx, digits_cnn)

    for method in (STATIC, FP32):
        reason = method.unsupported("torch", method.Params(), onnx_file)
        assert reason and "ONNX file" in reason and "onnx_file" in reason
        assert method.unsupported("onnx", method.Params(), onnx_file) is None
