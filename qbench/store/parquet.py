"""A directory of Parquet files: one runs file and one results file per run.

    STORE/runs/<run_id>.parquet      one row: the run and its host fingerprint
    STORE/results/<run_id>.parquet   one row per cell
    STORE/journal/<run_id>.jsonl     rows as they are measured, until the run is finalised

Each measured row is appended to the journal and flushed before the next cell starts, so a
run killed midway loses nothing: `load` finalises any journal it finds into Parquet.
Readable without qbench: `pandas.read_parquet("STORE/results")` or duckdb's
`read_parquet('STORE/results/*.parquet', union_by_name=true)`.
"""

from __future__ import annotations

import json
import os
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
    return pa.Table.from_pydict(data, schema=_schema(columns))


def _json_default(value: Any) -> Any:
    """Journal encoding of what json cannot write: numpy scalars and arrays as numbers (str()
    would turn them into text that no int64/bool column accepts on recovery), datetimes as
    ISO 8601."""
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    return str(value)


class RunWriter:
    """Writes one run into a store: journal as it goes, Parquet at the end."""

    def __init__(self, root: str | Path, run: dict[str, Any]) -> None:
        self.root = Path(root)
        self.run = {**run, "schema_version": SCHEMA_VERSION}
        self.run_id: str = run["run_id"]
        _table([self.run], RUN_COLUMNS)  # fail now, not at finish() (see append)
        for sub in ("runs", "results", "journal"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.journal_path = self.root / "journal" / f"{self.run_id}.jsonl"
        self._journal = self.journal_path.open("a", encoding="utf-8")
        self._write_line({"kind": "run", "row": self.run})
        self.rows: list[dict[str, Any]] = []

    def _write_line(self, obj: dict[str, Any]) -> None:
        self._journal.write(json.dumps(obj, default=_json_default) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def append(self, row: dict[str, Any]) -> None:
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
        self._journal.close()
        return _write_parquet(self.root, self.run, self.rows, self.journal_path)


def _write_parquet(
    root: Path, run: dict[str, Any], rows: list[dict[str, Any]], journal: Path | None
) -> Path:
    import pyarrow.parquet as pq

    run_id = run["run_id"]
    results_path = root / "results" / f"{run_id}.parquet"
    # Write to a temporary name, then rename: a reader never sees half a file.
    for table, path in (
        (_table(rows, RESULT_COLUMNS), results_path),
        (_table([run], RUN_COLUMNS), root / "runs" / f"{run_id}.parquet"),
    ):
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
    if journal is not None:
        journal.unlink(missing_ok=True)
    return results_path


def recover_journals(root: str | Path) -> list[str]:
    """Finalise journals left by interrupted runs. Returns the run ids recovered."""
    root = Path(root)
    recovered = []
    for journal in sorted((root / "journal").glob("*.jsonl")):
        run: dict[str, Any] | None = None
        rows: list[dict[str, Any]] = []
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if entry.get("kind") == "run":
                run = entry["row"]
            elif entry.get("kind") == "result":
                rows.append(entry["row"])
        if run is None:
            continue
        _write_parquet(root, run, rows, journal)
        recovered.append(run["run_id"])
    return recovered


def load(root: str | Path) -> tuple[Any, Any]:
    """Both tables of a store as pandas DataFrames: (runs, results)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such store directory")
    recover_journals(root)
    frames = []
    for columns, sub in ((RUN_COLUMNS, "runs"), (RESULT_COLUMNS, "results")):
        tables = [pq.read_table(p) for p in sorted((root / sub).glob("*.parquet"))]
        if tables:
            table = pa.concat_tables(tables, promote_options="default")
            frames.append(table.to_pandas())
        else:
            frames.append(pd.DataFrame(columns=[c.name for c in columns]))
    return frames[0], frames[1]
