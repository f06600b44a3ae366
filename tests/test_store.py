"""The Parquet store: round trip of every column kind, schema versioning, journal recovery,
and files that other tools read without qbench."""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from qbench.store import parquet as store
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
        "prefill_lengths": [128, 512],  # a causal LM's (list<int64>)
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
            "list<int64>",
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
    writer.close()  # as if killed: no finish()
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


# --- readers never write; a live run is never finalised --------------------------------------

LIVE_WRITER = """
import sys
from qbench.store.parquet import RunWriter
from tests.test_store import result_row, run_row

writer = RunWriter(sys.argv[1], run_row(sys.argv[2]))
print("ready", flush=True)
for line in sys.stdin:  # "N": append N more rows, then say so
    for _ in range(int(line)):
        i = len(writer.rows) + 1
        writer.append(result_row(i, float(i)))
    print("appended", len(writer.rows), flush=True)
"""


class LiveWriter:
    """A RunWriter in a child process, driven through its stdin: each call returns once the
    child says its rows are journalled (a pipe, not a sleep, is the synchronisation)."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LIVE_WRITER, str(root), run_id],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.rows = 0
        assert self._said() == "ready"

    def _said(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()  # "" if the child died: the test fails

    def append(self, n: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        self.rows += n
        assert self._said() == f"appended {self.rows}"

    def kill_9(self) -> None:
        self.proc.kill()  # SIGKILL: no finish(), no interpreter shutdown
        self.proc.wait()
        assert self.proc.returncode == -signal.SIGKILL


@pytest.fixture
def live_writer() -> Iterator[Callable[[Path, str], LiveWriter]]:
    started: list[LiveWriter] = []

    def start(root: Path, run_id: str) -> LiveWriter:
        started.append(LiveWriter(root, run_id))
        return started[-1]

    yield start
    for writer in started:
        if writer.proc.poll() is None:
            writer.kill_9()


def _snapshot(root: Path) -> dict[str, tuple[bytes | None, int, int]]:
    """Every path under root (root included): bytes (None for a folder), inode and mtime; a
    folder's mtime changes when anything in it is created, renamed or deleted."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.stat()
        data = None if path.is_dir() else path.read_bytes()
        out[str(path.relative_to(root))] = (data, st.st_ino, st.st_mtime_ns)
    return out


def test_a_read_during_a_live_run_then_kill_9_loses_no_row(
    tmp_path: Path, live_writer: Callable[[Path, str], LiveWriter]
) -> None:
    """The reported loss: `load` finalised and deleted a live run's journal, so the rows its
    writer appended after the read went to a deleted file, and a kill -9 lost them."""
    writer = live_writer(tmp_path, "live")
    writer.append(2)
    journal = tmp_path / "journal" / "live.jsonl"
    before = _snapshot(tmp_path)
    runs, results = load(tmp_path)
    assert list(runs["run_state"]) == ["running"]
    assert list(results["latency_p50_ms"]) == [1.0, 2.0]
    assert recover_journals(tmp_path) == []  # the writer's side leaves a live run alone too
    assert _snapshot(tmp_path) == before  # byte for byte, same inode, nothing created
    writer.append(3)  # rows measured after the read
    _, results = load(tmp_path)
    assert list(results["latency_p50_ms"]) == [1.0, 2.0, 3.0, 4.0, 5.0]
    writer.kill_9()
    runs, results = load(tmp_path)
    assert list(runs["run_state"]) == ["interrupted"]
    assert list(results["latency_p50_ms"]) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert journal.exists()
    assert recover_journals(tmp_path) == ["live"]
    assert not journal.exists()
    runs, results = load(tmp_path)
    # finalised, but never finished: still interrupted (what --resume continues)
    assert list(runs["run_state"]) == ["interrupted"] and pd.isna(runs["finished_at"].iloc[0])
    assert list(results["latency_p50_ms"]) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_readers_write_nothing(
    tmp_path: Path, live_writer: Callable[[Path, str], LiveWriter]
) -> None:
    """load and run_rows on a store holding every kind of file change no byte, inode or
    folder; each run is read from the right place and gets its state."""
    _two_run_store(tmp_path)  # r1, r2 finished
    resumed = RunWriter.reopen(tmp_path, "r2")  # r2 resumed, then stopped: Parquet + journal
    resumed.append(result_row(1, 80.0))  # re-measures r2's only cell
    resumed.append(result_row(2, 9.0))
    resumed.close()
    dead = RunWriter(tmp_path, run_row("dead"))  # stopped without finishing
    dead.append(result_row(1, 5.0))
    dead.close()
    live = live_writer(tmp_path, "live")
    live.append(1)
    (tmp_path / "results" / "junk.parquet").write_bytes(b"PAR1 not parquet PAR1")
    (tmp_path / "results" / "half.parquet.tmp").write_bytes(b"PAR1")
    (tmp_path / "journal" / "junk.jsonl").write_bytes(b"\x00\xff{not json\n")
    (tmp_path / "journal" / "x.jsonl.tmp").write_bytes(b"left by a kill")
    bare = tmp_path / "bare"
    bare.mkdir()
    before = _snapshot(tmp_path)

    said: list[str] = []
    runs, results = load(tmp_path, warn=said.append)
    load(bare)
    rows_of = {run_id: run_rows(tmp_path, run_id, warn=said.append) for run_id in runs["run_id"]}
    assert _snapshot(tmp_path) == before

    assert dict(zip(runs["run_id"], runs["run_state"], strict=True)) == {
        "r1": "finished",
        "r2": "interrupted",
        "dead": "interrupted",
        "live": "running",
    }
    p50s = results.groupby("run_id")["latency_p50_ms"].apply(sorted).to_dict()
    assert p50s == {"r1": [1.0, 2.0, 4.0], "r2": [9.0, 80.0], "dead": [5.0], "live": [1.0]}
    assert {k: sorted(r["latency_p50_ms"] for r in v[1]) for k, v in rows_of.items()} == p50s
    assert len(said) == 2, said  # one line per bad file; the *.tmp files are not read
    assert said[0] == said[0].strip() and "\n" not in "".join(said)
    assert any(m.startswith(f"qbench: warning: {tmp_path}/journal/junk.jsonl: ") for m in said)
    assert any(m.startswith(f"qbench: warning: {tmp_path}/results/junk.parquet: ") for m in said)
    assert all(m.endswith("; skipped") for m in said)


