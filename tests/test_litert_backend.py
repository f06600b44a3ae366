"""The litert and edgetpu backends against real LiteRT (no mocks).

Tiny models are converted from torch with litert-torch and quantized with ai-edge-quantizer
once per module. Tests that need those packages skip where they are not installed; the pure
functions (library names, delegate options, the no-libedgetpu reason) are tested everywhere.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import pytest

from qbench.backends import edgetpu as etpu
from qbench.backends.litert import LitertParams, dequantize_output, quantize_input

IN_SHAPE = (1, 3, 16, 16)


def _tiny_modules() -> dict[str, object]:
    import torch

    class Tiny(torch.nn.Module):
        """conv -> depthwise -> pointwise -> global mean -> linear."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.pw = torch.nn.Conv2d(8, 16, 1)
            self.fc = torch.nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.dw(torch.relu(self.conv(x))))
            x = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.pw(x)), 1)
            return self.fc(torch.flatten(x, 1))

    class Flat(torch.nn.Module):
        """Flattens a 4x4 map into the linear layer: exported with a constant batch-1 reshape."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
            self.fc = torch.nn.Linear(4 * 4 * 4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    torch.manual_seed(0)
    return {"tiny": Tiny().eval(), "flat": Flat().eval()}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """fp32, NHWC-input fp32, dynamic-range int8, full int8 (min/max calibrated), flat."""
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("ai_edge_quantizer")
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")
    litert_torch = pytest.importorskip("litert_torch")
    import torch
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    folder = tmp_path_factory.mktemp("tflite")
    modules = _tiny_modules()
    example = torch.randn(IN_SHAPE)
    paths: dict[str, object] = {"modules": modules}
    for name, module in modules.items():
        paths[name] = folder / f"{name}.tflite"
        litert_torch.convert(module, (example,)).export(str(paths[name]))
    nhwc = litert_torch.to_channel_last_io(modules["tiny"], args=[0]).eval()
    paths["nhwc"] = folder / "nhwc.tflite"
    litert_torch.convert(nhwc, (example.permute(0, 2, 3, 1).contiguous(),)).export(
        str(paths["nhwc"])
    )

    fp32 = str(paths["tiny"])
    dyn = quantizer.Quantizer(fp32, recipe.dynamic_wi8_afp32())
    paths["dyn_int8"] = folder / "dyn_int8.tflite"
    dyn.quantize(None, enable_progress_report=False).export_model(str(paths["dyn_int8"]))

    # Full int8 with plain min/max ranges (Quantizer.calibrate keeps a moving average).
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal(IN_SHAPE).astype(np.float32) for _ in range(32)]
    rcp = recipe.static_wi8_ai8()
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(rcp)
    cal = calibrator.Calibrator(
        Path(fp32).read_bytes(),
        num_threads=1,
        mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED,
        qsv_update_func=qsv_utils.min_max_update,
    )
    cal.calibrate({"serving_default": [{"args_0": x} for x in calib]}, manager)
    paths["int8"] = folder / "int8.tflite"
    result = quantizer.Quantizer(fp32, rcp).quantize(
        cal.get_model_qsvs(), enable_progress_report=False
    )
    result.export_model(str(paths["int8"]))
    return paths


def _inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *IN_SHAPE[1:])).astype(np.float32)


def _open(path: object, xnnpack: bool = True, threads: int = 1):
    from qbench.backends.litert import LitertBackend

    return LitertBackend().open(Path(str(path)), "tflite", threads, LitertParams(xnnpack=xnnpack))


def _torch_out(models: dict[str, object], name: str, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return models["modules"][name](torch.from_numpy(x)).numpy()  # type: ignore[index]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _delegate_nodes_without_fusion(path: object) -> int:
    """Cross-check (method B), independent of the backend: with node fusion off each op a
    delegate takes becomes its own DELEGATE node."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1,
                     experimental_disable_delegate_node_fusion=True)  # fmt: skip
    it.allocate_tensors()
    return sum(n["op_name"] == "DELEGATE" for n in it._get_ops_details())


# ---- the backend as registered -------------------------------------------------------------------
def test_registered() -> None:
    from qbench.plugins import load_all

    fam = load_all()
    litert, tpu = fam.backends.get("litert")(), fam.backends.get("edgetpu")()
    assert litert.loads == ("tflite",) and tpu.loads == ("edgetpu",)
    assert litert.Params().xnnpack is True
    assert tpu.Params(device="usb:0").device == "usb:0"
    with pytest.raises(ValueError):
        litert.Params(threads=2)  # unknown keys are errors
    if litert.missing_packages():
        assert "ai_edge_litert" in (litert.unavailable() or "")
    else:
        assert litert.unavailable() is None
        assert litert.version()[0].isdigit()


# ---- numerics ------------------------------------------------------------------------------------
def test_fp32_matches_torch(models: dict[str, object]) -> None:
    x = _inputs(4)
    got = _open(models["tiny"]).predict(x)
    assert got.dtype == np.float32 and got.shape == (4, 10)
    np.testing.assert_allclose(got, _torch_out(models, "tiny", x), rtol=1e-4, atol=1e-5)
    builtin = _open(models["tiny"], xnnpack=False).predict(x)
    np.testing.assert_allclose(builtin, got, rtol=1e-4, atol=1e-5)


