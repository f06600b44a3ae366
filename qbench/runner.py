"""`qbench run`: suite -> plan -> executor -> rows -> store (-> report)."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qbench.hostinfo import fingerprint
from qbench.params import stable_hash
from qbench.plan import Cell, Plan, build_plan
from qbench.plugins import load_all
from qbench.store.parquet import RunWriter
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
    return row


@dataclass
class RunSummary:
    run_id: str
    store: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    excluded: int = 0

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    @property
    def problems(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] in ("failed", "timeout")]


ProgressHook = Callable[[str, Cell | None, dict[str, Any] | None], None]


def run_plan(
    plan: Plan,
    suite_name: str,
    suite_path: str,
    suite_text: str,
    store: Path,
    progress: ProgressHook | None = None,
    executor: str = "local",
) -> RunSummary:
    fam = load_all()
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

    def record(row: dict[str, Any]) -> None:
        writer.append(row)
        summary.rows.append(row)

    for cell in plan.skipped:
        record(
            {
                **base_row(cell),
                "status": "skipped",
                "error": cell.skip_reason,
                "started_at": started,
                "duration_s": 0.0,
            }
        )
    workroot = Path(tempfile.mkdtemp(prefix=f"qbench-{run_id}-"))
    try:
        ex = fam.executors.get(executor)()
        cells_iter = ex.execute(plan.runnable, workroot, ex.Params())
        cell_started = now()
        for cell, result in _with_progress(cells_iter, plan.runnable, progress):
            finished = now()
            row = assemble_row(
                cell, result, cell_started, (finished - cell_started).total_seconds()
            )
            record(row)
            if progress:
                progress("done", cell, row)
            cell_started = now()
    finally:
        writer.finish(finished_at=now())
        shutil.rmtree(workroot, ignore_errors=True)
    return summary


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