def test_corrupt_files_are_skipped_with_one_warning_each(tmp_path: Path) -> None:
    _two_run_store(tmp_path)
    (tmp_path / "results" / "junk.parquet").write_bytes(b"PAR1\x00\xffnot parquet")
    (tmp_path / "runs" / "junk.parquet").write_bytes(b"")
    (tmp_path / "results" / "half.parquet.tmp").write_bytes(b"PAR1")  # ignored: not *.parquet
    # A Parquet file of the wrong types cannot join the others; one of compatible types can.
    wrong = pd.DataFrame({"run_id": ["w"], "cell_id": ["c"], "latency_p50_ms": ["fast"]})
    wrong.to_parquet(tmp_path / "results" / "wrong.parquet")
    other = pd.DataFrame({"run_id": ["o"], "cell_id": ["c"], "latency_p50_ms": [64]})
    other.to_parquet(tmp_path / "results" / "other.parquet")
    writer = RunWriter(tmp_path, run_row("r3"))
    writer.append(result_row(1, 16.0))
    writer.close()  # as if killed
    journal = writer.journal_path
    with journal.open("ab") as fh:  # bad bytes, a good row, a row of bad types, a torn line
        fh.write(b"\xff\xfe garbage\n")
        row = {**result_row(2, 32.0), "run_id": "r3", "schema_version": SCHEMA_VERSION}
        fh.write(json.dumps({"kind": "result", "row": row}, default=str).encode() + b"\n")
        bad = {**result_row(3, 1.0), "run_id": "r3", "iters": "many"}
        fh.write(json.dumps({"kind": "result", "row": bad}, default=str).encode() + b"\n")
        fh.write(b'{"kind": "result", "ro')
    (tmp_path / "journal" / "empty.jsonl").write_bytes(b"")
    damaged = journal.read_bytes()

    said: list[str] = []
    _runs, results = load(tmp_path, warn=said.append)
    assert sorted(results["latency_p50_ms"]) == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    assert sorted(said) == sorted(set(said)) and len(said) == 5, said
    assert all(m.startswith("qbench: warning: ") and m.endswith("; skipped") for m in said)
    by_file = {Path(m.split(": ")[2]).name: m for m in said}
    assert set(by_file) == {"junk.parquet", "wrong.parquet", "r3.jsonl", "empty.jsonl"}
    assert sum(f"{tmp_path}/runs/junk.parquet:" in m for m in said) == 1
    assert re.search(
        r"column latency_p50_ms is (large_)?string, not float64", by_file["wrong.parquet"]
    )
    assert "1 unreadable line(s)" in by_file["r3.jsonl"]  # not the torn last line
    assert "column iters: 'many' is not int64" in by_file["r3.jsonl"]

    # The writer's side finalises what it can read and keeps the journal aside, whole.
    said.clear()
    assert recover_journals(tmp_path, warn=said.append) == ["r3"]
    assert not journal.exists()
    assert (tmp_path / "journal" / "r3.jsonl.damaged").read_bytes() == damaged
    assert len(said) == 2 and "r3.jsonl.damaged" in said[1]  # and empty.jsonl, left
    assert (tmp_path / "journal" / "empty.jsonl").exists()
    _, results = load(tmp_path, warn=None)
    assert sorted(results["latency_p50_ms"]) == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    assert sorted(pd.read_parquet(tmp_path / "results" / "r3.parquet")["batch"]) == [1, 2]


