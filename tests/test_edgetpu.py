"""EdgeTPU method: the compiler-log parser on real recorded logs, skip reasons without the
compiler, the compiler command line, the Coral device files, and planning.

No test runs edgetpu_compiler; none could be installed where these were written (it is x86-64
Linux only, from Coral's apt repository). The logs in tests/data/edgetpu/ are real compiler
output copied from public GitHub repositories and issues (SOURCES.md names each source).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from qbench.devices import REPO_DEVICES, load_device
from qbench.methods._edgetpu_log import (
    OperatorRow,
    parse_compiler_log,
    parse_operator_table,
    size_to_bytes,
)
from qbench.methods.edgetpu import (
    NO_COMPILER,
    EdgeTpu,
    EdgeTpuParams,
    _static_params,
    compiler_command,
)
from qbench.plan import build_plan
from qbench.plugins import load_all
from qbench.suite.loader import load_suite
from tests.conftest import write_suite

LOGS = Path(__file__).parent / "data" / "edgetpu"
MAPPED = "Mapped to Edge TPU"
OTHERWISE = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
SUBGRAPH = "More than one subgraph is not supported"


def parse(name: str):
    return parse_compiler_log((LOGS / name).read_text())


# --- parser on recorded logs -------------------------------------------------------------


def test_every_recorded_log_has_a_source() -> None:
    sources = (LOGS / "SOURCES.md").read_text()
    logs = sorted(p.name for p in LOGS.glob("*.log"))
    assert len(logs) >= 3
    for name in logs:
        assert f"`{name}`" in sources


def test_all_mapped_operation_log() -> None:
    """The compiler's own <model>_edgetpu.log: no summary and no 'Number of operations' lines,
    every row mapped, so tpu_ops = total_ops and cpu_ops = 0."""
    r = parse("all_mapped_yolov8n_16.0_oplog.log")
    assert r.compiled is True
    assert r.source == "operation_log"
    assert r.compiler_version == "16.0.384591198"
    assert r.short_version == "16.0"
    assert r.input_model == "yolov8n_saved_model/yolov8n_full_integer_quant.tflite"
    assert r.output_model == "yolov8n_saved_model/yolov8n_full_integer_quant_edgetpu.tflite"
    assert r.compile_ms is None and r.subgraphs is None
    assert len(r.operators) == 14
    assert r.operators[0] == OperatorRow("SOFTMAX", 1, MAPPED)
    assert r.operators[-1] == OperatorRow("QUANTIZE", 3, MAPPED)
    assert OperatorRow("CONV_2D", 64, MAPPED) in r.operators
    assert r.total_ops == 257
    assert r.tpu_ops == 257
    assert r.cpu_ops == 0
    assert r.cpu_rows == []
    assert r.error is None
    assert r.summary() == "edgetpu_compiler 16.0: 257 of 257 ops mapped to the EdgeTPU"


def test_partial_mapping_yolov3_tiny() -> None:
    r = parse("partial_yolov3tiny_15.0.log")
    assert r.compiled is True and r.source == "stdout"
    assert r.compiler_version == "15.0.340273435"
    assert r.compile_ms == 577
    assert r.input_model == "/home/yolo/yolov3-tiny_int8.tflite"
    assert r.input_bytes == round(8.58 * 1024**2)
    assert r.output_bytes == round(8.70 * 1024**2)
    assert r.on_chip_used_bytes == 3 * 1024
    assert r.on_chip_remaining_bytes == round(7.67 * 1024**2)
    assert r.off_chip_used_bytes == 0
    assert r.subgraphs == 1
    assert (r.total_ops, r.tpu_ops, r.cpu_ops) == (36, 2, 34)
    assert len(r.operators) == 9
    assert r.operators[0] == OperatorRow("MAX_POOL_2D", 6, SUBGRAPH)
    assert OperatorRow("LEAKY_RELU", 11, "Operation not supported") in r.operators
    assert OperatorRow("RESIZE_NEAREST_NEIGHBOR", 1, "Operation version not supported") in (
        r.operators
    )
    assert OperatorRow("QUANTIZE", 2, OTHERWISE) in r.operators
    # The table agrees with the summary lines.
    assert sum(row.count for row in r.operators) == r.total_ops
    assert sum(row.count for row in r.operators if row.mapped) == r.tpu_ops
    assert sum(row.count for row in r.cpu_rows) == r.cpu_ops
    summary = r.summary()
    assert summary.startswith(
        "edgetpu_compiler 15.0: 2 of 36 ops mapped to the EdgeTPU in 1 subgraph; CPU: "
        f"MAX_POOL_2D×6, QUANTIZE×1, CONV_2D×12, CONCATENATION×1 ({SUBGRAPH}); "
    )
    assert "LEAKY_RELU×11 (Operation not supported)" in summary
    assert r.memory_note() == (
        "EdgeTPU parameters: 3.00KiB cached on-chip, 0.00B streamed from the host every inference"
    )


def test_partial_mapping_two_subgraphs_yolov5s() -> None:
    r = parse("partial_two_subgraphs_yolov5s_16.0.log")
    assert r.compiled is True
    assert r.compiler_version == "16.0.384591198"
    assert r.compile_ms == 3173
    assert r.subgraphs == 2
    assert (r.total_ops, r.tpu_ops, r.cpu_ops) == (294, 289, 5)
    assert r.on_chip_used_bytes == round(6.08 * 1024**2)
    assert r.on_chip_remaining_bytes == 0
    assert r.off_chip_used_bytes == round(1.70 * 1024**2)
    assert len(r.operators) == 17  # "Compilation succeeded!" after the table is not a row
    assert r.operators[-1] == OperatorRow("CONV_2D", 62, MAPPED)
    assert [(x.op, x.count) for x in r.cpu_rows] == [
        ("CONCATENATION", 1),
        ("TRANSPOSE", 1),
        ("QUANTIZE", 2),
        ("RESHAPE", 1),
    ]
    assert sum(row.count for row in r.operators) == 294
    assert r.summary() == (
        "edgetpu_compiler 16.0: 289 of 294 ops mapped to the EdgeTPU in 2 subgraphs; CPU: "
        f"CONCATENATION×1, TRANSPOSE×1, QUANTIZE×2, RESHAPE×1 ({OTHERWISE})"
    )
    assert "1.70MiB streamed from the host" in (r.memory_note() or "")


@pytest.mark.parametrize(
    ("name", "version", "error"),
    [
        (
            "failed_large_activations_16.0.log",
            "16.0.384591198",
            "ERROR: Restored original execution plan after delegate application failure.; "
            "Compilation failed: Compilation failed due to large activation tensors in model.",
        ),
        (
            "failed_not_quantized_14.1.log",
            "14.1.317412892",
            "Invalid model: my_mnist_quant.tflite; Model not quantized",
        ),
        ("failed_internal_error_2.1.log", "2.1.302470888", "Internal compiler error. Aborting!"),
    ],
)
def test_failures(name: str, version: str, error: str) -> None:
    r = parse(name)
    assert r.compiled is False
    assert r.compiler_version == version
    assert r.error == error
    assert r.total_ops is None and r.tpu_ops is None and r.cpu_ops is None
    assert r.operators == []
    assert r.summary() == f"edgetpu_compiler {r.short_version} failed: {error}"


def test_sizes_and_table_helpers() -> None:
    assert size_to_bytes("0.00B") == 0
    assert size_to_bytes("512.00B") == 512
    assert size_to_bytes("41.75KiB") == 42752
    assert size_to_bytes("5.90MiB") == round(5.90 * 1024**2)
    with pytest.raises(ValueError):
        size_to_bytes("lots")
    assert parse_operator_table(["CONV_2D 3 Mapped to Edge TPU"]) == []  # no header yet


# --- method ------------------------------------------------------------------------------


def test_registered_with_calibration() -> None:
    method = load_all().methods.get("edgetpu")()
    assert isinstance(method, EdgeTpu)
    assert method.produces == ("edgetpu",)
    assert method.needs_calibration(EdgeTpuParams()) is True
    assert method.execution("edgetpu", EdgeTpuParams()) == "native"
    assert method.describe("edgetpu", EdgeTpuParams()) == {
        "bits_w": 8,
        "bits_a": 8,
        "granularity": "per_channel",
        "calibrator": "minmax",
        "symmetric_weights": True,
        "act_dtype": "int8",
        "weight_dtype": "int8",
        "weight_scheme": "uniform",
    }


def test_compiler_command() -> None:
    model, out = Path("/tmp/m/model.tflite"), Path("/tmp/m/out")
    assert compiler_command("edgetpu_compiler", model, out, EdgeTpuParams()) == [
        "edgetpu_compiler",
        "-s",
        "-o",
        "/tmp/m/out",
        "/tmp/m/model.tflite",
    ]
    params = EdgeTpuParams(min_runtime_version=13, search_delegate=True)
    assert compiler_command("/opt/bin/edgetpu_compiler", model, out, params) == [
        "/opt/bin/edgetpu_compiler",
        "-s",
        "-o",
        "/tmp/m/out",
        "-m",
        "13",
        "--search_delegate",
        "/tmp/m/model.tflite",
    ]
    with pytest.raises(ValueError):
        EdgeTpuParams(min_runtime_version=3)


def test_unsupported_without_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    method = EdgeTpu()
    torch_model = SimpleNamespace(format="torch", name="digits_cnn")
    onnx_model = SimpleNamespace(format="onnx", name="onnx_file")
    if shutil.which("edgetpu_compiler") is None:  # this machine: no compiler installed
        assert method.unsupported("edgetpu", EdgeTpuParams(), torch_model) == NO_COMPILER
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no compiler whatever the host
    assert method.unsupported("edgetpu", EdgeTpuParams(), torch_model) == NO_COMPILER
    assert NO_COMPILER == (
        "edgetpu_compiler not found on PATH (Coral's compiler: x86-64 Linux, apt package "
        "edgetpu-compiler from Coral's repository)"
    )
    reason = method.unsupported("edgetpu", EdgeTpuParams(), onnx_model)
    assert reason is not None and reason.startswith("model onnx_file is an ONNX file")


def test_static_int8_builds_its_input() -> None:
    """The full-integer .tflite comes from static_int8's LiteRT path with min/max ranges and
    int8 activations; static_int8 accepts those settings for torch models."""
    static = load_all().methods.get("static_int8")()
    if "tflite" not in static.produces:
        pytest.skip("static_int8 has no tflite format in this checkout")
    params = _static_params(static, EdgeTpuParams())
    assert params.calibrator == "minmax" and params.activations == "int8"
    torch_model = SimpleNamespace(format="torch", name="digits_cnn")
    assert static.unsupported("tflite", params, torch_model) is None
    assert static.describe("tflite", params)["act_dtype"] == "int8"
    # the fidelity passes of static_int8's LiteRT path reach the model the compiler gets
    tuned = EdgeTpuParams(calibrator="percentile", percentile=99.99, equalize=True,
                          rounding="gptq")  # fmt: skip
    forwarded = _static_params(static, tuned)
    assert (forwarded.calibrator, forwarded.percentile, forwarded.equalize, forwarded.rounding) == (
        "percentile", 99.99, True, "gptq")  # fmt: skip
    assert static.unsupported("tflite", forwarded, torch_model) is None
    method = load_all().methods.get("edgetpu")()
    assert method.describe("edgetpu", tuned)["calibrator"] == "percentile"
    assert method.describe("edgetpu", tuned)["percentile"] == 99.99
    # defaults that keep the old behaviour leave parameter dumps (artifact cache keys) as they
    # were; output_range_scale changed what the default builds, so dumps show it
    assert EdgeTpuParams().model_dump() == {"min_runtime_version": None, "search_delegate": False,
                                            "output_range_scale": 2.0}  # fmt: skip


# --- devices -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["coral-usb", "coral-devboard"])
def test_coral_device_files_load(name: str) -> None:
    device = load_device(REPO_DEVICES / f"{name}.yaml")
    assert device.name == name
    assert device.kind == "tpu"
    assert "edgetpu" in device.backends and "litert" in device.backends
    assert "edgetpu" in device.isa_features
    assert device.transport.name in load_all().transports
    assert device.datasheet["peak_int8_tops"] == 4
    assert device.datasheet["tops_per_watt"] == 2


def test_devboard_datasheet() -> None:
    board = load_device(REPO_DEVICES / "coral-devboard.yaml")
    assert board.datasheet["ram_gb"] == 1
    assert board.datasheet["cpu_cores"] == 4
    assert "i.MX 8M" in str(board.datasheet["soc"])
    assert load_device(REPO_DEVICES / "coral-usb.yaml").datasheet["power_w"] == 2


# --- planning ----------------------------------------------------------------------------


def test_planning_skips_edgetpu_cells_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fam = load_all()
    if "edgetpu" not in fam.backends:
        pytest.skip("no edgetpu backend registered in this checkout")
    monkeypatch.setenv("PATH", str(tmp_path))  # no edgetpu_compiler, whatever the host has
    path = write_suite(
        tmp_path,
        """
        name: coral
        models: [digits_cnn]
        methods: [edgetpu]
        backends: [edgetpu]
        devices: [coral-usb]
    """,
    )
    plan = build_plan(*load_suite(path))
    assert [c.cell_id for c in plan.cells] == ["digits_cnn/edgetpu/edgetpu/coral-usb/b1/t1"]
    cell = plan.cells[0]
    assert cell.device_kind == "tpu"
    assert cell.skip_reason is not None  # the runtime library or the compiler is missing
    backend = fam.backends.get("edgetpu")
    if backend().unavailable() is None:
        assert cell.skip_reason == NO_COMPILER

    # With the backend's runtime present, the method's own reason is the one shown.
    monkeypatch.setattr(backend, "unavailable", lambda self: None)
    plan = build_plan(*load_suite(path))
    assert plan.cells[0].skip_reason == NO_COMPILER
    assert plan.cells[0].artifact_format is None
