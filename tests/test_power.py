"""Power meters against real sources of their formats, and the power columns of real runs.

RAPL reads a sysfs-shaped tree whose counters a thread of this test advances (wrapping past
max_energy_range_uj); the HTTP meter reads a local http.server that serves the recorded answers
of real Shelly and Tasmota plugs (tests/data/power/); the command meter runs real commands; NVML
is tested through the library itself where it is installed. No meter is ever faked as measured.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from qbench.measure.energy import (
    EnergyRecorder,
    comparison_refusal,
    energy_label,
)
from qbench.plan import build_plan
from qbench.power.base import MeterError, Probe, Reading, Sampler, energy_of, sampled_window
from qbench.power.command import CommandMeter, CommandParams
from qbench.power.http_meter import (
    HttpMeter,
    HttpParams,
    HttpProbe,
    parse_shelly_gen1,
    parse_shelly_gen2,
    parse_tasmota,
)
from qbench.power.nvml import NvmlMeter, NvmlParams
from qbench.power.rapl import RaplMeter, RaplParams
from qbench.suite.loader import SuiteError, load_suite
from tests.conftest import FAST_MEASUREMENT, run_qbench, write_suite

DATA = Path(__file__).resolve().parent / "data" / "power"


# ---- RAPL -------------------------------------------------------------------------------------


def _write(path: Path, value: int | str) -> None:
    """Replace a sysfs-like file in one step, so a concurrent reader never sees it half written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


def _zone(root: Path, zone: str, name: str, energy_uj: int, max_uj: int) -> Path:
    d = root / zone
    d.mkdir(parents=True)
    _write(d / "name", name)
    _write(d / "energy_uj", energy_uj)
    _write(d / "max_energy_range_uj", max_uj)
    return d


MAX_UJ = 1_000_000_000  # a 1 kJ range, so the test wraps several times in a second


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    """A /sys/class/powercap-shaped tree: two packages, a core sub-zone, a psys zone."""
    root = tmp_path / "powercap"
    _zone(root, "intel-rapl:0", "package-0", 990_000_000, MAX_UJ)
    _zone(root, "intel-rapl:0:0", "core", 5_000_000, MAX_UJ)
    _zone(root, "intel-rapl:1", "package-1", 123_000_000, MAX_UJ)
    _zone(root, "intel-rapl:2", "psys", 7_000_000, MAX_UJ)
    return root