def test_recovery_leaves_a_journal_without_a_run_entry_untouched(tmp_path: Path) -> None:
    (tmp_path / "journal").mkdir()
    journal = tmp_path / "journal" / "r9.jsonl"
    row = {**result_row(1, 1.0), "run_id": "r9"}
    journal.write_text(json.dumps({"kind": "result", "row": row}, default=str) + "\n")
    before = _snapshot(tmp_path)
    said: list[str] = []
    assert recover_journals(tmp_path, warn=said.append) == []
    assert _snapshot(tmp_path) == before
    assert said == [f"qbench: warning: {journal}: no readable run entry; left as it is"]


# --- a row that does not fit --------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("peak_rss_mb", "many", "column peak_rss_mb: 'many' is not float64"),
        ("quantized_nodes", "many", "column quantized_nodes: 'many' is not int64"),
        ("batch", 2.5, "column batch: 2.5 is not int64"),
        ("started_at", "yesterday", "column started_at: 'yesterday' is not timestamp"),
        ("notes", [1], "column notes: [1] is not list<string>"),
        ("artifact_cached", "maybe", "column artifact_cached: 'maybe' is not bool"),
    ],
)
def test_a_value_of_the_wrong_type_names_its_column(
    tmp_path: Path, column: str, value: Any, message: str
) -> None:
    writer = RunWriter(tmp_path, run_row("r1"))
    writer.append(result_row(1, 1.0))
    journalled = writer.journal_path.read_bytes()
    with pytest.raises(RowError) as caught:
        writer.append(result_row(2, 2.0, **{column: value}))
    assert str(caught.value) == message and isinstance(caught.value, ValueError)
    assert writer.journal_path.read_bytes() == journalled  # the row never reached the journal
    writer.append(result_row(3, 3.0))  # the writer goes on
    writer.finish(finished_at=T0)
    _, results = load(tmp_path)
    assert list(results["latency_p50_ms"]) == [1.0, 3.0]


# --- resume -----------------------------------------------------------------------------------


def test_reopen_continues_a_run_and_later_rows_replace_earlier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "REOPEN_WAIT_S", 0.1)
    writer = RunWriter(tmp_path, run_row("r1"))
    writer.append(result_row(1, 1.0))
    writer.append(result_row(2, 2.0, status="failed"))
    writer.finish(finished_at=T0)
    again = RunWriter.reopen(tmp_path, "r1")
    with pytest.raises(ValueError, match="still running"):
        RunWriter.reopen(tmp_path, "r1")
    runs, results = load(tmp_path)  # while reopened: the journal (every row) is what is read
    assert list(runs["run_state"]) == ["running"] and pd.isna(runs["finished_at"].iloc[0])
    assert list(results["latency_p50_ms"]) == [1.0, 2.0]
    again.append(result_row(2, 2.5))
    again.append(result_row(3, 3.0))
    _, results = load(tmp_path)
    assert list(results["latency_p50_ms"]) == [1.0, 2.5, 3.0]
    again.finish(finished_at=T0 + timedelta(hours=1))
    run, rows = run_rows(tmp_path, "r1")
    assert run["finished_at"] == T0 + timedelta(hours=1)
    assert [r["latency_p50_ms"] for r in rows] == [1.0, 2.5, 3.0]
    assert all(r["status"] == "ok" for r in rows)
    runs, results = load(tmp_path)
    assert len(runs) == 1 and list(runs["run_state"]) == ["finished"]
    assert list(results["latency_p50_ms"]) == [1.0, 2.5, 3.0]
    assert not list((tmp_path / "journal").iterdir())  # no journal, no temporary file
    assert list(pd.read_parquet(tmp_path / "results")["latency_p50_ms"]) == [1.0, 2.5, 3.0]


