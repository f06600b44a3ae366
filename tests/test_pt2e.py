"""static_int8 on torch through torchao's PT2E flow (qbench.methods._pt2e): the artifact (a
qbench torch artifact plus the bytes of torch.export.save), loading it, inductor's int8
lowering, and the legacy FX path beside it.

Compiling is slow (seconds per model): each model is built and compiled once per module."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from qbench.methods import _pt2e  # noqa: E402

_REASON = _pt2e.pt2e_unavailable()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from qbench.measure.fidelity import fidelity  # noqa: E402
from qbench.methods.base import MakeContext  # noqa: E402
from qbench.models.base import LoadedModel, reestimate_batchnorm  # noqa: E402
from qbench.plugins import load_all  # noqa: E402

FAM = load_all()
STATIC = FAM.methods.get("static_int8")()
ARTIFACT_KEYS = {"model", "model_params", "method", "method_params", "input_shape", "inputs",
                 "state_dict"}  # fmt: skip


class SmallNet(torch.nn.Module):
    """Conv-BN-ReLU6, a residual block that calls one ReLU module twice (as torchvision's
    BasicBlock does: torch 2.13's non-strict export makes torchao fail on it), a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU6()
        )
        self.conv1 = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(16)
        self.relu = torch.nn.ReLU()
        self.head = torch.nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)) + x)
        return self.head(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))


def _context(name: str, module: Any, calib: np.ndarray) -> MakeContext:
    source = FAM.models.get("digits_cnn")()

    def no_onnx() -> Path:
        raise AssertionError("the torch path must not export ONNX")

    return MakeContext(
        model_name=name,
        source=source,
        model_params=source.Params(),
        model=LoadedModel(weights="test", sha256="x", module=module.eval()),
        input_shape=tuple(calib.shape[1:]),
        calib=calib,
        fp32_onnx=no_onnx,
    )


class Built:
    """A model, its PT2E artifact, the loaded program and its compiled form."""

    def __init__(self, ctx: MakeContext, x: np.ndarray, out: Path) -> None:
        self.ctx, self.x, self.path = ctx, x, out
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.meta = STATIC.make("torch", STATIC.Params(), ctx, out)
        self.saved = torch.load(out, weights_only=True, map_location="cpu")
        self.blob = self.saved["exported"].numpy().tobytes()  # stored as a uint8 tensor
        self.module = _pt2e.load_exported(self.saved["exported"])
        self.compiled = _pt2e.compile_int8(self.module)
        with torch.inference_mode():
            self.fp32 = ctx.model.module(torch.as_tensor(x)).numpy()
            self.out = np.concatenate(
                [self.compiled(torch.as_tensor(x[i : i + 1])).numpy() for i in range(len(x))]
            )


@pytest.fixture(scope="module")
def digits() -> Built:
    from qbench.models._architectures import DigitsCNN

    dataset = FAM.datasets.get("digits")()
    calib, _ = dataset.load("calib", 64)
    x, _ = dataset.load("eval", 60)
    torch.manual_seed(0)
    module = DigitsCNN()
    reestimate_batchnorm(module, calib)  # random weights: BN fitted to real inputs
    out = Path(os.environ["QBENCH_CACHE_DIR"]) / "pt2e-digits.pt"
    return Built(_context("digits_cnn", module, calib), x, out)


@pytest.fixture(scope="module")
def small() -> Built:
    rng = np.random.default_rng(0)
    calib = rng.normal(0, 1, (32, 3, 12, 12)).astype(np.float32)
    x = rng.normal(0, 1, (16, 3, 12, 12)).astype(np.float32)
    torch.manual_seed(0)
    module = SmallNet()
    reestimate_batchnorm(module, calib)
    out = Path(os.environ["QBENCH_CACHE_DIR"]) / "pt2e-small.pt"
    return Built(_context("small", module, calib), x, out)


# --- the artifact -----------------------------------------------------------------------------


