"""A directory of Parquet files: one runs file and one results file per run.

    STORE/runs/<run_id>.parquet      one row: the run and its host fingerprint
    STORE/results/<run_id>.parquet   one row per cell
    STORE/journal/<run_id>.jsonl     rows as they are measured, until the run is finalised

Each measured row is appended to the journal and synced (fsync) before the next cell starts,
so a run killed midway loses nothing. The writer holds an exclusive `flock` on its journal for
its whole life, which tells a live run from a dead one.

Readers (`load`, `run_rows`) never create, change or delete a file: they read the Parquet files
and every journal (a journal's rows supersede its run's Parquet rows) and say in `run_state`
whether a run is finished, running or interrupted. Only a writer finalises the journal of a
run whose writer is gone into Parquet (`recover_journals`, which `qbench run` calls first); a
live run's journal is never touched. A file that cannot be read is skipped with one warning
line; a journal with unreadable lines is finalised with its readable rows and kept aside as
`<run_id>.jsonl.damaged`, never deleted.

Readable without qbench: `pandas.read_parquet("STORE/results")` or duckdb's
`read_parquet('STORE/results/*.parquet', union_by_name=true)`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from qbench.files import NotRegularFile, is_regular, open_regular
from qbench.store.schema import (
    RESULT_COLUMNS,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    Column,
)

__all__ = [
    "RowError",
    "RunWriter",
    "StoreNameError",
    "Warn",
    "latest_per_cell",
    "load",
    "recover_journals",
    "run_rows",
    "warn_stderr",
]

# How long `RunWriter.reopen` retries a journal's lock before calling its run live: a reader
# holds a shared lock for microseconds, a recoverer finalising the journal for a moment.
REOPEN_WAIT_S = 2.0

Warn = Callable[[str], None]

# A run id names the run's files (runs/ID.parquet, results/ID.parquet, journal/ID.jsonl), so it
# must be one plain file name: qbench makes them as 20261208T002440Z-6b3f3d; any letters,
# digits and . _ - after a letter or digit pass too (ids a library user gave RunWriter), and
# nothing that could name another folder ("/", "..", a leading ".") or break a line.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def warn_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _warning(path: Path, what: str, outcome: str = "skipped") -> str:
    """The one line a bad file gets."""
    return f"qbench: warning: {path}: {what}; {outcome}"


def _quiet(_line: str) -> None:
    pass


class StoreNameError(ValueError):
    """A name read from a store (or given for one) that cannot name a file of it: a crafted or
    damaged file. Stops the command in one line naming the file and the value (exit 2)."""


def check_run_id(run_id: Any, source: Path, file_stem: str | None = None) -> str:
    """`run_id`, read from `source`, when it is one plain file name (and the name of the file
    holding it, where `file_stem` is given); StoreNameError otherwise."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise StoreNameError(
            f"{source}: run id {_short(run_id)} is not a qbench run id (expected letters, "
            "digits, . _ - after a letter or digit, e.g. 20261208T002440Z-6b3f3d); move the "
            "file out of the store"
        )
    if file_stem is not None and run_id != file_stem:
        raise StoreNameError(f"{source}: run id {_short(run_id)} does not match the file's "
                             f"name ({file_stem}); move the file out of the store")  # fmt: skip
    return run_id


# --- rows and Arrow tables ------------------------------------------------------------------


class RowError(ValueError):
    """A row that the store's schema cannot hold: a value its column's type cannot take (str()
    names column, value and type, e.g. "column peak_rss_mb: 'many' is not float64"), or a
    column the schema does not define."""


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {
        "string": pa.string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "list<float64>": pa.list_(pa.float64()),
        "list<int64>": pa.list_(pa.int64()),
        "list<string>": pa.list_(pa.string()),
    }[kind]


def _schema(columns: tuple[Column, ...]) -> Any:
    import pyarrow as pa

    fields = [pa.field(c.name, _arrow_type(c.type), metadata={"doc": c.doc}) for c in columns]
    return pa.schema(fields, metadata={"qbench_schema_version": str(SCHEMA_VERSION)})


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(value: Any, column: Column) -> Any:
    if value is None:
        return None
    if column.type == "timestamp" and isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise RowError(f"column {column.name}: {_short(value)} is not timestamp") from None
    if column.type == "float64" and isinstance(value, float) and value != value:  # NaN -> null
        return None
    if (
        column.type == "int64"
        and not isinstance(value, int)
        and hasattr(value, "is_integer")  # float, numpy floats
        and not value.is_integer()
    ):  # pyarrow would silently truncate 2.5 to 2
        raise RowError(f"column {column.name}: {_short(value)} is not int64")
    return value


