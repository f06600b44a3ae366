"""Quantization-aware training (`qat`) and mixed precision (`mixed`) on the digits CNN: the
straight-through estimator, LSQ scales, QAT's recovery of 2-bit accuracy, torch artifacts that
round-trip, and per-layer bit assignments by pattern and by SQNR search."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from qbench.backends.torch_eager import TorchEagerBackend, TorchParams
from qbench.measure.fidelity import sqnr_db
from qbench.methods._fake_quant import (
    ActivationFakeQuant,
    FrozenActivationQuant,
    WeightFakeQuant,
    add_activation_quant,
    add_weight_quant,
    fake_quant,
    grad_scale,
)
from qbench.methods.base import MakeContext
from qbench.methods.packing import weight_layers
from qbench.methods.qat import QatParams, train_qat
from qbench.models.base import LoadedModel
from qbench.plugins import load_all

FAM = load_all()
QAT = FAM.methods.get("qat")()
MIXED = FAM.methods.get("mixed")()
UNIFORM = FAM.methods.get("uniform")()
QAT_STEPS = 60  # the default is 300; 60 already recovers 2-bit accuracy on digits


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny models train fastest on one thread; on a busy machine two were 10-20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    dataset = FAM.datasets.get("digits")()
    calib, _ = dataset.load("calib", 64)
    x, y = dataset.load("eval", None)
    train_x, train_y = dataset.load("train", None)
    return {"calib": calib, "eval_x": x, "eval_y": y, "train_x": train_x, "train_y": train_y}


@pytest.fixture(scope="module")
def ctx(digits: dict[str, Any]) -> MakeContext:
    source = FAM.models.get("digits_cnn")()
    params = source.Params()
    loaded = source.load(params)  # trained (about a second), cached in the test cache
    # The real weights' hash: qat caches its training under it.
    return MakeContext(model_name="digits_cnn", source=source, model_params=params,
                       model=LoadedModel(weights="test", sha256=loaded.sha256,
                                         module=loaded.module),
                       input_shape=(1, 8, 8), calib=digits["calib"],
                       fp32_onnx=lambda: None)  # fmt: skip


def top1(module: Any, digits: dict[str, Any]) -> float:
    with torch.no_grad():
        logits = module(torch.as_tensor(digits["eval_x"])).numpy()
    return float((logits.argmax(1) == digits["eval_y"]).mean())


def make_torch(method: Any, ctx: MakeContext, out: Path, **params: Any) -> tuple[dict, Any]:
    typed = method.Params(**params)
    assert method.unsupported("torch", typed, ctx.source) is None
    meta = method.make("torch", typed, ctx, out)
    return meta, TorchEagerBackend().open(out, "torch", 1, TorchParams())


# --- fake quantization ------------------------------------------------------------------------


def test_ste_gradient_is_identity_inside_the_range_and_zero_outside() -> None:
    scale = torch.tensor(0.5)
    x = torch.linspace(-3, 3, 61, dtype=torch.float64).requires_grad_()
    out = fake_quant(x, scale, 0.0, -3, 3)  # codes -3..3: range [-1.5, 1.5]
    assert torch.all(out.detach().abs() <= 1.5)
    assert not torch.equal(out.detach(), x.detach())  # it does round
    out.sum().backward()
    inside = (x.detach() / 0.5).round().abs() <= 3
    assert torch.equal(x.grad, inside.to(x.dtype))
    assert inside.any() and (~inside).any()
    # Activations (affine): the same rule in the frozen quantizer's range.
    act = ActivationFakeQuant(4)
    act.scale.fill_(0.1)
    act.zero_point.fill_(3.0)  # codes 0..15: range [-0.3, 1.2]
    act.train(False)
    a = torch.linspace(-1, 2, 31, dtype=torch.float32).requires_grad_()
    fake_quant(a, act.scale, act.zero_point, 0, 15).sum().backward()
    expected = ((a.detach() / 0.1).round() + 3 >= 0) & ((a.detach() / 0.1).round() + 3 <= 15)
    assert torch.equal(a.grad, expected.float())


def test_weight_fake_quant_equals_torch_fake_quantize_per_channel() -> None:
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3)
    for bits in (2, 4, 8):
        qmax = 2 ** (bits - 1) - 1
        scale = w.abs().flatten(1).amax(1) / qmax
        mine_w = w.clone().requires_grad_()
        mine = WeightFakeQuant(w, bits, learned_scale=False)(mine_w)
        ref_w = w.clone().requires_grad_()
        ref = torch.fake_quantize_per_channel_affine(
            ref_w, scale, torch.zeros(16, dtype=torch.int32), 0, -qmax, qmax
        )
        assert torch.equal(mine, ref)
        assert mine.detach().unique().numel() <= 16 * (2 * qmax + 1)
        # A smaller scale clips: gradients agree, zeros outside the range included.
        clipped = fake_quant(mine_w, 0.5 * scale.reshape(-1, 1, 1, 1), 0.0, -qmax, qmax)
        ref_clipped = torch.fake_quantize_per_channel_affine(
            ref_w, 0.5 * scale, torch.zeros(16, dtype=torch.int32), 0, -qmax, qmax
        )
        assert torch.equal(clipped, ref_clipped)
        (clipped * torch.arange(clipped.numel()).reshape(clipped.shape)).sum().backward()
        (ref_clipped * torch.arange(clipped.numel()).reshape(clipped.shape)).sum().backward()
        # (x·(1/s))·s: the identity up to float rounding of the scale's reciprocal
        assert torch.allclose(mine_w.grad, ref_w.grad, rtol=1e-6, atol=0)
        assert torch.equal(mine_w.grad == 0, ref_w.grad == 0) and (ref_w.grad == 0).any()


def test_lsq_scales_get_scaled_gradients_and_change_in_training() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    grad_scale(x, 0.25).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.25, 0.25]))

    from qbench.models._architectures import DigitsCNN

    torch.manual_seed(0)
    model = add_activation_quant(add_weight_quant(DigitsCNN(), 2, True), 4, True).train()
    fq = model.features[0].parametrizations.weight[0]
    act = model.features[3].input_quant
    assert isinstance(fq.scale, torch.nn.Parameter) and fq.scale.shape == (32,)
    inputs, labels = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    model(inputs)  # the first batch sets the activation ranges
    w_scale, a_scale = fq.scale.detach().clone(), act.learned_scale.detach().clone()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), labels).backward()
        assert fq.scale.grad is not None and fq.scale.grad.abs().sum() > 0
        assert act.learned_scale.grad is not None and act.learned_scale.grad != 0
        optimiser.step()
    assert not torch.equal(fq.scale.detach(), w_scale)
    assert not torch.equal(act.learned_scale.detach(), a_scale)
    with torch.no_grad():
        model(inputs)
    assert act.scale == act.learned_scale.detach().abs()  # the frozen form follows


# --- qat ------------------------------------------------------------------------------------


def test_qat_2bit_recovers_what_2bit_ptq_loses_and_round_trips(
    ctx: MakeContext, digits: dict[str, Any], tmp_path: Path
) -> None:
    fp32 = top1(ctx.model.module, digits)
    ptq, _ = UNIFORM.quantize_module(ctx.model.module, UNIFORM.Params(bits=2))
    ptq_top1 = top1(ptq, digits)
    meta, session = make_torch(QAT, ctx, tmp_path / "qat.pt", bits_w=2, steps=QAT_STEPS)
    qat_top1 = float((session.predict(digits["eval_x"]).argmax(1) == digits["eval_y"]).mean())
    assert fp32 > 0.95
    assert qat_top1 >= ptq_top1 + 0.08, (fp32, ptq_top1, qat_top1)
    assert qat_top1 >= fp32 - 0.03, (fp32, ptq_top1, qat_top1)

    # The artifact round-trips: the backend's rebuilt module computes what training produced
    # (training is seeded, so a second run gives the same module).
    again, _ = train_qat(ctx.model.module, digits["train_x"], digits["train_y"],
                         QatParams(bits_w=2, steps=QAT_STEPS))  # fmt: skip
    with torch.no_grad():
        expected = again(torch.as_tensor(digits["eval_x"])).numpy()
    assert np.array_equal(session.predict(digits["eval_x"]), expected)
    # Weights sit on the 2-bit grid (3 levels per channel); activations stay quantized.
    for _, layer in weight_layers(session.module):
        assert all(row.unique().numel() <= 3 for row in layer.weight.detach().flatten(1))
        assert isinstance(layer.input_quant, FrozenActivationQuant)
    # Packed: the same as uniform 2-bit, plus each layer's activation scale and zero point.
    uniform = UNIFORM.make("torch", UNIFORM.Params(bits=2), ctx, tmp_path / "u.pt")
    assert meta["packed_bytes"] == uniform["packed_bytes"] + 5 * 2 * 4
    row = QAT.describe("torch", QatParams(bits_w=2, steps=QAT_STEPS))
    assert row["qat_steps"] == QAT_STEPS and row["bits_w"] == 2 and row["bits_a"] == 8
    assert QAT.execution("torch", QatParams()) == "simulated"


def test_qat_needs_labelled_training_data_and_a_torch_model() -> None:
    resnet = FAM.models.get("resnet18")()
    assert QAT.unsupported("torch", QatParams(), resnet) == (
        "qat needs labelled training data; dataset sample_photos has none"
    )
    assert "ONNX file" in QAT.unsupported("onnx", QatParams(), FAM.models.get("onnx_file")())
    assert QAT.unsupported("onnx", QatParams(), FAM.models.get("digits_cnn")()) is None
    with pytest.raises(ValueError, match="bits_a"):
        QatParams(bits_a=16)


# --- mixed ----------------------------------------------------------------------------------


def test_mixed_patterns_default_bits_and_float_layers(ctx: MakeContext, tmp_path: Path) -> None:
    layers = {"classifier.*": 8, "classifier.3": 32, "features.0": 2}
    meta, session = make_torch(MIXED, ctx, tmp_path / "m.pt", layers=layers, default_bits=4)
    assert json.loads(meta["layer_bits_json"]) == {
        "features.0": 2,
        "features.3": 4,
        "features.7": 4,
        "classifier.1": 8,
        "classifier.3": 32,  # an exact name beats the pattern
    }
    new, old = dict(weight_layers(session.module)), dict(weight_layers(ctx.model.module))
    assert torch.equal(new["classifier.3"].weight, old["classifier.3"].weight)  # kept float
    for name, bits in (("features.0", 2), ("features.3", 4), ("classifier.1", 8)):
        assert not torch.equal(new[name].weight, old[name].weight)
        levels = max(row.unique().numel() for row in new[name].weight.detach().flatten(1))
        assert levels <= 2**bits - 1
    assert MIXED.describe("torch", MIXED.Params())["bits_w"] is None

    sizes = [make_torch(MIXED, ctx, tmp_path / f"{b}.pt", default_bits=b)[0]["packed_bytes"]
             for b in (2, 4, 8, 32)]  # fmt: skip
    assert sizes[0] < sizes[1] < sizes[2] < sizes[3]
    with pytest.raises(ValueError, match="match no Conv/Linear layer"):
        MIXED.make("torch", MIXED.Params(layers={"head.*": 8}), ctx, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="bits"):
        MIXED.Params(layers={"features.0": 16})


def test_mixed_auto_meets_its_budget_and_raises_more_layers_for_stricter_ones(
    ctx: MakeContext, digits: dict[str, Any], tmp_path: Path
) -> None:
    with torch.no_grad():
        reference = ctx.model.module(torch.as_tensor(digits["calib"])).numpy()
    raised = []
    for budget in (25.0, 40.0):
        meta, session = make_torch(MIXED, ctx, tmp_path / f"auto{budget}.pt", auto=True,
                                   low_bits=4, high_bits=8, sqnr_budget_db=budget)  # fmt: skip
        assignment = json.loads(meta["layer_bits_json"])
        assert set(assignment) == {n for n, _ in weight_layers(ctx.model.module)}
        assert set(assignment.values()) <= {4, 8}
        assert sqnr_db(reference, session.predict(digits["calib"])) >= budget
        assert meta["artifact_notes"][0].startswith("auto: ")
        assert f"reached the {budget:g} dB budget" in meta["artifact_notes"][0]
        raised.append(sum(b == 8 for b in assignment.values()))
        # The fewest: without the last layer raised (in sensitivity order) the budget is missed.
        ranked = meta["artifact_notes"][1].split(": ")[1].split(", ")
        order = [item.split(" ")[0] for item in ranked]
        assert all(assignment[n] == 8 for n in order[: raised[-1]])
        fewer = {**assignment, order[raised[-1] - 1]: 4}
        _, session = make_torch(MIXED, ctx, tmp_path / f"fewer{budget}.pt", layers=fewer)
        assert sqnr_db(reference, session.predict(digits["calib"])) < budget
    assert 0 < raised[0] < raised[1]
    # Pinned layers keep their bits; the search covers the rest.
    meta, _ = make_torch(MIXED, ctx, tmp_path / "pinned.pt", auto=True,
                         layers={"features.0": 32}, sqnr_budget_db=25.0)  # fmt: skip
    assert json.loads(meta["layer_bits_json"])["features.0"] == 32
    assert "of 4 searched layers" in meta["artifact_notes"][0]


def test_only_auto_mixed_reads_calibration_inputs() -> None:
    assert not MIXED.needs_calibration(MIXED.Params(layers={"features.*": 4}))
    assert MIXED.needs_calibration(MIXED.Params(auto=True))
