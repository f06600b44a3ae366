"""The adb transport: command lines and output parsing against real recorded outputs
(tests/data/adb, sources in SOURCES.md), and run_cell through a stand-in `adb` client.

No Android device is needed: the stand-in client answers `devices -l` with a recorded
listing and runs `shell`/`exec-out`/`push` on this machine, so the transport's own
orchestration (folder, pushes, the stage under `timeout`, fetching, cleanup) runs for real.
"""

from __future__ import annotations

import ast
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from qbench.plan import Cell
from qbench.transports import adb as adb_module
from qbench.transports.adb import (
    AdbDevice,
    AdbParams,
    AdbTransport,
    adb_command,
    benchmark_model_argv,
    benchmark_row,
    parse_benchmark_model,
    parse_devices,
    select_device,
    shell_command,
)
from qbench.transports.subprocess import SubprocessParams, SubprocessTransport
from tests.conftest import write_suite
from tests.test_device_flags import assert_row_has_this_cpu

DATA = Path(__file__).parent / "data" / "adb"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


# --- adb devices ---------------------------------------------------------------------------


def test_parse_devices_l_with_transport_id() -> None:
    assert parse_devices(recorded("devices_l_goadb.txt")) == [
        AdbDevice(
            "UYT5T18414003349",
            "device",
            {
                "usb": "1114112X",
                "product": "ALP-AL00",
                "model": "ALP_AL00",
                "device": "HWALP",
                "transport_id": "23",
            },
        )
    ]


def test_parse_devices_l_unauthorized_and_emulator() -> None:
    phone, emulator = parse_devices(recorded("devices_l_expo.txt"))
    assert phone == AdbDevice("984e71340418728d", "unauthorized", {"transport_id": "2"})
    assert emulator.serial == "emulator-5554" and emulator.state == "device"
    assert emulator.attrs["model"] == "Android_SDK_built_for_x86"
    assert list(emulator.attrs) == ["product", "model", "device", "transport_id"]


def test_parse_devices_older_formats() -> None:
    [nexus] = parse_devices(recorded("devices_l_vim_android.txt"))
    assert nexus == AdbDevice(
        "0a388e93",
        "device",
        {"usb": "1-1", "product": "razor", "model": "Nexus_7", "device": "flo"},
    )
    listed = parse_devices(recorded("devices_flutter.txt"))
    assert [(d.serial, d.state) for d in listed] == [
        ("emulator-5558", "device"),
        ("fc74d864", "device"),
        ("emulator-5556", "unauthorized"),
        ("emulator-5554", "device"),
    ]
    assert all(d.attrs == {} for d in listed)


def test_parse_devices_no_permissions() -> None:
    [device] = parse_devices(recorded("devices_rayhunter.txt"))
    assert device.serial == "eb9f484b"
    assert device.state.startswith("no permissions (missing udev rules?")
    assert device.state.endswith("see [http://developer.android.com/tools/device.html]")
    assert device.attrs == {}


def test_select_device() -> None:
    goadb = parse_devices(recorded("devices_l_goadb.txt"))
    assert select_device(goadb, None) == (goadb[0], "")
    assert select_device(goadb, "UYT5T18414003349") == (goadb[0], "")

    expo = parse_devices(recorded("devices_l_expo.txt"))
    assert select_device(expo, None)[0] == expo[1]  # the one usable device
    device, why = select_device(expo, "984e71340418728d")
    assert device is None
    assert why == (
        "device 984e71340418728d is unauthorized: accept the 'Allow USB debugging' prompt "
        "on the device"
    )
    device, why = select_device(expo, "nope")
    assert device is None and why == (
        "no device nope attached (adb devices lists: 984e71340418728d (unauthorized), "
        "emulator-5554 (device, Android_SDK_built_for_x86))"
    )

    device, why = select_device(parse_devices(recorded("devices_flutter.txt")), None)
    assert device is None and why.startswith("3 devices attached (emulator-5558 (device), ")
    assert why.endswith("; set `serial` in the device file")

    device, why = select_device(parse_devices(recorded("devices_rayhunter.txt")), None)
    assert device is None and why.startswith("device eb9f484b is not usable: no permissions")

    assert select_device(parse_devices("List of devices attached\n\n"), None) == (
        None,
        "no device attached (adb devices lists: none)",
    )


# --- command lines -------------------------------------------------------------------------


MEASUREMENT = {"warmup": 10, "min_iters": 50, "min_seconds": 1.0, "max_iters": 100000,
               "repeats": 1, "timeout_s": 900.0}  # fmt: skip