def test_artifact_is_a_torch_artifact_with_an_exported_program(digits: Built) -> None:
    saved = digits.saved  # read weights-only, as backends read it
    assert set(saved) == ARTIFACT_KEYS | {"exported"}
    assert saved["state_dict"] == {} and saved["exported"].dtype == torch.uint8
    assert saved["method"] == "static_int8" and "torch_flow" not in saved["method_params"]
    assert STATIC.Params(**saved["method_params"]).torch_flow == "pt2e"
    assert saved["input_shape"] == [1, 8, 8]
    _pt2e.check_exported(digits.blob)  # what load_exported checks first
    # the fp32 weights the quantized graph no longer reads are not saved
    fp32_bytes = sum(p.numel() * 4 for p in digits.ctx.model.module.parameters())
    assert len(digits.blob) < fp32_bytes
    assert digits.path.stat().st_size < len(digits.blob) * 1.1  # a tensor costs no more
    notes = digits.meta["artifact_notes"]
    assert notes and notes[0].startswith(_pt2e.NOTE) and "5 of 5" in notes[0]
    assert digits.meta["packed_bytes"] > 0


def test_building_leaves_the_fp32_module_alone(digits: Built) -> None:
    with torch.inference_mode():
        again = digits.ctx.model.module(torch.as_tensor(digits.x)).numpy()
    np.testing.assert_array_equal(again, digits.fp32)


# --- what runs --------------------------------------------------------------------------------


def test_loaded_program_counts_its_int8_layers(digits: Built, small: Built) -> None:
    assert _pt2e.count_pt2e_compute(digits.module) == (5, 5)  # 3 conv + 2 linear
    quantized, compute = _pt2e.count_pt2e_compute(small.module)
    assert compute == 4 and quantized > 0  # stem, conv1, conv2, head


def test_inductor_lowers_to_onednn_int8_kernels(digits: Built) -> None:
    from torch._dynamo.utils import counters

    # the compiled modules (built by the fixtures) prepacked int8 weights for oneDNN
    assert counters["inductor"]["qconv_weight_prepack_matcher_count"] >= 3
    assert counters["inductor"]["qlinear_weight_prepack_matcher_count"] >= 2


def test_compiled_digits_agree_with_fp32(digits: Built) -> None:
    assert digits.out.dtype == np.float32 and digits.out.shape == digits.fp32.shape
    fid = fidelity(digits.fp32, digits.out)
    assert fid["fp32_agreement"] >= 0.9, fid
    assert fid["output_cosine"] > 0.99, fid
    assert fid["output_sqnr_db"] < 80  # it really is quantized
    # the compiled int8 kernels compute what the program's quantize/dequantize pairs say
    with torch.inference_mode():
        reference = digits.module(torch.as_tensor(digits.x)).numpy()
    scale = float(np.abs(reference).max())
    # Without VNNI/AMX (ask the probe: the CPU changes between machines), x86 int8 GEMMs add
    # u8 x s8 pairs in int16 (vpmaddubsw), which saturates: the compiled kernels then stray
    # further from the program's own arithmetic (5.4% of the scale on an AVX2-only EPYC).
    from qbench.hostinfo import cpu_info
    from qbench.probe import kernel_readiness

    vnni = kernel_readiness(cpu_info()["cpu_flags"])["int8"] is None
    assert float(np.abs(digits.out - reference).max()) < (0.05 if vnni else 0.10) * scale


def test_small_model_with_a_reused_relu(small: Built) -> None:
    fid = fidelity(small.fp32, small.out)
    assert fid["output_cosine"] > 0.98, fid
    with torch.inference_mode():  # the batch axis is dynamic
        batch = small.compiled(torch.as_tensor(small.x[:3])).numpy()
    np.testing.assert_allclose(batch, small.out[:3], atol=1e-4 * float(np.abs(small.out).max()))


# --- the legacy FX path -----------------------------------------------------------------------