def _arrow_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return (pa.ArrowException, TypeError, ValueError, OverflowError)


def _table(rows: list[dict[str, Any]], columns: tuple[Column, ...]) -> Any:
    """Rows as an Arrow table of the schema; RowError names the first value that does not fit
    (pyarrow's own message names no column)."""
    import pyarrow as pa

    known = {c.name for c in columns}
    unknown = sorted({k for r in rows for k in r} - known)
    if unknown:
        raise RowError(f"rows carry columns the schema does not define: {unknown}")
    arrays = []
    for c in columns:
        values = [_coerce(r.get(c.name), c) for r in rows]
        try:
            arrays.append(pa.array(values, type=_arrow_type(c.type)))
        except _arrow_errors():
            raise _row_error(c, values) from None
    return pa.Table.from_arrays(arrays, schema=_schema(columns))


def _row_error(column: Column, values: list[Any]) -> RowError:
    import pyarrow as pa

    for value in values:
        try:
            pa.array([value], type=_arrow_type(column.type))
        except _arrow_errors():
            return RowError(f"column {column.name}: {_short(value)} is not {column.type}")
    return RowError(f"column {column.name}: its values are not {column.type}")


def _fitting(
    rows: list[dict[str, Any]], columns: tuple[Column, ...]
) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows the schema holds, why each other row does not): one table for all first, row by
    row only when that fails."""
    try:
        _table(rows, columns)
        return rows, []
    except RowError:
        pass
    good, bad = [], []
    for row in rows:
        try:
            _table([row], columns)
            good.append(row)
        except RowError as exc:
            bad.append(str(exc))
    return good, bad


def _known(row: dict[str, Any], columns: tuple[Column, ...]) -> dict[str, Any]:
    names = {c.name for c in columns}
    return {k: v for k, v in row.items() if k in names}


def latest_per_cell(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell_id, the last written (a resumed run's re-measured cell replaces its
    failed row), in the order cells first appeared."""
    latest: dict[Any, dict[str, Any]] = {}
    for row in rows:
        latest[row.get("cell_id")] = row
    return list(latest.values())


# --- files ------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    """Journal encoding of what json cannot write: numpy scalars and arrays as numbers (str()
    would turn them into text that no int64/bool column accepts on recovery), datetimes as
    ISO 8601."""
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    return str(value)


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, default=_json_default) + "\n"


def _fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable (a kill needs no more; a power cut does)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """`fd` is still the file at `path` (not renamed over, not unlinked)."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (own.st_dev, own.st_ino)