def test_command_lines() -> None:
    assert adb_command("adb", "emulator-5554", "push", "a b", "/data/x") == [
        "adb", "-s", "emulator-5554", "push", "a b", "/data/x",
    ]  # fmt: skip
    assert adb_command("/opt/adb", None, "devices", "-l") == ["/opt/adb", "devices", "-l"]
    assert shell_command("adb", "S1", "cd /data/local/tmp && ls 'a b'") == [
        "adb", "-s", "S1", "shell", "sh -c 'cd /data/local/tmp && ls '\"'\"'a b'\"'\"''",
    ]  # fmt: skip
    assert benchmark_model_argv(
        "/data/local/tmp/benchmark_model",
        "/data/local/tmp/qbench/qbench-1/m.tflite",
        4,
        MEASUREMENT,
        xnnpack=False,
        max_secs=120.5,
        extra=["--use_gpu=true"],
    ) == [
        "/data/local/tmp/benchmark_model",
        "--graph=/data/local/tmp/qbench/qbench-1/m.tflite",
        "--num_threads=4",
        "--warmup_runs=10",
        "--warmup_min_secs=0",
        "--num_runs=50",
        "--min_secs=1",
        "--use_xnnpack=false",
        "--max_secs=120.5",
        "--use_gpu=true",
    ]


# --- benchmark_model output ----------------------------------------------------------------


def test_parse_benchmark_model_android() -> None:
    parsed = parse_benchmark_model(recorded("benchmark_model_android_espcn.txt"))
    assert parsed == {
        "init_us": 855.0,
        "first_us": 49060.0,
        "warmup_avg_us": 34825.1,
        "inference_avg_us": 33209.4,
        "count": 50.0,
        "first": 32891.0,
        "curr": 33978.0,
        "min": 32641.0,
        "max": 34005.0,
        "avg": 33209.4,
        "std": 450.0,
        "mem_delta_init_mb": 0.0,
        "mem_delta_overall_mb": 12.8672,
    }


def test_parse_benchmark_model_info_prefix() -> None:
    parsed = parse_benchmark_model(recorded("benchmark_model_info_mobilenet.txt"))
    assert parsed["inference_avg_us"] == 13520.2 and parsed["init_us"] == 12750
    assert parsed["count"] == 74 and parsed["min"] == 13105 and parsed["std"] == 470


def test_parse_benchmark_model_skips_op_profiling_stats() -> None:
    """The timed run's line, not the warm-up's nor the op-profiling tables' `count=` lines."""
    parsed = parse_benchmark_model(recorded("benchmark_model_avx2_profiling.txt"))
    assert parsed["count"] == 81 and parsed["first"] == 12733 and parsed["avg"] == 12367.8
    assert parsed["init_us"] == 413 and parsed["mem_delta_overall_mb"] == 11.3984


def test_parse_benchmark_model_2019_format() -> None:
    parsed = parse_benchmark_model(recorded("benchmark_model_zedboard_2019.txt"))
    assert parsed["inference_avg_us"] == 394183 and parsed["warmup_avg_us"] == 395037
    assert parsed["init_us"] == 18764 and "first_us" not in parsed
    assert parsed["count"] == 50 and parsed["max"] == 417669


def test_parse_benchmark_model_percentiles_and_row() -> None:
    parsed = parse_benchmark_model(recorded("benchmark_model_percentiles_qcom.txt"))
    assert (parsed["p5"], parsed["median"], parsed["p95"]) == (105485, 105718, 106281)
    assert parsed["mem_delta_overall_mb"] == 14.8164 and "peak_mem_mb" not in parsed
    row = benchmark_row(parsed, batch=1)
    assert row["latency_p50_ms"] == pytest.approx(105.718)
    assert row["latency_mean_ms"] == pytest.approx(105.784)
    assert row["latency_min_ms"] == pytest.approx(105.416)
    assert row["latency_std_ms"] == pytest.approx(0.260)
    assert row["load_s"] == pytest.approx(0.087639)
    assert row["iters"] == 50 and row["repeats"] == 1
    assert row["throughput_ips"] == pytest.approx(1000 / 105.784)
    assert "peak_rss_mb" not in row
    assert row["notes"][0].startswith("benchmark_model: memory grew by 14.8164 MB")


def test_parse_benchmark_model_without_summary() -> None:
    assert parse_benchmark_model("STARTING!\nFailed to mmap model /x.tflite\n") == {}
    assert parse_benchmark_model("") == {}


# --- run_cell --------------------------------------------------------------------------------


FAKE_ADB = """#!{python}
# Stand-in adb client: `devices -l` prints a recorded listing, the rest runs on this machine.
import os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(repr(args) + "\\n")
if args[:1] == ["-s"]:
    args = args[2:]
if args == ["devices", "-l"]:
    sys.stdout.write(open(os.environ["FAKE_ADB_DEVICES"]).read())
    sys.exit(0)
if args[0] == "push":
    shutil.copyfile(args[1], args[2])
    print(args[1] + ": 1 file pushed, 0 skipped.")
    sys.exit(0)
if args[0] in ("shell", "exec-out"):
    sys.exit(subprocess.call(["sh", "-c", " ".join(args[1:])]))
sys.exit("fake adb: unknown command " + repr(args))
"""