def test_nhwc_model_gets_transposed_inputs(models: dict[str, object]) -> None:
    session = _open(models["nhwc"])
    assert session.model_shape == (1, 16, 16, 3)
    x = _inputs(2)
    np.testing.assert_allclose(session.predict(x), _torch_out(models, "tiny", x),
                               rtol=1e-4, atol=1e-5)  # fmt: skip


def test_quantize_helpers_by_hand(models: dict[str, object]) -> None:
    session = _open(models["int8"])
    scale, zp = session.input["quantization"]
    assert session.input["dtype"] == np.int8 and scale > 0
    x = np.array([0.0, 3.4 * scale, -2.6 * scale, -1e6, 1e6], np.float32)
    want = np.array([zp, zp + 3, zp - 3, -128, 127])
    q = quantize_input(x, session.input)
    assert q.dtype == np.int8 and q.tolist() == want.tolist()

    out_scale, out_zp = session.output["quantization"]
    raw = np.array([out_zp, out_zp + 10, -128, 127], np.int8)
    want_y = np.array([0.0, 10 * out_scale, (-128 - out_zp) * out_scale,
                       (127 - out_zp) * out_scale], np.float32)  # fmt: skip
    y = dequantize_output(raw, session.output)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, want_y, rtol=1e-6)
    # float tensors pass through untouched
    fp = _open(models["tiny"]).input
    assert quantize_input(x, fp) is not None and quantize_input(x, fp).dtype == np.float32


def test_full_int8_io_and_outputs_close_to_fp32(models: dict[str, object]) -> None:
    session = _open(models["int8"])
    assert session.input["dtype"] == np.int8 and session.output["dtype"] == np.int8
    x = _inputs(8)
    got = session.predict(x)
    ref = _open(models["tiny"]).predict(x)
    assert got.dtype == np.float32 and got.shape == ref.shape
    # Rounding the output alone costs half a step of the output tensor's grid; the requantized
    # activations before it add a little more (measured: 0.9 steps on these inputs, which lie
    # inside the calibrated range). 3 steps leaves room without hiding a wrong scale.
    step = session.output["quantization"][0]
    assert np.abs(got - ref).max() < 3 * step
    assert _cosine(got, ref) > 0.999
    # the same through builtin integer kernels
    builtin = _open(models["int8"], xnnpack=False).predict(x)
    assert np.abs(builtin - ref).max() < 3 * step


# ---- batches -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "int8"])
def test_batch_resized(models: dict[str, object], name: str) -> None:
    session = _open(models[name])
    x = _inputs(5)
    one_by_one = np.concatenate([session.predict(x[i : i + 1]) for i in range(5)])
    run = session.runner(x[:4])  # timed batch 4: one invoke of the graph resized to 4
    raw = run()
    assert raw.shape == (4, 10) and raw.dtype == session.output["dtype"]
    np.testing.assert_allclose(session.predict(x), one_by_one, rtol=1e-5, atol=1e-6)
    assert run().shape == (4, 10)  # predict at another batch left the runner usable
    notes = session.inspect()["notes"]
    assert any("batch 4 ran as one invoke" in n for n in notes), notes


def test_batch_falls_back_to_loop(models: dict[str, object]) -> None:
    """A graph with a constant batch-1 reshape cannot be resized: batch N runs as N invokes."""
    session = _open(models["flat"])
    x = _inputs(3)
    run = session.runner(x)
    outs = run()
    assert len(outs) == 3 and all(o.shape == (1, 10) for o in outs)
    got = session.predict(x)
    np.testing.assert_allclose(got, _torch_out(models, "flat", x), rtol=1e-4, atol=1e-5)
    notes = session.inspect()["notes"]
    assert any("batch 3 ran as 3 invokes" in n for n in notes), notes


# ---- inspect -------------------------------------------------------------------------------------
def test_inspect_fp32(models: dict[str, object]) -> None:
    row = _open(models["tiny"]).inspect()
    assert row["delegate"] == "XNNPACK"
    assert (
        row["delegated_nodes"]
        == row["graph_nodes"]
        == _delegate_nodes_without_fusion(models["tiny"])
    )
    # TRANSPOSE (NCHW in), CONV_2D×2, DEPTHWISE_CONV_2D, MEAN, FULLY_CONNECTED
    assert row["graph_nodes"] == 6 and row["compute_nodes"] == 4
    assert row["quantized_nodes"] == 0

    off = _open(models["tiny"], xnnpack=False).inspect()
    assert off["delegate"] == "none" and off["delegated_nodes"] == 0
    assert off["graph_nodes"] == 6 and "XNNPACK off" in off["notes"][0]


