"""The Parquet store: round trip of every column kind, schema versioning, journal recovery,
and files that other tools read without qbench."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from qbench.store.parquet import RowError, RunWriter, load, recover_journals, run_rows
from qbench.store.schema import RESULT_COLUMNS, RUN_COLUMNS, SCHEMA_VERSION
from tests.conftest import REPO

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


def run_row(run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "suite": "cnn",
        "suite_path": "suites/cnn.yaml",
        "suite_sha256": "abc123",
        "started_at": T0,
        "git_sha": "deadbeef+dirty",
        "host": "bench-1",
        "cpu_model": "Test CPU @ 3 GHz",
        "cpu_flags": ["avx2", "avx512_vnni"],
        "cores_logical": 16,
        "cores_physical": 8,
        "ram_gb": 125.5,
        "os": "Linux 6.1",
        "python": "3.11.9",
        "packages_json": json.dumps({"onnxruntime": "1.20.0"}),
        "cells_total": 3,
        "cells_excluded": 1,
    }


def result_row(i: int, p50: float, **overrides: Any) -> dict[str, Any]:
    samples = [p50 - 0.1, p50, p50 + 0.2]
    row: dict[str, Any] = {
        "cell_id": f"digits_cnn/static_int8/onnxruntime/local/b{i}/t1",
        "suite": "cnn",
        "model": "digits_cnn",
        "model_weights": "trained",
        "model_sha256": "m" * 16,
        "method": "static_int8",
        "method_params_json": json.dumps({"calibrator": "minmax"}),
        "method_sha256": "h" * 16,
        "bits_w": 8,
        "bits_a": 8,
        "granularity": "per_channel",
        "calibrator": "minmax",
        "symmetric_weights": True,
        "act_dtype": "uint8",
        "weight_dtype": "int8",
        "backend": "onnxruntime",
        "runtime_version": "1.20.0",
        "device": "local",
        "device_kind": "cpu",
        "transport": "subprocess",
        "batch": i,
        "threads": 1,
        "status": "ok",
        "error": None,
        "execution": "native",
        "artifact_format": "onnx",
        "artifact_bytes": 12345 + i,
        "artifact_sha256": "a" * 16,
        "calib_sha256": "c" * 16,
        "calib_samples": 64,
        "quantized_nodes": 4,
        "compute_nodes": 4,
        "prepare_s": 1.25,
        "artifact_cached": False,
        "load_s": 0.01,
        "warmup_iters": 2,
        "iters": len(samples),
        "repeats": 1,
        "latency_p50_ms": p50,
        "latency_p90_ms": p50 + 0.15,
        "latency_p99_ms": p50 + 0.19,
        "latency_mean_ms": float(np.mean(samples)),
        "latency_std_ms": float(np.std(samples, ddof=1)),
        "latency_min_ms": p50 - 0.1,
        "latency_ci_low_ms": p50 - 0.1,
        "latency_ci_high_ms": p50 + 0.2,
        "latency_repeat_p50s_ms": [p50],
        "latency_samples_ms": samples,
        "throughput_ips": i * 1000.0 / float(np.mean(samples)),
        "peak_rss_mb": 321.5,
        "accuracy_dataset": "digits",
        "accuracy_samples": 360,
        "top1": 0.97,
        "top5": 1.0,
        "fp32_agreement": 0.99,
        "output_cosine": 0.9999,
        "output_sqnr_db": 31.5,
        "notes": ["optimised graph compute ops: QLinearConv×3", "second note"],
        "started_at": T0 + timedelta(seconds=i),
        "duration_s": 2.5,
    }
    row.update(overrides)
    return row


def test_rows_exercise_every_column_kind() -> None:
    """The rows below use only schema columns and cover every Arrow type the schema uses."""
    kind = {c.name: c.type for c in RESULT_COLUMNS}
    row = result_row(1, 1.0)
    assert set(row) <= set(kind)
    assert (
        {kind[name] for name in row}
        == {c.type for c in RESULT_COLUMNS}
        == {
            "string",
            "int64",
            "float64",
            "bool",
            "list<float64>",
            "list<string>",
            "timestamp",
        }
    )
    run_kind = {c.name: c.type for c in RUN_COLUMNS}
    assert set(run_row("r")) <= set(run_kind)
    assert {run_kind[name] for name in run_row("r")} == {c.type for c in RUN_COLUMNS}


def test_round_trip_of_realistic_rows(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, run_row("r1"))
    rows = [
        result_row(1, 1.5),
        # A timestamp as an ISO string with an offset, a failed cell with empty figures,
        # NaN floats (which must become null) and a bool False.
        result_row(
            8,
            2.5,
            started_at="2024-05-01T12:00:08+02:00",
            status="failed",
            error="RuntimeError: boom",
            top1=math.nan,
            top5=None,
            output_sqnr_db=math.inf,
            quantized_nodes=None,
            artifact_cached=True,
            symmetric_weights=False,
            notes=[],
        ),
    ]
    for row in rows:
        writer.append(row)
    finished = T0 + timedelta(minutes=5)
    path = writer.finish(finished_at=finished)
    assert path == tmp_path / "results" / "r1.parquet" and path.is_file()
    assert not writer.journal_path.exists()

    runs, results = load(tmp_path)
    assert len(runs) == 1 and len(results) == 2
    run = runs.iloc[0]
    assert run["run_id"] == "r1" and run["schema_version"] == SCHEMA_VERSION
    assert list(run["cpu_flags"]) == ["avx2", "avx512_vnni"]
    assert run["cores_logical"] == 16 and run["ram_gb"] == 125.5
    assert run["started_at"] == pd.Timestamp(T0)
    assert run["finished_at"] == pd.Timestamp(finished)
    assert json.loads(run["packages_json"]) == {"onnxruntime": "1.20.0"}

    first, second = (results.set_index("batch").loc[b] for b in (1, 8))
    assert first["cell_id"] == "digits_cnn/static_int8/onnxruntime/local/b1/t1"
    assert first["run_id"] == "r1" and first["schema_version"] == SCHEMA_VERSION
    assert first["bits_w"] == 8 and first["artifact_bytes"] == 12346
    assert first["latency_p50_ms"] == 1.5 and first["top1"] == 0.97
    assert bool(first["symmetric_weights"]) is True
    assert bool(first["artifact_cached"]) is False
    assert list(first["latency_samples_ms"]) == [1.4, 1.5, 1.7]
    assert list(first["latency_repeat_p50s_ms"]) == [1.5]
    assert list(first["notes"]) == ["optimised graph compute ops: QLinearConv×3", "second note"]
    assert first["started_at"] == pd.Timestamp(T0 + timedelta(seconds=1))
    assert pd.isna(first["error"])

    assert second["status"] == "failed" and second["error"] == "RuntimeError: boom"
    assert bool(second["symmetric_weights"]) is False
    assert bool(second["artifact_cached"]) is True
    assert list(second["notes"]) == []
    assert second["output_sqnr_db"] == math.inf
    # 12:00:08+02:00 is 10:00:08 UTC.
    assert second["started_at"] == pd.Timestamp("2024-05-01T10:00:08Z")

    # NaN and None are both stored as null, not as a NaN value.
    table = pq.read_table(path)
    top1 = table.column("top1").to_pylist()
    assert sorted(top1, key=lambda v: v is None) == [0.97, None]
    assert table.column("top5").null_count == 1
    assert table.column("quantized_nodes").to_pylist().count(None) == 1


def test_schema_version_in_tables_and_parquet_metadata(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, run_row("r1"))
    writer.append(result_row(1, 1.0))
    writer.finish(finished_at=T0)
    for sub, columns in (("results", RESULT_COLUMNS), ("runs", RUN_COLUMNS)):
        schema = pq.read_schema(tmp_path / sub / "r1.parquet")
        assert schema.metadata[b"qbench_schema_version"] == str(SCHEMA_VERSION).encode()
        assert schema.names == [c.name for c in columns]
        assert pq.read_table(tmp_path / sub / "r1.parquet").column(
            "schema_version"
        ).to_pylist() == [SCHEMA_VERSION]
        # Each column carries its documentation.
        assert schema.field("run_id").metadata[b"doc"]


def test_two_runs_in_one_store(tmp_path: Path) -> None:
    for run_id, p50s in (("r1", [1.0, 2.0]), ("r2", [3.0])):
        writer = RunWriter(tmp_path, run_row(run_id))
        for i, p50 in enumerate(p50s, 1):
            writer.append(result_row(i, p50))
        writer.finish(finished_at=T0)
    runs, results = load(tmp_path)
    assert sorted(runs["run_id"]) == ["r1", "r2"]
    assert results.groupby("run_id")["latency_p50_ms"].apply(list).to_dict() == {
        "r1": [1.0, 2.0],
        "r2": [3.0],
    }


def test_unknown_column_raises_and_does_not_poison_the_store(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, run_row("r1"))
    writer.append(result_row(1, 1.0))
    with pytest.raises(ValueError, match="not_a_column"):
        writer.append(result_row(2, 1.0, not_a_column=1))
    writer.finish(finished_at=T0)
    _, results = load(tmp_path)
    assert list(results["batch"]) == [1]


def test_unknown_run_column_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mystery"):
        RunWriter(tmp_path, {**run_row("r1"), "mystery": 1})


def test_empty_store_loads_empty_frames(tmp_path: Path) -> None:
    runs, results = load(tmp_path)
    assert runs.empty and results.empty
    assert list(results.columns) == [c.name for c in RESULT_COLUMNS]
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing")


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from qbench.store.parquet import RunWriter
from tests.test_store import result_row, run_row

writer = RunWriter(sys.argv[1], run_row("r1"))
writer.append(result_row(1, 1.5))
# numpy scalars (as a measurement might produce) must survive the journal as numbers.
writer.append(
    result_row(2, 2.5, iters=np.int64(3), artifact_cached=np.bool_(True), top1=np.float64(0.5))
)
os.kill(os.getpid(), signal.SIGKILL)  # no finish(), no interpreter shutdown
"""


