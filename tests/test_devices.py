"""Device descriptions, `qbench devices probe`, and the report's hardware warning."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from qbench.cli import main
from qbench.devices import REPO_DEVICES, Device, load_device
from qbench.hostinfo import QUANT_FLAGS, cpu_info, fingerprint
from qbench.probe import (
    cpu_arch,
    detect_edgetpu,
    kernel_readiness,
    parse_cpuinfo,
    parse_nvidia_smi,
    power_sensors,
    probe,
    readiness_summary,
)
from qbench.suite.loader import SuiteError

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"
X86_VNNI_INT8 = ("avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8")
SHIPPED = ("x86-vnni", "rpi5", "jetson-orin", "nvidia-rtx4090", "android-phone")


# --- /proc/cpuinfo parsing on recorded texts ----------------------------------------------------


def test_parse_cpuinfo_x86_recorded_host() -> None:
    info = parse_cpuinfo((CPUINFO / "x86-amd-epyc-kvm.txt").read_text())
    assert info["arch"] == "x86" and info["model"] == "AMD EPYC"
    assert info["processors"] == 1 and info["physical_cores"] == 1
    assert info["mhz"] == pytest.approx(2445.406)
    assert info["quant_flags"] == ["avx2", "fma", "f16c"]
    flags = set(info["flags"])
    assert {"avx", "avx2", "fma", "f16c", "sse4_2", "sha_ni", "vaes"} <= flags
    for absent in (*X86_VNNI_INT8, "avx512f", "avx512bw", "avx512_fp16", "amx_tile"):
        assert absent not in flags
    assert kernel_readiness(info["quant_flags"]) == {
        "int8": "no VNNI/AMX",
        "fp16": "no AVX512-FP16/AMX-FP16",
        "bf16": "no AVX512-BF16/AMX-BF16",
    }
    summary = readiness_summary(info["quant_flags"])
    assert summary.startswith("int8: no VNNI/AMX (avx2 only): expect little int8 speedup")
    assert "fp16: no AVX512-FP16/AMX-FP16: fp16 runs as fp32" in summary


def test_parse_cpuinfo_rpi5_recorded() -> None:
    text = (CPUINFO / "rpi5-cortex-a76.txt").read_text()
    info = parse_cpuinfo(text)
    assert info["arch"] == "arm"
    assert info["model"] == "4x Cortex-A76"
    assert info["board"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert info["processors"] == 4 and info["physical_cores"] == 4
    assert info["quant_flags"] == ["asimd", "asimddp", "asimdhp", "fphp"]
    assert not {"i8mm", "sve", "sve2", "bf16", "avx2"} & set(info["flags"])
    assert kernel_readiness(info["quant_flags"]) == {
        "int8": None,
        "fp16": None,
        "bf16": "no bf16 instructions",
    }
    assert readiness_summary(info["quant_flags"]).startswith("int8: asimddp: integer kernels")
    assert cpu_info(text) == {
        "cpu_model": "Raspberry Pi 5 Model B Rev 1.0 (4x Cortex-A76)",
        "cpu_flags": ["asimd", "asimddp", "asimdhp", "fphp"],
    }


def test_readiness_with_vnni_and_without_flags() -> None:
    spr = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_fp16"]
    assert kernel_readiness(spr) == {"int8": None, "fp16": None, "bf16": "no AVX512-BF16/AMX-BF16"}
    assert readiness_summary(spr).startswith("int8: avx512_vnni+avx_vnni+amx_int8:")
    assert cpu_arch([]) is None and cpu_arch(["asimd"]) == "arm" and cpu_arch(["avx2"]) == "x86"
    assert kernel_readiness([])["int8"] == "ISA flags unknown"
    arm_no_dot = ["asimd"]  # Cortex-A53/A72: no SDOT
    assert kernel_readiness(arm_no_dot)["int8"] == "no dot product (asimddp) or i8mm"


def test_parse_nvidia_smi_rows() -> None:
    text = (
        "NVIDIA H100 80GB HBM3, 81559, 550.54.15, 9.0\n"
        "NVIDIA GeForce RTX 4090, 24564, 550.54.15, 8.9\n"
    )
    gpus = parse_nvidia_smi(text)
    assert [g["name"] for g in gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090"]
    assert gpus[0]["memory_gb"] == pytest.approx(79.6, abs=0.1)
    assert gpus[1]["compute_capability"] == "8.9"


def test_edgetpu_and_power_sensors_from_sysfs_trees(tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    for name, (vendor, product) in {
        "2-1": ("18d1", "9302"),
        "1-1": ("1a6e", "089a"),
        "1-2": ("046d", "c52b"),
    }.items():
        (usb / name).mkdir(parents=True)
        (usb / name / "idVendor").write_text(vendor + "\n")
        (usb / name / "idProduct").write_text(product + "\n")
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "apex_0").touch()
    found = detect_edgetpu(usb, dev)
    assert found["present"] is True
    assert [u.split()[0] for u in found["usb"]] == ["1a6e:089a", "18d1:9302"]
    assert found["pcie"] == [str(dev / "apex_0")]
    assert detect_edgetpu(tmp_path / "none", tmp_path / "none")["present"] is False

    rapl = tmp_path / "powercap" / "intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "name").write_text("package-0\n")
    (rapl / "energy_uj").write_text("123\n")
    chip = tmp_path / "hwmon" / "hwmon3"
    chip.mkdir(parents=True)
    (chip / "name").write_text("ina3221\n")
    (chip / "power1_input").write_text("5000\n")
    (tmp_path / "hwmon" / "hwmon0").mkdir()  # a temperature-only chip: not listed
    sensors = power_sensors(tmp_path / "powercap", tmp_path / "hwmon")
    assert sensors["rapl"] == ["intel-rapl:0 (package-0)"]
    assert sensors["hwmon"] == ["hwmon3 (ina3221: power1_input)"]


# --- probe on this machine ----------------------------------------------------------------------


def _independent_quant_flags() -> list[str]:
    """QUANT_FLAGS that every processor of /proc/cpuinfo lists, read without qbench."""
    per_cpu = []
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            per_cpu.append(set(value.split()))
    common = set.intersection(*per_cpu) if per_cpu else set()
    return [f for f in QUANT_FLAGS if f in common]


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc/cpuinfo")
def test_probe_reports_this_hosts_real_flags() -> None:
    expected = _independent_quant_flags()
    device = probe()
    Device.model_validate(device)
    assert device["probe"]["cpu_flags"] == expected
    assert [f for f in device["isa_features"] if f in QUANT_FLAGS] == expected
    for flag in (*X86_VNNI_INT8, "asimddp", "i8mm"):  # present exactly when the CPU has it
        assert (flag in device["isa_features"]) == (flag in expected)
    # every run row's host fingerprint carries the same flags
    assert fingerprint()["cpu_flags"] == expected
    assert device["probe"]["cores_logical"] >= 1
    assert set(device["probe"]["backends"]) >= {"onnxruntime", "torch", "litert", "edgetpu"}


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_probe_prints_loadable_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "probe", "--name", "here"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Written by `qbench devices probe`")
    assert "int8: " in out.splitlines()[1] and "fp16: " in out.splitlines()[1]
    data = yaml.safe_load(out)
    device = Device.model_validate(data)
    assert device.name == "here" and device.kind == "cpu"
    assert device.probe["cpu_flags"] == cpu_info()["cpu_flags"]


def test_cli_probe_write_round_trip_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "devices" / "bench-host.yaml"
    assert main(["devices", "probe", "--write", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (device bench-host)" in printed
    device = load_device(out)
    assert device.name == "bench-host" and device.transport.name == "subprocess"
    assert device.probe["cpu_flags"] == cpu_info()["cpu_flags"]
    assert device.datasheet.as_dict() == {}

    before = out.read_text()
    assert main(["devices", "probe", "--write", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exists" in err and "--force" in err
    assert out.read_text() == before
    assert main(["devices", "probe", "--write", str(out), "--force", "--name", "other"]) == 0
    assert load_device(out).name == "other"

    assert main(["devices", "probe", "--write", str(tmp_path / "x.txt")]) == 2
    assert ".yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["devices", "nonsense"])
    assert exc.value.code == 2


def test_cli_startup_stays_light() -> None:
    code = (
        "import sys, qbench.cli; "
        "assert not {'pandas', 'torch', 'onnxruntime', 'yaml', 'numpy'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- shipped device files -----------------------------------------------------------------------


def test_every_device_file_loads_and_cites_its_figures() -> None:
    files = sorted(REPO_DEVICES.glob("*.yaml"))
    assert {p.stem for p in files} >= {*SHIPPED, "local", "coral-usb", "coral-devboard"}
    for path in files:
        device = load_device(path)
        assert device.name == path.stem
        if device.datasheet.as_dict():
            assert "http" in path.read_text(), f"{path.name}: datasheet figures without a source"
    x86 = load_device(REPO_DEVICES / "x86-vnni.yaml")
    assert {"avx512_vnni", "avx_vnni", "amx_int8"} <= set(x86.isa_features)
    rpi = load_device(REPO_DEVICES / "rpi5.yaml")
    assert rpi.transport.name == "ssh" and rpi.transport.params["host"] == "rpi5.local"
    assert "asimddp" in rpi.isa_features
    orin = load_device(REPO_DEVICES / "jetson-orin.yaml")
    assert orin.datasheet.peak_int8_tops_sparse == 275
    assert orin.datasheet.peak_int8_tops == 275 / 2
    assert orin.datasheet.memory_bandwidth_gbs == 204.8 and orin.datasheet.tdp_w == 60
    gpu = load_device(REPO_DEVICES / "nvidia-rtx4090.yaml")
    assert gpu.kind == "gpu" and gpu.datasheet["memory_bandwidth_gbs"] == 1008
    assert gpu.datasheet.tdp_w == 450
    phone = load_device(REPO_DEVICES / "android-phone.yaml")
    assert phone.transport.name == "adb" and "serial" in phone.transport.params
    coral = load_device(REPO_DEVICES / "coral-usb.yaml")  # typed and mapping access agree
    assert coral.datasheet.peak_int8_tops == coral.datasheet["peak_int8_tops"] == 4
    assert coral.datasheet.get("tops_per_watt") == 2 and "power_w" in coral.datasheet


def test_list_devices_shows_every_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "devices"]) == 0
    listed = capsys.readouterr().out
    assert main(["devices", "list"]) == 0
    assert capsys.readouterr().out == listed
    for name in (*SHIPPED, "local", "coral-usb", "coral-devboard"):
        assert f"\n  {name} " in listed
    assert "transport ssh" in listed and "transport adb" in listed


@pytest.mark.parametrize(
    ("datasheet", "expected"),
    [
        ("peak_int8_tops: 275 TOPS", "datasheet.peak_int8_tops: Input should be a valid number"),
        ("tdp_w: -5", "datasheet.tdp_w: Input should be greater than or equal to 0"),
        ("ports: [1, 2]", "ports: expected a number or a string"),
    ],
)
def test_datasheet_units_are_checked(tmp_path: Path, datasheet: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\ndatasheet:\n  {datasheet}\n")
    with pytest.raises(SuiteError) as exc:
        load_device(path)
    assert expected in str(exc.value) and "\n" not in str(exc.value)


def test_plan_skips_cells_of_a_device_whose_transport_is_not_installed(tmp_path: Path) -> None:
    from qbench.plan import build_plan
    from qbench.suite.loader import load_suite

    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "far.yaml").write_text(
        "name: far\ntransport:\n  name: pigeon\n  params: {loft: 3}\n"
    )
    suite = tmp_path / "remote.yaml"
    suite.write_text(
        "name: remote\nmodels: [digits_cnn]\nmethods: [fp32]\nbackends: [onnxruntime]\n"
        "devices: [local, far]\n"
    )
    plan = build_plan(*load_suite(suite))
    by_device = {c.device: c for c in plan.cells}
    assert by_device["local"].skip_reason is None
    reason = by_device["far"].skip_reason
    assert reason.startswith("transport pigeon is not installed (installed: ")
    assert "subprocess" in reason
    assert by_device["far"].transport == "pigeon"
    assert by_device["far"].transport_params == {"loft": 3}


# --- the report's hardware warning --------------------------------------------------------------

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
NO_VNNI = ["avx2", "fma", "f16c"]
WITH_VNNI = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni"]


def _store(root: Path, flags: list[str], rows: list[dict[str, Any]]) -> Path:
    from qbench.store.parquet import RunWriter

    writer = RunWriter(
        root,
        {
            "run_id": "20250301T090000Z-cccccc",
            "suite": "hw",
            "suite_path": "suites/hw.yaml",
            "suite_sha256": "cd" * 32,
            "started_at": T0,
            "host": "bench",
            "cpu_model": "some x86",
            "cpu_flags": flags,
            "cores_logical": 2,
            "packages_json": json.dumps({}),
        },
    )
    for row in rows:
        writer.append(row)
    writer.finish(finished_at=T0 + timedelta(minutes=5), cells_total=len(rows), cells_excluded=0)
    return root


def _cell(method: str, act: str, weight: str, p50: float, **extra: Any) -> dict[str, Any]:
    device = extra.pop("device", "local")
    backend = extra.pop("backend", "onnxruntime")
    row = {
        "cell_id": f"digits_cnn/{method}/{backend}/{device}/b1/t1",
        "suite": "hw",
        "model": "digits_cnn",
        "method": method,
        "backend": backend,
        "device": device,
        "device_kind": "cpu",
        "transport": "subprocess",
        "batch": 1,
        "threads": 1,
        "status": "ok",
        "execution": "native",
        "act_dtype": act,
        "weight_dtype": weight,
        "latency_p50_ms": p50,
        "started_at": T0 + timedelta(seconds=p50),
    }
    row.update(extra)
    return row


def _rows() -> list[dict[str, Any]]:
    return [
        _cell("fp32", "float32", "float32", 1.0),
        _cell("dynamic_int8", "uint8", "int8", 0.9),
        _cell("fp16", "float16", "float16", 1.1, backend="torch"),
        _cell("static_int8", "int8", "int8", 1.2, backend="torch", execution="simulated"),
        _cell("static_int8", "uint8", "int8", 0.8, device="coral-usb", device_kind="tpu"),
        _cell("dynamic_int8", "uint8", "int8", 0.7, device="rpi5", transport="ssh"),
    ]


def _page(root: Path) -> str:
    from qbench.report import build_report_html
    from qbench.store.parquet import load

    return build_report_html(*load(root), title="hw")


def test_report_warns_for_int8_and_fp16_on_a_cpu_without_vnni(tmp_path: Path) -> None:
    page = _page(_store(tmp_path / "s", NO_VNNI, _rows()))
    start = page.index('id="hardware-warnings"')
    banner = page[start : page.index("</div>", start)]
    assert "int8 on a CPU without VNNI or AMX (flags: avx2 fma f16c): integer kernels " in banner
    assert "fp16 compute on a CPU without fp16 arithmetic" in banner
    assert "digits_cnn/dynamic_int8/onnxruntime/local/b1/t1" in banner
    assert "digits_cnn/fp16/torch/local/b1/t1" in banner
    # fp32, simulated, the TPU row and the remote row (its CPU's flags are unknown): no warning
    for cell in (
        "digits_cnn/fp32/onnxruntime/local/b1/t1",
        "digits_cnn/static_int8/torch/local/b1/t1",
        "digits_cnn/static_int8/onnxruntime/coral-usb/b1/t1",
        "digits_cnn/dynamic_int8/onnxruntime/rpi5/b1/t1",
    ):
        assert cell not in banner
    assert "2 row(s)" in banner
    table = page[page.index('<table id="results">') :]
    assert table.count("hwwarned") == 2 and "⚠ no VNNI: little int8 gain" in table


def test_report_has_no_warning_with_vnni(tmp_path: Path) -> None:
    rows = [r for r in _rows() if r["method"] != "fp16"]
    page = _page(_store(tmp_path / "s", WITH_VNNI, rows))
    assert 'id="hardware-warnings"' not in page and "hwwarned" not in page


def test_row_level_device_flags_take_precedence() -> None:
    import pandas as pd

    from qbench.report.hardware import hardware_warnings

    no_dot = {"device_cpu_flags": ["asimd"], "run_id": "r1"}
    dot = {"device_cpu_flags": ["asimd", "asimddp"], "run_id": "r1"}
    rows = pd.DataFrame(
        [
            _cell("dynamic_int8", "uint8", "int8", 0.7, device="a", transport="ssh", **no_dot),
            _cell("dynamic_int8", "uint8", "int8", 0.7, device="b", transport="ssh", **dot),
            _cell("dynamic_int8", "uint8", "int8", 0.7, run_id="r1"),
        ]
    )
    runs = pd.DataFrame([{"run_id": "r1", "cpu_flags": WITH_VNNI}])
    sentences, shorts = hardware_warnings(rows, runs)
    assert sentences[0].startswith("int8 on a CPU without the int8 dot product (asimddp)")
    assert shorts[0] == "no dot product: little int8 gain"
    assert sentences[1] is None and sentences[2] is None
