"""A directory of Parquet files: one runs file and one results file per run.

    STORE/runs/<run_id>.parquet      one row: the run and its host fingerprint
    STORE/results/<run_id>.parquet   one row per cell
    STORE/journal/<run_id>.jsonl     rows as they are measured, until the run is finalised

Each measured row is appended to the journal and flushed (fsync) before the next cell starts,
so a run killed midway loses nothing. The writer holds an exclusive lock on its journal for its
whole life: readers (`load`, `run_rows`) tell a live run from a dead one by it, show both, and
never write. Only a writer finalises a dead run's journal into Parquet (`recover_journals`,
which `qbench run` calls first). A file that cannot be read is skipped with a one-line warning.
Readable without qbench: `pandas.read_parquet("STORE/results")` or duckdb's
`read_parquet('STORE/results/*.parquet', union_by_name=true)`.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from qbench.store.schema import (
    RESULT_COLUMNS,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    Column,
)


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {
        "string": pa.string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "list<float64>": pa.list_(pa.float64()),
        "list<string>": pa.list_(pa.string()),
    }[kind]


def _schema(columns: tuple[Column, ...]) -> Any:
    import pyarrow as pa

    fields = [pa.field(c.name, _arrow_type(c.type), metadata={"doc": c.doc}) for c in columns]
    return pa.schema(fields, metadata={"qbench_schema_version": str(SCHEMA_VERSION)})


def _coerce(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "timestamp" and isinstance(value, str):
        return datetime.fromisoformat(value)
    if kind == "float64" and isinstance(value, float) and value != value:  # NaN -> null
        return None
    return value


def _table(rows: list[dict[str, Any]], columns: tuple[Column, ...]) -> Any:
    import pyarrow as pa

    unknown = sorted({k for r in rows for k in r} - {c.name for c in columns})
    if unknown:
        raise ValueError(f"rows carry columns the schema does not define: {unknown}")
    data = {c.name: [_coerce(r.get(c.name), c.type) for r in rows] for c in columns}
    try:
        return pa.Table.from_pydict(data, schema=_schema(columns))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        raise _row_error(rows, columns) from None


class RowError(ValueError):
    """A row value that its column's type cannot hold; str() names column, value and type."""


