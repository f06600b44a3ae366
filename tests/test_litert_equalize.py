"""Cross-layer equalization of a float .tflite (qbench.methods._tflite_equalize) and the
static_int8 LiteRT options that use it (equalize, rounding=gptq).

The model here is built with badly balanced channels on purpose: some output channels of a
ReLU6 conv are 40x smaller than the rest and the next op's weights 40x larger for them, which
computes the same function as a balanced model but wastes most of one per-tensor int8 step.
Equalization must find that pair, leave the float model's outputs as they were, and give the
full-int8 model a clearly smaller output error.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qbench.plugins import load_all
from tests.conftest import write_suite

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")
pytest.importorskip("ai_edge_litert")
torch = pytest.importorskip("torch")

FAM = load_all()
STATIC = FAM.methods.get("static_int8")()
SHAPE = (3, 16, 16)


class Unbalanced(torch.nn.Module):
    """conv+ReLU6 -> depthwise+ReLU6 -> conv -> conv+ReLU -> (conv, skip) add -> mean -> linear.
    Pairs to equalize: conv0 -> depthwise, depthwise -> conv1. conv1 has no activation and
    conv2's output feeds two ops (conv3 and the add): neither may be touched."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv0 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.conv1 = torch.nn.Conv2d(8, 6, 1)
        self.conv2 = torch.nn.Conv2d(6, 6, 1)
        self.conv3 = torch.nn.Conv2d(6, 6, 1)
        self.fc = torch.nn.Linear(6, 5)
        with torch.no_grad():
            for layer in (self.conv0, self.dw, self.conv1, self.conv2, self.conv3, self.fc):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.4)
                layer.bias.copy_(torch.rand(layer.bias.shape, generator=g) * 0.2)
            # channels 0-3 of conv0 and 4-7 of the depthwise made 40x smaller, the next op's
            # weights for them 40x larger: the same function, unbalanced ranges
            self.conv0.weight[:4] /= 40
            self.conv0.bias[:4] /= 40
            self.dw.weight[:4] *= 40
            self.dw.weight[4:] /= 40
            self.dw.bias[4:] /= 40
            self.conv1.weight[:, 4:] *= 40

    def forward(self, x: Any) -> Any:
        x = torch.nn.functional.relu6(self.conv0(x))
        x = torch.nn.functional.relu6(self.dw(x))
        x = torch.relu(self.conv2(self.conv1(x)))
        x = x + self.conv3(x)
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"calib": rng.normal(size=(48, *SHAPE)).astype(np.float32),
            "x": rng.normal(size=(64, *SHAPE)).astype(np.float32)}  # fmt: skip


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qbench.methods.export_tflite import convert_tflite

    path = tmp_path_factory.mktemp("eq") / "unbalanced.tflite"
    convert_tflite(Unbalanced(), SHAPE, path)
    return path


def outputs(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    from qbench.backends.litert import dequantize_output, quantize_input
    from qbench.methods.export_tflite import quiet

    with quiet():
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    found = []
    for sample in x:
        interpreter.set_tensor(inp["index"], quantize_input(sample[None], inp))
        interpreter.invoke()
        found.append(dequantize_output(interpreter.get_tensor(out["index"]), out)[0])
    return np.stack(found)


def sqnr_db(ref: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - y) ** 2)))


def test_channel_scales_rules() -> None:
    from qbench.methods._tflite_equalize import channel_scales

    # saturated at 6, silent, already at headroom x top, tiny (capped), half of that
    m = np.array([6.0, 0.0, 3.0, 0.001, 1.5])
    k = channel_scales(m, relu6=True, headroom=0.5, max_scale=16.0)
    np.testing.assert_allclose(k, [1.0, 1.0, 1.0, 16.0, 2.0])
    # ReLU: no ceiling at 6, the largest channel sets the target
    k = channel_scales(np.array([10.0, 1.0, 2.5]), relu6=False, headroom=0.5, max_scale=16.0)
    np.testing.assert_allclose(k, [1.0, 5.0, 2.0])
    # headroom 1: lifted to the top channel, never above it
    k = channel_scales(np.array([4.0, 1.0]), relu6=True, headroom=1.0, max_scale=100.0)
    np.testing.assert_allclose(k, [1.0, 4.0])


def test_pairs_are_the_relu_chains_only(fp32: Path) -> None:
    from qbench.methods._litert_quant import _model
    from qbench.methods._tflite_equalize import equalization_pairs

    pairs = equalization_pairs(_model(fp32))
    assert [(p.a_kind, p.b_kind, p.relu6) for p in pairs] == [
        ("CONV_2D", "DEPTHWISE_CONV_2D", True),
        ("DEPTHWISE_CONV_2D", "CONV_2D", True),
    ]


