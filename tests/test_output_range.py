"""static_int8's output_range_scale: the model outputs' calibrated range is widened on the
ONNX Runtime (QDQ) and LiteRT (full int8) paths; torch's x86 path needs no widening (its 7-bit
output grid sits in a quint8 tensor whose upper codes stay free), shown here too.

Calibration ends each range at the largest value the calibration inputs produced. An input the
model is surer of than of any calibration input has its top scores clipped to one int8 code:
where two classes both pass the ceiling (MobileNetV2's dung beetle and ground beetle on an
ImageNet photo) top-1 picks among ties. The model here is a linear classifier of the real
digits with such a pair: two outputs are the template of the digit 0, scaled up (the class it
is surest of), plus and minus a direction that decides which of the two leads. Calibrated on
digits without a 0 (a calibration set that misses the sure class), the held-out zeros score
past the calibrated range: with the range kept (scale 1) the pair ties at the ceiling, widened
it keeps its order.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qbench.methods.base import MakeContext
from qbench.plugins import load_all

torch = pytest.importorskip("torch")

FAM = load_all()
STATIC = FAM.methods.get("static_int8")()


def twin_classifier(x: np.ndarray, y: np.ndarray) -> Any:
    """flatten -> linear: outputs 0 and 1 are 1.8 x (template of 0 ± a direction orthogonal to
    it), outputs 2-5 the templates of 2-5 (templates: class mean minus the mean image)."""
    flat = x.reshape(len(x), -1)
    mean = flat.mean(0)
    templates = np.stack([flat[y == k].mean(0) - mean for k in range(6)])
    apart = np.random.default_rng(0).normal(size=flat.shape[1])
    apart -= apart @ templates[0] / (templates[0] @ templates[0]) * templates[0]
    apart *= 0.5 * np.linalg.norm(templates[0]) / np.linalg.norm(apart)
    weight = np.stack([1.8 * (templates[0] + apart), 1.8 * (templates[0] - apart),
                       *templates[2:6]])  # fmt: skip
    linear = torch.nn.Linear(flat.shape[1], 6)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        linear.bias.copy_(torch.as_tensor(-(weight @ mean), dtype=torch.float32))
    return torch.nn.Sequential(torch.nn.Flatten(), linear).eval()


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    dataset = FAM.datasets.get("digits")()
    calib, calib_y = dataset.load("calib", None)
    x, y = dataset.load("eval", None)
    assert calib_y is not None and y is not None
    return {"all_calib": calib, "all_calib_y": calib_y,
            "calib": calib[calib_y != 0][:128], "x": x[y == 0]}  # fmt: skip


@pytest.fixture(scope="module")
def ctx(digits: dict[str, np.ndarray]) -> MakeContext:
    from qbench.methods.export import fp32_onnx
    from qbench.methods.export_tflite import fp32_tflite
    from qbench.models.base import LoadedModel, state_dict_sha256

    source = FAM.models.get("digits_cnn")()
    module = twin_classifier(digits["all_calib"], digits["all_calib_y"])
    loaded = LoadedModel(weights="test", sha256=state_dict_sha256(module.state_dict()),
                         module=module)  # fmt: skip
    return MakeContext(
        model_name="digits_cnn",
        source=source,
        model_params=source.Params(),
        model=loaded,
        input_shape=(1, 8, 8),
        calib=digits["calib"],
        fp32_onnx=lambda: fp32_onnx(loaded.sha256, loaded.module, (1, 8, 8)),
        fp32_tflite=lambda: fp32_tflite(loaded.sha256, loaded.module, (1, 8, 8)),
    )


@pytest.fixture(scope="module")
def reference(ctx: MakeContext, digits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        calib = ctx.model.module(torch.as_tensor(digits["calib"])).numpy()
        x = ctx.model.module(torch.as_tensor(digits["x"])).numpy()
    return {"calib": calib, "x": x}


def _predict(fmt: str, path: Path, ctx: MakeContext) -> Any:
    if fmt == "onnx":
        from qbench.backends.onnxruntime import OrtParams, OrtSession

        return OrtSession(path, 1, OrtParams()).predict
    if fmt == "torch":  # as the torch backend rebuilds an artifact, on this module
        saved = torch.load(path, weights_only=False)
        params = STATIC.Params(**saved["method_params"])
        module = STATIC.rebuild_torch(copy.deepcopy(ctx.model.module), torch.zeros(1, 1, 8, 8),
                                      params)  # fmt: skip
        module.load_state_dict(saved["state_dict"])
        return lambda x: module(torch.as_tensor(x)).detach().numpy()
    pytest.importorskip("ai_edge_quantizer")
    from qbench.backends.litert import LitertBackend, LitertParams

    return LitertBackend().open(path, "tflite", 1, LitertParams()).predict


def outputs(fmt: str, ctx: MakeContext, tmp: Path, x: np.ndarray, **params: Any) -> np.ndarray:
    if fmt == "tflite":
        pytest.importorskip("litert_torch")
        pytest.importorskip("ai_edge_litert")
    typed = STATIC.Params(**params)
    assert STATIC.unsupported(fmt, typed, ctx.source) is None
    tmp.mkdir()
    out = tmp / f"static.{ {'onnx': 'onnx', 'torch': 'pt', 'tflite': 'tflite'}[fmt] }"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        STATIC.make(fmt, typed, ctx, out)
        predict = _predict(fmt, out, ctx)
        y = np.concatenate([predict(x[i : i + 1]) for i in range(len(x))])
    return y.reshape(len(x), -1)


def tied_at_top(y: np.ndarray) -> np.ndarray:
    top2 = np.sort(y, axis=1)[:, -2:]
    return top2[:, 0] == top2[:, 1]


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_outputs_past_the_calibrated_range_keep_their_order(
    fmt: str,
    ctx: MakeContext,
    digits: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    calib_max = reference["calib"].max()
    x, ref = digits["x"], reference["x"]
    top2 = np.sort(ref, axis=1)[:, -2]
    assert (top2 > 1.1 * calib_max).mean() > 0.6  # both of the pair past the calibrated range
    assert ref.max() < 1.9 * calib_max  # and inside the default widened range
    assert 0.2 < (ref.argmax(1) == 1).mean() < 0.8  # either of the pair may lead

    kept = outputs(fmt, ctx, tmp_path / "kept", x, output_range_scale=1.0)
    widened = outputs(fmt, ctx, tmp_path / "widened", x)  # the default, 2
    agreement = {name: float((y.argmax(1) == ref.argmax(1)).mean())
                 for name, y in (("kept", kept), ("widened", widened))}  # fmt: skip

    # Kept: the pair is clipped near the calibrated maximum and ties.
    assert kept.max() < 1.1 * calib_max
    assert tied_at_top(kept).mean() > 0.5, agreement
    # Widened: nothing clipped, no ties, and top-1 follows fp32.
    assert widened.max() > 1.3 * calib_max
    assert tied_at_top(widened).mean() < 0.15, agreement  # close calls at int8 resolution
    assert agreement["widened"] > agreement["kept"] + 0.25, agreement
    assert agreement["widened"] > 0.9, agreement


def test_torch_outputs_are_not_clipped_at_the_calibrated_maximum(
    ctx: MakeContext,
    digits: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    ref = reference["x"]
    # the legacy FX path quantizes the outputs (PT2E leaves the model's outputs float)
    y = outputs("torch", ctx, tmp_path / "torch", digits["x"], torch_flow="fx")
    assert y.max() > 1.3 * reference["calib"].max()
    assert (y.argmax(1) == ref.argmax(1)).mean() > 0.9
    assert tied_at_top(y).mean() < 0.15
    reason = STATIC.unsupported("torch", STATIC.Params(output_range_scale=3), ctx.source)
    assert reason is not None and "output_range_scale" in reason


def test_output_range_scale_parameter() -> None:
    from pydantic import ValidationError

    default = STATIC.Params()
    assert default.output_range_scale == 2.0
    # in every dump, so each row's method_params_json says how its outputs were quantized
    assert default.model_dump()["output_range_scale"] == 2.0
    assert STATIC.Params(output_range_scale=1).model_dump()["output_range_scale"] == 1
    for bad in (0.5, 32):
        with pytest.raises(ValidationError):
            STATIC.Params(output_range_scale=bad)
    edgetpu = FAM.methods.get("edgetpu")()
    from qbench.methods.edgetpu import _static_params

    forwarded = _static_params(STATIC, edgetpu.Params(output_range_scale=3))
    assert forwarded.output_range_scale == 3