def test_rapl_sums_package_zones_and_undoes_wrap_arounds(powercap: Path) -> None:
    meter = RaplMeter()
    params = RaplParams(root=str(powercap))
    assert meter.unavailable(params) is None
    pkg0, core = powercap / "intel-rapl:0", powercap / "intel-rapl:0:0"
    steps, step_uj = 500, 5_000_000  # 500 x 5 J = 2.5 kJ: wraps package-0 three times
    state = {"pkg0": 990_000_000, "core": 5_000_000}

    def advance() -> None:
        for _ in range(steps):
            state["pkg0"] = (state["pkg0"] + step_uj) % MAX_UJ
            state["core"] = (state["core"] + step_uj // 2) % MAX_UJ  # inside package-0
            _write(pkg0 / "energy_uj", state["pkg0"])
            _write(core / "energy_uj", state["core"])
            time.sleep(0.001)

    writer = threading.Thread(target=advance)
    with meter.window(params, cadence_s=0.01) as handle:
        writer.start()
        writer.join()
    w = handle.result
    assert w is not None
    assert w.method == "counter"
    assert w.joules == pytest.approx(steps * step_uj / 1e6)  # 2500 J exactly: package-1 idle
    assert w.samples >= 3
    assert "package-0" in w.sensor and "package-1" in w.sensor
    assert "core" not in w.sensor and "psys" not in w.sensor  # parts and platform not summed


def test_rapl_wrap_between_two_reads(powercap: Path) -> None:
    probe = RaplMeter().open(RaplParams(root=str(powercap), zones=["package-0"]))
    first = probe.read()
    _write(powercap / "intel-rapl:0" / "energy_uj", 4_000_000)  # 990 J -> wrapped -> 4 J
    second = probe.read()
    assert second.joules - first.joules == pytest.approx(14.0)  # (1000 - 990) + 4 J


def test_rapl_unavailable_reasons(tmp_path: Path, powercap: Path) -> None:
    meter = RaplMeter()
    missing = tmp_path / "nothing-here"
    assert meter.unavailable(RaplParams(root=str(missing))) == f"no sensor: {missing} absent"
    assert "no RAPL zone dram" in meter.unavailable(RaplParams(root=str(powercap), zones=["dram"]))
    if os.geteuid() != 0:  # root reads a 0400 file anyway
        (powercap / "intel-rapl:1" / "energy_uj").chmod(0)
        assert "not readable" in meter.unavailable(RaplParams(root=str(powercap)))
    if not Path("/sys/class/powercap").exists():  # this machine: no RAPL at all
        assert meter.unavailable() == "no sensor: /sys/class/powercap absent"


def test_recorder_measures_idle_then_window_with_rapl(powercap: Path) -> None:
    """The measure stage's sequence on a sysfs tree: idle baseline (counters still: 0 W), then
    a window in which 10 J are spent on 100 inferences: 100 mJ each, provenance measured."""
    spec = {"meter": "rapl", "params": {"root": str(powercap)}, "idle_s": 0.2, "cadence_s": 0.05}
    rec = EnergyRecorder(spec, "local", "cpu")
    rec.idle()
    pkg1 = powercap / "intel-rapl:1" / "energy_uj"
    with rec.window():
        for i in range(1, 11):
            _write(pkg1, 123_000_000 + i * 1_000_000)
            time.sleep(0.01)
    rec.close()
    cols = rec.columns(100)
    assert cols["power_provenance"] == "measured" and cols["power_source"] == "rapl"
    assert cols["idle_power_w"] == 0.0
    assert cols["energy_per_inference_mj"] == pytest.approx(100.0)
    assert cols["active_power_w"] == pytest.approx(10.0 / cols["power_window_s"])
    assert cols["power_note"].startswith("measured: rapl package-0")
    assert "energy counter" in cols["power_note"] and "idle baseline 0.00 W" in cols["power_note"]
    assert rec.row_notes(cols) == [f"energy {cols['power_note']}"]


# ---- HTTP smart plugs --------------------------------------------------------------------------


def _recorded(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def test_recorded_answers_parse_as_the_vendors_document() -> None:
    # Shelly Plug-S /status: power 0.0 W, total 0 Wmin (an idle plug)
    assert parse_shelly_gen1(_recorded("shelly_gen1_plug_s_status.json")) == (0.0, 0.0)
    # Shelly 1PM Gen3 Switch.GetStatus: apower 0 W, aenergy.total 0 Wh
    assert parse_shelly_gen2(_recorded("shelly_gen2_switch_getstatus.json")) == (0.0, 0.0)
    # the same object inside a Shelly.GetStatus answer
    assert parse_shelly_gen2({"switch:0": _recorded("shelly_gen2_switch_getstatus.json")})[0] == 0
    # Tasmota Status 8: Power 26 W, Total 0.003 kWh = 10.8 kJ
    watts, joules = parse_tasmota(_recorded("tasmota_status8.json"))
    assert watts == 26.0
    assert joules == pytest.approx(0.003 * 3.6e6)


# Per format: recorded file, the path a bare URL gets, and how to set power P (W) and the
# device's energy counter E (J) in that document, in the device's own units.
def _set_gen1(doc: dict[str, Any], p: float, e: float) -> None:
    doc["meters"][0].update(power=p, total=round(e / 60))  # watt-minutes


def _set_gen2(doc: dict[str, Any], p: float, e: float) -> None:
    doc["apower"] = p
    doc["aenergy"]["total"] = round(e / 3600, 3)  # watt-hours


def _set_tasmota(doc: dict[str, Any], p: float, e: float) -> None:
    doc["StatusSNS"]["ENERGY"].update(Power=p, Total=round(e / 3.6e6, 3))  # kWh


FORMATS = {
    "shelly_gen1": ("shelly_gen1_plug_s_status.json", "/status", _set_gen1),
    "shelly_gen2": ("shelly_gen2_switch_getstatus.json", "/rpc/Switch.GetStatus?id=0", _set_gen2),
    "tasmota": ("tasmota_status8.json", "/cm?cmnd=Status%208", _set_tasmota),
}


class _Plug:
    """A local HTTP server answering like one plug: the recorded document, with power rising
    by 1 W on every request (from 40 W) and the energy counter following."""

    def __init__(self, fmt: str, constant_w: float | None = None) -> None:
        name, self.path, self.setter = FORMATS[fmt]
        self.doc = _recorded(name)
        self.constant_w = constant_w
        self.requests = 0
        self.paths: list[str] = []
        plug = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                plug.paths.append(self.path)
                if self.path != plug.path:
                    self.send_error(404)
                    return
                body = json.dumps(plug.answer()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self) -> dict[str, Any]:
        power = self.constant_w if self.constant_w is not None else 40.0 + self.requests
        doc = copy.deepcopy(self.doc)
        self.setter(doc, power, 7200.0 * (1 + self.requests))
        self.requests += 1
        return doc

    def __enter__(self) -> _Plug:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_http_meter_reads_changing_values_from_a_served_plug(fmt: str) -> None:
    with _Plug(fmt) as plug:
        params = HttpParams(url=plug.url, format=fmt)  # a bare URL gets the format's path
        assert HttpMeter().unavailable(params) is None
        probe = HttpProbe(params)
        with sampled_window(probe, "http", cadence_s=0.05) as handle:
            time.sleep(0.4)
        w = handle.result
        assert w is not None and w.method == "integrated"
        assert set(plug.paths) == {plug.path}
        # unavailable() made request 0 (40 W); the window read 41 W, 42 W, ... in order
        assert w.samples == plug.requests - 1 >= 4
        assert 41.0 < w.avg_watts < 41.0 + w.samples - 1
        # the device's own counter, in its units, came through in joules
        assert probe.last_total_j == pytest.approx(7200.0 * plug.requests, rel=0.02)


def test_http_meter_integrates_constant_power_exactly() -> None:
    plug = _Plug("shelly_gen2", constant_w=42.5)
    params = HttpParams(url=plug.url, format="shelly_gen2")
    with plug, HttpMeter().window(params, 0.05) as h:
        time.sleep(0.3)
    assert h.result is not None
    assert h.result.avg_watts == pytest.approx(42.5)
    assert h.result.joules == pytest.approx(42.5 * h.result.seconds)


def test_http_meter_says_why_it_cannot_read() -> None:
    closed = HttpParams(url="http://127.0.0.1:9/status", format="shelly_gen1", timeout_s=0.5)
    why = HttpMeter().unavailable(closed)
    assert why is not None and why.startswith("no sensor: http://127.0.0.1:9/status unreachable")
    with _Plug("tasmota") as plug:  # a Tasmota answer is not a Shelly one
        why = HttpMeter().unavailable(HttpParams(url=plug.url + "/cm?cmnd=Status%208",
                                                 format="shelly_gen1"))  # fmt: skip
    assert why == "no sensor: Shelly Gen1 answer has no meters[] or emeters[]"
    with pytest.raises(MeterError, match="is_valid: false"):
        parse_shelly_gen1({"meters": [{"power": 3.0, "is_valid": False}]})


# ---- command --------------------------------------------------------------------------------


def test_command_meter_reads_watts_from_a_real_command() -> None:
    params = CommandParams(command=[sys.executable, "-c", "print(12.5)"])
    meter = CommandMeter()
    assert meter.unavailable(params) is None
    with meter.window(params, cadence_s=0.1) as handle:
        time.sleep(0.35)
    w = handle.result
    assert w is not None and w.samples >= 3
    assert w.avg_watts == pytest.approx(12.5)


def test_command_meter_reads_a_joule_counter(tmp_path: Path) -> None:
    counter = tmp_path / "uj"
    counter.write_text("100.0")
    script = (
        f"import pathlib; p = pathlib.Path(r'{counter}'); v = float(p.read_text()) + 2.0; "
        "p.write_text(str(v)); print('energy:', v, 'J')"
    )
    params = CommandParams(command=[sys.executable, "-c", script], joules=True)
    with CommandMeter().window(params, cadence_s=0.1) as handle:
        time.sleep(0.25)
    w = handle.result
    assert w is not None and w.method == "counter"
    assert w.joules == pytest.approx(2.0 * (w.samples - 1))  # each read adds 2 J


def test_command_meter_failures_are_reasons() -> None:
    assert CommandMeter().unavailable(CommandParams(command="no-such-meter-cmd --watts")) == (
        "no sensor: command 'no-such-meter-cmd' not found"
    )
    bad = CommandParams(command=[sys.executable, "-c", "print('n/a')"])
    with pytest.raises(MeterError, match="expected a number"), CommandMeter().window(bad, 0.1):
        pass


# ---- sampler and NVML ------------------------------------------------------------------------


class _CountingProbe(Probe):
    sensor = "counting"

    def __init__(self, fail_after: int | None = None) -> None:
        self.reads = 0
        self.fail_after = fail_after

    def read(self) -> Reading:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise OSError("sensor gone")
        return Reading(t=time.monotonic(), watts=5.0)


def test_sampler_sleeps_between_reads_and_reports_errors_at_the_end() -> None:
    probe = _CountingProbe()
    sampler = Sampler(probe, cadence_s=0.1)
    sampler.start()
    time.sleep(0.55)
    readings = sampler.stop()
    assert 6 <= len(readings) <= 8  # start, ~5 at the cadence, stop: no busy loop
    assert energy_of(readings)[0] == pytest.approx(5.0 * (readings[-1].t - readings[0].t))
    body_finished = False
    failing = sampled_window(_CountingProbe(fail_after=2), "counting", 0.02)
    with pytest.raises(MeterError, match="sensor gone"), failing:
        time.sleep(0.15)
        body_finished = True  # the measured block is never interrupted by its meter
    assert body_finished


def test_nvml_without_the_library_says_so() -> None:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert NvmlMeter().unavailable() == (
            "no sensor: pynvml (package nvidia-ml-py) is not installed"
        )
    else:
        pytest.skip("pynvml is installed: see the test below")


def test_nvml_through_the_library_itself() -> None:
    pytest.importorskip("pynvml")
    meter = NvmlMeter()
    why = meter.unavailable(NvmlParams())
    if why is not None:  # no driver or no GPU: the library's own error is the reason
        assert why.startswith("no sensor: ")
        pytest.skip(why)
    with meter.window(NvmlParams(), cadence_s=0.05) as handle:
        time.sleep(0.3)
    assert handle.result is not None and handle.result.joules >= 0


# ---- provenance helpers ----------------------------------------------------------------------


def test_measured_and_estimated_figures_are_not_compared() -> None:
    assert comparison_refusal("measured", "measured") is None
    assert "refused" in (comparison_refusal("measured", "estimated") or "")
    assert comparison_refusal(None, "measured") is not None
    assert energy_label(0.4213, "estimated") == "0.421 mJ (estimated)"
    assert energy_label(None, None, "no sensor: x") == "— (no sensor: x)"


def test_recorder_estimate_needs_a_tdp() -> None:
    rec = EnergyRecorder({"mode": "estimate"}, "local", "cpu")
    with rec.window():
        pass
    cols = rec.columns(10)
    assert cols["power_provenance"] is None and cols["energy_per_inference_mj"] is None
    assert cols["power_note"].startswith("no estimate: device local has no datasheet tdp_w")


# ---- suites -------------------------------------------------------------------------------------

POWER_FIGURES = (
    "power_cadence_s",
    "power_window_s",
    "power_samples",
    "idle_power_w",
    "active_power_w",
    "energy_per_inference_mj",
)


def _run(tmp_path: Path, tiny_onnx: Path, power: str, batch: int = 1) -> pd.Series:
    suite = write_suite(
        tmp_path,
        f"""
        name: power
        models:
          - name: onnx_file
            label: tiny
            params: {{path: {tiny_onnx}, dataset: digits}}
        methods: [fp32]
        backends: [onnxruntime]
        scenario: {{batch: {batch}}}
        {FAST_MEASUREMENT}
        accuracy: {{samples: 20}}
        {power}
        """,
    )
    store = tmp_path / "store"
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_parquet(store / "results")
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row.status == "ok", row.error
    return row


@pytest.fixture
def no_rapl() -> Iterator[None]:
    if Path("/sys/class/powercap").exists():
        pytest.skip("this machine has /sys/class/powercap: the no-sensor row is not produced")
    yield


def test_run_without_a_sensor_leaves_energy_empty_with_the_reason(
    tmp_path: Path, tiny_onnx: Path, no_rapl: None
) -> None:
    row = _run(tmp_path, tiny_onnx, "")
    for col in (*POWER_FIGURES, "power_provenance", "power_source"):
        assert pd.isna(row[col]), col
    assert row.power_note == (
        "no sensor: /sys/class/powercap absent (device local names no power_meter)"
    )
    assert not any("energy" in n for n in row.notes)


def test_run_with_power_estimate_marks_every_figure_estimated(
    tmp_path: Path, tiny_onnx: Path
) -> None:
    row = _run(tmp_path, tiny_onnx, "power: {mode: estimate, tdp_w: 15}", batch=2)
    assert row.power_provenance == "estimated"
    assert row.power_source == "tdp_estimate"
    assert row.power_note.startswith("estimated: TDP 15 W × utilisation ")
    assert "TDP from suite power.tdp_w" in row.power_note
    assert 0 < row.active_power_w <= 15
    inputs = row.iters * 2
    expected = row.active_power_w * row.power_window_s / inputs * 1000
    assert row.energy_per_inference_mj == pytest.approx(expected)
    assert pd.isna(row.idle_power_w) and pd.isna(row.power_samples)
    assert any(n.startswith("energy estimated: TDP 15 W") for n in row.notes)


def test_run_measured_by_a_command_meter(tmp_path: Path, tiny_onnx: Path) -> None:
    """End to end through a real meter: a command printing 12.5 W, sampled during the window."""
    power = (
        "power: {meter: {name: command, params: {command: ["
        f"{json.dumps(sys.executable)}, '-c', 'print(12.5)']}}}}, cadence_s: 0.02, idle_s: 0}}"
    )
    row = _run(tmp_path, tiny_onnx, power)
    assert row.power_provenance == "measured"
    assert row.power_source == "command"
    assert row.power_cadence_s == 0.02
    assert row.power_samples >= 2
    assert row.active_power_w == pytest.approx(12.5)
    assert row.energy_per_inference_mj == pytest.approx(
        12.5 * row.power_window_s / row.iters * 1000
    )
    assert "no idle baseline" in row.power_note
    assert any(n.startswith("energy measured: command") for n in row.notes)


POWER_ERRORS = [
    ("power: sometimes\n", 3, "power.mode", "'measure', 'estimate' or 'off'"),
    ("power:\n  cadence_s: 0\n", 4, "power.cadence_s", "greater than 0"),
    ("power:\n  idle_s: many\n", 4, "power.idle_s", "valid number"),
    ("power:\n  meter: joulemeter\n", 4, "power.meter", "unknown power meter 'joulemeter'"),
    (
        "power:\n  meter:\n    name: http\n    params: {url: 'http://plug'}\n",
        6,
        "power.meter.params.format",
        "required field is missing",
    ),
    ("power:\n  colour: green\n", 4, "power.colour", "unknown field"),
]


@pytest.mark.parametrize(("text", "line", "field", "words"), POWER_ERRORS)
def test_bad_power_section_is_one_located_line(
    tmp_path: Path, text: str, line: int, field: str, words: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nmodels: [digits_cnn]\n" + text)
    with pytest.raises(SuiteError) as info:
        build_plan(*load_suite(path))
    err = str(info.value)
    assert "\n" not in err
    assert err.startswith(f"{path}:{line}: {field}: "), err
    assert words in err


def test_plan_carries_power_settings_and_device_tdp(tmp_path: Path) -> None:
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "board.yaml").write_text(
        "name: board\nkind: npu\npower_meter: not_installed\ndatasheet: {tdp_w: 6}\n"
    )
    suite = write_suite(
        tmp_path, "name: t\nmodels: [digits_cnn]\ndevices: [board]\npower: estimate\n"
    )
    plan = build_plan(*load_suite(suite))
    power = plan.cells[0].power
    assert power is not None
    assert power["mode"] == "estimate" and power["tdp_w"] == 6.0
    assert power["tdp_from"] == "device board datasheet tdp_w"
    # a meter from a plugin that is not installed is not a suite error: the row says why
    rec = EnergyRecorder({**power, "mode": "measure"}, "board", "npu")
    assert rec.reason is not None and "unknown power meter 'not_installed'" in rec.reason
    # CPU time says nothing of an accelerator's load: no estimate is made for one
    rec = EnergyRecorder(power, "board", "npu")
    with rec.window():
        pass
    assert rec.columns(5)["power_note"] == (
        "no estimate: TDP x CPU utilisation describes a cpu, device board is a npu"
    )
