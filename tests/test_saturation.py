"""7-bit weights where a CPU's u8×s8 int8 kernels saturate: `auto` settings decided per device.

x86 CPUs without VNNI/AMX add pairs of u8×s8 products in saturating 16-bit lanes (VPMADDUBSW);
ONNX Runtime's reduce_range and NNCF's overflow_fix put weights on a 7-bit grid there. The
decision is taken from the ISA flags of the CPU that prepares the cell, never assumed."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qbench.hostinfo import cpu_info
from qbench.plugins import load_all
from qbench.quant.saturation import resolve_auto, u8s8_saturates
from qbench.store.parquet import load
from tests.conftest import make_tiny_onnx, run_qbench
from tests.test_methods import onnx_context

FAM = load_all()
STATIC = FAM.methods.get("static_int8")()
NNCF = FAM.methods.get("nncf_int8")()

AVX2_ONLY = ["sse4_2", "avx2", "fma", "avx512f", "avx512bw"]  # AVX-512 without VNNI saturates too
VNNI = [*AVX2_ONLY, "avx512_vnni"]
AMX = ["avx2", "amx_int8", "amx_tile"]
ARM = ["asimd", "asimddp", "i8mm"]


def test_which_cpus_saturate() -> None:
    assert u8s8_saturates(AVX2_ONLY) and "VNNI" in str(u8s8_saturates(AVX2_ONLY))
    for flags in (VNNI, AMX, ["avx2", "avx_vnni"], ARM, ["asimd"], [], None):
        assert u8s8_saturates(flags) is None, flags  # unknown flags assume nothing
    assert resolve_auto("auto", AVX2_ONLY)[0] is True
    assert resolve_auto("auto", VNNI) == (False, None)
    assert resolve_auto(False, AVX2_ONLY) == (False, None)  # a given value is kept
    assert resolve_auto(True, VNNI) == (True, None)


def test_static_int8_decides_reduce_range_per_cpu() -> None:
    auto = STATIC.Params()
    assert auto.reduce_range == "auto"
    assert STATIC.describe("onnx", auto)["bits_w"] is None  # not known before the device is
    seven, notes = STATIC.for_cpu("onnx", auto, AVX2_ONLY)
    assert seven.reduce_range is True and len(notes) == 1 and "VNNI" in notes[0]
    assert STATIC.describe("onnx", seven)["bits_w"] == 7
    eight, notes = STATIC.for_cpu("onnx", auto, VNNI)
    assert eight.reduce_range is False and notes == []
    assert STATIC.describe("onnx", eight)["bits_w"] == 8
    # LiteRT (XNNPACK widens to 32 bits) and the FX path (always 7-bit activations): no
    # decision; torch's PT2E path takes X86InductorQuantizer's reduce_range (activations)
    fx = STATIC.Params(torch_flow="fx")
    assert STATIC.for_cpu("tflite", auto, AVX2_ONLY) == (
        auto.model_copy(update={"reduce_range": False}), [])  # fmt: skip
    assert STATIC.for_cpu("torch", fx, AVX2_ONLY)[0].reduce_range is False
    pt2e, notes = STATIC.for_cpu("torch", auto, AVX2_ONLY)
    assert pt2e.reduce_range is True and "activations on a 7-bit grid" in notes[0]
    assert STATIC.describe("torch", pt2e)["bits_a"] == 7
    assert STATIC.unsupported("torch", pt2e, FAM.models.get("digits_cnn")()) is None
    assert STATIC.for_cpu("torch", auto, VNNI)[0].reduce_range is False
    given = STATIC.Params(reduce_range=False)
    assert STATIC.for_cpu("onnx", given, AVX2_ONLY) == (given, [])


def test_nncf_decides_overflow_fix_per_cpu() -> None:
    auto = NNCF.Params()
    fixed, notes = NNCF.for_cpu("openvino", auto, AVX2_ONLY)
    assert fixed.overflow_fix == "enable" and "VNNI" in notes[0]
    assert NNCF.describe("openvino", fixed)["bits_w"] == 7
    default, notes = NNCF.for_cpu("openvino", auto, VNNI)
    assert default.overflow_fix == "first_layer" and notes == []


def _largest_weight(path: Path) -> int:
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear"
               and n.input[0] in inits and inits[n.input[0]].dtype == np.int8]  # fmt: skip
    assert weights, "no int8 weight in the artifact"
    return max(int(np.abs(w.astype(np.int32)).max()) for w in weights)


@pytest.mark.parametrize("flags", [AVX2_ONLY, VNNI], ids=["no-vnni", "vnni"])
def test_the_decided_setting_is_what_the_artifact_holds(flags: list[str], tmp_path: Path) -> None:
    """Read back from the artifact: 7-bit weights reach ±64 at most, 8-bit ones ±127."""
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(0)
    ctx = onnx_context(model, rng.normal(size=(32, 1, 8, 8)).astype(np.float32))
    params, _ = STATIC.for_cpu("onnx", STATIC.Params(), flags)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        STATIC.make("onnx", params, ctx, tmp_path / "q.onnx")
    assert _largest_weight(tmp_path / "q.onnx") == (64 if flags is AVX2_ONLY else 127)


def test_a_run_decides_for_the_cpu_it_runs_on(tmp_path: Path) -> None:
    """Through `qbench run`: the row's bits_w and note follow this machine's own probe."""
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    proc = run_qbench("run", "--model", str(model), "--methods", "static_int8", "--backends",
                      "onnxruntime", "--data", "synthetic", "--store", str(tmp_path / "s"),
                      "--no-report", "--no-confirm", "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, rows = load(tmp_path / "s")
    (row,) = [r for _, r in rows.iterrows() if r["method"] == "static_int8"]
    assert row["status"] == "ok", row["error"]
    why = u8s8_saturates(cpu_info()["cpu_flags"])
    assert row["bits_w"] == (7 if why else 8)
    assert any("reduce_range auto" in n for n in list(row["notes"])) == bool(why)