FAKE_BENCHMARK_MODEL = """#!/bin/sh
# Stand-in benchmark_model: records its arguments, then prints a recorded real output.
echo "$@" > "{argv_file}"
if [ "$FAKE_BENCH_MODE" = hang ]; then sleep 60; fi
cat "{output}" >&2
"""


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_adb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    adb = _executable(tmp_path / "fake-adb", FAKE_ADB.format(python=sys.executable))
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    monkeypatch.setenv("FAKE_ADB_DEVICES", str(DATA / "devices_l_goadb.txt"))
    return adb


def _tflite_cell(timeout_s: float = 60, **changes: Any) -> Cell:
    fields: dict[str, Any] = dict(
        cell_id="m/fp32/litert/phone/b1/t2",
        suite="s",
        model="m",
        model_plugin="digits_cnn",
        model_params={},
        method="fp32",
        method_params={},
        backend="litert",
        backend_params={"xnnpack": True},
        device="phone",
        device_kind="cpu",
        transport="adb",
        transport_params={},
        batch=1,
        threads=2,
        artifact_format="tflite",
        measurement={**MEASUREMENT, "timeout_s": timeout_s},
        accuracy={"dataset": "auto", "samples": 10},
        calibration={"samples": 8, "seed": 0, "outlier_fraction": 0.0, "outlier_scale": 10.0},
    )
    fields.update(changes)
    return Cell(**fields)


def test_missing_adb_client_skips_the_cell(tmp_path: Path) -> None:
    result = AdbTransport().run_cell(
        _tflite_cell(), tmp_path / "w", AdbParams(adb=str(tmp_path / "no-such-adb"))
    )
    assert result["status"] == "skipped"
    assert result["error"].startswith("adb transport: no adb client ")


