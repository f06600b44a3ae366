"""Per-row device CPU: device_cpu_model/device_cpu_flags read where the measure stage runs,
and the report's hardware warning reading them before the run's host flags."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qbench.hostinfo import QUANT_FLAGS, device_cpu
from qbench.store.schema import RESULT_COLUMNS, SCHEMA_VERSION

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
NO_VNNI = ["avx2", "fma", "f16c"]
WITH_VNNI = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni"]
RUN_ID = "20250301T090000Z-dddddd"


def independent_cpuinfo() -> tuple[str | None, list[str]]:
    """(x86 "model name", QUANT_FLAGS every processor lists) read straight from /proc/cpuinfo,
    without qbench's parser: what a row measured on this machine must carry."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    pairs = [(k.strip().lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines)]
    flag_sets = [set(v.split()) for k, v in pairs if k in ("flags", "features")]
    common = set.intersection(*flag_sets) if flag_sets else set()
    model = next((v for k, v in pairs if k == "model name"), None)
    return model, [f for f in QUANT_FLAGS if f in common]


def assert_row_has_this_cpu(row: Any) -> None:
    model, flags = independent_cpuinfo()
    assert list(row["device_cpu_flags"]) == flags
    if model is not None:  # x86; ARM kernels print no model name (qbench names the cores)
        assert row["device_cpu_model"] == model
    else:
        assert row["device_cpu_model"]


# --- the columns and where they come from ------------------------------------------------------


def test_schema_has_the_device_cpu_columns() -> None:
    kinds = {c.name: c for c in RESULT_COLUMNS}
    assert kinds["device_cpu_model"].type == "string"
    assert kinds["device_cpu_flags"].type == "list<string>"
    assert "measure stage ran" in kinds["device_cpu_model"].doc
    assert "measure stage ran" in kinds["device_cpu_flags"].doc
    assert SCHEMA_VERSION == 1  # nullable columns added: no version bump


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="no /proc/cpuinfo here")
def test_device_cpu_reads_this_machine() -> None:
    cpu, note = device_cpu()
    assert note is None
    assert_row_has_this_cpu(cpu)


def test_device_cpu_from_recorded_cpuinfo() -> None:
    cpu, note = device_cpu(CPUINFO / "rpi5-cortex-a76.txt")
    assert note is None
    assert cpu == {
        "device_cpu_model": "Raspberry Pi 5 Model B Rev 1.0 (4x Cortex-A76)",
        "device_cpu_flags": ["asimd", "asimddp", "asimdhp", "fphp"],
    }
    cpu, _ = device_cpu(CPUINFO / "x86-amd-epyc-kvm.txt")
    assert cpu["device_cpu_flags"] == ["avx2", "fma", "f16c"]
    assert cpu["device_cpu_model"].startswith("AMD EPYC")


def test_device_cpu_without_cpuinfo_says_why(tmp_path: Path) -> None:
    cpu, note = device_cpu(tmp_path / "absent")
    assert cpu["device_cpu_flags"] is None
    assert note is not None and note.startswith("device_cpu_flags empty: ")
    assert "absent is not readable (FileNotFoundError)" in note


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="no /proc/cpuinfo here")
def test_local_rows_carry_this_cpu(tmp_path: Path, tiny_onnx: Path) -> None:
    """A cell run by the local runner stores the CPU the measure process ran on."""
    import pandas as pd

    from tests.conftest import run_qbench, write_suite

    suite = write_suite(
        tmp_path,
        f"""
        name: device-cpu
        models:
          - name: onnx_file
            label: tiny
            params: {{path: {tiny_onnx}, dataset: digits}}
        methods: [fp32]
        backends: [onnxruntime]
        measurement: {{warmup: 2, min_iters: 10, min_seconds: 0.05, timeout_s: 120}}
        accuracy: {{samples: 50}}
    """,
    )
    store = tmp_path / "store"
    proc = run_qbench("run", str(suite), "--store", str(store), "--no-report", "--json")
    assert proc.returncode == 0, proc.stderr
    [row] = pd.read_parquet(store / "results").to_dict("records")
    assert row["status"] == "ok" and row["transport"] == "subprocess"
    assert_row_has_this_cpu(row)
    run = pd.read_parquet(store / "runs").iloc[0]
    assert list(row["device_cpu_flags"]) == list(run["cpu_flags"])  # same machine here


# --- the report's warning ----------------------------------------------------------------------