def test_inspect_dynamic_int8_leaves_depthwise_on_builtin(models: dict[str, object]) -> None:
    row = _open(models["dyn_int8"]).inspect()
    assert row["delegate"] == "XNNPACK"
    assert 0 < row["delegated_nodes"] < row["graph_nodes"]
    assert row["delegated_nodes"] == _delegate_nodes_without_fusion(models["dyn_int8"])
    assert row["graph_nodes"] - row["delegated_nodes"] == 1
    assert "builtin kernels ran 1 (DEPTHWISE_CONV_2D×1)" in row["notes"][0]
    assert row["quantized_nodes"] == row["compute_nodes"] == 4  # int8 weights, hybrid kernels


def test_inspect_full_int8(models: dict[str, object]) -> None:
    row = _open(models["int8"]).inspect()
    assert (
        row["delegated_nodes"]
        == row["graph_nodes"]
        == _delegate_nodes_without_fusion(models["int8"])
    )
    assert row["quantized_nodes"] == row["compute_nodes"] == 4
    assert any(n.startswith("int8 input (scale") for n in row["notes"])


# ---- edgetpu -------------------------------------------------------------------------------------
def test_edgetpu_library_names() -> None:
    assert etpu.edgetpu_library_name("Linux") == "libedgetpu.so.1"
    assert etpu.edgetpu_library_name("Darwin") == "libedgetpu.1.dylib"
    assert etpu.edgetpu_library_name("Windows") == "edgetpu.dll"
    with pytest.raises(etpu.EdgeTpuUnavailable):
        etpu.edgetpu_library_name("Plan9")
    assert "apt" in etpu.install_hint("Linux")
    assert etpu.edgetpu_unavailable_reason("Plan9") == "no Edge TPU runtime for Plan9"


def test_edgetpu_delegate_options() -> None:
    assert etpu.delegate_options(etpu.EdgetpuParams()) == {}
    assert etpu.delegate_options(etpu.EdgetpuParams(device="usb:0")) == {"device": "usb:0"}
    assert etpu.delegate_options(etpu.EdgetpuParams(device="pci:1")) == {"device": "pci:1"}


@pytest.fixture
def no_libedgetpu() -> str:
    if platform.system() != "Linux" or etpu.find_edgetpu_library() is not None:
        pytest.skip("this test needs a Linux host without the Edge TPU runtime")
    return "libedgetpu.so.1"


def test_edgetpu_unavailable_without_runtime(no_libedgetpu: str, tmp_path: Path) -> None:
    backend = etpu.EdgetpuBackend()
    reason = backend.unavailable()
    if backend.missing_packages():
        assert reason is not None and "ai_edge_litert" in reason
        return
    assert reason == (
        "EdgeTPU runtime library libedgetpu.so.1 not found "
        "(install libedgetpu1-std from Coral's apt repository)"
    )
    with pytest.raises(etpu.EdgeTpuUnavailable, match=r"libedgetpu\.so\.1 not found"):
        backend.open(tmp_path / "m_edgetpu.tflite", "edgetpu", 1, etpu.EdgetpuParams())


def test_edgetpu_load_delegate_error_is_clear(no_libedgetpu: str) -> None:
    """The real load_delegate raises OSError for a missing library (not the documented
    ValueError); it comes out as EdgeTpuUnavailable naming the library and device."""
    pytest.importorskip("ai_edge_litert")
    with pytest.raises(etpu.EdgeTpuUnavailable, match=r"libedgetpu\.so\.1 \(usb\)") as info:
        etpu.load_edgetpu_delegate(no_libedgetpu, {"device": "usb"})
    assert isinstance(info.value.__cause__, OSError)


def test_edgetpu_op_counts_from_flatbuffer(models: dict[str, object]) -> None:
    """A compiled model's layout: ops 1..4 fused into one edgetpu-custom-op, TRANSPOSE and
    FULLY_CONNECTED left on the CPU (the file is rewritten here; it is only read, not run)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from qbench.backends._tflite_graph import read_tflite_graph

    model = flatbuffer_utils.read_model(str(models["tiny"]))
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = etpu.EDGETPU_CUSTOM_OP
    model.operatorCodes.append(code)
    ops = model.subgraphs[0].operators
    fused = schema.OperatorT()
    fused.opcodeIndex = len(model.operatorCodes) - 1
    fused.inputs, fused.outputs = ops[1].inputs, ops[4].outputs
    model.subgraphs[0].operators = [ops[0], fused, ops[5]]
    names = read_tflite_graph(flatbuffer_utils.convert_object_to_bytearray(model)).op_names
    assert names == ["TRANSPOSE", etpu.EDGETPU_CUSTOM_OP, "FULLY_CONNECTED"]
    assert etpu.count_edgetpu_ops(names) == (1, ["TRANSPOSE", "FULLY_CONNECTED"])


def test_edgetpu_session_inspect_without_custom_ops(models: dict[str, object]) -> None:
    """The EdgeTPU session's accounting on a model the Edge TPU delegate does not take: the
    XNNPACK partitions are not credited to the Edge TPU."""
    row = etpu.EdgetpuSession(Path(str(models["tiny"])), 1).inspect()
    assert row["delegate"] == "none" and row["delegated_nodes"] == 0
    assert row["graph_nodes"] == 6 and row["compute_nodes"] == 4
    assert "the Edge TPU delegate took 0 custom op(s), XNNPACK 6 op(s)" in row["notes"][0]
