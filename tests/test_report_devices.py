"""The device comparison: op counts from ONNX graphs, and the report's Devices section."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

import pytest

from qbench.measure.opcount import count_macs, ops
from qbench.report import build_report_html
from qbench.report.data import latest_per_cell, prepare
from qbench.report.devices_view import MIXED_WARNING, efficiency_rows, repo_peaks
from qbench.store.parquet import load
from tests.test_report import _row, write_store

# --- op count --------------------------------------------------------------------------------


def _tiny_model() -> Any:
    """Conv 3->8 3x3 (pad 1) on 3x8x8, depthwise 3x3 stride 2, grouped 1x1 (2 groups),
    flatten, Gemm 128->10, MatMul 10x4; a symbolic batch axis."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def w(name: str, *shape: int) -> Any:
        return numpy_helper.from_array(np.zeros(shape, np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], group=8, strides=[2, 2], pads=[1] * 4),
        helper.make_node("Conv", ["c2", "w3"], ["c3"], group=2),
        helper.make_node("Flatten", ["c3"], ["f"]),
        helper.make_node("Gemm", ["f", "w4"], ["g"], transB=1),
        helper.make_node("MatMul", ["g", "w5"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [w("w1", 8, 3, 3, 3), w("w2", 8, 1, 3, 3), w("w3", 8, 4, 1, 1), w("w4", 10, 128),
         w("w5", 10, 4)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_opcount_by_hand(tmp_path: Path) -> None:
    import onnx

    conv1 = 8 * 8 * 8 * (3 * 3 * 3)  # 8 ch × 8×8 out × C_in 3 × 3×3 kernel = 13,824
    dw = 8 * 4 * 4 * (1 * 3 * 3)  # depthwise: 8 ch × 4×4 out × 1 × 3×3 = 1,152
    grouped = 8 * 4 * 4 * (4 * 1 * 1)  # 2 groups of 4 in-channels, 1×1 = 512
    gemm = 1 * 128 * 10
    matmul = 1 * 10 * 4
    counted = count_macs(_tiny_model())
    assert counted["by_op"] == {"Conv": conv1 + dw + grouped, "Gemm": gemm, "MatMul": matmul}
    assert counted["macs"] == conv1 + dw + grouped + gemm + matmul == 16_808
    assert counted["uncounted"] == []
    assert ops(counted["macs"]) == 2 * 16_808
    onnx.save(_tiny_model(), tmp_path / "tiny.onnx")  # a path works too
    assert count_macs(tmp_path / "tiny.onnx")["macs"] == 16_808


@pytest.mark.slow
def test_opcount_resnet18_known_figure(tmp_path: Path) -> None:
    from qbench.methods.export import export_onnx
    from qbench.models._architectures import ResNet18

    export_onnx(ResNet18(), (3, 224, 224), tmp_path / "r18.onnx")
    macs = count_macs(tmp_path / "r18.onnx")["macs"]
    assert macs == pytest.approx(1.82e9, rel=0.01)  # the published ResNet-18 figure


# --- the Devices section ---------------------------------------------------------------------

MACS = 16_808
ORIN_NOTE = "measured: nvml, 10 ms cadence"
CORAL_NOTE = "estimated: TDP 2 W × utilisation 0.50 (no sensor)"
LOCAL_NOTE = "no sensor: /sys/class/powercap absent"


def _dev(method: str, device: str, p50: float, **power: Any) -> dict[str, Any]:
    int8 = method == "static_int8"
    return _row(
        "digits_cnn", method, "onnxruntime", device=device, p50=p50, top1=0.97,
        act_dtype="uint8" if int8 else "float32", weight_dtype="int8" if int8 else "float32",
        model_macs=MACS, **power,
    )  # fmt: skip


def _measured(w: float) -> dict[str, Any]:
    return {"power_provenance": "measured", "power_source": "nvml", "active_power_w": w,
            "power_note": ORIN_NOTE}  # fmt: skip


def _estimated(w: float) -> dict[str, Any]:
    return {"power_provenance": "estimated", "power_source": "tdp_estimate",
            "active_power_w": w, "energy_per_inference_mj": 0.75,
            "power_note": CORAL_NOTE}  # fmt: skip


def device_rows() -> list[dict[str, Any]]:
    return [
        _dev("fp32", "jetson-orin", 0.5, **_measured(20.0)),
        _dev("static_int8", "jetson-orin", 0.2, **_measured(25.0)),
        _dev("static_int8", "coral-usb", 1.0, **_estimated(1.0)),
        _dev("fp32", "local", 2.0, power_note=LOCAL_NOTE),
        _dev("static_int8", "local", 1.0, power_note=LOCAL_NOTE),
    ]


@pytest.fixture(scope="module")
def device_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    store = write_store(tmp_path_factory.mktemp("dev") / "store", device_rows())
    return build_report_html(*load(store), title="devices")


def _section(page: str) -> str:
    start = page.index('<h2 id="devices">')
    return page[start : page.index("<h2>All results</h2>")]


def test_devices_section_has_power_chart_and_labels(device_page: str) -> None:
    section = _section(device_page).replace("\\u002f", "/")  # plotly JSON writes "/" as "\u002f"
    assert device_page.index("<h2>Charts</h2>") < device_page.index('<h2 id="devices">')
    assert "Throughput vs power" in section and 'id="chart-devices-power"' in section
    assert "iso-efficiency (inferences per joule)" in section
    assert section.count('"name":"iso-efficiency (inferences per joule)"') == 4  # 4 lines
    assert "1, 10, 100 and 1000 inferences per joule" in section
    assert "100 inf/J" in section  # a line labelled inside the window
    assert "coral-usb (estimated)" in section  # legend of the estimated points
    assert '"circle-open"' in section  # open markers for estimates
    text = html.unescape(section)
    assert f"no power figure: local ({LOCAL_NOTE})" in text
    assert "local (no power figure)" in section
    # A chart putting measured and estimated points together says so, visibly.
    assert 'id="power-mixed"' in section and MIXED_WARNING in text
    assert "Latency and accuracy per device" in section
    assert "Efficiency vs datasheet peak" in section
    assert "peaks from devices/coral-usb.yaml, devices/jetson-orin.yaml" in text
    assert (
        "local: no datasheet peak (no peak_fp32_tflops in devices/local.yaml, nor a clock" in text
    )
    assert not re.search(r"\bnan\b", re.sub(r"<script.*?</script>", "", section, flags=re.S),
                         flags=re.I)  # fmt: skip


def test_efficiency_equals_hand_computation(tmp_path: Path) -> None:
    store = write_store(tmp_path / "store", device_rows())
    latest = latest_per_cell(prepare(load(store)[1]))
    ok = latest[latest["status"] == "ok"]
    eff, notes = efficiency_rows(ok, repo_peaks)
    row = eff[eff["cell_id"] == "digits_cnn/static_int8/onnxruntime/jetson-orin/b1/t1"].iloc[0]
    throughput = 1 / (0.2 * 1.02) * 1000  # _row: batch / mean latency (p50 × 1.02)
    # Orin: peak_int8_tops 137.5 (dense) from devices/jetson-orin.yaml.
    assert row["precision"] == "int8" and row["peak_key"] == "peak_int8_tops"
    assert row["efficiency"] == pytest.approx(2 * MACS * throughput / 137.5e12, rel=1e-12)
    fp32 = eff[eff["cell_id"] == "digits_cnn/fp32/onnxruntime/jetson-orin/b1/t1"].iloc[0]
    assert fp32["efficiency"] == pytest.approx(2 * MACS * (1 / 0.51 * 1000) / 5.3e12)
    coral = eff[eff["device"] == "coral-usb"].iloc[0]
    assert coral["efficiency"] == pytest.approx(2 * MACS * (1 / 1.02 * 1000) / 4e12)
    assert set(eff["device"]) == {"jetson-orin", "coral-usb"}
    assert any(n.startswith("local: no datasheet peak") for n in notes)


AMX_CPU = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile",
           "amx_int8", "amx_bf16"]  # fmt: skip


def test_a_cpu_without_datasheet_peaks_gets_its_isa_peak_with_and_without_amx(
    tmp_path: Path,
) -> None:
    """devices/x86-vnni.yaml has a clock (3.8 GHz turbo) and 56 cores but no TOPS: the int8
    peak of a 1-thread cell is AMX's 2048 ops/cycle × 1 core × 3.8 GHz, and VNNI's 256 when
    the row's oneDNN kernels show that AMX was not used (an ISA cap)."""
    amx = "convolution brg_conv_fwd:avx10_1_512_amx x20"
    capped = "convolution brg_conv_fwd:avx512_core_vnni x20"
    rows = [
        {**_dev("static_int8", "x86-vnni", 1.0), "device_cpu_flags": AMX_CPU,
         "onednn_kernels": amx, "cell_id": "a"},
        {**_dev("static_int8", "x86-vnni", 2.0), "device_cpu_flags": AMX_CPU,
         "onednn_kernels": capped, "cell_id": "b"},
        {**_dev("fp32", "x86-vnni", 4.0), "device_cpu_flags": AMX_CPU, "cell_id": "c"},
    ]  # fmt: skip
    latest = latest_per_cell(prepare(load(write_store(tmp_path / "store", rows))[1]))
    eff, _ = efficiency_rows(latest[latest["status"] == "ok"], repo_peaks)
    by_cell = eff.set_index("cell_id")
    assert by_cell.loc["a", "peak_ops_s"] == pytest.approx(2048 * 3.8e9)
    assert by_cell.loc["b", "peak_ops_s"] == pytest.approx(256 * 3.8e9)
    assert by_cell.loc["c", "peak_ops_s"] == pytest.approx(64 * 3.8e9)
    assert by_cell.loc["a", "peak_key"] == "estimated from ISA"
    assert "amx_int8" in by_cell.loc["a", "peak_source"]
    assert "AMX not used" in by_cell.loc["b", "peak_source"]
    throughput = 1 / (1.0 * 1.02) * 1000
    assert by_cell.loc["a", "efficiency"] == pytest.approx(2 * MACS * throughput / (2048 * 3.8e9))


def test_one_device_without_power_has_no_devices_section(tmp_path: Path) -> None:
    rows = [_dev("fp32", "local", 2.0, power_note=LOCAL_NOTE),
            _dev("static_int8", "local", 1.0, power_note=LOCAL_NOTE)]  # fmt: skip
    page = build_report_html(*load(write_store(tmp_path / "store", rows)))
    assert 'id="devices"' not in page and "chart-devices" not in page


def test_one_device_with_measured_power_has_the_section(tmp_path: Path) -> None:
    rows = [_dev("fp32", "jetson-orin", 0.5, **_measured(20.0))]
    page = build_report_html(*load(write_store(tmp_path / "store", rows)))
    section = _section(page)
    assert "chart-devices-power" in section and 'id="power-mixed"' not in section
    assert "no power figure:" not in html.unescape(section)


@pytest.mark.browser
def test_devices_charts_draw_in_chromium(tmp_path: Path) -> None:
    """The three device figures draw in headless Chromium with no console error."""
    from playwright.sync_api import sync_playwright

    from qbench.report import write_report
    from tests.test_report_browser import ARGS, CHROMIUM

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/test.sh", pytrace=False)
    store = write_store(tmp_path / "store", device_rows())
    report = write_report(store, tmp_path / "report.html")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        for div in ("chart-devices-power", "chart-devices-latency", "chart-devices-efficiency"):
            page.wait_for_function(f"document.querySelector('#{div} .main-svg') !== null")
        # Four iso-efficiency lines and the estimated (open) points are drawn.
        traces = page.evaluate(
            "document.getElementById('chart-devices-power').data.map(t => t.name)"
        )
        assert traces.count("iso-efficiency (inferences per joule)") == 4
        assert "coral-usb (estimated)" in traces and "local (no power figure)" in traces
        if os.environ.get("QBENCH_REPORT_SCREENSHOT"):
            page.locator("#devices").scroll_into_view_if_needed()
            page.screenshot(path=os.environ["QBENCH_REPORT_SCREENSHOT"], full_page=True)
        browser.close()
    assert errors == []


def test_results_table_marks_estimated_energy(device_page: str) -> None:
    table = device_page[device_page.index("<h2>All results</h2>") :]
    assert "0.75 <i>(estimated)</i>" in table
    assert f'title="{LOCAL_NOTE}"' in table  # an empty figure says why