def _row_error(rows: list[dict[str, Any]], columns: tuple[Column, ...]) -> RowError:
    """Find the value pyarrow refused (its own message names no column)."""
    import pyarrow as pa

    for c in columns:
        for r in rows:
            value = _coerce(r.get(c.name), c.type)
            try:
                pa.array([value], type=_arrow_type(c.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
                text = repr(value)
                text = text if len(text) <= 60 else text[:57] + "..."
                return RowError(f"column {c.name}: {text} is not {c.type}")
    return RowError("a row does not fit the store's schema")


def _json_default(value: Any) -> Any:
    """Journal encoding of what json cannot write: numpy scalars and arrays as numbers (str()
    would turn them into text that no int64/bool column accepts on recovery), datetimes as
    ISO 8601."""
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    return str(value)


Warn = Callable[[str], None]


def warn_stderr(message: str) -> None:
    print(f"qbench: warning: {message}", file=sys.stderr)


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, default=_json_default) + "\n"


class RunWriter:
    """Writes one run into a store: journal as it goes, Parquet at the end. Holds an exclusive
    lock on the journal while it lives (a reader sees the run as running)."""

    def __init__(self, root: str | Path, run: dict[str, Any]) -> None:
        self.root = Path(root)
        self.run = {**run, "schema_version": SCHEMA_VERSION}
        self.run_id: str = run["run_id"]
        _table([self.run], RUN_COLUMNS)  # fail now, not at finish() (see append)
        for sub in ("runs", "results", "journal"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.journal_path = self.root / "journal" / f"{self.run_id}.jsonl"
        self._journal = self.journal_path.open("a", encoding="utf-8")
        fcntl.flock(self._journal, fcntl.LOCK_EX)
        self._write_line({"kind": "run", "row": self.run})
        self.rows: list[dict[str, Any]] = []

    @classmethod
    def reopen(cls, root: str | Path, run_id: str) -> RunWriter:
        """Continue a finished or interrupted run (`qbench run --resume`): its rows are kept,
        rows appended now for a cell replace its earlier row when the run is finished again.
        Crash-safe: a fresh journal holding the run and every row so far is written and synced
        before it replaces anything, so a kill at any point loses no row."""
        root = Path(root)
        journal = root / "journal" / f"{run_id}.jsonl"
        if _is_live(journal):
            raise ValueError(f"run {run_id} is still running (its journal {journal} is locked)")
        run, rows = run_rows(root, run_id)
        self = cls.__new__(cls)
        self.root, self.run_id = root, run_id
        self.run = {**run, "finished_at": None, "schema_version": SCHEMA_VERSION}
        self.rows = list(rows)
        self.journal_path = journal
        journal.parent.mkdir(parents=True, exist_ok=True)
        tmp = journal.with_name(journal.name + ".tmp")
        self._journal = tmp.open("w", encoding="utf-8")
        fcntl.flock(self._journal, fcntl.LOCK_EX)  # the lock goes with the file when renamed
        self._journal.write(_line({"kind": "run", "row": self.run}))
        for row in rows:
            self._journal.write(_line({"kind": "result", "row": row}))
        self._journal.flush()
        os.fsync(self._journal.fileno())
        tmp.replace(journal)
        return self

    def _write_line(self, obj: dict[str, Any]) -> None:
        self._journal.write(_line(obj))
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def append(self, row: dict[str, Any]) -> None:
        """Journal one row. A value its column cannot hold raises RowError naming the column;
        the row is not journalled and the writer stays usable."""
        row = {**row, "schema_version": SCHEMA_VERSION, "run_id": self.run_id}
        # Validate before the row reaches the journal: a row that cannot become Parquet would
        # otherwise fail finish() and then every later load() of the whole store.
        _table([row], RESULT_COLUMNS)
        self.rows.append(row)
        self._write_line({"kind": "result", "row": row})

    def finish(self, **run_updates: Any) -> Path:
        _table([{**self.run, **run_updates}], RUN_COLUMNS)
        self.run.update(run_updates)
        self._write_line({"kind": "run", "row": self.run})
        try:
            return _write_parquet(self.root, self.run, self.rows, self.journal_path)
        finally:
            self._journal.close()  # releases the lock, after the journal is gone


def latest_per_cell(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell_id, the last written (a resumed run's re-measured cell replaces its
    failed row), in the order cells first appeared."""
    latest: dict[Any, dict[str, Any]] = {}
    for row in rows:
        latest[row.get("cell_id")] = row
    return list(latest.values())


def _write_parquet(
    root: Path, run: dict[str, Any], rows: list[dict[str, Any]], journal: Path | None
) -> Path:
    import pyarrow.parquet as pq

    run_id = run["run_id"]
    results_path = root / "results" / f"{run_id}.parquet"
    # Write to a temporary name, then rename: a reader never sees half a file.
    for table, path in (
        (_table(latest_per_cell(rows), RESULT_COLUMNS), results_path),
        (_table([run], RUN_COLUMNS), root / "runs" / f"{run_id}.parquet"),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
    if journal is not None:
        journal.unlink(missing_ok=True)
    return results_path


def _is_live(journal: Path) -> bool:
    """Its writer holds the lock (a non-blocking shared lock fails). Never blocks."""
    try:
        fh = journal.open("rb")
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _read_journal(
    journal: Path, warn: Warn | None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The run row (its last version) and result rows of a journal. Lines that are not UTF-8
    JSON are skipped, with one warning for the file (a last line cut short by a kill is the
    expected end of a killed run, not worth one)."""
    run: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    data = journal.read_bytes()
    lines = data.split(b"\n")
    bad = 0
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
            kind, row = entry.get("kind"), entry["row"]
            if not isinstance(row, dict):
                raise TypeError("row is not an object")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            if i != len(lines) - 1:  # the last line has no newline only when cut by a kill
                bad += 1
            continue
        if kind == "run":
            run = row
        elif kind == "result":
            rows.append(row)
    if bad and warn:
        warn(f"{journal}: {bad} line(s) are not readable journal entries; skipped")
    return run, rows


def recover_journals(root: str | Path, warn: Warn | None = warn_stderr) -> list[str]:
    """Finalise journals left by runs whose writer is gone (killed) into Parquet; a live run's
    journal is never touched. The writer's side: `qbench run` calls it first. Returns the run
    ids finalised."""
    root = Path(root)
    recovered = []
    for journal in sorted((root / "journal").glob("*.jsonl")):
        try:
            fh = journal.open("rb")
        except OSError:
            continue
        with fh:
            try:  # hold the lock while finalising: a second recoverer waits its turn
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live run
            if not journal.exists():
                continue  # finalised by another process meanwhile
            run, rows = _read_journal(journal, warn)
            if run is None:
                if warn:
                    warn(f"{journal}: no run entry; left as it is")
                continue
            good = []
            for row in rows:
                try:
                    _table([row], RESULT_COLUMNS)
                    good.append(row)
                except ValueError as exc:
                    if warn:
                        warn(f"{journal}: a row of cell {row.get('cell_id')} skipped ({exc})")
            try:
                _write_parquet(root, run, good, journal)
            except ValueError as exc:
                if warn:
                    warn(f"{journal}: cannot be finalised ({exc}); left as it is")
                continue
        recovered.append(run["run_id"])
    return recovered


def _journal_runs(
    root: Path, warn: Warn | None
) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]], str]]:
    """{run_id: (run, rows, state)} of every readable journal, read only."""
    out = {}
    for journal in sorted((root / "journal").glob("*.jsonl")):
        try:
            live = _is_live(journal)
            warned: list[str] = []
            run, rows = _read_journal(journal, warned.append)
            said = bool(warned)
            if warn:
                for message in warned:
                    warn(message)
        except OSError as exc:
            if warn:
                warn(f"{journal}: cannot be read ({exc.strerror}); skipped")
            continue
        if run is None or "run_id" not in run:
            if warn and not said:  # one warning per file
                warn(f"{journal}: no readable run entry; skipped")
            continue
        state = "running" if live else ("finished" if run.get("finished_at") else "interrupted")
        out[str(run["run_id"])] = (run, latest_per_cell(rows), state)
    return out