def _write_parquet(root: Path, run: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    """Results, then the run, each to a temporary name, synced, then renamed: a reader never
    sees half a file, and a kill at any point leaves the previous file or the new one."""
    import pyarrow.parquet as pq

    run_id = check_run_id(run["run_id"], root)
    results_path = root / "results" / f"{run_id}.parquet"
    for table, path in (
        (_table(latest_per_cell(rows), RESULT_COLUMNS), results_path),
        (_table([run], RUN_COLUMNS), root / "runs" / f"{run_id}.parquet"),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        try:
            pq.write_table(table, tmp)
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:  # a full disk: no half-written file is left beside the store's
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
    return results_path


def _parse_journal(data: bytes) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
    """(the run row's last version, result rows, lines that are no journal entry). A last
    line without its newline is a write cut short by a kill, the expected end of a killed run:
    dropped without counting."""
    run: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    lines = data.split(b"\n")
    bad = 0
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
            kind, row = entry["kind"], entry["row"]
            if kind not in ("run", "result") or not isinstance(row, dict):
                raise ValueError("not a journal entry")
            if kind == "run" and not isinstance(row.get("run_id"), str):
                raise ValueError("a run entry without run_id")
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
            # (RecursionError: a line of JSON nested thousands of levels deep)
            bad += i != len(lines) - 1
            continue
        if kind == "run":
            run = row
        else:
            rows.append(row)
    return run, rows, bad


def _read_journal(journal: Path) -> tuple[bytes, bool] | None:
    """(its bytes, whether its writer lives), read only; None where it is gone (finalised
    since it was listed). The liveness test is a non-blocking shared lock, dropped at once:
    it never waits, and a live writer's exclusive lock makes it fail."""
    try:
        fh = os.fdopen(open_regular(journal), "rb")  # a FIFO would block: OSError instead
    except FileNotFoundError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            live = False
            fcntl.flock(fh, fcntl.LOCK_UN)
        except BlockingIOError:
            live = True
        # Bytes of the file that was tested, whatever was renamed over its name meanwhile.
        return fh.read(), live


def _keep_aside(journal: Path) -> Path:
    """A copy of a journal that could not be read whole, `<run_id>.jsonl.damaged[.N]` (not
    *.jsonl, so nothing reads it again): its unreadable bytes stay for a person to look at."""
    n = 0
    while True:
        aside = journal.with_name(journal.name + ".damaged" + (f".{n}" if n else ""))
        try:
            os.link(journal, aside)
        except FileExistsError:
            n += 1
            continue
        except OSError:  # a file system without hard links
            if aside.exists():
                n += 1
                continue
            shutil.copyfile(journal, aside)
        _fsync_dir(journal.parent)
        return aside


def _parquet_rows(root: Path, run_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """A run's row and result rows from its Parquet files, (None, []) where it has none. Raises
    what pyarrow raises for a damaged file."""
    import pyarrow.parquet as pq

    check_run_id(run_id, root)
    runs_file = root / "runs" / f"{run_id}.parquet"
    results_file = root / "results" / f"{run_id}.parquet"
    run = None
    for path in (runs_file, results_file):
        if path.exists() and not is_regular(path):  # a FIFO would block the read
            raise ValueError(f"{path}: not a regular file")
    if runs_file.exists():
        found = pq.read_table(runs_file).to_pylist()
        run = _known(found[0], RUN_COLUMNS) if found else None
    rows = pq.read_table(results_file).to_pylist() if results_file.exists() else []
    # Nulls dropped: a row reads the same whether it came from Parquet or from a journal.
    rows = [{k: v for k, v in _known(r, RESULT_COLUMNS).items() if v is not None} for r in rows]
    if run is not None:
        run = {k: v for k, v in run.items() if v is not None}
    return run, rows


# --- writer -----------------------------------------------------------------------------------


def _claim_tmp(journal: Path) -> IO[str]:
    """`<run_id>.jsonl.tmp`, empty and exclusively locked: every process that creates or
    replaces a run's journal claims it first (and keeps the lock: the file becomes the
    journal), so two never do it at once. ValueError for the one that comes second."""
    tmp = journal.with_name(journal.name + ".tmp")
    for _ in range(3):
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"run {journal.stem} is being opened by another process") from None
        if _same_file(fd, tmp):
            os.ftruncate(fd, 0)  # a leftover of a process killed while it wrote one
            return os.fdopen(fd, "w", encoding="utf-8")
        os.close(fd)  # became a journal (or was removed) before we held it: claim anew
    raise ValueError(f"run {journal.stem} is being opened by another process")


def _drop_tmp(fh: IO[str], journal: Path) -> None:
    """Give up a claimed temporary journal that was not published."""
    tmp = journal.with_name(journal.name + ".tmp")
    if _same_file(fh.fileno(), tmp):
        tmp.unlink()
    fh.close()


def _lock_abandoned(journal: Path) -> IO[bytes] | None:
    """The run's journal, exclusively locked, where its writer is gone; None where the run has
    no journal; ValueError where its writer lives (its lock is held beyond REOPEN_WAIT_S)."""
    deadline = time.monotonic() + REOPEN_WAIT_S
    while True:
        try:
            fh = os.fdopen(open_regular(journal), "rb")
        except FileNotFoundError:
            return None
        except NotRegularFile as exc:
            raise ValueError(f"{journal}: {exc.strerror}: move it away") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fh.fileno(), journal):
                return fh
            fh.close()  # finalised or replaced between open and lock: look again
        except BlockingIOError:
            fh.close()
        if time.monotonic() >= deadline:
            raise ValueError(
                f"run {journal.stem} is still running (its journal {journal} is locked)"
            )
        time.sleep(0.02)


class RunWriter:
    """Writes one run into a store: journal as it goes, Parquet at the end. Holds an exclusive
    lock on the journal while it lives (readers see the run as running, and `recover_journals`
    leaves it alone)."""

    root: Path
    run_id: str
    run: dict[str, Any]
    rows: list[dict[str, Any]]
    journal_path: Path
    _journal: IO[str]

    def __init__(self, root: str | Path, run: dict[str, Any]) -> None:
        self.root = Path(root)
        self.run = {**run, "schema_version": SCHEMA_VERSION}
        self.run_id = check_run_id(run["run_id"], self.root)
        _table([self.run], RUN_COLUMNS)  # fail now, not at finish() (see append)
        for sub in ("runs", "results", "journal"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.journal_path = self.root / "journal" / f"{self.run_id}.jsonl"
        self.rows = []
        tmp = _claim_tmp(self.journal_path)
        try:
            runs_file = self.root / "runs" / f"{self.run_id}.parquet"
            if self.journal_path.exists() or runs_file.exists():
                raise ValueError(f"{self.root}: run {self.run_id} exists already")
            tmp.write(_line({"kind": "run", "row": self.run}))
            self._publish(tmp)
        except BaseException:
            _drop_tmp(tmp, self.journal_path)
            raise

    def _publish(self, tmp: IO[str]) -> None:
        """Rename the claimed, written temporary journal into place (replacing an abandoned
        one): the journal appears with its run line and rows, never empty or half written."""
        tmp.flush()
        os.fsync(tmp.fileno())
        os.replace(self.journal_path.with_name(self.journal_path.name + ".tmp"), self.journal_path)
        _fsync_dir(self.journal_path.parent)
        self._journal = tmp  # the same file, and its lock, under the journal's name

    @classmethod
    def reopen(cls, root: str | Path, run_id: str, warn: Warn | None = warn_stderr) -> RunWriter:
        """Continue a finished or interrupted run (`qbench run --resume`); ValueError where its
        writer is alive. Its rows are kept; a row appended now for a cell replaces that cell's
        earlier row when the run is finished again.

        Crash-safe at every step: a fresh journal holding the run and every row so far (its
        Parquet rows and those of an abandoned journal) is written and synced under a
        temporary name, then renamed over the old journal, if any, which stays locked until
        then; only after that are rows appended. A kill at any point leaves the old state or
        the new journal, each holding every row."""
        say = warn or _quiet
        self = cls.__new__(cls)
        self.root = Path(root)
        self.run_id = check_run_id(run_id, self.root)
        self.journal_path = self.root / "journal" / f"{run_id}.jsonl"
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _claim_tmp(self.journal_path)
        try:
            old = _lock_abandoned(self.journal_path)
            try:
                run, rows, lost = None, [], []
                if old is not None:
                    run, rows, bad = _parse_journal(old.read())
                    if run is None:
                        raise ValueError(
                            f"{self.journal_path}: no readable run entry, so run {run_id} cannot "
                            "be resumed; move the file away to resume what its Parquet holds"
                        )
                    check_run_id(run["run_id"], self.journal_path, run_id)
                    if bad:
                        lost.append(f"{bad} unreadable line(s)")
                try:
                    parquet_run, parquet_rows = _parquet_rows(self.root, run_id)
                except Exception as exc:  # pyarrow raises several kinds for a damaged file
                    raise ValueError(f"run {run_id}: its Parquet files cannot be read "
                                     f"({' '.join(str(exc).split())[:100]})") from None  # fmt: skip
                if run is None and parquet_run is not None:
                    runs_file = self.root / "runs" / f"{run_id}.parquet"
                    check_run_id(parquet_run.get("run_id"), runs_file, run_id)
                run = run or parquet_run
                if run is None:
                    raise ValueError(f"{self.root}: no run {run_id}")
                parquet_rows, unfit = _fitting(parquet_rows, RESULT_COLUMNS)
                if unfit:  # nothing would keep them once finish() rewrites the file
                    raise ValueError(
                        f"run {run_id}: {len(unfit)} of its Parquet rows do not fit the schema "
                        f"({unfit[0]}); it cannot be resumed"
                    )
                rows, unfit = _fitting(rows, RESULT_COLUMNS)
                if unfit:
                    lost.append(f"{len(unfit)} row(s) that do not fit the schema ({unfit[0]})")
                rows = latest_per_cell(parquet_rows + rows)
                if lost:  # the journal's: a copy of it keeps what is not carried over
                    aside = _keep_aside(self.journal_path)
                    say(_warning(self.journal_path, ", ".join(lost), f"kept as {aside.name}"))
                self.run = {**run, "finished_at": None, "schema_version": SCHEMA_VERSION}
                _table([self.run], RUN_COLUMNS)
                self.rows = rows
                tmp.write(_line({"kind": "run", "row": self.run}))
                for row in rows:
                    tmp.write(_line({"kind": "result", "row": row}))
                self._publish(tmp)
            finally:
                if old is not None:
                    old.close()  # only now: until the new journal replaced it, it is ours
        except BaseException:
            if not hasattr(self, "_journal"):  # not published: the old state stands
                _drop_tmp(tmp, self.journal_path)
            raise
        return self

    def _write_line(self, obj: dict[str, Any]) -> None:
        self._journal.write(_line(obj))
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def append(self, row: dict[str, Any]) -> None:
        """Journal one row (synced before this returns). A row the schema cannot hold raises
        RowError naming the column, value and type; it is not journalled and the writer stays
        usable."""
        row = {**row, "schema_version": SCHEMA_VERSION, "run_id": self.run_id}
        # Validate before the row reaches the journal: a row that cannot become Parquet would
        # otherwise fail finish().
        _table([row], RESULT_COLUMNS)
        self._write_line({"kind": "result", "row": row})
        self.rows.append(row)

    def finish(self, **run_updates: Any) -> Path:
        """Write the run's Parquet files (one row per cell: the last appended) and remove the
        journal. Returns the results file."""
        _table([{**self.run, **run_updates}], RUN_COLUMNS)
        self.run.update(run_updates)
        self._write_line({"kind": "run", "row": self.run})
        try:
            path = _write_parquet(self.root, self.run, self.rows)
            self.journal_path.unlink()  # still locked by us: nobody else replaced it
            _fsync_dir(self.journal_path.parent)
            return path
        finally:
            self._journal.close()  # releases the lock, after the journal is gone

    def close(self) -> None:
        """Stop without finishing: the journal stays, and the run reads as interrupted until
        `recover_journals` finalises it or `reopen` continues it."""
        self._journal.close()


def recover_journals(root: str | Path, warn: Warn | None = warn_stderr) -> list[str]:
    """The writer's side (`qbench run` calls it first): finalise into Parquet the journals of
    runs whose writer is gone; a journal whose writer lives is never touched. A journal with
    unreadable lines or rows is finalised with the rest and kept aside (see `_keep_aside`);
    one without a readable run entry is left as it is. Returns the run ids finalised."""
    say = warn or _quiet
    root = Path(root)
    recovered = []
    for journal in sorted((root / "journal").glob("*.jsonl")):
        try:
            fh = os.fdopen(open_regular(journal), "rb")
        except FileNotFoundError:
            continue
        except NotRegularFile as exc:  # a FIFO would block the run
            say(_warning(journal, exc.strerror, "left as it is"))
            continue
        with fh:
            # Held while finalising: a writer or another recoverer skips the journal meanwhile.
            # (A reader's momentary shared lock also makes this fail: the next run gets it.)
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if not _same_file(fh.fileno(), journal):
                continue  # finalised or replaced by another process meanwhile
            run, rows, bad = _parse_journal(fh.read())
            if run is None:
                say(_warning(journal, "no readable run entry", "left as it is"))
                continue
            run_id = check_run_id(run["run_id"], journal, journal.stem)  # it names files
            try:
                _table([run], RUN_COLUMNS)
                _, parquet_rows = _parquet_rows(root, run_id)
            except Exception as exc:  # RowError, or pyarrow's kinds for a damaged file
                reason = " ".join(str(exc).split())[:100]
                say(_warning(journal, f"cannot be finalised ({reason})", "left as it is"))
                continue
            # Parquet rows first, the journal's after (they supersede): rows lost from a
            # damaged journal of a resumed run are still those its Parquet had.
            good, unfit = _fitting(rows, RESULT_COLUMNS)
            _write_parquet(root, run, parquet_rows + good)
            lost = [f"{bad} unreadable line(s)"] if bad else []
            if unfit:
                lost.append(f"{len(unfit)} row(s) that do not fit the schema ({unfit[0]})")
            if lost:
                aside = _keep_aside(journal)
                say(_warning(journal, ", ".join(lost), f"the rest finalised, kept as {aside.name}"))
            journal.unlink()
            _fsync_dir(journal.parent)
        recovered.append(run_id)
    return recovered


# --- readers ----------------------------------------------------------------------------------


@dataclass
class _JournalRun:
    run: Any  # one-row Arrow table
    results: Any  # Arrow table, one row per cell
    cell_ids: list[str]
    state: str


def _journal_runs(root: Path, say: Warn) -> dict[str, _JournalRun]:
    """{run_id: its journal's tables and state} of every journal, read only, one warning line
    for a journal that is partly or wholly unreadable."""
    out: dict[str, _JournalRun] = {}
    for journal in sorted((root / "journal").glob("*.jsonl")):
        try:
            got = _read_journal(journal)
        except OSError as exc:
            say(_warning(journal, f"cannot be read ({exc.strerror})"))
            continue
        if got is None:
            continue  # finalised since listed: its Parquet files were written first
        data, live = got
        run, rows, bad = _parse_journal(data)
        if run is None:  # (a journal appears with its run line: see RunWriter._publish)
            say(_warning(journal, "no readable run entry"))
            continue
        # `qbench run --resume` makes file names of the run ids readers find
        check_run_id(run["run_id"], journal, journal.stem)
        problems = [f"{bad} unreadable line(s)"] if bad else []
        try:
            run_table = _table([_known(run, RUN_COLUMNS)], RUN_COLUMNS)
        except RowError as exc:
            say(_warning(journal, f"its run entry does not fit the schema ({exc})"))
            continue
        rows = latest_per_cell([_known(r, RESULT_COLUMNS) for r in rows])
        good, unfit = _fitting(rows, RESULT_COLUMNS)
        if unfit:
            problems.append(f"{len(unfit)} row(s) that do not fit the schema ({unfit[0]})")
        if problems:
            say(_warning(journal, ", ".join(problems)))
        # finished_at: every row is in (its Parquet is being written, or a kill stopped that).
        state = "finished" if run.get("finished_at") else "running" if live else "interrupted"
        out[run["run_id"]] = _JournalRun(
            run_table,
            _table(good, RESULT_COLUMNS),
            [str(r.get("cell_id")) for r in good],
            state,
        )
    return out


def _conform(table: Any, columns: tuple[Column, ...], required: tuple[str, ...]) -> Any:
    """A Parquet table with the schema's types for the schema's columns (older files may hold
    a compatible type); ValueError where a column cannot be read as its type."""
    import pyarrow as pa

    names = table.column_names
    for name in required:
        if name not in names:
            raise ValueError(f"no {name} column")
    for c in columns:
        if c.name not in names:
            continue
        i = names.index(c.name)
        want = _arrow_type(c.type)
        if table.schema.field(i).type == want:
            continue
        try:
            table = table.set_column(i, pa.field(c.name, want), table.column(i).cast(want))
        except pa.ArrowException:
            have = table.schema.field(i).type
            raise ValueError(f"column {c.name} is {have}, not {c.type}") from None
    return table


def _read_parquet(path: Path, columns: tuple[Column, ...], say: Warn) -> Any:
    import pyarrow.parquet as pq

    required = ("run_id",) if columns is RUN_COLUMNS else ("run_id", "cell_id")
    if path.exists() and not is_regular(path):  # a FIFO would block the read
        say(_warning(path, "not a regular file"))
        return None
    try:
        table = _conform(pq.read_table(path), columns, required)
    except FileNotFoundError:
        return None
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        reason = " ".join(str(exc).split())
        reason = reason if len(reason) <= 100 else reason[:97] + "..."
        say(_warning(path, f"not a readable qbench Parquet file ({reason})"))
        return None
    if columns is RUN_COLUMNS:  # `qbench run --resume` makes file names of these run ids
        for run_id in table.column("run_id").to_pylist():
            check_run_id(run_id, path)
    return table


def _frame(tables: list[Any], columns: tuple[Column, ...]) -> Any:
    import pandas as pd
    import pyarrow as pa

    if not tables:
        return pd.DataFrame(columns=[c.name for c in columns])
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException:
        # Columns that qbench no longer defines, of different types in different files: the
        # schema's columns are what readers use.
        names = {c.name for c in columns}
        tables = [t.select([n for n in t.column_names if n in names]) for t in tables]
        table = pa.concat_tables(tables, promote_options="permissive")
    # Every column of the schema, empty where no file has it (a file written by hand or by an
    # older qbench with only run_id): readers index them without a KeyError.
    for c in columns:
        if c.name not in table.column_names:
            table = table.append_column(pa.field(c.name, _arrow_type(c.type)),
                                        pa.nulls(len(table), _arrow_type(c.type)))  # fmt: skip
    return table.to_pandas()


def rows_frame(rows: list[dict[str, Any]]) -> Any:
    """Result rows (as a run appends them) as a DataFrame typed as the store reads them."""
    return _frame([_table([_known(r, RESULT_COLUMNS) for r in rows], RESULT_COLUMNS)],
                  RESULT_COLUMNS)  # fmt: skip


def load(root: str | Path, warn: Warn | None = warn_stderr) -> tuple[Any, Any]:
    """Both tables of a store as pandas DataFrames: (runs, results). Read only: it creates,
    changes and deletes nothing. Runs with a journal are read from it (its rows supersede
    those of the run's Parquet file, cell by cell), and the runs frame gets a derived column
    `run_state`: finished (finished_at set), running (its writer holds the journal's lock) or
    interrupted (its writer is gone, journal or Parquet without finished_at). A file that
    cannot be read is skipped, with one line for `warn` (default: stderr):
    `qbench: warning: <path>: <what is wrong>; skipped`."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    say = warn or _quiet
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a store directory" if root.exists() else "no such store directory"
        raise FileNotFoundError(f"{root}: {what}")
    # Journals before Parquet: a writer finishing meanwhile writes Parquet before it removes
    # the journal, so each run is seen in one or the other.
    journals = _journal_runs(root, say)
    run_tables, result_tables = [], []
    for path in sorted((root / "runs").glob("*.parquet")):
        if path.stem in journals:
            continue  # the journal's run row is the newer
        table = _read_parquet(path, RUN_COLUMNS, say)
        if table is not None:
            run_tables.append(table)
    for path in sorted((root / "results").glob("*.parquet")):
        table = _read_parquet(path, RESULT_COLUMNS, say)
        if table is None:
            continue
        if path.stem in journals:  # cells the journal holds again are superseded by it
            again = pa.array(journals[path.stem].cell_ids, pa.string())
            table = table.filter(pc.invert(pc.is_in(table["cell_id"], value_set=again)))
        result_tables.append(table)
    for journal in journals.values():
        run_tables.append(journal.run)
        result_tables.append(journal.results)
    runs = _frame(run_tables, RUN_COLUMNS)
    results = _frame(result_tables, RESULT_COLUMNS)
    states = {run_id: journal.state for run_id, journal in journals.items()}
    # A killed run finalised by recovery has no finished_at: it stays "interrupted" (its
    # missing cells are what `qbench run --resume` measures).
    runs["run_state"] = [
        states.get(str(r), "finished" if pd.notna(finished) else "interrupted")
        for r, finished in zip(runs["run_id"], runs["finished_at"], strict=True)
    ]  # fmt: skip
    return runs, results


def run_rows(
    root: str | Path, run_id: str, warn: Warn | None = warn_stderr
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run row and result rows (one per cell) of one run, read only: its Parquet rows
    superseded by its journal's, where it has one, and earlier rows of a cell by later ones.
    ValueError where the store has no such run (or its files cannot be read)."""
    say = warn or _quiet
    root = Path(root)
    journal = root / "journal" / f"{check_run_id(run_id, root)}.jsonl"
    run: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    got = _read_journal(journal)
    if got is not None:
        run, rows, bad = _parse_journal(got[0])
        if bad or run is None:
            what = f"{bad} unreadable line(s)" if run is not None else "no readable run entry"
            say(_warning(journal, what))
    try:
        parquet_run, parquet_rows = _parquet_rows(root, run_id)
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        reason = " ".join(str(exc).split())[:100]
        raise ValueError(f"run {run_id}: its Parquet files cannot be read ({reason})") from None
    run = run or parquet_run
    if run is None:
        raise ValueError(f"{root}: no run {run_id}")
    return run, latest_per_cell(parquet_rows + rows)
