"""Using the hardware on x86: oneDNN's real ISA (AMX) in the probe, the fingerprint and torch
rows; torch bf16/fp16 in channels_last and compiled by inductor; the `isa` cap; peaks and
warnings that know about AMX. Real torch sessions on the digits CNN; checks that need a CPU
feature skip with the reason where this CPU lacks it."""

from __future__ import annotations

from pathlib import Path

import pytest

from qbench.backends._onednn import (
    isa_from_verbose,
    kernel_summary,
    kernels_from_verbose,
    uses_amx,
)
from qbench.hostinfo import cpu_info
from qbench.probe import peak_ops_per_cycle
from qbench.report.hardware import amx_unused
from qbench.store.parquet import load
from tests.conftest import FAST_MEASUREMENT, run_qbench, write_suite

FLAGS = set(cpu_info()["cpu_flags"])
HAS_AMX_BF16 = "amx_bf16" in FLAGS
HAS_BF16 = bool(FLAGS & {"avx512_bf16", "amx_bf16"})

# Lines as oneDNN 3.x prints them (torch 2.13, this project's Xeon).
VERBOSE = """\
onednn_verbose,v1,info,oneDNN v3.9.1 (commit abc)
onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:1
onednn_verbose,v1,info,cpu,isa:Intel AVX10.1 and Intel AMX with bfloat16 and 8-bit integer support
onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:acdb::f0,,0.01
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,forward,src,,0.2
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,forward,src,,0.2
onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx10_1_512_amx,undef,src,,0.1
"""


def test_verbose_lines_are_parsed() -> None:
    assert isa_from_verbose(VERBOSE) == (
        "Intel AVX10.1 and Intel AMX with bfloat16 and 8-bit integer support"
    )
    kernels = kernels_from_verbose(VERBOSE)
    assert kernels == {
        "convolution brg_conv_fwd:avx10_1_512_amx": 2,
        "matmul brg_matmul:avx10_1_512_amx": 1,
    }  # reorders are layout changes, not compute
    assert kernel_summary(kernels) == (
        "convolution brg_conv_fwd:avx10_1_512_amx x2, matmul brg_matmul:avx10_1_512_amx x1"
    )
    assert uses_amx(kernel_summary(kernels)) and not uses_amx("brg_conv_fwd:avx512_core_bf16")
    assert isa_from_verbose("nothing") is None


def test_peaks_per_cycle_with_and_without_amx() -> None:
    spr = ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
           "amx_tile", "amx_int8", "amx_bf16"]  # fmt: skip
    assert peak_ops_per_cycle("int8", spr) == (2048.0, "amx_int8")
    assert peak_ops_per_cycle("int8", spr, amx=False) == (256.0, "avx512_vnni")
    assert peak_ops_per_cycle("bf16", spr) == (1024.0, "amx_bf16")
    assert peak_ops_per_cycle("bf16", spr, amx=False) == (128.0, "avx512_bf16")
    assert peak_ops_per_cycle("fp16", spr) == (128.0, "avx512_fp16")  # no amx_fp16 here
    zen3 = ["avx2", "fma"]
    assert peak_ops_per_cycle("bf16", zen3) == (32.0, "avx2")  # converted: the fp32 rate
    assert peak_ops_per_cycle("int8", ["asimd", "asimddp"]) is None


