"""Simulated weight methods through the plugin API: they change only what they claim to,
say `simulated`, count packed sizes that fall with bits, and round-trip their parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from qbench.backends.torch_eager import TorchEagerBackend, TorchParams
from qbench.methods.base import MakeContext
from qbench.methods.packing import weight_layers
from qbench.models.base import LoadedModel
from qbench.plan import build_plan
from qbench.plugins import load_all
from qbench.runner import base_row
from qbench.store.schema import RESULT_COLUMN_NAMES
from qbench.suite.loader import load_suite
from tests.conftest import write_suite

FAM = load_all()
SIMULATED = ["uniform", "fixed_point", "log2", "kmeans", "product", "binary", "ternary"]


@pytest.fixture(scope="module")
def ctx() -> MakeContext:
    from qbench.models._architectures import DigitsCNN

    torch.manual_seed(0)
    module = DigitsCNN().eval()
    source = FAM.models.get("digits_cnn")()
    return MakeContext(model_name="digits_cnn", source=source, model_params=source.Params(),
                       model=LoadedModel(weights="test", sha256="x", module=module),
                       input_shape=(1, 8, 8), calib=None, fp32_onnx=lambda: None)  # fmt: skip


def make(ctx: MakeContext, tmp_path: Path, name: str, **params: Any) -> tuple[Any, dict, Any]:
    method = FAM.methods.get(name)()
    typed = method.Params(**params)
    out = tmp_path / f"{name}-{abs(hash(str(params)))}.pt"
    meta = method.make("torch", typed, ctx, out)
    session = TorchEagerBackend().open(out, "torch", 1, TorchParams())
    return method, meta, session


@pytest.mark.parametrize("name", SIMULATED)
def test_weights_change_biases_do_not_and_torch_artifact_round_trips(
    ctx: MakeContext, tmp_path: Path, name: str
) -> None:
    # Product quantization with K >= a layer's rows stores every row exactly (the last layer
    # has 10): use K=4.
    params = {"centroids": 4} if name == "product" else {}
    method, meta, session = make(ctx, tmp_path, name, **params)
    assert method.execution("torch", method.Params(**params)) == "simulated"
    assert method.execution("onnx", method.Params(**params)) == "simulated"
    expected, _ = method.quantize_module(ctx.model.module, method.Params(**params))
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        assert np.array_equal(session.predict(x), expected(torch.from_numpy(x)).numpy())
    for (_, new), (_, old) in zip(weight_layers(session.module),
                                  weight_layers(ctx.model.module), strict=True):  # fmt: skip
        assert not torch.equal(new.weight, old.weight)  # quantized
        assert torch.equal(new.bias, old.bias)  # untouched
    fp32_bytes = sum(t.numel() * 4 for t in ctx.model.module.state_dict().values()
                     if t.is_floating_point())  # fmt: skip
    assert 0 < meta["packed_bytes"] < fp32_bytes
    assert set(method.describe("torch", method.Params())) <= set(RESULT_COLUMN_NAMES)


def test_packed_size_falls_with_bits(ctx: MakeContext, tmp_path: Path) -> None:
    sizes = [make(ctx, tmp_path, "uniform", bits=b)[1]["packed_bytes"] for b in (2, 4, 8)]
    assert sizes[0] < sizes[1] < sizes[2]
    kmeans = [make(ctx, tmp_path, "kmeans", bits=b)[1]["packed_bytes"] for b in (2, 4)]
    assert kmeans[0] < kmeans[1]


def test_product_records_per_layer_bits(ctx: MakeContext, tmp_path: Path) -> None:
    _, meta, _ = make(ctx, tmp_path, "product", subvector=4, centroids=16)
    layer_bits = json.loads(meta["layer_bits_json"])
    assert set(layer_bits) == {name for name, _ in weight_layers(ctx.model.module)}
    # log2(16) = 4 bits per 4-weight sub-vector, 1 bit per weight, plus the codebooks, which
    # dominate in layers with few rows (the packed size says so honestly).
    assert all(bits > 1 for bits in layer_bits.values())


def test_parameters_round_trip_into_rows(tmp_path: Path) -> None:
    plan = build_plan(*load_suite(write_suite(tmp_path, """
        name: t
        models: [digits_cnn]
        methods:
          - {name: uniform, params: {bits: 3, granularity: per_group, group_size: 16}}
          - {name: kmeans, params: {bits: 2, granularity: per_channel}}
          - {name: product, params: {subvector: 8, centroids: 64}}
        backends: [torch]
    """)))  # fmt: skip
    rows = {c.method: base_row(c) for c in plan.cells}
    uniform = rows["uniform"]
    assert (uniform["bits_w"], uniform["granularity"], uniform["group_size"]) == (
        3,
        "per_group",
        16,
    )
    assert uniform["execution"] == "simulated" and uniform["weight_scheme"] == "uniform"
    assert json.loads(uniform["method_params_json"]) == {
        "bits": 3, "granularity": "per_group", "group_size": 16, "symmetric": True,
        "activation_bits": None}  # fmt: skip
    assert (rows["kmeans"]["clusters"], rows["kmeans"]["granularity"]) == (4, "per_channel")
    assert (rows["product"]["clusters"], rows["product"]["subvector_size"]) == (64, 8)
    assert rows["product"]["bits_w"] is None


def test_uniform_activation_bits_match_torch_observers_and_fake_quantize(
    ctx: MakeContext, tmp_path: Path
) -> None:
    """activation_bits: each layer's input range is what torch.ao's MinMaxObserver sees, and the
    artifact computes torch.fake_quantize_per_tensor_affine of every layer input."""
    from torch.ao.quantization.observer import MinMaxObserver

    method = FAM.methods.get("uniform")()
    assert not method.needs_calibration(method.Params(bits=4))
    assert method.needs_calibration(method.Params(bits=4, activation_bits=6))
    calib = np.random.default_rng(1).random((48, 1, 8, 8), dtype=np.float32)
    actx = MakeContext(**{**ctx.__dict__, "calib": calib})
    bits_a = 6
    typed = method.Params(bits=8, activation_bits=bits_a)
    out = tmp_path / "uniform-acts.pt"
    meta = method.make("torch", typed, actx, out)
    assert "fake-quantized to uint6" in meta["artifact_notes"][0]
    session = TorchEagerBackend().open(out, "torch", 1, TorchParams())
    row = method.describe("torch", typed)
    assert row["bits_a"] == bits_a and row["bits_w"] == 8

    # Independent reference: weight-quantized module, torch observers on each layer input.
    reference, _ = method.quantize_module(ctx.model.module, method.Params(bits=8))
    observers = {}
    handles = []
    for name, layer in weight_layers(reference):
        obs = MinMaxObserver(dtype=torch.quint8, quant_min=0, quant_max=2**bits_a - 1)
        observers[name] = obs
        handles.append(layer.register_forward_pre_hook(lambda _, a, o=obs: (o(a[0]), None)[1]))
    with torch.no_grad():
        reference(torch.from_numpy(calib))
    for handle in handles:
        handle.remove()
    qparams = {name: obs.calculate_qparams() for name, obs in observers.items()}
    for name, layer in weight_layers(session.module):
        scale, zero_point = qparams[name]
        assert float(layer.input_quant.scale) == pytest.approx(float(scale), rel=1e-6)
        assert float(layer.input_quant.zero_point) == int(zero_point)
        layer_ref = dict(weight_layers(reference))[name]
        layer_ref.register_forward_pre_hook(
            lambda _, a, s=float(scale), z=int(zero_point): (
                torch.fake_quantize_per_tensor_affine(a[0], s, z, 0, 2**bits_a - 1),
            )
        )
    x = np.random.default_rng(2).random((8, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.predict(x), expected, rtol=1e-5, atol=1e-5)
    # Fewer activation bits, further from the weight-only output.
    from qbench.measure.fidelity import sqnr_db

    weight_only = make(ctx, tmp_path, "uniform", bits=8)[2].predict(x)
    errors = []
    for bits in (8, 3):
        m = method.make("torch", method.Params(bits=8, activation_bits=bits), actx,
                        tmp_path / f"a{bits}.pt")  # fmt: skip
        assert m["packed_bytes"] == meta["packed_bytes"]  # activations add no stored bytes
        s = TorchEagerBackend().open(tmp_path / f"a{bits}.pt", "torch", 1, TorchParams())
        errors.append(sqnr_db(weight_only, s.predict(x)))
    assert errors[0] > errors[1] + 6


def test_uniform_activation_bits_export_to_onnx_as_the_torch_artifact(
    ctx: MakeContext, tmp_path: Path
) -> None:
    from qbench.backends.onnxruntime import OrtParams, OrtSession

    method = FAM.methods.get("uniform")()
    calib = np.random.default_rng(1).random((32, 1, 8, 8), dtype=np.float32)
    actx = MakeContext(**{**ctx.__dict__, "calib": calib})
    typed = method.Params(bits=4, activation_bits=4)
    method.make("torch", typed, actx, tmp_path / "a.pt")
    method.make("onnx", typed, actx, tmp_path / "a.onnx")
    torch_out = TorchEagerBackend().open(tmp_path / "a.pt", "torch", 1, TorchParams())
    ort_out = OrtSession(tmp_path / "a.onnx", 1, OrtParams())
    x = np.random.default_rng(3).random((8, 1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(ort_out.predict(x), torch_out.predict(x), rtol=1e-4, atol=1e-4)