def test_killed_run_is_recovered_from_its_journal(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    journal = tmp_path / "journal" / "r1.jsonl"
    assert journal.is_file()
    assert not (tmp_path / "results" / "r1.parquet").exists()

    before = journal.read_bytes()
    runs, results = load(tmp_path)  # a reader: shows the killed run, changes nothing
    assert journal.read_bytes() == before
    assert list(runs["run_state"]) == ["interrupted"]
    assert list(results["latency_p50_ms"]) == [1.5, 2.5]
    assert recover_journals(tmp_path) == ["r1"]  # the writer's side (the next run)
    assert not journal.exists()
    assert (tmp_path / "results" / "r1.parquet").is_file()
    runs, results = load(tmp_path)
    assert list(runs["run_id"]) == ["r1"] and pd.isna(runs["finished_at"].iloc[0])
    assert runs["started_at"].iloc[0] == pd.Timestamp(T0)
    assert list(results["latency_p50_ms"]) == [1.5, 2.5]
    second = results.iloc[1]
    assert second["iters"] == 3 and bool(second["artifact_cached"]) and second["top1"] == 0.5
    assert list(second["latency_samples_ms"]) == [2.4, 2.5, 2.7]
    assert list(second["notes"]) == list(result_row(2, 2.5)["notes"])
    assert second["started_at"] == pd.Timestamp(T0 + timedelta(seconds=2))
    # A second load finds nothing left to recover and reads the same.
    _, again = load(tmp_path)
    assert list(again["latency_p50_ms"]) == [1.5, 2.5]


def test_truncated_last_journal_line_is_dropped(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, run_row("r1"))
    for i, p50 in enumerate([1.0, 2.0, 3.0], 1):
        writer.append(result_row(i, p50))
    writer._journal.close()  # killed: no finish()
    journal = writer.journal_path
    text = journal.read_text(encoding="utf-8")
    journal.write_text(text[: len(text) - 40], encoding="utf-8")  # killed mid-write
    assert len(journal.read_text().splitlines()) == 4  # run line + 3 rows, the last cut short

    _, results = load(tmp_path)
    assert list(results["latency_p50_ms"]) == [1.0, 2.0]
    assert journal.exists()
    recover_journals(tmp_path)
    assert not journal.exists()
    _, results = load(tmp_path)
    assert list(results["latency_p50_ms"]) == [1.0, 2.0]


def test_aware_non_utc_datetime_is_stored_as_the_same_instant(tmp_path: Path) -> None:
    tz = timezone(timedelta(hours=-5))
    writer = RunWriter(tmp_path, run_row("r1"))
    writer.append(result_row(1, 1.0, started_at=datetime(2024, 5, 1, 5, 0, tzinfo=tz)))
    writer.finish(finished_at=T0)
    _, results = load(tmp_path)
    assert results["started_at"].iloc[0] == pd.Timestamp("2024-05-01T10:00:00Z")


def _two_run_store(root: Path) -> list[float]:
    p50s = {"r1": [1.0, 2.0, 4.0], "r2": [8.0]}
    for run_id, values in p50s.items():
        writer = RunWriter(root, run_row(run_id))
        for i, p50 in enumerate(values, 1):
            writer.append(result_row(i, p50))
        writer.finish(finished_at=T0)
    return [v for values in p50s.values() for v in values]


def test_pandas_reads_the_store_without_qbench(tmp_path: Path) -> None:
    p50s = _two_run_store(tmp_path)
    results = pd.read_parquet(tmp_path / "results")
    assert len(results) == 4
    assert sorted(results["latency_p50_ms"]) == sorted(p50s)
    assert set(results["run_id"]) == {"r1", "r2"}
    assert list(results["latency_samples_ms"].iloc[0]) == [0.9, 1.0, 1.2]
    runs = pd.read_parquet(tmp_path / "runs")
    assert sorted(runs["run_id"]) == ["r1", "r2"]


def test_duckdb_reads_the_store_without_qbench(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    p50s = _two_run_store(tmp_path)
    pattern = str(tmp_path / "results" / "*.parquet")
    con = duckdb.connect()
    [(count, avg)] = con.execute(
        f"SELECT count(*), avg(latency_p50_ms) FROM read_parquet('{pattern}')"
    ).fetchall()
    assert count == 4
    assert avg == pytest.approx(sum(p50s) / len(p50s))
    # List columns come through as lists, timestamps as timestamps.
    [(n_samples, first_at)] = con.execute(
        "SELECT sum(len(latency_samples_ms)), epoch(min(started_at)) "
        f"FROM read_parquet('{pattern}')"
    ).fetchall()
    assert n_samples == 12
    assert first_at == (T0 + timedelta(seconds=1)).timestamp()


LIVE_WRITER = """
import sys
from qbench.store.parquet import RunWriter
from tests.test_store import result_row, run_row

writer = RunWriter(sys.argv[1], run_row("live"))
for i in range(int(sys.argv[2])):
    writer.append(result_row(i + 1, float(i + 1)))
print("ready", flush=True)
sys.stdin.readline()  # until the test says
for i in range(int(sys.argv[2]), int(sys.argv[3])):
    writer.append(result_row(i + 1, float(i + 1)))
print("more", flush=True)
sys.stdin.readline()
"""


def _live_writer(root: Path, first: int, total: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LIVE_WRITER, str(root), str(first), str(total)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_readers_never_finalise_a_live_run_and_kill_9_loses_nothing(tmp_path: Path) -> None:
    """The reported loss: a reader finalised a live run's journal, then a kill -9 lost every
    row measured after the read. Readers now only read; the writer-side recovery skips a live
    journal; after the kill every row is there."""
    proc = _live_writer(tmp_path, 2, 5)
    journal = tmp_path / "journal" / "live.jsonl"
    runs, results = load(tmp_path)
    assert list(runs["run_state"]) == ["running"]
    assert list(results["latency_p50_ms"]) == [1.0, 2.0]
    assert recover_journals(tmp_path) == []  # a live run is never finalised
    assert journal.exists() and not (tmp_path / "results" / "live.parquet").exists()
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "more"
    proc.kill()
    proc.wait()
    runs, results = load(tmp_path)
    assert list(runs["run_state"]) == ["interrupted"]
    assert recover_journals(tmp_path) == ["live"]
    _, results = load(tmp_path)
    assert list(results["latency_p50_ms"]) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_corrupt_files_are_skipped_with_one_warning_each(tmp_path: Path) -> None:
    _two_run_store(tmp_path)
    (tmp_path / "results" / "junk.parquet").write_bytes(b"PAR1\x00\xffnot parquet")
    (tmp_path / "runs" / "junk.parquet").write_bytes(b"")
    (tmp_path / "results" / "half.parquet.tmp").write_bytes(b"PAR1")  # ignored: not *.parquet
    writer = RunWriter(tmp_path, run_row("r3"))
    writer.append(result_row(1, 16.0))
    writer._journal.close()  # killed
    with writer.journal_path.open("ab") as fh:  # bad bytes, then a good row after them
        fh.write(b"\xff\xfe garbage\n")
        row = {**result_row(2, 32.0), "run_id": "r3", "schema_version": SCHEMA_VERSION}
        fh.write(json.dumps({"kind": "result", "row": row}, default=str).encode() + b"\n")
    said: list[str] = []
    _runs, results = load(tmp_path, warn=said.append)
    assert sorted(results["latency_p50_ms"]) == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert len(said) == 3, said
    assert any("results/junk.parquet" in m for m in said)
    assert any("runs/junk.parquet" in m for m in said)
    assert any("r3.jsonl" in m and "1 line" in m for m in said)
    assert recover_journals(tmp_path, warn=said.append) == ["r3"]
    _, results = load(tmp_path, warn=None)
    assert sorted(results["latency_p50_ms"]) == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_a_value_of_the_wrong_type_names_its_column(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, run_row("r1"))
    with pytest.raises(RowError, match="column quantized_nodes: 'many' is not int64"):
        writer.append(result_row(1, 1.0, quantized_nodes="many"))
    writer.append(result_row(2, 2.0))  # the writer goes on; the bad row never reached disk
    assert "many" not in writer.journal_path.read_text()
    writer.finish(finished_at=T0)
    _, results = load(tmp_path)
    assert list(results["latency_p50_ms"]) == [2.0]


def test_reopen_continues_a_run_and_later_rows_replace_earlier(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, run_row("r1"))
    writer.append(result_row(1, 1.0))
    writer.append(result_row(2, 2.0, status="failed"))
    writer.finish(finished_at=T0)
    again = RunWriter.reopen(tmp_path, "r1")
    with pytest.raises(ValueError, match="still running"):
        RunWriter.reopen(tmp_path, "r1")
    runs, results = load(tmp_path)  # while reopened: the journal (every row) is what is read
    assert list(runs["run_state"]) == ["running"]
    assert list(results["latency_p50_ms"]) == [1.0, 2.0]
    again.append(result_row(2, 2.5))
    again.append(result_row(3, 3.0))
    again.finish(finished_at=T0 + timedelta(hours=1))
    _run, rows = run_rows(tmp_path, "r1")
    assert [r["latency_p50_ms"] for r in rows] == [1.0, 2.5, 3.0]
    assert all(r["status"] == "ok" for r in rows)
    runs, results = load(tmp_path)
    assert len(runs) == 1 and list(runs["run_state"]) == ["finished"]
    assert list(results["latency_p50_ms"]) == [1.0, 2.5, 3.0]
    assert not list((tmp_path / "journal").glob("*.jsonl"))