def test_absent_or_unauthorized_device_skips_the_cell(
    tmp_path: Path, fake_adb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_ADB_DEVICES", str(DATA / "devices_l_expo.txt"))
    transport, cell = AdbTransport(), _tflite_cell()
    result = transport.run_cell(cell, tmp_path / "a", AdbParams(adb=str(fake_adb), serial="nope"))
    assert result == {
        "status": "skipped",
        "error": "adb: no device nope attached (adb devices lists: 984e71340418728d "
        "(unauthorized), emulator-5554 (device, Android_SDK_built_for_x86))",
    }
    result = transport.run_cell(
        cell, tmp_path / "b", AdbParams(adb=str(fake_adb), serial="984e71340418728d")
    )
    assert result["status"] == "skipped" and "is unauthorized" in result["error"]


def test_native_mode_needs_a_tflite_cell(tmp_path: Path, fake_adb: Path) -> None:
    cell = _tflite_cell(backend="onnxruntime", backend_params={}, artifact_format="onnx")
    result = AdbTransport().run_cell(cell, tmp_path / "w", AdbParams(adb=str(fake_adb)))
    assert result["status"] == "skipped"
    assert "this cell is onnxruntime/onnx (set remote_python" in result["error"]


@pytest.fixture
def fake_prepare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """prepare as the host would report it, for a .tflite artifact (benchmark_model ignores
    its contents), without building one."""
    artifact = tmp_path / "cache" / "0123abcd.tflite"
    artifact.parent.mkdir()
    artifact.write_bytes(b"TFL3 stand-in")
    prepared = {"status": "ok", "artifact_path": str(artifact), "artifact_bytes": 13,
                "eval_path": str(tmp_path / "absent.npz"), "label_note": ""}  # fmt: skip

    def run_stage(python: str, stage: str, workdir: Path, env: Any, timeout: float) -> Any:
        assert stage == "prepare"
        return dict(prepared)

    monkeypatch.setattr(adb_module, "run_stage", run_stage)
    return prepared


def test_native_benchmark_model_row(
    tmp_path: Path, fake_adb: Path, fake_prepare: dict[str, Any]
) -> None:
    device_dir = tmp_path / "device"
    bench = _executable(
        tmp_path / "benchmark_model",
        FAKE_BENCHMARK_MODEL.format(
            argv_file=tmp_path / "bench-argv",
            output=DATA / "benchmark_model_percentiles_qcom.txt",
        ),
    )
    params = AdbParams(adb=str(fake_adb), remote_dir=str(device_dir), benchmark_binary=str(bench))
    result = AdbTransport().run_cell(_tflite_cell(), tmp_path / "w", params)

    assert result["status"] == "ok", result.get("error")
    assert result["latency_p50_ms"] == pytest.approx(105.718)
    assert result["latency_mean_ms"] == pytest.approx(105.784)
    assert result["iters"] == 50 and result["load_s"] == pytest.approx(0.087639)
    assert result["artifact_bytes"] == 13  # prepare's fields are kept
    assert result["remote_host"] == "adb:UYT5T18414003349"
    assert result["notes"][0].startswith("benchmark_model times random inputs")
    # No agent ran on the phone: its CPU is unknown, and a note says why.
    assert result.get("device_cpu_model") is None and result.get("device_cpu_flags") is None
    assert adb_module.NO_DEVICE_CPU_NOTE in result["notes"]
    assert result["notes"][-1].startswith(
        "timed by benchmark_model on adb device UYT5T18414003349 (device, ALP_AL00)"
    )
    argv = (tmp_path / "bench-argv").read_text().split()
    assert argv[0].startswith(f"--graph={device_dir}/qbench-") and argv[0].endswith(
        "/0123abcd.tflite"
    )
    assert argv[1:8] == ["--num_threads=2", "--warmup_runs=10", "--warmup_min_secs=0",
                         "--num_runs=50", "--min_secs=1", "--use_xnnpack=true",
                         argv[7]]  # fmt: skip
    assert argv[7].startswith("--max_secs=")
    calls = (tmp_path / "adb.log").read_text().splitlines()
    assert calls[0] == "['devices', '-l']"
    assert all(c.startswith("['-s', 'UYT5T18414003349', ") for c in calls[1:])
    assert sum("'push'" in c for c in calls) == 1  # only the artifact travels
    assert os.listdir(device_dir) == []  # the cell's folder is removed


def test_native_benchmark_model_timeout_is_killed(
    tmp_path: Path, fake_adb: Path, fake_prepare: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BENCH_MODE", "hang")
    device_dir = tmp_path / "device"
    bench = _executable(
        tmp_path / "benchmark_model",
        FAKE_BENCHMARK_MODEL.format(
            argv_file=tmp_path / "bench-argv",
            output=DATA / "benchmark_model_percentiles_qcom.txt",
        ),
    )
    params = AdbParams(adb=str(fake_adb), remote_dir=str(device_dir), benchmark_binary=str(bench))
    started = time.monotonic()
    result = AdbTransport().run_cell(_tflite_cell(timeout_s=3), tmp_path / "w", params)
    assert result["status"] == "timeout"
    assert "benchmark_model exceeded the cell's time limit" in result["error"]
    assert time.monotonic() - started < 20
    assert os.listdir(device_dir) == []
    for entry in Path("/proc").iterdir():  # no stand-in benchmark_model left sleeping
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            assert str(device_dir).encode() not in cmdline


def test_agent_on_the_device_matches_local(tmp_path: Path, fake_adb: Path, tiny_onnx: Path) -> None:
    """remote_python set: qbench's agent measures on the "device"; same figures as local."""
    from qbench.runner import load_plan

    suite = write_suite(
        tmp_path,
        f"""
        name: adb-agent
        models:
          - name: onnx_file
            label: tiny
            params: {{path: {tiny_onnx}, dataset: digits}}
        methods: [fp32]
        backends: [onnxruntime]
        measurement: {{warmup: 2, min_iters: 20, min_seconds: 0.05, timeout_s: 120}}
        accuracy: {{samples: 50}}
    """,
    )
    _, plan, _ = load_plan(suite)
    [cell] = plan.runnable
    device_dir = tmp_path / "device"
    params = AdbParams(adb=str(fake_adb), remote_dir=str(device_dir),
                       remote_python=sys.executable)  # fmt: skip
    remote = AdbTransport().run_cell(cell, tmp_path / "remote", params)
    local = SubprocessTransport().run_cell(cell, tmp_path / "local", SubprocessParams())
    assert remote["status"] == local["status"] == "ok", remote.get("error")
    for key in ("top1", "fp32_agreement", "output_cosine", "output_sqnr_db", "accuracy_samples",
                "artifact_sha256", "runtime_version"):  # fmt: skip
        assert remote[key] == local[key], key
    assert remote["iters"] >= 20 and remote["notes"][-1].startswith("measured over adb on ")
    # The agent on the "device" (this machine behind the stand-in adb) read its own CPU.
    assert_row_has_this_cpu(remote)
    assert remote["device_cpu_flags"] == local["device_cpu_flags"]
    assert os.listdir(device_dir) == []
    calls = [ast.literal_eval(c) for c in (tmp_path / "adb.log").read_text().splitlines()]
    pushed = sorted(Path(c[-1]).name for c in calls if "push" in c[:3])
    artifact = Path(local["artifact_path"]).name
    expected = [artifact, Path(local["eval_path"]).name, Path(local["reference_path"]).name,
                "cell.json", "prepared.json"]  # fmt: skip
    if Path(local["artifact_path"] + ".meta.json").exists():
        expected.append(artifact + ".meta.json")
    assert pushed == sorted(expected)