def test_amx_unused_warning() -> None:
    flags = ["avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]
    found = amx_unused("bf16", flags, "convolution brg_conv_fwd:avx512_core_bf16 x20")
    assert found and found[1] == "AMX not used" and "AMX-BF16" in found[0]
    assert amx_unused("bf16", flags, "convolution brg_conv_fwd:avx10_1_512_amx x20") is None
    assert amx_unused("bf16", ["avx512f", "avx512_bf16"], "brg_conv_fwd:avx512_core_bf16") is None
    assert amx_unused("bf16", flags, None) is None  # rows of other runtimes: nothing known


def test_probe_and_fingerprint_record_onednns_isa() -> None:
    from qbench.hostinfo import fingerprint, onednn_isa
    from qbench.probe import probe

    isa = onednn_isa()
    assert isa and ("Intel" in isa or "AVX" in isa or "Arm" in isa)
    assert probe()["probe"]["onednn_isa"] == isa
    assert fingerprint()["onednn_isa"] == isa
    if HAS_AMX_BF16:
        assert "AMX" in isa  # the flags promise AMX and oneDNN really dispatches to it


SUITE = """
name: amx
models: [digits_cnn]
methods: [fp32, bf16]
backends:
  - torch
  - {{name: torch, params: {{compile: true}}}}
  - {{name: torch, params: {{isa: avx512_core_bf16}}}}
devices: [local]
accuracy: {{samples: 64}}
{measurement}
output: store
"""


@pytest.fixture(scope="module")
def amx_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    if not HAS_BF16:
        pytest.skip("this CPU has no AVX512-BF16/AMX-BF16: torch bf16 cells are skipped here")
    folder = tmp_path_factory.mktemp("amx")
    path = write_suite(folder, SUITE.format(measurement=FAST_MEASUREMENT))
    done = run_qbench("run", str(path), "--no-report", cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    _, rows = load(folder / "store")
    return {r["cell_id"]: r for r in rows.to_dict("records")}


def test_torch_rows_say_which_onednn_kernels_ran(amx_rows: dict[str, dict]) -> None:
    bf16 = amx_rows["digits_cnn/bf16/torch/local/b1/t1"]
    assert bf16["status"] == "ok" and bf16["execution"] == "native"
    assert "convolution" in bf16["onednn_kernels"]
    assert bf16["fp32_agreement"] >= 0.9
    assert any("channels_last" in n for n in bf16["notes"])  # auto: a float CNN of 4-D input
    if HAS_AMX_BF16:
        assert uses_amx(bf16["onednn_kernels"]) and "AMX" in bf16["onednn_isa"]


def test_compiled_cells_record_their_compile_and_agree(amx_rows: dict[str, dict]) -> None:
    for method in ("fp32", "bf16"):
        row = amx_rows[f"digits_cnn/{method}/torch[compile=True]/local/b1/t1"]
        assert row["status"] == "ok", row["error"]
        assert row["compile_s"] > 0
        assert any(n.startswith("torch.compile (inductor") for n in row["notes"])
        assert row["fp32_agreement"] >= (0.999 if method == "fp32" else 0.9)


def test_the_isa_cap_turns_amx_off_in_the_same_cell(amx_rows: dict[str, dict]) -> None:
    capped = amx_rows["digits_cnn/bf16/torch[isa=avx512_core_bf16]/local/b1/t1"]
    assert capped["status"] == "ok"
    assert "oneDNN ISA capped at avx512_core_bf16" in capped["notes"]
    assert not uses_amx(capped["onednn_kernels"]) and not uses_amx(capped["onednn_isa"])
    if not HAS_AMX_BF16:
        pytest.skip("this CPU has no AMX-BF16: capped and uncapped cells run the same kernels")
    assert uses_amx(amx_rows["digits_cnn/bf16/torch/local/b1/t1"]["onednn_kernels"])


def test_a_capped_amx_row_is_warned_in_the_report(
    amx_rows: dict[str, dict], tmp_path: Path
) -> None:
    if not HAS_AMX_BF16:
        pytest.skip("this CPU has no AMX-BF16: nothing to warn about")
    import pandas as pd

    from qbench.report.hardware import hardware_warnings

    df = pd.DataFrame(list(amx_rows.values()))
    _, shorts = hardware_warnings(df, None)
    warned = set(df.loc[shorts.eq("AMX not used"), "cell_id"])
    assert warned == {"digits_cnn/bf16/torch[isa=avx512_core_bf16]/local/b1/t1"}