def test_reopen_of_a_resumed_run_that_was_killed(tmp_path: Path) -> None:
    """Parquet and an abandoned journal of one run: the journal's rows win cell by cell."""
    writer = RunWriter(tmp_path, run_row("r1"))
    writer.append(result_row(1, 1.0))
    writer.append(result_row(2, 2.0, status="failed"))
    writer.finish(finished_at=T0)
    again = RunWriter.reopen(tmp_path, "r1")
    again.append(result_row(4, 4.0))
    again.close()  # as if killed
    runs, results = load(tmp_path)
    assert list(runs["run_state"]) == ["interrupted"]
    assert list(results["latency_p50_ms"]) == [1.0, 2.0, 4.0]
    third = RunWriter.reopen(tmp_path, "r1")
    assert [r["latency_p50_ms"] for r in third.rows] == [1.0, 2.0, 4.0]
    third.append(result_row(2, 2.5))
    third.finish(finished_at=T0)
    _, rows = run_rows(tmp_path, "r1")
    assert [(r["batch"], r["latency_p50_ms"], r["status"]) for r in rows] == [
        (1, 1.0, "ok"),
        (2, 2.5, "ok"),
        (4, 4.0, "ok"),
    ]


def test_reopen_refuses_a_run_whose_writer_lives(
    tmp_path: Path,
    live_writer: Callable[[Path, str], LiveWriter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store, "REOPEN_WAIT_S", 0.1)
    writer = live_writer(tmp_path, "live")
    writer.append(2)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="still running"):
        RunWriter.reopen(tmp_path, "live")
    # The same bytes, and no temporary file left (the writer's side may touch the folder).
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files
    run, rows = run_rows(tmp_path, "live")
    assert run["run_id"] == "live" and [r["batch"] for r in rows] == [1, 2]
    writer.kill_9()
    reopened = RunWriter.reopen(tmp_path, "live")  # once its writer is gone
    reopened.append(result_row(3, 3.0))
    reopened.finish(finished_at=T0)
    _, results = load(tmp_path)
    assert list(results["latency_p50_ms"]) == [1.0, 2.0, 3.0]


def test_reopen_keeps_a_damaged_journal_aside(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path, run_row("r1"))
    writer.append(result_row(1, 1.0))
    writer.close()
    with writer.journal_path.open("ab") as fh:
        fh.write(b"\x00\x01 not json\n")
    damaged = writer.journal_path.read_bytes()
    said: list[str] = []
    again = RunWriter.reopen(tmp_path, "r1", warn=said.append)
    assert len(said) == 1 and "1 unreadable line(s)" in said[0]
    assert (tmp_path / "journal" / "r1.jsonl.damaged").read_bytes() == damaged
    again.append(result_row(2, 2.0))
    again.finish(finished_at=T0)
    _, results = load(tmp_path, warn=None)
    assert list(results["latency_p50_ms"]) == [1.0, 2.0]


def test_reopen_of_an_unknown_run_and_a_taken_run_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no run nope"):
        RunWriter.reopen(tmp_path, "nope")
    with pytest.raises(ValueError, match="no run nope"):
        run_rows(tmp_path, "nope")
    RunWriter(tmp_path, run_row("r1")).finish(finished_at=T0)
    with pytest.raises(ValueError, match="exists already"):
        RunWriter(tmp_path, run_row("r1"))
    assert not list((tmp_path / "journal").iterdir())


# --- kill -9 at every step --------------------------------------------------------------------

STEPPED = """
import json, os, signal, sys
from pathlib import Path
from qbench.store import parquet

root, mode, kill_at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rows = json.loads(Path(sys.argv[4]).read_text())
steps = 0


def counted(fn):
    def step(*args, **kwargs):
        global steps
        if steps == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        steps += 1
        return fn(*args, **kwargs)

    return step


# Every call after which a later reader may find the disk changed: a kill lands before each.
for name in ("replace", "rename", "unlink", "link", "fsync", "ftruncate"):
    setattr(os, name, counted(getattr(os, name)))

if mode == "resume":
    writer = parquet.RunWriter.reopen(root, "r1")
    for row in rows:
        writer.append(row)
        print("appended", row["cell_id"], flush=True)
    writer.finish(finished_at="2024-05-01T11:00:00+00:00")
else:
    parquet.recover_journals(root)
print("steps", steps, flush=True)
"""


