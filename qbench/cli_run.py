"""`qbench run`: plan, progress bar, summary, report."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from qbench.cli import EXIT_NO_RESULT, EXIT_OK, output_file, store_folder
from qbench.plan import Cell, Plan
from qbench.report.summary_view import summaries_json

# A failed cell's traceback lines printed under its error (the store keeps more of them).
TRACEBACK_CONSOLE = 4

SUMMARY_FIELDS = (
    "cell_id",
    "status",
    "execution",
    "latency_p50_ms",
    "throughput_ips",
    "peak_rss_mb",
    "artifact_bytes",
    "top1",
    "top1_ci_low",
    "top1_ci_high",
    "fp32_agreement",
    "fp32_agreement_ci_low",
    "fp32_agreement_ci_high",
    "fp32_within_tol",
    "fp32_within_tol_ci_low",
    "fp32_within_tol_ci_high",
    "output_sqnr_db",
    "error",
)


def _print_plan(plan: Plan, file: Any = None) -> None:
    out = file or sys.stdout
    for cell in plan.cells:
        state = f"skip: {cell.skip_reason}" if cell.skip_reason else f"run ({cell.artifact_format})"
        print(f"{cell.cell_id}  {state}", file=out)
    print(f"{len(plan.runnable)} to run, {len(plan.skipped)} skipped, {plan.excluded} excluded",
          file=out)  # fmt: skip


def _dry_run(plan: Plan, suite_text: str | None, as_json: bool) -> int:
    """--dry-run. With --model the generated suite is the output: it goes to stdout alone, so
    `> suite.yaml` saves a suite that runs, and the plan goes to stderr. A suite file's plan
    is the output itself (stdout). --json: one document holding both."""
    if as_json:
        cells = [{"cell_id": c.cell_id, "runs": c.skip_reason is None,
                  "artifact_format": c.artifact_format, "skip_reason": c.skip_reason}
                 for c in plan.cells]  # fmt: skip
        counts = {"run": len(plan.runnable), "skipped": len(plan.skipped),
                  "excluded": plan.excluded}  # fmt: skip
        doc = {"suite": suite_text, "cells": cells, "counts": counts}
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return EXIT_OK
    if suite_text is not None:
        sys.stdout.write(suite_text)
        sys.stdout.flush()  # the suite before the plan where both go to one terminal
        _print_plan(plan, sys.stderr)
    else:
        _print_plan(plan)
    return EXIT_OK


def _no_result(summary: Any) -> str | None:
    """Why the run has no result (exit EXIT_NO_RESULT): no cell ended ok. A plan whose cells
    were all skipped measured nothing either, and CI must see that as much as failures."""
    if summary.count("ok"):
        return None
    counts = (f"{summary.count('failed')} failed, {summary.count('timeout')} timed out, "
              f"{summary.count('skipped')} skipped")  # fmt: skip
    return f"qbench: no cell succeeded ({counts}); exit {EXIT_NO_RESULT}"


class _Progress:
    """tqdm bar on stderr naming the current cell; ETA from cells done so far."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit="cell",
                file=sys.stderr,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n}/{total} [{elapsed}<{remaining}]",
            )

    def __call__(self, event: str, cell: Cell | None, row: dict[str, Any] | None) -> None:
        if self.bar is not None and event == "total" and row is not None:
            self.bar.reset(total=row["total"])  # a resumed run measures only what is missing
            return
        if self.bar is not None and event == "confirm" and row is not None:
            self.bar.set_description_str(
                f"confirming {row['pairs']} pick(s) against fp32 in interleaved rounds"
            )
            return
        if self.bar is None or cell is None:
            return
        if event == "start":
            self.bar.set_description_str(cell.cell_id[:70])
        else:
            self.bar.update(1)
            if row and row["status"] != "ok":
                self.bar.write(f"  {row['status']}: {cell.cell_id}: {row.get('error')}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _print_summary(summary: Any, report: Path | None, picks: list[Any]) -> None:
    if summary.resumed:
        print(f"resumed run {summary.run_id}: {summary.resumed} cells kept from it, "
              f"{len(summary.rows) - summary.resumed} measured or recorded now")  # fmt: skip
    print(
        f"run {summary.run_id}: {summary.count('ok')} ok, {summary.count('failed')} failed, "
        f"{summary.count('timeout')} timed out, {summary.count('skipped')} skipped"
        f" ({summary.excluded} excluded by rules)"
    )
    for row in summary.rows:
        if row["status"] == "ok":
            # the first the row has: an output of one value per input has only fp32_within_tol
            metric = next((m for m in ("top1", "fp32_agreement", "fp32_within_tol")
                           if row.get(m) is not None), "top1")  # fmt: skip
            low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
            span = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
            print(
                f"  {row['cell_id']:<58} p50 {_fmt(row.get('latency_p50_ms'), '8.3f')} ms  "
                f"acc {_fmt(row.get(metric), '.4f')}{span}  {row.get('execution', '')}"
            )
    for row in summary.problems:
        print(f"  {row['status'].upper()} {row['cell_id']}: {row.get('error')}")
        # where it failed: the traceback's last frames (the whole tail is in the store/report)
        for line in str(row.get("error_traceback") or "").splitlines()[-TRACEBACK_CONSOLE:]:
            print(f"      {line}")
    for row in summary.rows:
        if row["status"] == "skipped":
            print(f"  skipped {row['cell_id']}: {row.get('error')}")
    if picks:
        from qbench.report.summary_view import text_lines

        print("at a glance (latest row of each of the suite's cells):")
        print("\n".join(text_lines(picks)))
    print(f"store: {summary.store}")
    if report:
        print(f"report: {report}")


def _executor(spec: str, cells: list[Cell]) -> str:
    """`NAME[:ADDRESS]` -> the executor's name, after its preflight (connect, check devices)."""
    from qbench.plugins import load_all

    name, sep, address = spec.partition(":")
    cls = load_all().executors.get(name)  # RegistryError (a ValueError): one line, exit 2
    fields = cls.Params.model_fields
    if sep and "address" not in fields:
        raise ValueError(f"--executor {spec}: executor {name} takes no address")
    if sep and not address:
        raise ValueError(f"--executor {spec}: the address after ':' is empty")
    preflight = getattr(cls, "preflight", None)
    if preflight is not None:  # fails fast before the run writes anything (ValueError: exit 2)
        params = cls.Params(address=address) if sep else cls.Params()
        preflight(cls(), cells, params)
    return name


def default_report(suite_name: str) -> str:
    """reports/NAME.html with the suite name made a safe file name: a name such as `../../x`
    must not write outside reports/."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", suite_name).strip("._") or "suite"
    return f"reports/{safe[:100]}.html"


def cmd_run(args: argparse.Namespace) -> int:
    from qbench.runner import load_plan, run_plan

    if args.model:
        from qbench.suite.command_line import describe, suite_from_args

        if args.suite:
            raise ValueError(f"qbench run: give a suite file ({args.suite}) or --model, not both")
        given = suite_from_args(args)
        suite_path = "command line"
    elif args.suite:
        given, suite_path = args.suite, str(args.suite)
    else:
        raise ValueError("qbench run: give a suite file, or your model with --model "
                         "(see qbench run --help)")  # fmt: skip
    suite, plan, text = load_plan(given)  # raises SuiteError: one line, exit 2
    if args.dry_run:
        return _dry_run(plan, describe(given) if args.model else None, args.json)
    store = store_folder(args.store or suite.output, "--store" if args.store else "output")
    report_path = None
    if not args.no_report:
        flag = "--report" if args.report else "report"
        report_path = output_file(args.report or suite.report or default_report(suite.name), flag)
    resume = None
    if args.resume is not None:
        from qbench.runner import resume_target

        resume = resume_target(store, suite.name, text, args.resume or None)
    executor = _executor(args.executor, plan.runnable)
    _check_writable(store)
    progress = _Progress(len(plan.runnable), not (args.quiet or args.json))
    try:
        from qbench.confirm.picks import ConfirmSettings

        confirm = ConfirmSettings(enabled=not args.no_confirm)
        summary = run_plan(plan, suite.name, suite_path, text, store, progress, executor=executor,
                           resume=resume, confirm=confirm, budget=args.budget)  # fmt: skip
    except OSError as exc:  # the store cannot be written (a full disk, no permission)
        raise _store_error(exc, store) from None
    finally:
        progress.close()
    picks: list[Any] = []
    if summary.rows:
        from qbench.store.parquet import load

        # the suite's history in the store (its earlier runs too: the charts and the summary
        # take each cell's latest row, the table lists every run's)
        runs, results = load(store)
        ids = set(runs.run_id[runs.suite == suite.name]) | {summary.run_id}
        runs, results = runs[runs.run_id.isin(ids)], results[results.run_id.isin(ids)]
        picks = _at_a_glance(runs, results, args.budget)
        if report_path is not None:
            from qbench.files import write_atomic
            from qbench.report import build_report_html

            page = build_report_html(runs, results, f"qbench: {suite.name}", args.budget)
            write_atomic(report_path, page)  # a full disk leaves no truncated page
    if args.json:
        doc = {
            "run_id": summary.run_id,
            "store": str(store),
            "report": str(report_path) if report_path else None,
            "counts": {s: summary.count(s) for s in ("ok", "failed", "timeout", "skipped")},
            "excluded": summary.excluded,
            "summary": summaries_json(picks),
            "rows": [{k: r.get(k) for k in SUMMARY_FIELDS} for r in summary.rows],
        }
        json.dump(doc, sys.stdout, default=str, indent=1)
        sys.stdout.write("\n")
    elif not args.quiet:
        _print_summary(summary, report_path, picks)
    why = _no_result(summary)
    if why:
        print(why, file=sys.stderr)
        return EXIT_NO_RESULT
    return EXIT_OK


def _check_writable(store: Path) -> None:
    """The store's folders exist and take a file, before any cell runs: a store that cannot be
    written (no permission, a file where its journal folder goes) is one line, not a
    traceback after the first cell."""
    import tempfile

    try:
        for sub in ("runs", "results", "journal"):
            (store / sub).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=store / "journal"):
            pass
    except OSError as exc:
        from qbench.files import describe_os_error

        raise ValueError(f"{describe_os_error(exc, store)} (the store cannot be "
                         "written)") from None  # fmt: skip


def _store_error(exc: OSError, store: Path) -> ValueError:
    """One line for a store the run could not write: the path, why, what to do, and that the
    rows it journalled before are kept (each is synced before the next cell starts)."""
    from qbench.files import describe_os_error

    return ValueError(f"{describe_os_error(exc, store)}; rows measured before it are kept in "
                      "the store (`qbench run SUITE --resume` measures the rest)")  # fmt: skip


def _at_a_glance(runs: Any, results: Any, budget: float) -> list[Any]:
    """The summary (qbench.report.summary) of the latest row of each of the suite's cells,
    with the runs' interleaved confirmations of its picks."""
    from qbench.confirm.picks import from_runs
    from qbench.report.data import latest_per_cell, prepare
    from qbench.report.summary import summarize

    if not len(results):
        return []
    return summarize(latest_per_cell(prepare(results)), budget, confirmations=from_runs(runs))
