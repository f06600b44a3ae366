"""`qbench run`: suite -> plan -> executor -> rows -> store (-> report)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qbench.hostinfo import fingerprint
from qbench.params import stable_hash
from qbench.plan import Cell, Plan, build_plan
from qbench.plugins import load_all
from qbench.store.schema import RESULT_COLUMN_NAMES
from qbench.suite.loader import SuiteSource, load_suite, validate_suite


def now() -> datetime:
    return datetime.now(UTC)


def new_run_id(started: datetime) -> str:
    return started.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def base_row(cell: Cell) -> dict[str, Any]:
    """The columns a cell determines before anything runs (skipped cells have only these)."""
    fam = load_all()
    method = fam.methods.get(cell.method)()
    typed = method.Params(**cell.method_params)
    fmt = cell.artifact_format or (method.produces[0] if method.produces else "")
    row: dict[str, Any] = {
        "cell_id": cell.cell_id,
        "suite": cell.suite,
        "model": cell.model,
        "method": cell.method,
        "method_params_json": json.dumps(cell.method_params, sort_keys=True),
        "method_sha256": stable_hash({"method": cell.method, "params": cell.method_params}),
        "backend": cell.backend,
        "device": cell.device,
        "device_kind": cell.device_kind,
        "transport": cell.transport,
        "batch": cell.batch,
        "threads": cell.threads,
        "artifact_format": cell.artifact_format,
        "calib_outlier_fraction": cell.calibration["outlier_fraction"]
        if method.needs_calibration(typed)
        else None,
        **method.describe(fmt, typed),
    }
    if cell.artifact_format:
        row["execution"] = method.execution(cell.artifact_format, typed)
    return row


def assemble_row(
    cell: Cell, result: dict[str, Any], started: datetime, duration: float
) -> dict[str, Any]:
    row = base_row(cell)
    method_notes = row.pop("notes", [])
    row.update({k: v for k, v in result.items() if k in RESULT_COLUMN_NAMES})
    row["notes"] = [*method_notes, *result.get("artifact_notes", []), *(row.get("notes") or [])]
    row["started_at"] = started
    row["duration_s"] = duration
    # A parallel executor (ray) times each cell where it ran; the host only sees arrivals.
    ran_from, ran_to = result.get("executor_started_at"), result.get("executor_finished_at")
    if ran_from and ran_to:
        row["started_at"] = datetime.fromisoformat(ran_from)
        row["duration_s"] = (datetime.fromisoformat(ran_to) - row["started_at"]).total_seconds()
    if row.get("status") != "ok":
        row.setdefault("status", "failed")
        planned = row.pop("execution", None)
        if planned:  # nothing ran to be native or simulated: the plan's word is not a fact
            row["notes"].append(f"execution empty: the cell did not finish (planned: {planned})")
        if result.get("traceback"):  # where the stage failed, for the report's details
            row["error_traceback"] = str(result["traceback"])
    return row


@dataclass
class RunSummary:
    run_id: str
    store: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    excluded: int = 0
    resumed: int = 0  # rows kept from the interrupted run that --resume continued

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    @property
    def problems(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] in ("failed", "timeout")]


ProgressHook = Callable[[str, Cell | None, dict[str, Any] | None], None]

# Statuses a resumed run keeps; failed and timed-out cells are measured again.
KEPT_ON_RESUME = ("ok", "skipped")
WORKROOT_PREFIX = "qbench-work-"


class Terminated(KeyboardInterrupt):
    """SIGTERM reached `qbench run`: the run stops as after Ctrl-C (rows kept, children and
    temporary folders gone). A KeyboardInterrupt, so no `except Exception` swallows it."""

    exit_code = 143  # 128 + SIGTERM, as a shell reports it


def resume_target(store: Path, suite_name: str, suite_text: str, run_id: str | None) -> str:
    """The run `qbench run --resume` continues: the given run id (or unique prefix), else the
    latest run of this suite in the store. Refused in one line (ValueError) where its suite
    file changed or it ran on other hardware: its rows and the new ones would not be one run."""
    from qbench.regress.history import fingerprint_of
    from qbench.store.parquet import load

    if not store.is_dir():
        raise ValueError(f"--resume: {store} holds no runs to resume (no such store)")
    runs, _ = load(store)
    runs = runs[runs["suite"] == suite_name] if len(runs) else runs
    if run_id:
        runs = runs[runs["run_id"].astype(str).str.startswith(run_id)]
        if len(runs) != 1:
            raise ValueError(f"--resume {run_id}: {len(runs)} runs of suite {suite_name!r} in "
                             f"{store} match (give one run id)")  # fmt: skip
    if not len(runs):
        raise ValueError(f"--resume: {store} holds no run of suite {suite_name!r} to resume")
    run = runs.sort_values("started_at").iloc[-1].to_dict()
    if run["suite_sha256"] != stable_hash(suite_text):
        raise ValueError(f"--resume: the suite changed since run {run['run_id']} (its cells and "
                         "settings may differ): run it without --resume")  # fmt: skip
    if fingerprint_of(run) != fingerprint_of(fingerprint()):
        raise ValueError(f"--resume: run {run['run_id']} ran on other hardware "
                         f"({run.get('cpu_model')} on {run.get('host')})")  # fmt: skip
    return str(run["run_id"])


def sweep_stale_workroots() -> list[Path]:
    """Remove work folders of `qbench run`s that were killed (kill -9 leaves no chance to
    clean up): qbench-work-PID-* whose PID is no longer running."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{WORKROOT_PREFIX}*"):
        pid_text = folder.name[len(WORKROOT_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # that run is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's live process
        if folder.is_dir() and folder.stat().st_uid == os.getuid():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _failed_row(cell: Cell, error: str, started: datetime, duration: float) -> dict[str, Any]:
    """The row of a cell whose result could not become a row: identity columns and the reason
    (base_row itself may be what failed, for a plugin's method)."""
    try:
        row = base_row(cell)
        row.pop("notes", None)
    except Exception:
        row = {"cell_id": cell.cell_id, "suite": cell.suite, "model": cell.model,
               "method": cell.method, "backend": cell.backend, "device": cell.device,
               "batch": cell.batch, "threads": cell.threads}  # fmt: skip
    return {**row, "status": "failed", "error": error, "started_at": started,
            "duration_s": duration}  # fmt: skip


@contextlib.contextmanager
def _sigterm_raises() -> Any:
    """SIGTERM raises Terminated in the main thread, so finally blocks run (the running stage
    is killed, the work folder removed, the run's rows finalised) as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_plan(
    plan: Plan,
    suite_name: str,
    suite_path: str,
    suite_text: str,
    store: Path,
    progress: ProgressHook | None = None,
    executor: str = "local",
    resume: str | None = None,
    deadline: tuple[float, str] | None = None,
    confirm: Any = None,
    budget: float | None = None,
) -> RunSummary:
    """Run the plan's cells into the store. With `resume` (a run id, see resume_target), the
    cells that run already measured or skipped are kept and only its missing, failed or
    timed-out cells run, into that same run. With `deadline` (a time.monotonic() value and a
    reason), no cell starts after that time: the cells left are recorded as skipped with the
    reason (`qbench tune --time-budget`; an executor that starts cells ahead, such as Ray,
    finishes those it started). With `confirm` (confirm.picks.ConfirmSettings, enabled), the
    run's summary picks are timed against their fp32 reference in interleaved rounds before the
    run is finished, and the run's row keeps what that showed (`budget`: the summary's)."""
    from qbench.store.parquet import RowError, RunWriter, recover_journals

    fam = load_all()
    sweep_stale_workroots()
    recover_journals(store)  # runs killed earlier (never a live one) become Parquet
    kept: dict[str, dict[str, Any]] = {}
    if resume:
        writer = RunWriter.reopen(store, resume)
        kept = {r["cell_id"]: r for r in writer.rows if r.get("status") in KEPT_ON_RESUME}
        run_id, started = resume, now()
    else:
        started = now()
        run_id = new_run_id(started)
        run_row = {
            "run_id": run_id,
            "suite": suite_name,
            "suite_path": suite_path,
            "suite_sha256": stable_hash(suite_text),
            "started_at": started,
            "cells_total": len(plan.cells),
            "cells_excluded": plan.excluded,
            **fingerprint(),
        }
        writer = RunWriter(store, run_row)
    summary = RunSummary(run_id=run_id, store=store, excluded=plan.excluded)
    summary.rows = [kept[c.cell_id] for c in plan.cells if c.cell_id in kept]
    summary.resumed = len(summary.rows)

    def record(row: dict[str, Any], cell: Cell) -> dict[str, Any]:
        try:
            writer.append(row)
        except RowError as exc:  # a plugin's value of the wrong type: this cell fails, not the run
            when, took = row.get("started_at", started), row.get("duration_s", 0.0)
            row = _failed_row(cell, f"its result could not be stored: {exc}", when, took)
            writer.append(row)
        summary.rows.append(row)
        return row

    for cell in plan.skipped:
        if cell.cell_id not in kept:
            record({**base_row(cell), "status": "skipped", "error": cell.skip_reason,
                    "started_at": started, "duration_s": 0.0}, cell)  # fmt: skip
    to_run = [c for c in plan.runnable if c.cell_id not in kept]
    if progress and resume:
        progress("total", None, {"total": len(to_run)})
    workroot = Path(tempfile.mkdtemp(prefix=f"{WORKROOT_PREFIX}{os.getpid()}-{run_id}-"))
    prepared: dict[str, dict[str, Any]] = {}  # what the confirm stage needs of each ok cell
    run_updates: dict[str, Any] = {}
    completed = False  # every cell ran: only then is the run finished (else interrupted)
    try:
        with _sigterm_raises():
            ex = fam.executors.get(executor)()
            cells_iter = ex.execute(to_run, workroot, ex.Params())
            cell_started = now()
            for cell, result in _with_progress(cells_iter, to_run, progress):
                finished = now()
                duration = (finished - cell_started).total_seconds()
                try:
                    row = assemble_row(cell, result, cell_started, duration)
                except Exception as exc:  # a plugin's result that is no row: fail the cell
                    why = f"its result could not be read: {type(exc).__name__}: {exc}"
                    row = _failed_row(cell, why, cell_started, duration)
                row = record(row, cell)
                if row.get("status") == "ok":
                    prepared[cell.cell_id] = _for_confirm(result)
                if progress:
                    progress("done", cell, row)
                cell_started = now()
                if deadline is not None and time.monotonic() >= deadline[0]:
                    break
            if deadline is not None:
                done = {r["cell_id"] for r in summary.rows}
                for cell in to_run:
                    if cell.cell_id not in done:
                        record({**base_row(cell), "status": "skipped", "error": deadline[1],
                                "started_at": now(), "duration_s": 0.0}, cell)  # fmt: skip
            if confirm is not None and confirm.enabled and prepared:
                run_updates["confirmations_json"] = _confirm(
                    plan, summary.rows, prepared, executor, workroot, confirm, budget, progress
                )
            completed = True
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
        _end_run(writer, completed, finished_at=now() if completed else None,
                 cells_total=len(plan.cells), cells_excluded=plan.excluded,
                 **run_updates)  # fmt: skip
    return summary


def _end_run(writer: Any, completed: bool, **run_updates: Any) -> None:
    """Finalise the run into Parquet: finished where every cell ran, else with no finished_at,
    so a run stopped by SIGTERM or Ctrl-C reads `interrupted` (as after kill -9) and `--resume`
    measures the rest. Where the run stopped on an error (a full disk) and finalising fails as
    well, the journal stays: it holds every row measured, and the next run finalises it; the
    error that stopped the run is the one reported."""
    try:
        writer.finish(**run_updates)
    except Exception:
        if completed:
            raise
        with contextlib.suppress(Exception):
            writer.close()


# What the confirm stage reads of a cell's prepare result (qbench.confirm.stage.open_runner).
_CONFIRM_KEYS = ("artifact_path", "eval_path", "model_inputs")


def _for_confirm(result: dict[str, Any]) -> dict[str, Any]:
    kept = {k: result.get(k) for k in _CONFIRM_KEYS}
    hashes = result.get("file_sha256") or {}
    kept["file_sha256"] = {k: v for k, v in hashes.items() if k in _CONFIRM_KEYS}
    return kept


def _confirm(plan: Plan, rows: list[dict[str, Any]], prepared: dict[str, dict[str, Any]],
             executor: str, workroot: Path, settings: Any, budget: float | None,
             progress: ProgressHook | None) -> str:  # fmt: skip
    """The run's summary picks timed against their references (qbench.confirm.picks), as the
    run row's confirmations_json."""
    from qbench.confirm.picks import confirm_picks, pairs, to_json
    from qbench.report.data import latest_per_cell, prepare
    from qbench.report.summary import DEFAULT_BUDGET, summarize
    from qbench.store.parquet import rows_frame

    picks = summarize(latest_per_cell(prepare(rows_frame(rows))),
                      DEFAULT_BUDGET if budget is None else budget)  # fmt: skip
    count = len(pairs(picks))
    if progress and count:
        progress("confirm", None, {"pairs": count})
    cells = {c.cell_id: c for c in plan.cells}
    return to_json(confirm_picks(picks, cells, prepared, executor, workroot, settings))


def _with_progress(results: Any, cells: list[Cell], progress: ProgressHook | None) -> Any:
    """Tell the hook which cell starts before the executor runs it (local order)."""
    if progress and cells:
        progress("start", cells[0], None)
    for i, item in enumerate(results):
        yield item
        if progress and i + 1 < len(cells):
            progress("start", cells[i + 1], None)


def load_plan(suite: str | Path | SuiteSource) -> tuple[Any, Plan, str]:
    """(suite, plan, suite text) of a suite file, or of a parsed source (command-line flags)."""
    typed, source = validate_suite(suite) if isinstance(suite, SuiteSource) else load_suite(suite)
    plan = build_plan(typed, source)
    return typed, plan, source.text