def _frames_of(items: list[tuple[Any, str]], columns: tuple[Column, ...]) -> Any:
    import pandas as pd
    import pyarrow as pa

    tables = [t for t, _ in items]
    if not tables:
        return pd.DataFrame(columns=[c.name for c in columns])
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def run_rows(root: str | Path, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run row and result rows of one run (its journal where it has one), read only."""
    import pyarrow.parquet as pq

    root = Path(root)
    journal = root / "journal" / f"{run_id}.jsonl"
    if journal.exists():
        run, rows = _read_journal(journal, warn_stderr)
        if run is not None:
            return run, latest_per_cell(rows)
    runs_file = root / "runs" / f"{run_id}.parquet"
    if not runs_file.exists():
        raise ValueError(f"{root}: no run {run_id}")
    run = pq.read_table(runs_file).to_pylist()[0]
    results_file = root / "results" / f"{run_id}.parquet"
    rows = pq.read_table(results_file).to_pylist() if results_file.exists() else []
    known = {c.name for c in RESULT_COLUMNS}
    rows = [{k: v for k, v in r.items() if k in known and v is not None} for r in rows]
    run = {k: v for k, v in run.items() if v is not None and k in {c.name for c in RUN_COLUMNS}}
    return run, rows


def load(root: str | Path, warn: Warn | None = warn_stderr) -> tuple[Any, Any]:
    """Both tables of a store as pandas DataFrames: (runs, results). Read only: a run still
    going (or killed) is read from its journal, and the runs frame says which in `run_state`
    (finished, running, interrupted). A file that cannot be read is skipped with a warning."""
    import pyarrow.parquet as pq

    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a store directory" if root.exists() else "no such store directory"
        raise FileNotFoundError(f"{root}: {what}")
    journals = _journal_runs(root, warn)
    frames = []
    for columns, sub in ((RUN_COLUMNS, "runs"), (RESULT_COLUMNS, "results")):
        items = []
        for path in sorted((root / sub).glob("*.parquet")):
            if path.stem in journals:
                continue  # the journal is newer (a resumed run, or one being finalised)
            try:
                items.append((pq.read_table(path), path.stem))
            except Exception as exc:  # pyarrow raises several kinds for a damaged file
                if warn:
                    reason = " ".join(str(exc).split())[:120]
                    warn(f"{path}: not a readable Parquet file ({reason}); skipped")
        for run_id, (run, rows, _) in journals.items():
            picked = [run] if sub == "runs" else rows
            known = {c.name for c in columns}
            picked = [{k: v for k, v in r.items() if k in known} for r in picked]
            try:
                items.append((_table(picked, columns), run_id))
            except ValueError as exc:
                if warn:
                    warn(f"{root / 'journal' / (run_id + '.jsonl')}: rows unreadable ({exc}); "
                         "skipped")  # fmt: skip
        frames.append(_frames_of(items, columns))
    runs, results = frames
    states = {rid: state for rid, (_, _, state) in journals.items()}
    runs["run_state"] = [states.get(str(r), "finished") for r in runs["run_id"]]
    return runs, results