def _cell(name: str, **extra: Any) -> dict[str, Any]:
    transport = extra.pop("transport", "subprocess")
    row = {
        "cell_id": f"digits_cnn/dynamic_int8/onnxruntime/{name}/b1/t1",
        "suite": "hw",
        "model": "digits_cnn",
        "method": "dynamic_int8",
        "backend": "onnxruntime",
        "device": name,
        "device_kind": "cpu",
        "transport": transport,
        "batch": 1,
        "threads": 1,
        "status": "ok",
        "execution": "native",
        "act_dtype": "uint8",
        "weight_dtype": "int8",
        "latency_p50_ms": 1.0,
        "started_at": T0,
    }
    row.update(extra)
    return row


def _store(
    root: Path, host_flags: list[str], rows: list[dict[str, Any]], run_id: str = RUN_ID
) -> Path:
    from qbench.store.parquet import RunWriter

    writer = RunWriter(
        root,
        {
            "run_id": run_id,
            "suite": "hw",
            "suite_path": "suites/hw.yaml",
            "suite_sha256": "ef" * 32,
            "started_at": T0,
            "host": "bench",
            "cpu_model": "some x86",
            "cpu_flags": host_flags,
            "cores_logical": 2,
            "packages_json": json.dumps({}),
        },
    )
    for row in rows:
        writer.append(row)
    writer.finish(finished_at=T0 + timedelta(minutes=5), cells_total=len(rows), cells_excluded=0)
    return root


def _warned(root: Path) -> dict[str, str | None]:
    """device -> short warning label, as the report computes it from the stored store."""
    from qbench.report.hardware import hardware_warnings
    from qbench.store.parquet import load

    runs, results = load(root)
    _, shorts = hardware_warnings(results, runs)
    return dict(zip(results["device"], shorts, strict=True))


def test_host_with_vnni_device_without_warns_that_row_only(tmp_path: Path) -> None:
    rows = [
        _cell("local", device_cpu_flags=WITH_VNNI),
        _cell("old-local"),  # no device flags: the run's (VNNI) flags apply
        _cell("box", transport="ssh", device_cpu_flags=NO_VNNI, device_cpu_model="old x86"),
        _cell("pi", transport="ssh", device_cpu_flags=["asimd", "asimddp"]),
    ]
    warned = _warned(_store(tmp_path / "s", WITH_VNNI, rows))
    assert warned == {
        "local": None,
        "old-local": None,
        "box": "no VNNI: little int8 gain",
        "pi": None,
    }
    from qbench.report import build_report_html
    from qbench.store.parquet import load

    page = build_report_html(*load(tmp_path / "s"), title="hw")
    start = page.index('id="hardware-warnings"')
    banner = page[start : page.index("</div>", start)]
    assert "1 row(s)" in banner
    assert "digits_cnn/dynamic_int8/onnxruntime/box/b1/t1" in banner
    assert "(flags: avx2 fma f16c)" in banner


def test_host_without_vnni_device_with_vnni_gets_no_warning(tmp_path: Path) -> None:
    rows = [
        _cell("box", transport="ssh", device_cpu_flags=WITH_VNNI),
        _cell("local", device_cpu_flags=NO_VNNI),
        _cell("old-local"),  # no device flags, ran on the host: the run's flags (no VNNI)
        _cell("old-remote", transport="ssh"),  # no device flags, not the host: unknown
        _cell("adb-native", transport="adb"),  # benchmark_model row: unknown
        _cell("node", executor_host="other-node"),  # a fleet node, not the run's host
        _cell("node-here", executor_host="bench"),  # a fleet node on the run's host
    ]
    warned = _warned(_store(tmp_path / "s", NO_VNNI, rows))
    gain = "no VNNI: little int8 gain"
    assert warned == {
        "box": None,
        "local": gain,
        "old-local": gain,
        "old-remote": None,
        "adb-native": None,
        "node": None,
        "node-here": gain,
    }


def test_store_from_before_the_columns_falls_back_to_run_flags(tmp_path: Path) -> None:
    """A results file written without device_cpu_* still loads and warns from its run's
    flags, next to a newer run's file that has them."""
    import pyarrow.parquet as pq

    old_rows = [_cell("old-local"), _cell("old-remote", transport="ssh")]
    store = _store(tmp_path / "s", NO_VNNI, old_rows)
    path = store / "results" / f"{RUN_ID}.parquet"
    table = pq.read_table(path).drop_columns(["device_cpu_model", "device_cpu_flags"])
    pq.write_table(table, path)
    assert "device_cpu_flags" not in pq.read_schema(path).names
    new_rows = [_cell("new-remote", transport="ssh", device_cpu_flags=NO_VNNI)]
    _store(store, WITH_VNNI, new_rows, run_id="20250302T090000Z-eeeeee")
    gain = "no VNNI: little int8 gain"
    assert _warned(store) == {"old-local": gain, "old-remote": None, "new-remote": gain}
