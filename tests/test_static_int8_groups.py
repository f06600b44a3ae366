"""static_int8 with per-group weight scales (group_size): ONNX opset-21 blocked
DequantizeLinear in ORT's QDQ model. Block numerics against independent references (a loop over
slices, ORT's own per-channel quantizer), real artifacts run by ONNX Runtime on real digits
inputs, outliers, and how the method describes and refuses the setting."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from onnxruntime.quantization.quant_utils import quantize_data

from qbench.backends.onnxruntime import OrtParams, OrtSession
from qbench.measure.fidelity import fidelity
from qbench.methods._blocked_qdq import blockwise_symmetric, grouped_int8_weight_bits
from qbench.methods.base import MakeContext
from qbench.methods.export import fp32_onnx
from qbench.models.base import LoadedModel
from qbench.plugins import load_all
from qbench.store.schema import RESULT_COLUMN_NAMES
from tests.conftest import make_tiny_onnx
from tests.test_methods import onnx_context

FAM = load_all()
STATIC = FAM.methods.get("static_int8")()


# --- block numerics ---------------------------------------------------------------------------


def reference_blocks(
    rows: np.ndarray, group_size: int, qmax: int = 127
) -> tuple[np.ndarray, np.ndarray]:
    """One slice at a time: scale = max|w| / qmax (1 for an all-zero slice), round half to
    even, clip to ±qmax."""
    codes = np.zeros(rows.shape, np.int8)
    scales = np.zeros((rows.shape[0], math.ceil(rows.shape[1] / group_size)), np.float32)
    for c, row in enumerate(rows):
        for b, start in enumerate(range(0, len(row), group_size)):
            block = row[start : start + group_size]
            scale = np.float32(np.float64(np.abs(block).max()) / qmax)
            scale = np.float32(1.0) if scale == 0 else scale
            scales[c, b] = scale
            codes[c, start : start + group_size] = np.clip(
                np.round(block / scale), -qmax, qmax
            ).astype(np.int8)
    return codes, scales


@pytest.mark.parametrize("group_size", [1, 4, 7, 16, 50, 64])
def test_blockwise_matches_slice_reference(group_size: int) -> None:
    rng = np.random.default_rng(group_size)
    rows = rng.normal(0, 0.3, (6, 50)).astype(np.float32)  # 50 = 7·7 + 1: a ragged last block
    rows[2, :] = 0.0  # an all-zero channel
    rows[4, 10:] *= 40  # channel with a wide range in its later blocks
    codes, scales = blockwise_symmetric(rows, group_size)
    ref_codes, ref_scales = reference_blocks(rows, group_size)
    assert scales.shape == (6, math.ceil(50 / group_size)) and scales.dtype == np.float32
    assert codes.shape == rows.shape and codes.dtype == np.int8
    np.testing.assert_array_equal(scales, ref_scales)
    np.testing.assert_array_equal(codes, ref_codes)
    assert np.abs(codes).max() == 127
    assert not codes[2].any() and (scales[2] == 1).all()
    per_weight = np.repeat(scales, group_size, axis=1)[:, :50]
    assert (np.abs(codes * per_weight - rows) <= per_weight / 2 * (1 + 1e-6)).all()


def test_blockwise_reduced_range_and_bad_sizes() -> None:
    rows = np.random.default_rng(3).normal(size=(3, 21)).astype(np.float32)
    codes, scales = blockwise_symmetric(rows, 8, -64, 64)
    ref_codes, ref_scales = reference_blocks(rows, 8, qmax=64)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(scales, ref_scales)
    assert np.abs(codes).max() == 64
    for bad in (0, -3, True, 2.0):
        with pytest.raises(ValueError):
            blockwise_symmetric(rows, bad)  # type: ignore[arg-type]


def test_one_block_per_channel_is_orts_per_channel_quantization() -> None:
    # A group as long as the channel is what ORT's quantizer writes for a per-channel
    # symmetric int8 weight: the same scales and the same codes, bit for bit.
    rows = np.random.default_rng(5).normal(0, 0.2, (8, 45)).astype(np.float32)
    rows[1, 3] = 9.0
    codes, scales = blockwise_symmetric(rows, 45)
    for c, row in enumerate(rows):
        zero, scale, quantized = quantize_data(row, TensorProto.INT8, True)
        assert zero == 0
        assert np.float32(scale) == scales[c, 0]
        np.testing.assert_array_equal(np.asarray(quantized).reshape(-1), codes[c])


def test_groups_beat_one_scale_per_channel_on_an_outlier() -> None:
    rows = np.random.default_rng(7).normal(0, 0.1, (4, 64)).astype(np.float32)
    rows[1, 5] = 6.0  # one weight far out in channel 1
    c_codes, c_scales = blockwise_symmetric(rows, 64)  # per channel
    g_codes, g_scales = blockwise_symmetric(rows, 16)
    per_channel = np.mean((c_codes * c_scales - rows) ** 2)
    grouped = np.mean((g_codes * np.repeat(g_scales, 16, axis=1) - rows) ** 2)
    assert grouped < 0.3 * per_channel
    # Only the outlier's own group pays for it.
    g_error = (g_codes * np.repeat(g_scales, 16, axis=1) - rows) ** 2
    assert g_error[1, 16:].mean() < 0.01 * (c_codes * c_scales - rows)[1, 16:].var()


def test_grouped_weight_bits() -> None:
    count = grouped_int8_weight_bits(8, 48)
    # Conv [64, 32, 3, 3]: 288 weights per channel, 6 groups each; Gemm [10, 128]: 3 groups.
    assert count("w", np.zeros((64, 32, 3, 3))) == 64 * 288 * 8 + 64 * 6 * 32
    assert count("fc", np.zeros((10, 128))) == 10 * 128 * 8 + 10 * 3 * 32
    torch = pytest.importorskip("torch")
    assert count("l", torch.nn.Linear(100, 7)) == 700 * 8 + 7 * 3 * 32


# --- real artifacts ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    dataset = FAM.datasets.get("digits")()
    calib, _ = dataset.load("calib", 64)
    eval_x, _ = dataset.load("eval", 200)
    return {"calib": calib, "eval": eval_x}


@pytest.fixture(scope="module")
def cnn_ctx(digits: dict[str, np.ndarray]) -> MakeContext:
    """The digits CNN (seeded random init: training it takes half a minute), exported."""
    torch = pytest.importorskip("torch")
    from qbench.models._architectures import DigitsCNN

    torch.manual_seed(0)
    module = DigitsCNN().eval()
    source = FAM.models.get("digits_cnn")()
    sha = "digits-cnn-seed0-test-static-int8-groups"
    return MakeContext(
        model_name="digits_cnn",
        source=source,
        model_params=source.Params(),
        model=LoadedModel(weights="test", sha256=sha, module=module),
        input_shape=(1, 8, 8),
        calib=digits["calib"],
        fp32_onnx=lambda: fp32_onnx(sha, module, (1, 8, 8)),
    )


def build(ctx: MakeContext, out: Path, **params: Any) -> dict[str, Any]:
    p = STATIC.Params(**params)
    assert STATIC.unsupported("onnx", p, ctx.source) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = STATIC.make("onnx", p, ctx, out)
    assert out.is_file()
    return meta


def ort(path: Path, optimization: str = "all") -> OrtSession:
    return OrtSession(path, 1, OrtParams(graph_optimization=optimization))


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def weight_dequantizers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """fp32 weight name -> its DequantizeLinear (int8 initializer, consumed as a weight)."""
    inits = initializers(model)
    return {
        n.input[0].removesuffix("_quantized"): n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].dtype == np.int8
    }


def test_cnn_per_group_artifact(
    cnn_ctx: MakeContext, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    group = 48
    meta = build(cnn_ctx, tmp_path / "g.onnx", group_size=group)
    model = onnx.load(tmp_path / "g.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert default_opset(model) >= 21 and model.ir_version >= 10
    assert default_opset(onnx.load(cnn_ctx.fp32_onnx())) < 21  # raised by the rewrite

    inits = initializers(model)
    fp32 = initializers(onnx.load(cnn_ctx.fp32_onnx()))
    dqs = weight_dequantizers(model)
    expected = {  # fp32 weight: (output channels, weights per channel)
        "features.0.weight": (32, 9),  # one ragged group: 9 < 48
        "features.3.weight": (64, 288),  # 6 whole groups
        "features.7.weight": (64, 576),
        "classifier.1.weight": (128, 256),  # 5 groups + one of 16
        "classifier.3.weight": (10, 128),  # 2 groups + one of 32
    }
    assert set(dqs) == set(expected)
    for name, (channels, per_channel) in expected.items():
        node = dqs[name]
        assert attrs(node) == {"axis": 1, "block_size": group}
        codes, scale, zero = (inits[i] for i in node.input)
        assert codes.shape == (channels, per_channel) and codes.dtype == np.int8
        assert scale.shape == zero.shape == (channels, math.ceil(per_channel / group))
        assert scale.dtype == np.float32 and zero.dtype == np.int8 and not zero.any()
        # Independent reference from the fp32 export's weight, one slice at a time.
        weight = fp32[name].reshape(channels, per_channel)
        ref_codes, ref_scale = reference_blocks(weight, group)
        np.testing.assert_array_equal(codes, ref_codes)
        np.testing.assert_array_equal(scale, ref_scale)
    assert any("groups of 48" in note for note in meta["artifact_notes"])
    # Conv kernels are stored [O, I·kh·kw]: a Reshape gives each Conv its 4-D kernel back.
    assert sum(n.op_type == "Reshape" for n in model.graph.node) == 3 + 1  # + the Flatten view
    # int8 weights and one fp32 scale per group (biases and other floats as in int8 rows).
    count = grouped_int8_weight_bits(8, group)
    assert count("features.3.weight", np.zeros((64, 32, 3, 3))) == 64 * 288 * 8 + 64 * 6 * 32
    per_channel_meta = build(cnn_ctx, tmp_path / "c.onnx")
    extra_scales = sum(c * (math.ceil(k / group) - 1) for c, k in expected.values())
    assert meta["packed_bytes"] - per_channel_meta["packed_bytes"] == extra_scales * 4

    # ORT runs it: activations keep their Q/DQ, the Conv/Gemm run float (no blocked kernel).
    session = ort(tmp_path / "g.onnx")
    info = session.inspect()
    assert info["quantized_nodes"] == 0 and info["compute_nodes"] == 5
    assert "Conv×3" in info["notes"][0] and "Gemm×2" in info["notes"][0]
    x = digits["eval"]
    out = session.predict(x)
    # ORT's optimiser did not fuse the blocked weights into a per-channel kernel by mistake.
    np.testing.assert_allclose(out, ort(tmp_path / "g.onnx", "disable").predict(x), atol=1e-5)
    ref = ort(cnn_ctx.fp32_onnx()).predict(x)
    fid = fidelity(ref, out)
    assert out.shape == ref.shape == (200, 10)
    assert fid["output_cosine"] > 0.999 and fid["fp32_agreement"] >= 0.97
    assert 20 < fid["output_sqnr_db"] < 80  # quantized: close, not identical


def test_one_group_per_channel_reproduces_per_channel_artifact(
    cnn_ctx: MakeContext, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    # Groups longer than any channel: the blocked artifact holds exactly ORT's per-channel codes
    # and scales, and computes what ORT's per-channel QDQ model computes in float.
    build(cnn_ctx, tmp_path / "g.onnx", group_size=10_000)
    build(cnn_ctx, tmp_path / "c.onnx")
    blocked, channel = onnx.load(tmp_path / "g.onnx"), onnx.load(tmp_path / "c.onnx")
    b_inits, c_inits = initializers(blocked), initializers(channel)
    c_dqs = weight_dequantizers(channel)
    for name, node in weight_dequantizers(blocked).items():
        c_node = c_dqs[name]
        codes, scale = b_inits[node.input[0]], b_inits[node.input[1]]
        np.testing.assert_array_equal(
            codes.reshape(c_inits[c_node.input[0]].shape), c_inits[c_node.input[0]]
        )
        np.testing.assert_array_equal(scale.reshape(-1), c_inits[c_node.input[1]])
    x = digits["eval"]
    np.testing.assert_allclose(
        ort(tmp_path / "g.onnx").predict(x),
        ort(tmp_path / "c.onnx", "disable").predict(x),
        rtol=1e-5,
        atol=1e-5,
    )


def outlier_model(path: Path) -> Path:
    """The tiny net with one large weight in Gemm row 3 and Conv channel 5."""
    make_tiny_onnx(path)
    model = onnx.load(path)
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init).copy()
        if init.name == "fc":
            array[3, 0] = 12.0
        elif init.name == "w":
            array[5, 0, 0, 0] = 10.0
        else:
            continue
        init.CopyFrom(numpy_helper.from_array(array, init.name))
    onnx.save(model, path)
    return path


def test_tiny_model_groups_beat_per_channel_on_outliers(
    digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    ctx = onnx_context(outlier_model(tmp_path / "outlier.onnx"), digits["calib"])
    fp32_model = onnx.load(ctx.fp32_onnx())
    assert default_opset(fp32_model) == 17 and fp32_model.ir_version == 8
    fp32 = initializers(fp32_model)
    # 16-bit activations: the weights' rounding is most of the error, and both artifacts run
    # float kernels between Q/DQ pairs, so neither gains from integer-kernel differences.
    build(ctx, tmp_path / "c.onnx", activations="uint16")
    build(ctx, tmp_path / "g.onnx", activations="uint16", group_size=4)
    grouped = onnx.load(tmp_path / "g.onnx")
    assert default_opset(grouped) >= 21 and grouped.ir_version >= 10  # from opset 17, IR 8

    def weight_error(path: Path) -> dict[str, np.ndarray]:
        """Squared error of each dequantized weight, one row per output channel."""
        model = onnx.load(path)
        inits = initializers(model)
        errors = {}
        for name, node in weight_dequantizers(model).items():
            codes, scale = inits[node.input[0]], inits[node.input[1]]
            codes = codes.reshape(len(codes), -1)
            block = attrs(node).get("block_size", 0)
            if block:
                scale = np.repeat(scale, block, axis=1)[:, : codes.shape[1]]
            else:
                scale = scale.reshape(-1, 1)
            weight = fp32[name].reshape(codes.shape)
            errors[name] = (codes * scale - weight) ** 2
        return errors

    channel_err, group_err = weight_error(tmp_path / "c.onnx"), weight_error(tmp_path / "g.onnx")
    assert set(channel_err) == set(group_err) == {"w", "fc"}
    for name, row in (("w", 5), ("fc", 3)):  # the outliers' channels, outlier at column 0
        # Past the outlier's own group of 4, the channel's weights get their own finer scales.
        assert group_err[name][row, 4:].mean() < 0.1 * channel_err[name][row, 4:].mean(), name
        np.testing.assert_array_equal(group_err[name][row, :4], channel_err[name][row, :4])
        assert group_err[name].mean() < channel_err[name].mean(), name

    x = digits["eval"]
    ref = ort(ctx.fp32_onnx()).predict(x)
    sqnr = {
        kind: fidelity(ref, ort(tmp_path / f"{kind}.onnx").predict(x))["output_sqnr_db"]
        for kind in ("c", "g")
    }
    assert sqnr["g"] > sqnr["c"] + 3, sqnr


@pytest.mark.parametrize(
    "params",
    [{"reduce_range": True}, {"activations": "int8", "calibrator": "entropy"}],
    ids=["reduce_range", "int8-entropy"],
)
def test_per_group_variants(
    params: dict[str, Any], tiny_onnx: Path, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    ctx = onnx_context(tiny_onnx, digits["calib"])
    build(ctx, tmp_path / "v.onnx", group_size=5, **params)
    model = onnx.load(tmp_path / "v.onnx")
    inits = initializers(model)
    dqs = weight_dequantizers(model)
    assert {attrs(n)["block_size"] for n in dqs.values()} == {5}
    limit = 64 if params.get("reduce_range") else 127
    assert max(int(np.abs(inits[n.input[0]]).max()) for n in dqs.values()) == limit
    x = digits["eval"]
    ref = ort(ctx.fp32_onnx()).predict(x)
    assert fidelity(ref, ort(tmp_path / "v.onnx").predict(x))["output_cosine"] > 0.99


# --- describe, execution, unsupported ---------------------------------------------------------


def test_describe_and_execution() -> None:
    p = STATIC.Params(group_size=32, reduce_range=False)
    out = STATIC.describe("onnx", p)
    assert set(out) <= set(RESULT_COLUMN_NAMES)
    assert out["granularity"] == "per_group" and out["group_size"] == 32
    assert (out["bits_w"], out["weight_dtype"], out["symmetric_weights"]) == (8, "int8", True)
    assert any("no blocked int8 Conv/Gemm kernel" in note for note in out["notes"])
    assert STATIC.execution("onnx", p) == "simulated"

    both = STATIC.describe(
        "onnx", STATIC.Params(group_size=32, activations="uint16", reduce_range=False)
    )
    assert len(both["notes"]) == 2 and both["bits_a"] == 16
    assert STATIC.describe("onnx", STATIC.Params(group_size=32, reduce_range=True))["bits_w"] == 7

    default = STATIC.describe("onnx", STATIC.Params())
    assert default["granularity"] == "per_channel" and "group_size" not in default
    assert "notes" not in default
    assert STATIC.execution("onnx", STATIC.Params()) == "native"
    assert STATIC.Params().group_size is None
    with pytest.raises(ValueError):
        STATIC.Params(group_size=0)


def test_unsupported_reasons(tiny_onnx: Path) -> None:
    digits_cnn = FAM.models.get("digits_cnn")()
    onnx_file = onnx_context(tiny_onnx, np.zeros((1, 1, 8, 8), np.float32)).source
    grouped = STATIC.Params(group_size=32)
    assert STATIC.unsupported("onnx", grouped, digits_cnn) is None
    assert STATIC.unsupported("onnx", grouped, onnx_file) is None

    torch_reason = STATIC.unsupported("torch", grouped, digits_cnn)
    assert torch_reason and "group_size" in torch_reason and "per-group" in torch_reason

    qop = STATIC.unsupported(
        "onnx", STATIC.Params(group_size=32, quant_format="qoperator"), digits_cnn
    )
    assert qop and "QDQ" in qop and "group_size" in qop
    per_tensor = STATIC.unsupported(
        "onnx", STATIC.Params(group_size=32, per_channel=False), digits_cnn
    )
    assert per_tensor and "per_channel" in per_tensor
