"""LiteRT (tflite) artifacts of the methods: the cached fp32 conversion with litert-torch and
ai-edge-quantizer's variants (fp16, dynamic int8, full int8, int16x8, 4/8-bit weights), run
here directly with ai_edge_litert's interpreter on the trained digits CNN and real digits."""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qbench.methods._litert_quant import io_quantization, op_counts, weight_dtypes
from qbench.methods.base import MakeContext
from qbench.methods.export_tflite import fp32_tflite
from qbench.plugins import load_all
from qbench.store.schema import RESULT_COLUMN_NAMES
from tests.conftest import write_suite

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")
pytest.importorskip("ai_edge_litert")
torch = pytest.importorskip("torch")

FAM = load_all()
FP32 = FAM.methods.get("fp32")()
FP16 = FAM.methods.get("fp16")()
BF16 = FAM.methods.get("bf16")()
DYNAMIC = FAM.methods.get("dynamic_int8")()
STATIC = FAM.methods.get("static_int8")()
WEIGHT_ONLY = FAM.methods.get("weight_only")()

# name -> (method, params): every LiteRT variant built once for the module
VARIANTS: dict[str, tuple[Any, dict[str, Any]]] = {
    "fp32": (FP32, {}),
    "fp16": (FP16, {}),
    "dynamic_int8": (DYNAMIC, {}),
    "full_int8": (STATIC, {}),  # activations=uint8 (the default), built as int8
    "int16x8": (STATIC, {"activations": "int16"}),
    "weight_only_4": (WEIGHT_ONLY, {"bits": 4}),
    "dynamic_4": (WEIGHT_ONLY, {"bits": 4, "accuracy_level": 4}),
    "weight_only_8": (WEIGHT_ONLY, {"bits": 8}),
    "weight_only_8_gptq": (WEIGHT_ONLY, {"bits": 8, "rounding": "gptq"}),
    "weight_only_4_gptq": (WEIGHT_ONLY, {"bits": 4, "rounding": "gptq"}),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny models train fastest on one thread (see test_qat_mixed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    dataset = FAM.datasets.get("digits")()
    calib, _ = dataset.load("calib", 64)
    x, y = dataset.load("eval", None)
    return {"calib": calib, "x": x, "y": y}


@pytest.fixture(scope="module")
def ctx(digits: dict[str, np.ndarray]) -> MakeContext:
    """What the agent builds for the trained digits CNN (qbench/agent.py prepare)."""
    source = FAM.models.get("digits_cnn")()
    params = source.Params()
    loaded = source.load(params)  # trained once (seconds), cached in the test cache

    def no_onnx() -> Path:
        raise AssertionError("the LiteRT path must not export ONNX")

    return MakeContext(
        model_name="digits_cnn",
        source=source,
        model_params=params,
        model=loaded,
        input_shape=(1, 8, 8),
        calib=digits["calib"],
        fp32_onnx=no_onnx,
        fp32_tflite=lambda: fp32_tflite(loaded.sha256, loaded.module, (1, 8, 8)),
    )


@pytest.fixture(scope="module")
def built(ctx: MakeContext, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """name -> (artifact path, make()'s metadata) of every variant."""
    folder = tmp_path_factory.mktemp("tflite")
    out = {}
    for name, (method, params) in VARIANTS.items():
        typed = method.Params(**params)
        assert method.unsupported("tflite", typed, ctx.source) is None, name
        path = folder / f"{name}.tflite"
        meta = method.make("tflite", typed, ctx, path)
        assert path.is_file() and path.stat().st_size > 0
        json.dumps(meta)  # the agent caches it as JSON
        out[name] = (path, meta)
    return out


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    """Outputs of a .tflite for NCHW float inputs, one sample per invoke (batch-1 models);
    integer I/O quantized/dequantized with the tensors' own scale and zero point."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for sample in x:
        feed = sample[None].astype(np.float32)
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            feed = np.clip(np.round(feed / scale) + zero, info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], feed)
        interpreter.invoke()
        y = interpreter.get_tensor(outp["index"])
        if outp["dtype"] != np.float32:
            scale, zero = outp["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        assert y.shape == (1, 10)
        results.append(y[0])
    return np.stack(results)


def torch_logits(ctx: MakeContext, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return ctx.model.module(torch.as_tensor(x)).numpy()


# --- conversion ---------------------------------------------------------------------------------


def test_fp32_conversion_matches_torch_and_is_cached(
    ctx: MakeContext, built: dict[str, Any], digits: dict[str, np.ndarray]
) -> None:
    path, meta = built["fp32"]
    assert io_quantization(path)["input"] == {
        "dtype": "float32", "shape": [1, 1, 8, 8], "scale": None, "zero_point": None,
    }  # fmt: skip
    ops = op_counts(path)
    assert ops["TRANSPOSE"] == 1  # NCHW kept: the converter transposes to NHWC first
    got = run_tflite(path, digits["x"])
    np.testing.assert_allclose(got, torch_logits(ctx, digits["x"]), atol=1e-4, rtol=1e-4)
    assert any("litert-torch" in note for note in meta["artifact_notes"])
    assert meta["packed_bytes"] > 0
    started = time.perf_counter()
    assert ctx.fp32_tflite() == ctx.fp32_tflite()  # the cached conversion
    assert time.perf_counter() - started < 1.0


# --- every variant ------------------------------------------------------------------------------


def test_every_variant_runs_and_keeps_top1(
    ctx: MakeContext, built: dict[str, Any], digits: dict[str, np.ndarray]
) -> None:
    ref = run_tflite(built["fp32"][0], digits["x"]).argmax(1)
    expected_io = {"full_int8": "int8", "int16x8": "int16"}
    for name, (path, _) in built.items():
        io = io_quantization(path)
        assert io["input"]["dtype"] == io["output"]["dtype"] == expected_io.get(name, "float32")
        assert io["output"]["shape"] == [1, 10]
        agree = float((run_tflite(path, digits["x"]).argmax(1) == ref).mean())
        assert agree >= 0.95, (name, agree)


def test_weights_and_ops_are_what_each_recipe_writes(built: dict[str, Any]) -> None:
    # DigitsCNN: 3 convs (the 1-input-channel one converts to DEPTHWISE_CONV_2D) and 2 linears
    dtypes = {name: dict(weight_dtypes(path)) for name, (path, _) in built.items()}
    assert dtypes["fp32"] == {"float32": 5}
    assert dtypes["fp16"] == {"float16": 5}
    for name in ("dynamic_int8", "full_int8", "int16x8", "weight_only_8"):
        assert dtypes[name] == {"int8": 5}, name
    # ai-edge-quantizer's 4-bit policies leave DEPTHWISE_CONV_2D in float32
    assert dtypes["weight_only_4"] == dtypes["dynamic_4"] == {"int4": 4, "float32": 1}
    ops = {name: op_counts(path) for name, (path, _) in built.items()}
    assert ops["fp16"]["DEQUANTIZE"] == 5 and ops["weight_only_8"]["DEQUANTIZE"] == 5
    assert ops["weight_only_4"]["DEQUANTIZE"] == 4
    for name in ("dynamic_int8", "dynamic_4", "full_int8", "int16x8"):
        assert "DEQUANTIZE" not in ops[name], name  # integer / hybrid kernels take the weights
    assert "4 of 5" in built["weight_only_4"][1]["artifact_notes"][0]


def test_packed_bytes_follow_the_weight_bits(ctx: MakeContext, built: dict[str, Any]) -> None:
    from qbench.methods.packing import packed_bytes_torch

    packed = {name: meta["packed_bytes"] for name, (_, meta) in built.items()}
    assert packed["weight_only_4"] == packed["dynamic_4"] < packed["weight_only_8"]
    assert packed["weight_only_8"] == packed["dynamic_int8"] == packed["full_int8"]
    assert packed["full_int8"] == packed["int16x8"] < packed["fp16"] < packed["fp32"]
    module = ctx.model.module
    depthwise = module.features[0]  # 1 input channel: LiteRT's DEPTHWISE_CONV_2D

    def four_bits(_: str, layer: Any) -> int | None:  # per-channel int4, depthwise in float32
        if layer is depthwise:
            return None
        return layer.weight.numel() * 4 + layer.weight.shape[0] * 32

    assert packed["weight_only_4"] == packed_bytes_torch(module, four_bits)


# --- full integer -------------------------------------------------------------------------------


def test_full_int8_has_int8_io_and_keeps_accuracy(
    ctx: MakeContext, built: dict[str, Any], digits: dict[str, np.ndarray]
) -> None:
    path, meta = built["full_int8"]
    io = io_quantization(path)
    assert io["input"]["dtype"] == "int8" and io["output"]["dtype"] == "int8"
    # digits inputs lie in [0, 1]: min/max gives scale 1/255 and zero point -128
    assert io["input"]["scale"] == pytest.approx(1 / 255, rel=1e-3)
    assert io["input"]["zero_point"] == -128
    out = run_tflite(path, digits["x"])
    ref = torch_logits(ctx, digits["x"])
    assert float((out.argmax(1) == ref.argmax(1)).mean()) >= 0.95
    assert float((out.argmax(1) == digits["y"]).mean()) >= 0.95
    note = meta["artifact_notes"][0]
    assert "static_wi8_ai8" in note and "min/max calibration on 64 inputs" in note
    assert f"input int8 scale {io['input']['scale']:.4g} zp -128" in note


def test_minmax_calibration_covers_the_logits(
    ctx: MakeContext, built: dict[str, Any], digits: dict[str, np.ndarray]
) -> None:
    """The int8 output grid spans the fp32 logits seen in calibration; ai-edge-quantizer's
    default moving average (Quantizer.calibrate) does not (it clips them)."""
    from ai_edge_quantizer import quantizer, recipe

    from qbench.methods._litert_quant import signature_input
    from qbench.methods.export_tflite import quiet

    logits = torch_logits(ctx, digits["calib"])
    low, high = float(logits.min()), float(logits.max())
    for name, dtype in (("full_int8", np.int8), ("int16x8", np.int16)):
        out = io_quantization(built[name][0])["output"]
        info = np.iinfo(dtype)
        lo = (info.min - out["zero_point"]) * out["scale"]
        hi = (info.max - out["zero_point"]) * out["scale"]
        assert lo <= low + out["scale"] and hi >= high - out["scale"], (name, lo, hi, low, high)

    fp32 = ctx.fp32_tflite()
    key, name = signature_input(fp32)
    with quiet():
        qt = quantizer.Quantizer(str(fp32), recipe.static_wi8_ai8())
        data = {key: [{name: digits["calib"][i : i + 1]} for i in range(len(digits["calib"]))]}
        averaged = qt.calibrate(data, num_threads=1)
    output = next(v for k, v in averaged.items() if k.endswith("output_0_output"))
    assert float(np.max(output["max"])) < high - 1 and float(np.min(output["min"])) > low + 1


def test_int16x8_activations_are_symmetric_int16(built: dict[str, Any]) -> None:
    path, meta = built["int16x8"]
    io = io_quantization(path)
    assert io["input"]["dtype"] == "int16" and io["input"]["zero_point"] == 0
    assert io["output"]["zero_point"] == 0
    assert "static_wi8_ai16" in meta["artifact_notes"][0]


# --- what methods say ---------------------------------------------------------------------------


def test_unsupported_reasons() -> None:
    digits_cnn = FAM.models.get("digits_cnn")()
    onnx_file = FAM.models.get("onnx_file")()
    for method in (FP32, FP16, DYNAMIC, STATIC, WEIGHT_ONLY):
        assert method.produces[-1] == "tflite"
        reason = method.unsupported("tflite", method.Params(), onnx_file)
        assert reason == (
            "model onnx_file is an ONNX file; LiteRT artifacts are converted from torch modules"
        ), method.name
        assert method.unsupported("tflite", method.Params(), digits_cnn) is None, method.name
    # existing formats keep their order: LiteRT is only picked where nothing else loads
    assert FP32.produces[:2] == ("onnx", "torch") and STATIC.produces[:2] == ("onnx", "torch")

    bf16 = BF16.unsupported("tflite", BF16.Params(), digits_cnn)
    assert bf16 and "bfloat16" in bf16
    for calibrator in ("entropy", "percentile", "mse"):
        params = STATIC.Params(calibrator=calibrator)
        assert STATIC.unsupported("tflite", params, digits_cnn) is None, calibrator
    few_bins = STATIC.Params(calibrator="entropy", histogram_bins=256, entropy_quantized_bins=256)
    assert "fewer than histogram_bins" in STATIC.unsupported("tflite", few_bins, digits_cnn)
    for kw in (
        {"per_channel": False},
        {"group_size": 16},
        {"activations": "uint16"},
        {"activation_symmetric": True},
        {"quant_format": "qoperator"},
        {"reduce_range": True},
    ):
        assert STATIC.unsupported("tflite", STATIC.Params(**kw), digits_cnn), kw
    for kw in ({"activations": "int8"}, {"activations": "int16"}):
        assert STATIC.unsupported("tflite", STATIC.Params(**kw), digits_cnn) is None, kw
    for kw in ({"per_channel": True}, {"weight_type": "int8"}):
        assert DYNAMIC.unsupported("tflite", DYNAMIC.Params(**kw), digits_cnn), kw
    for kw in ({"bits": 2}, {"block_size": 128}, {"symmetric": False}):
        assert WEIGHT_ONLY.unsupported("tflite", WEIGHT_ONLY.Params(**kw), digits_cnn), kw
    assert WEIGHT_ONLY.unsupported("tflite", WEIGHT_ONLY.Params(bits=8), digits_cnn) is None


def test_describe_and_execution() -> None:
    def described(method: Any, **params: Any) -> dict[str, Any]:
        out = method.describe("tflite", method.Params(**params))
        assert set(out) <= set(RESULT_COLUMN_NAMES)  # the store accepts every key
        return out

    for method, params in VARIANTS.values():
        described(method, **params)
    full = described(STATIC)
    assert {k: full[k] for k in ("bits_w", "bits_a", "act_dtype", "granularity", "calibrator",
                                 "symmetric_weights", "weight_dtype")} == {
        "bits_w": 8, "bits_a": 8, "act_dtype": "int8", "granularity": "per_channel",
        "calibrator": "minmax", "symmetric_weights": True, "weight_dtype": "int8",
    }  # fmt: skip
    assert any("uint8 is built as int8" in n for n in full["notes"])
    wide = described(STATIC, activations="int16")
    assert wide["bits_a"] == 16 and wide["act_dtype"] == "int16"
    assert any("XNNPACK has none" in n for n in wide["notes"])
    assert "notes" not in described(STATIC, activations="int8")
    tails = described(STATIC, calibrator="percentile", percentile=99.9)
    assert tails["calibrator"] == "percentile" and tails["percentile"] == 99.9
    assert described(STATIC, calibrator="mse")["calibrator"] == "mse"
    assert "percentile" not in described(STATIC, calibrator="mse")
    assert described(DYNAMIC)["calibrator"] == "dynamic"
    assert described(DYNAMIC)["granularity"] == "per_channel"
    half = described(FP16)
    assert half["bits_w"] == 16 and half["act_dtype"] == "float32"
    assert described(WEIGHT_ONLY)["granularity"] == "per_channel"
    assert "group_size" not in described(WEIGHT_ONLY)
    assert described(WEIGHT_ONLY, accuracy_level=4)["act_dtype"] == "int8"

    def execution(method: Any, **params: Any) -> str:
        return method.execution("tflite", method.Params(**params))

    assert execution(FP32) == execution(DYNAMIC) == execution(STATIC) == "native"
    assert execution(STATIC, activations="int16") == "native"
    assert execution(FP16) == "simulated"
    assert execution(WEIGHT_ONLY) == "simulated"
    assert execution(WEIGHT_ONLY, accuracy_level=4) == "native"


# --- through the agent --------------------------------------------------------------------------


def test_agent_prepares_a_tflite_cell(tmp_path: Path, ctx: MakeContext) -> None:
    from qbench import agent
    from qbench.plan import build_plan
    from qbench.suite.loader import load_suite

    suite = write_suite(tmp_path, """
        name: lt
        models: [digits_cnn]
        methods: [{name: static_int8, params: {activations: int8}}]
        backends: [onnxruntime]
        accuracy: {samples: 16}
        calibration: {samples: 32}
    """)  # fmt: skip
    (cell,) = build_plan(*load_suite(suite)).cells
    cell = dataclasses.replace(cell, artifact_format="tflite")  # as a LiteRT backend's plan would
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = agent.prepare(cell)
    path = Path(result["artifact_path"])
    assert path.suffix == ".tflite" and result["calib_samples"] == 32
    assert io_quantization(path)["input"]["dtype"] == "int8"
    assert "min/max calibration on 32 inputs" in result["artifact_notes"][0]
    assert result["packed_bytes"] > 0


def test_padded_max_pool_gets_finite_int8_ranges(tmp_path: Path) -> None:
    """A max pool with padding converts to PADV2(-inf) + MAX_POOL_2D: min/max calibration sees
    -inf, which would give the pad (and the conv output tied to it) an infinite scale that
    XNNPACK refuses (ResNet-18's stem). The pad output takes its input's finite range."""
    from ai_edge_litert.interpreter import Interpreter

    from qbench.methods._litert_quant import full_integer

    torch.manual_seed(0)
    stem = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(3, stride=2, padding=1), torch.nn.Flatten(), torch.nn.Linear(128, 4),
    ).eval()  # fmt: skip
    fp32 = fp32_tflite("maxpool-stem", stem, (1, 8, 8))
    assert op_counts(fp32)["PADV2"] + op_counts(fp32)["PAD"] >= 1
    calib = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)
    out = tmp_path / "stem_int8.tflite"
    full_integer(fp32, out, calib)
    interpreter = Interpreter(model_path=str(out))  # XNNPACK: fails on an infinite scale
    interpreter.allocate_tensors()
    for detail in interpreter.get_tensor_details():
        assert np.all(np.isfinite(detail["quantization_parameters"]["scales"])), detail["name"]
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    x = calib[:1]
    interpreter.set_tensor(inp["index"], np.clip(np.round(x / scale) + zero, -128, 127)
                           .astype(np.int8))  # fmt: skip
    interpreter.invoke()
    o_scale, o_zero = outp["quantization"]
    got = (interpreter.get_tensor(outp["index"]).astype(np.float32) - o_zero) * o_scale
    with torch.no_grad():
        want = stem(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=4 * o_scale + 0.05 * np.abs(want).max())


# --- calibrators and GPTQ ---------------------------------------------------------------------


def _activation_scales(path: Path) -> dict[str, float]:
    """Per-tensor scale of every quantized activation (one scale) by tensor name."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return {d["name"]: float(d["quantization_parameters"]["scales"][0])
            for d in interpreter.get_tensor_details()
            if len(d["quantization_parameters"]["scales"]) == 1}  # fmt: skip


# entropy (9 s) with the slow tests: the default run is near its 15-minute budget
@pytest.mark.parametrize(
    "calibrator", ["percentile", pytest.param("entropy", marks=pytest.mark.slow), "mse"]
)
def test_litert_calibrators_narrow_ranges(
    calibrator: str,
    ctx: MakeContext,
    built: dict[str, Any],
    digits: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    """calibrator= works for tflite: the registry's calibrator chooses activation ranges from the
    fp32 .tflite's tensors (some narrower than min/max, none wider; the model output's range
    widened by output_range_scale on both), and the model still agrees with fp32."""
    params = STATIC.Params(calibrator=calibrator, percentile=99.9)
    path = tmp_path / f"{calibrator}.tflite"
    meta = STATIC.make("tflite", params, ctx, path)
    minmax = built["full_int8"][0]
    assert io_quantization(path)["output"]["dtype"] == "int8"
    assert io_quantization(path)["input"]["dtype"] == "int8"
    base, chosen = _activation_scales(minmax), _activation_scales(path)
    assert set(base) == set(chosen)
    narrower = [n for n in base if chosen[n] < base[n] * 0.999]
    assert narrower, calibrator
    assert all(chosen[n] <= base[n] * 1.001 for n in base), calibrator
    ref = run_tflite(built["fp32"][0], digits["x"]).argmax(1)
    assert float((run_tflite(path, digits["x"]).argmax(1) == ref).mean()) >= 0.95
    notes = meta["artifact_notes"]
    assert f"{calibrator} calibration on 64 inputs" in notes[0]
    assert any(f"LiteRT calibration {calibrator}: " in n for n in notes)
    assert any("model output range widened x2 (output_range_scale)" in n for n in notes)


def test_gptq_round_beats_nearest_on_the_hessian() -> None:
    """GPTQ's integers on a fixed grid: output error tr(D H Dᵀ) (D = W - scale·Q) below nearest
    rounding's, for a shared Hessian and for one Hessian per row (depthwise)."""
    from qbench.methods._litert_quant import gptq_round

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 24)) @ rng.normal(size=(24, 24))  # correlated inputs
    w = rng.normal(size=(16, 24))
    scale = np.abs(w).max(axis=1) / 127 * 8  # a coarse grid: rounding matters
    hessian = x.T @ x

    def error(q: np.ndarray, h: np.ndarray) -> float:
        d = w - scale[:, None] * q
        return float(np.einsum("rk,rkj,rj->", d, np.broadcast_to(h, (16, 24, 24)), d))

    nearest = np.clip(np.round(w / scale[:, None]), -127, 127)
    q = gptq_round(w, hessian, scale)
    assert q.dtype == np.int8 and np.abs(q).max() <= 127
    assert error(q, hessian) < 0.8 * error(nearest, hessian)
    per_row = np.stack([hessian * (1 + r) for r in range(16)])
    assert error(gptq_round(w, per_row, scale), per_row) < 0.8 * error(nearest, per_row)
    # an input that never fires: its weight is rounded to nearest, not moved
    dead = hessian.copy()
    dead[3, :] = dead[:, 3] = 0
    assert np.array_equal(gptq_round(w, dead, scale)[:, 3], nearest[:, 3])


def test_gptq_weights_lower_each_layers_output_error(
    ctx: MakeContext, built: dict[str, Any], digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """gptq_weights rewrites every int8 weight of the full-int8 digits CNN on its own scales
    (conv, depthwise, fully connected), and each layer's output error on the calibration
    inputs, tr(D H Dᵀ) with the fp32 weights, falls below the nearest rounding's."""
    import shutil

    from ai_edge_litert.interpreter import Interpreter

    from qbench.methods._litert_quant import _float_weights, gptq_weights, layer_hessians

    fp32, nearest = ctx.fp32_tflite(), built["full_int8"][0]
    path = tmp_path / "gptq.tflite"
    shutil.copy(nearest, path)
    assert gptq_weights(fp32, path, digits["calib"]) == 5

    def weights(p: Path) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        interpreter = Interpreter(model_path=str(p))
        found = {}
        for d in interpreter.get_tensor_details():
            q = d["quantization_parameters"]
            if len(q["scales"]) > 1 and d["dtype"] == np.int8:  # weights, not int32 biases
                found[d["name"]] = (interpreter.get_tensor(d["index"]), q["scales"],
                                    q["quantized_dimension"])  # fmt: skip
        return found

    before, after = weights(nearest), weights(path)
    floats, hessians = _float_weights(fp32), layer_hessians(fp32, digits["calib"])
    assert set(before) == set(after) == set(hessians) and len(hessians) == 5
    for name, (q, scales, dim) in after.items():
        np.testing.assert_array_equal(scales, before[name][1])  # same grid
        assert not np.array_equal(q, before[name][0]), name
        shape = [1] * q.ndim
        shape[dim] = -1

        def rows(a: np.ndarray, dim: int = dim) -> np.ndarray:
            return np.moveaxis(a, dim, 0).reshape(a.shape[dim], -1)

        h = hessians[name]
        errors = []
        for ints in (before[name][0], q):
            d = rows(floats[name] - ints.astype(np.float64) * scales.reshape(shape))
            errors.append(
                float(np.einsum("rk,rkj,rj->", d, np.broadcast_to(h, (len(d), *h.shape[-2:])), d))
            )
        assert errors[1] < errors[0], (name, errors)
    ref = run_tflite(fp32, digits["x"]).argmax(1)
    assert float((run_tflite(path, digits["x"]).argmax(1) == ref).mean()) >= 0.95


# --- weight_only rounding=gptq ------------------------------------------------------------------


def test_pack_int4_is_ai_edge_quantizers_layout() -> None:
    from ai_edge_quantizer.transformations.transformation_utils import pack_data

    from qbench.methods._litert_quant import pack_int4, unpack_int4

    rng = np.random.default_rng(1)
    for n in (8, 9, 1):
        values = rng.integers(-8, 8, size=n).astype(np.int8)
        packed = pack_int4(values)
        np.testing.assert_array_equal(packed, pack_data(4, values.view(np.uint8)))
        np.testing.assert_array_equal(unpack_int4(packed, n), values)


def _int_weights(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Constant int8/int4 weight tensor name -> (stored bytes, per-channel scales)."""
    from qbench.methods._litert_quant import _buffer_view, _schema

    schema = _schema()
    data = bytearray(path.read_bytes())
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    found = {}
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        q = t.Quantization()
        if t.Type() in (schema.TensorType.INT8, schema.TensorType.INT4) and q is not None \
                and q.ScaleLength() > 1:  # fmt: skip
            stored = _buffer_view(data, model.Buffers(t.Buffer())).copy()
            found[t.Name().decode()] = (stored, q.ScaleAsNumpy().copy())
    return found


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_gptq_lowers_the_output_error(
    ctx: MakeContext, built: dict[str, Any], digits: dict[str, np.ndarray], bits: int
) -> None:
    """rounding=gptq rewrites every int weight of the weight-only flatbuffer (behind its
    DEQUANTIZE; packed int4 at 4 bits) on the quantizer's own scales, and the logits on held-out
    inputs (the eval split, not the calibration inputs) move less from fp32 than nearest's."""
    from qbench.methods._litert_quant import unpack_int4

    nearest, (gptq, meta) = built[f"weight_only_{bits}"][0], built[f"weight_only_{bits}_gptq"]
    assert nearest.read_bytes() != gptq.read_bytes()
    assert op_counts(nearest) == op_counts(gptq)  # same graph, other integers
    before, after = _int_weights(nearest), _int_weights(gptq)
    assert set(before) == set(after) and len(after) == (5 if bits == 8 else 4)
    for name, (stored, scales) in after.items():
        np.testing.assert_array_equal(scales, before[name][1])  # same grid
        assert stored.size == before[name][0].size and not np.array_equal(stored, before[name][0])
        if bits == 4:
            assert np.abs(unpack_int4(stored, 2 * stored.size)).max() <= 7
    x = digits["x"]
    ref = run_tflite(built["fp32"][0], x)

    def error(path: Path) -> float:
        return float(np.mean((run_tflite(path, x) - ref) ** 2))

    assert error(gptq) < 0.9 * error(nearest), (error(gptq), error(nearest))
    taken = "5 int8" if bits == 8 else "4 int4"
    notes = meta["artifact_notes"]
    assert f"GPTQ rounding of all {taken} weights, Hessians from 64 calibration inputs" in notes
    assert meta["packed_bytes"] == built[f"weight_only_{bits}"][1]["packed_bytes"]


def test_weight_only_rounding_parameter() -> None:
    from qbench.params import stable_hash
    from qbench.plan import non_default

    digits_cnn = FAM.models.get("digits_cnn")()
    nearest, gptq = WEIGHT_ONLY.Params(bits=8), WEIGHT_ONLY.Params(bits=8, rounding="gptq")
    assert nearest.rounding == "nearest"
    # the default leaves dumps (artifact cache keys, method_sha256) as they were before it
    assert nearest.model_dump() == {"bits": 8, "block_size": 32, "symmetric": True,
                                    "accuracy_level": None}  # fmt: skip
    assert stable_hash({"method": "weight_only", "params": nearest.model_dump()}) == stable_hash(
        {"method": "weight_only", "params": WEIGHT_ONLY.Params(bits=8, rounding="nearest")
         .model_dump()}
    )  # fmt: skip
    assert gptq.model_dump()["rounding"] == "gptq" and non_default(gptq) == {
        "bits": 8, "rounding": "gptq"}  # fmt: skip
    assert WEIGHT_ONLY.Params(**gptq.model_dump()) == gptq
    assert WEIGHT_ONLY.needs_calibration(gptq) and not WEIGHT_ONLY.needs_calibration(nearest)

    row = WEIGHT_ONLY.describe("tflite", gptq)
    assert set(row) <= set(RESULT_COLUMN_NAMES)
    assert row["calibrator"] == "gptq" and row["act_dtype"] == "float32"
    assert any(n.startswith("rounding=gptq: GPTQ (Frantar et al. 2022)") for n in row["notes"])
    plain = WEIGHT_ONLY.describe("tflite", nearest)
    assert "calibrator" not in plain and not any("gptq" in n.lower() for n in plain["notes"])
    hybrid = WEIGHT_ONLY.describe("tflite", WEIGHT_ONLY.Params(accuracy_level=4, rounding="gptq"))
    assert hybrid["calibrator"] == "dynamic" and any("rounding=gptq" in n for n in hybrid["notes"])

    for bits in (4, 8):
        params = WEIGHT_ONLY.Params(bits=bits, rounding="gptq")
        assert WEIGHT_ONLY.unsupported("tflite", params, digits_cnn) is None
        reason = WEIGHT_ONLY.unsupported("onnx", params, digits_cnn)
        assert reason == ("rounding=gptq is built for LiteRT (tflite) only; the ONNX "
                          "MatMulNBits path rounds to nearest")  # fmt: skip
    assert WEIGHT_ONLY.unsupported("onnx", nearest, digits_cnn) is None
    # an unsupported LiteRT combination still gives its own one-line reason
    two = WEIGHT_ONLY.unsupported("tflite", WEIGHT_ONLY.Params(bits=2, rounding="gptq"), digits_cnn)
    assert two is not None and "bits=2" in two and "\n" not in two


def test_plan_and_agent_calibrate_gptq_cells(tmp_path: Path) -> None:
    """A suite with rounding [nearest, gptq] on litert: the gptq cell is calibrated (its id and
    the row say so), nearest is not; on onnxruntime the gptq cell is skipped in one line."""
    from qbench import agent
    from qbench.plan import build_plan
    from qbench.runner import base_row
    from qbench.suite.loader import load_suite

    suite = write_suite(tmp_path, """
        name: g
        models: [digits_cnn]
        methods: [{name: weight_only, params: {bits: 8, rounding: [nearest, gptq]}}]
        backends: [litert, onnxruntime]
        accuracy: {samples: 16}
        calibration: {samples: 32}
    """)  # fmt: skip
    cells = {(c.method_params.get("rounding", "nearest"), c.backend): c
             for c in build_plan(*load_suite(suite)).cells}  # fmt: skip
    assert len(cells) == 4
    assert "rounding=gptq" in cells["gptq", "litert"].cell_id
    assert "rounding" not in cells["nearest", "litert"].cell_id
    assert cells["gptq", "onnxruntime"].skip_reason == (
        "rounding=gptq is built for LiteRT (tflite) only; the ONNX MatMulNBits path rounds to "
        "nearest"
    )
    assert cells["nearest", "onnxruntime"].skip_reason is None
    cell = cells["gptq", "litert"]
    assert cell.skip_reason is None and cell.artifact_format == "tflite"
    row = base_row(cell)
    assert row["calibrator"] == "gptq" and row["calib_outlier_fraction"] == 0.0
    assert json.loads(row["method_params_json"])["rounding"] == "gptq"
    assert base_row(cells["nearest", "litert"])["calib_outlier_fraction"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = agent.prepare(cell)
    assert result["calib_samples"] == 32 and result["calib_sha256"]
    notes = result["artifact_notes"]
    assert "GPTQ rounding of all 5 int8 weights, Hessians from 32 calibration inputs" in notes