def _killed_at_every_step(
    template: Path, work: Path, mode: str, rows: list[dict[str, Any]]
) -> list[tuple[Path, set[str], bool]]:
    """Run `mode` in a child on copies of the store at `template`, once uncut and once killed
    -9 before each of its file system steps: (copy, cells appended by then, uncut?)."""
    rows_file = work / "rows.json"
    rows_file.write_text(json.dumps(rows, default=str))

    def start(kill_at: int) -> tuple[Path, subprocess.Popen[str]]:
        root = work / f"kill-{kill_at}"
        shutil.copytree(template, root)
        argv = [sys.executable, "-c", STEPPED, str(root), mode, str(kill_at), str(rows_file)]
        return root, subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def appended(out: str) -> set[str]:
        return {line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("appended")}

    root, proc = start(-1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    steps = int(out.rsplit("steps ", 1)[1])
    assert steps >= 5, out
    done = [(root, appended(out), True)]
    pending = list(range(steps))
    while pending:  # a few children at a time
        batch = [start(k) for k in pending[:8]]
        pending = pending[8:]
        for root, proc in batch:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == -signal.SIGKILL, err
            done.append((root, appended(out), False))
    return done


def _cells(results: pd.DataFrame) -> dict[str, tuple[float, str]]:
    assert results["cell_id"].is_unique
    return {
        r.cell_id: (r.latency_p50_ms, r.status)
        for r in results[["cell_id", "latency_p50_ms", "status"]].itertuples()
    }


# ("interrupted", a journal without Parquet, lies between these two: it is what the resumed
# run's old journal is without the Parquet files beside it.)
@pytest.mark.parametrize("start", ["finished", "resumed then killed"])
def test_kill_9_at_every_step_of_a_resume_loses_no_row(tmp_path: Path, start: str) -> None:
    template = tmp_path / "template"
    writer = RunWriter(template, run_row("r1"))
    writer.append(result_row(1, 1.0))
    writer.append(result_row(2, 2.0, status="failed", error="boom"))
    old = {result_row(1, 0)["cell_id"]: (1.0, "ok"), result_row(2, 0)["cell_id"]: (2.0, "failed")}
    writer.finish(finished_at=T0)
    if start == "resumed then killed":
        again = RunWriter.reopen(template, "r1")
        again.append(result_row(4, 4.0))
        again.close()
        old[result_row(4, 0)["cell_id"]] = (4.0, "ok")
    new_rows = [result_row(2, 2.5), result_row(3, 3.0)]
    new = {r["cell_id"]: (r["latency_p50_ms"], "ok") for r in new_rows}

    for root, appended, uncut in _killed_at_every_step(template, tmp_path, "resume", new_rows):
        recover_journals(root, warn=None)  # what the next run does first
        assert not list((root / "journal").glob("*.jsonl")), root
        runs, results = load(root, warn=pytest.fail)
        assert list(runs["run_id"]) == ["r1"]
        finished = runs["finished_at"].notna().all()
        assert list(runs["run_state"]) == ["finished" if finished else "interrupted"]
        cells = _cells(results)
        if uncut:
            assert cells == {**old, **new} and runs["finished_at"].notna().all()
        for cell_id, row in old.items():  # every old row is there, or its re-measured row
            assert cells[cell_id] in (row, new.get(cell_id, row)), root
        for cell_id in appended:  # every row appended before the kill is there
            assert cells[cell_id] == new[cell_id], root
        assert set(cells) <= set(old) | set(new)
        # ... and in Parquet, readable without qbench
        assert len(pd.read_parquet(root / "results")) == len(cells)


def test_kill_9_at_every_step_of_recovery_loses_no_row(tmp_path: Path) -> None:
    template = tmp_path / "template"
    writer = RunWriter(template, run_row("r1"))
    writer.append(result_row(1, 1.0))
    writer.finish(finished_at=T0)
    again = RunWriter.reopen(template, "r1")  # a resumed run, killed: Parquet + journal
    again.append(result_row(2, 2.0))
    again.close()
    with again.journal_path.open("ab") as fh:  # and its journal damaged
        fh.write(b"\xff\n")
    damaged = again.journal_path.read_bytes()
    other = RunWriter(template, run_row("r2"))  # a killed run: journal only
    other.append(result_row(1, 8.0))
    other.close()

    for root, _, _ in _killed_at_every_step(template, tmp_path, "recover", []):
        recover_journals(root, warn=None)
        assert not list((root / "journal").glob("*.jsonl")), root
        kept = [p.read_bytes() for p in (root / "journal").glob("r1.jsonl.damaged*")]
        assert damaged in kept, root
        _, results = load(root, warn=pytest.fail)
        p50s = results.groupby("run_id")["latency_p50_ms"].apply(list).to_dict()
        assert p50s == {"r1": [1.0, 2.0], "r2": [8.0]}, root