def test_fx_flow_builds_todays_artifact_labelled_legacy(digits: Built, tmp_path: Path) -> None:
    from qbench.methods.static_int8 import FX_LEGACY_NOTE

    params = STATIC.Params(torch_flow="fx")
    assert STATIC.unsupported("torch", params, digits.ctx.source) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = STATIC.make("torch", params, digits.ctx, tmp_path / "fx.pt")
        saved = torch.load(tmp_path / "fx.pt", weights_only=True)
        assert set(saved) == ARTIFACT_KEYS and saved["state_dict"]
        assert saved["method_params"]["torch_flow"] == "fx"
        module = STATIC.rebuild_torch(copy.deepcopy(digits.ctx.model.module),
                                      torch.zeros(1, 1, 8, 8), params)  # fmt: skip
        module.load_state_dict(saved["state_dict"])
        with torch.inference_mode():
            out = module(torch.as_tensor(digits.x)).numpy()
    assert meta["artifact_notes"] == [FX_LEGACY_NOTE]
    # the state dict the FX path always built (static_int8 version 5's _make_torch)
    expected = _fx_state_dict(digits.ctx)
    assert set(saved["state_dict"]) == set(expected)
    for name, value in expected.items():
        assert _same(saved["state_dict"][name], value), name
    assert fidelity(digits.fp32, out)["fp32_agreement"] >= 0.9
    row = STATIC.describe("torch", params)
    assert FX_LEGACY_NOTE in row["notes"] and row["bits_a"] == 7


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.is_quantized or b.is_quantized:
            return a.qscheme() == b.qscheme() and torch.equal(a.dequantize(), b.dequantize())
        return torch.equal(a, b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _fx_state_dict(ctx: MakeContext) -> dict[str, Any]:
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from qbench.methods.static_int8 import _relu6_ranges, _torch_qconfig_mapping

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = copy.deepcopy(ctx.model.module).eval()
        example = (torch.as_tensor(ctx.calib[:1]),)
        prepared = prepare_fx(module, _torch_qconfig_mapping(), example)
        _relu6_ranges(prepared)
        with torch.no_grad():
            for start in range(0, len(ctx.calib), 16):
                prepared(torch.as_tensor(ctx.calib[start : start + 16]))
        return convert_fx(prepared).state_dict()


def test_rebuild_torch_refuses_pt2e() -> None:
    with pytest.raises(ValueError, match="load_exported"):
        STATIC.rebuild_torch(torch.nn.Linear(2, 2), torch.zeros(1, 2), STATIC.Params())


def test_describe_and_unsupported() -> None:
    digits_cnn = FAM.models.get("digits_cnn")()
    # reduce_range auto: 7 or 8 activation bits is decided for the device's CPU in prepare
    assert STATIC.describe("torch", STATIC.Params())["bits_a"] is None
    row = STATIC.describe("torch", STATIC.Params(reduce_range=False))
    assert (row["act_dtype"], row["weight_dtype"], row["bits_a"], row["bits_w"]) == (
        "uint8", "int8", 8, 8,
    )  # fmt: skip
    assert row["granularity"] == "per_channel" and row["calibrator"] == "histogram"
    assert _pt2e.NOTE in row["notes"]
    assert STATIC.version >= 6
    assert "torch_flow" not in STATIC.Params().model_dump()  # ONNX/LiteRT keys unchanged
    for fmt in ("onnx", "tflite"):
        reason = STATIC.unsupported(fmt, STATIC.Params(torch_flow="fx"), digits_cnn)
        assert reason and "torch setting" in reason
    reason = STATIC.unsupported("torch", STATIC.Params(output_range_scale=1), digits_cnn)
    assert reason and "PT2E" in reason and "float" in reason


def test_fx_is_refused_once_quantize_fx_no_longer_imports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digits_cnn = FAM.models.get("digits_cnn")()
    monkeypatch.setitem(sys.modules, "torch.ao.quantization.quantize_fx", None)
    reason = STATIC.unsupported("torch", STATIC.Params(torch_flow="fx"), digits_cnn)
    assert reason and "quantize_fx" in reason and "pt2e" in reason
    assert STATIC.unsupported("torch", STATIC.Params(), digits_cnn) is None


# --- blobs that are not a program -------------------------------------------------------------


@pytest.mark.parametrize(
    "blob", [b"", b"not a program", b"PK\x03\x04broken zip"], ids=["empty", "text", "zip"]
)
def test_invalid_exported_blob_fails_with_one_line(blob: bytes) -> None:
    with pytest.raises(_pt2e.UnsafeExportError) as info:
        _pt2e.load_exported(blob)
    message = str(info.value)
    assert message.startswith("exported program refused") and "\n" not in message


def test_truncated_program_fails_with_one_line(digits: Built) -> None:
    with pytest.raises(ValueError) as info:
        _pt2e.load_exported(digits.blob[: len(digits.blob) // 2])
    assert "\n" not in str(info.value) and "refused" in str(info.value)


def _rewrite(data: bytes, edit: Any, extra: tuple[str, bytes] | None = None) -> bytes:
    """The archive with each (name, body) passed through edit (a PT2 archive is a zip)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        root = source.namelist()[0].split("/")[0]
        for info in source.infolist():
            target.writestr(info.filename, edit(info.filename, source.read(info.filename)))
        if extra:
            target.writestr(f"{root}/{extra[0]}", extra[1])
    return out.getvalue()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def test_programs_that_would_run_code_are_refused(digits: Built, tmp_path: Path) -> None:
    """torch.export.load runs these (module docstring): unpickling with weights_only=False,
    sympify (eval) of size expressions, exec of guard code, loading AOTInductor libraries."""
    data = digits.blob
    marker = tmp_path / "ran"
    touch = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    assert _rewrite(data, lambda n, b: b) != b""  # the rewrite itself keeps a valid program
    _pt2e.check_exported(_rewrite(data, lambda n, b: b))

    def model_json(change: Any) -> Any:
        def edit(name: str, body: bytes) -> bytes:
            if name.endswith("models/model.json"):
                program = json.loads(body)
                change(program)
                return json.dumps(program).encode()
            return body

        return edit

    def guard(program: dict[str, Any]) -> None:
        program["guards_code"] = [f"{touch} is None"]

    def size(program: dict[str, Any]) -> None:
        text = json.dumps(program)
        program.clear()
        program.update(json.loads(text.replace("Symbol('s", f"({touch} or Symbol)('s", 1)))

    def argument(program: dict[str, Any]) -> None:
        program["graph_module"]["module_call_graph"][0]["signature"]["forward_arg_names"] = [
            "x=__import__('os')"
        ]

    def pickled(name: str, body: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            config = json.loads(body)
            next(iter(config["config"].values()))["use_pickle"] = True
            return json.dumps(config).encode()
        if name.endswith("data/weights/weight_0"):
            return pickle.dumps(_Payload(marker))
        return body

    cases = {
        "guard": _rewrite(data, model_json(guard)),
        "size": _rewrite(data, model_json(size)),
        "argument": _rewrite(data, model_json(argument)),
        "pickle": _rewrite(data, pickled),
        "aoti": _rewrite(data, lambda n, b: b, ("data/aotinductor/model/model.so", b"\x7fELF")),
    }
    for case, blob in cases.items():
        with pytest.raises(_pt2e.UnsafeExportError) as info:
            _pt2e.load_exported(blob)
        assert "\n" not in str(info.value), case
    assert not marker.exists()


def test_planning_remembers_whether_pt2e_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning asks whether torchao's PT2E flow imports once per torch/torchao version: the
    answer is kept in the cache, so a dry run does not import torchao (seconds) every time."""
    monkeypatch.setenv("QBENCH_CACHE_DIR", str(tmp_path))
    assert _pt2e.pt2e_unavailable_at_plan() is None  # asked for real: it imports here
    [record] = (tmp_path / "checks").glob("pt2e-import-torch-*-torchao-*.json")
    assert json.loads(record.read_text()) == {"unavailable": None}
    # the remembered answer is the one given, whatever it says
    record.write_text(json.dumps({"unavailable": "torchao's PT2E quantization does not import"}))
    reason = STATIC.unsupported("torch", STATIC.Params(), FAM.models.get("digits_cnn")())
    assert reason == ("torch_flow=pt2e: torchao's PT2E quantization does not import; "
                      "torch_flow=fx builds the legacy path")  # fmt: skip
    record.write_text("{not json")  # a torn record is asked again and rewritten
    assert _pt2e.pt2e_unavailable_at_plan() is None
    assert json.loads(record.read_text()) == {"unavailable": None}


def _activation_qmax(module: Any) -> set[int]:
    """quant_max of every activation quantize node of a converted PT2E module."""
    found = set()
    for node in module.graph.nodes:
        target = str(node.target)
        if node.op == "call_function" and "quantize_per_tensor" in target and (
            "dequantize" not in target
        ):
            found.add(int(node.args[4]))  # (x, scale, zero_point, quant_min, quant_max, dtype)
    return found


def test_reduce_range_puts_activations_on_a_7_bit_grid(digits: Built) -> None:
    """What static_int8 builds on a CPU whose u8s8 kernels saturate (for_cpu decides it): the
    converted graph's activations end at 127, not 255, and it still agrees with fp32."""
    calibration = {"input": digits.ctx.calib}
    module = copy.deepcopy(digits.ctx.model.module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seven = _pt2e.quantize_module(module, calibration, reduce_range=True)
        eight = _pt2e.quantize_module(copy.deepcopy(module), calibration)
    assert _activation_qmax(seven) == {127}
    assert _activation_qmax(eight) == {255}
    with torch.no_grad():
        out = seven(torch.as_tensor(digits.x)).numpy()
    assert fidelity(digits.fp32, out)["fp32_agreement"] > 0.9