def test_equalization_keeps_the_float_model_and_balances_channels(
    fp32: Path, inputs: dict[str, np.ndarray], tmp_path: Path
) -> None:
    from qbench.methods._litert_quant import _model
    from qbench.methods._tflite_equalize import channel_maxima, equalization_pairs, equalize

    out = tmp_path / "equalized.tflite"
    summary = equalize(fp32, out, inputs["calib"], headroom=0.5, max_scale=100.0)
    assert summary.startswith("cross-layer equalization: 2 ReLU/ReLU6 conv pairs, ")
    assert "on 48 calibration inputs" in summary
    # the float model computes the same, on the calibration inputs and on others
    for x in (inputs["calib"], inputs["x"]):
        ref = outputs(fp32, x)
        np.testing.assert_allclose(outputs(out, x), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())

    def spread(path: Path) -> list[float]:
        pairs = equalization_pairs(_model(path))
        maxima = channel_maxima(path.read_bytes(), pairs, inputs["calib"])
        return [float(m.min() / m.max()) for m in maxima.values()]

    before, after = spread(fp32), spread(out)
    assert max(before) < 0.1, before  # 40x apart by construction
    assert min(after) > 0.3, after  # lifted to half the largest channel, give or take


def test_full_int8_error_falls_with_equalization(
    fp32: Path, inputs: dict[str, np.ndarray], tmp_path: Path
) -> None:
    from qbench.methods._litert_quant import full_integer
    from qbench.methods._tflite_equalize import equalize

    ref = outputs(fp32, inputs["x"])
    plain = tmp_path / "plain.tflite"
    full_integer(fp32, plain, inputs["calib"])
    equalized_fp32 = tmp_path / "equalized_fp32.tflite"
    equalize(fp32, equalized_fp32, inputs["calib"])
    equalized = tmp_path / "equalized.tflite"
    full_integer(equalized_fp32, equalized, inputs["calib"])
    before = sqnr_db(ref, outputs(plain, inputs["x"]))
    after = sqnr_db(ref, outputs(equalized, inputs["x"]))
    assert after > before + 6.0, (before, after)


def test_static_int8_equalize_and_gptq_parameters() -> None:
    from qbench.params import stable_hash
    from qbench.plan import non_default

    digits_cnn = FAM.models.get("digits_cnn")()
    plain = STATIC.Params()
    tuned = STATIC.Params(equalize=True, rounding="gptq")
    # defaults leave dumps (artifact cache keys, method_sha256) as they were before the options
    assert not {"equalize", "equalize_headroom", "equalize_max_scale", "rounding"} & set(
        plain.model_dump()
    )
    assert stable_hash(plain.model_dump()) == stable_hash(
        STATIC.Params(equalize=False, rounding="nearest").model_dump()
    )
    assert non_default(tuned) == {"equalize": True, "rounding": "gptq"}
    assert STATIC.Params(**tuned.model_dump()) == tuned
    assert STATIC.unsupported("tflite", tuned, digits_cnn) is None
    for fmt in ("onnx", "torch"):
        reason = STATIC.unsupported(fmt, tuned, digits_cnn)
        assert reason == (
            "equalize, rounding is built for LiteRT (tflite) only (passes on the .tflite "
            f"flatbuffer); the {fmt} path takes the default"
        )
        assert STATIC.unsupported(fmt, STATIC.Params(equalize_headroom=0.8), digits_cnn)
    assert STATIC.unsupported("onnx", plain, digits_cnn) is None
    with pytest.raises(ValueError):
        STATIC.Params(equalize_headroom=0)
    with pytest.raises(ValueError):
        STATIC.Params(equalize_max_scale=0.5)


def test_agent_builds_an_equalized_gptq_full_int8_cell(tmp_path: Path) -> None:
    """A suite cell with equalize and rounding=gptq on litert: the artifact notes say what each
    pass did, the onnxruntime cell is skipped with the reason, and the model keeps its top-1."""
    from qbench import agent
    from qbench.plan import build_plan
    from qbench.suite.loader import load_suite

    suite = write_suite(tmp_path, """
        name: e
        models: [digits_cnn]
        methods: [{name: static_int8, params: {equalize: true, rounding: gptq}}]
        backends: [litert, onnxruntime]
        accuracy: {samples: 16}
        calibration: {samples: 32}
    """)  # fmt: skip
    cells = {c.backend: c for c in build_plan(*load_suite(suite)).cells}
    assert "equalize=True" in cells["litert"].cell_id and "rounding=gptq" in cells["litert"].cell_id
    assert "LiteRT (tflite) only" in cells["onnxruntime"].skip_reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = agent.prepare(cells["litert"])
    notes = result["artifact_notes"]
    assert any(n.startswith("before calibration, cross-layer equalization: 1 ReLU/ReLU6 conv "
                            "pairs") for n in notes), notes  # fmt: skip
    assert any(n.startswith("GPTQ rounding of all 5 int8 weight tensors") for n in notes), notes
    json.dumps(result)
