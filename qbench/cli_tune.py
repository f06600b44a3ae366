"""`qbench tune`: arguments, the suite it starts from, what it prints."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from qbench.cli import BUDGET_ARGUMENT, EXIT_NO_RESULT, EXIT_OK, output_file, store_folder


def add_parser(sub: Any) -> None:
    tune = sub.add_parser(
        "tune",
        help="search methods x parameters x backends x threads for the fastest configuration "
        "within an accuracy budget",
        description="Find the fastest configuration of one model on one device whose accuracy "
        "stays within a budget: every candidate screened on a few inputs (pruned when "
        "simulated, not faster than fp32, or failing the budget at its 95%% upper bound), the "
        "survivors evaluated in full (the budget judged at the 95%% lower bound), the "
        "finalists timed against each other in interleaved rounds with a significance test. "
        "Every trial is a row in the store; the result is the winner, the Pareto front and a "
        "suite file that reproduces the winner. Exit 4 when no configuration qualifies (the "
        "reason is printed, every trial stays in the store).",
    )
    tune.add_argument("target", metavar="MODEL_OR_SUITE",
                      help="a suite file with one model (its data, device and settings are "
                      "used), or a model: a built-in name or a model file as `qbench run "
                      "--model` takes")  # fmt: skip
    tune.add_argument("--budget", **BUDGET_ARGUMENT)
    tune.add_argument("--metric", choices=("auto", "top1", "agreement", "within_tol"),
                      default="auto",
                      help="what the budget is on: top-1 on labelled data, agreement with fp32's "
                      "top-1, the share of outputs within tolerance of fp32's (an output of one "
                      "value per input), or auto (top-1 where the data has labels; default)",
                      )  # fmt: skip
    tune.add_argument("--device", help="the target device (default: the suite's, else local)")
    tune.add_argument("--time-budget", type=duration, metavar="DURATION",
                      help="stop starting cells after this long, e.g. 30m, 1h, 90s (the cells "
                      "left are recorded as skipped with the reason)")  # fmt: skip
    tune.add_argument("--methods", help="comma-separated methods to search (default: "
                      "fp32, fp16, bf16, dynamic_int8, static_int8, weight_only, nncf_int8, "
                      "torchao, each with a grid of its parameters)")  # fmt: skip
    tune.add_argument("--backends", help="comma-separated backends (default: every one; those "
                      "this device lacks are skipped with the reason)")  # fmt: skip
    tune.add_argument("--threads", default="1", help="comma-separated thread counts (default 1)")
    tune.add_argument("--data", help="your data for a model file (as `qbench run --data`)")
    tune.add_argument(
        "--screen-samples", type=int, default=64, metavar="N",
        help="inputs the screen evaluates each candidate on (default 64)",
    )  # fmt: skip
    tune.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the finals")
    tune.add_argument("--store", help="store directory (default: the suite's output, results)")
    tune.add_argument("--report", help="HTML report of the tune's runs (default: "
                      "reports/NAME-tune.html)")  # fmt: skip
    tune.add_argument("--suite-out", help="where to write the winner's suite (default: "
                      "STORE/tune/NAME-winner.yaml)")  # fmt: skip
    tune.add_argument("--json", action="store_true", help="print one JSON document, nothing else")


def duration(text: str) -> float:
    """30m, 1h, 90s, 1h30m, or plain seconds."""
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*"
                         r"(?:(\d+(?:\.\d+)?)s?)?\s*", text)  # fmt: skip
    if not text.strip() or parts is None or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration such as 30m, 1h, 90s")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a time budget must be positive")
    return seconds


def _csv(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def base_suite(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """(the suite tune starts from, the folder its relative paths start from)."""
    import yaml

    target = Path(args.target)
    if target.suffix in (".yaml", ".yml"):
        from qbench.suite.loader import load_suite

        load_suite(target)  # a bad suite: one line naming the file and the field
        base = yaml.safe_load(target.read_text())
        folder = target.resolve().parent
        if args.data:
            raise ValueError(f"qbench tune: --data is for a model file; {target} names its data")
    else:
        from qbench.cli import _parser
        from qbench.suite.command_line import suite_from_args

        flags = ["run", "--model", args.target]
        if args.data:
            flags += ["--data", args.data]
        base = yaml.safe_load(suite_from_args(_parser().parse_args(flags)).text)
        folder = Path.cwd()
    if len(base.get("models") or []) != 1:
        count = len(base.get("models") or [])
        raise ValueError(f"qbench tune: {args.target} lists {count} models; tune takes one "
                         "(a suite with one model, or the model)")  # fmt: skip
    devices = [args.device] if args.device else (base.get("devices") or ["local"])
    if len(devices) != 1:
        raise ValueError(f"qbench tune: {args.target} lists devices {', '.join(devices)}; name "
                         "the one to tune for with --device")  # fmt: skip
    base["devices"] = devices
    return base, folder


def cmd_tune(args: argparse.Namespace) -> int:
    from qbench.plugins import load_all
    from qbench.tune.search import TuneConfig, tune
    from qbench.tune.space import DEFAULT_BACKENDS, DEFAULT_METHODS, members

    base, folder = base_suite(args)
    fam = load_all()
    threads = [int(t) for t in _csv(args.threads) or ["1"]]
    if any(t < 1 for t in threads) or args.screen_samples < 1 or args.rounds < 3:
        raise ValueError("qbench tune: --threads and --screen-samples must be positive, "
                         "--rounds at least 3")  # fmt: skip
    store = store_folder(args.store or base.get("output") or "results",
                         "--store" if args.store else "output")  # fmt: skip
    report = output_file(args.report or f"reports/{_safe(base['name'])}-tune.html", "--report")
    config = TuneConfig(
        base=base,
        source_dir=folder,
        store=store,
        budget=args.budget,
        methods=members(_csv(args.methods), DEFAULT_METHODS, fam.methods.names(), "--methods"),
        backends=members(_csv(args.backends), DEFAULT_BACKENDS, fam.backends.names(), "--backends"),
        threads=threads,
        screen_samples=args.screen_samples,
        time_budget_s=args.time_budget,
        rounds=args.rounds,
        metric={
            "auto": None,
            "top1": "top1",
            "agreement": "fp32_agreement",
            "within_tol": "fp32_within_tol",
        }[args.metric],
    )
    result = tune(config, None if args.json else _progress)
    suite_out = None
    if result.suite:
        suite_out = Path(args.suite_out or store / "tune" / f"{_safe(base['name'])}-winner.yaml")
        suite_out.parent.mkdir(parents=True, exist_ok=True)
        suite_out.write_text(result.suite)
    _write_report(store, result, report, config)
    if args.json:
        doc = {**result.to_json(), "suite_file": str(suite_out) if suite_out else None,
               "report": str(report), "store": str(store)}  # fmt: skip
        json.dump(doc, sys.stdout, default=str, indent=1)
        sys.stdout.write("\n")
    else:
        print_result(result, suite_out, report)
    return EXIT_OK if result.winner else EXIT_NO_RESULT


def _progress(total: int) -> Any:
    from qbench.cli_run import _Progress

    return _Progress(total, True)


def _write_report(store: Path, result: Any, report: Path, config: Any) -> None:
    """The report of the tune's runs, its summary judged as tune judged (budget, metric)."""
    from qbench.report import build_report_html
    from qbench.store.parquet import load

    runs, results = load(store)
    ids = set(result.runs.values())
    runs, results = runs[runs.run_id.isin(ids)], results[results.run_id.isin(ids)]
    if len(results):
        report.parent.mkdir(parents=True, exist_ok=True)
        title = f"qbench tune: {config.base['name']}"
        page = build_report_html(runs, results, title, config.budget, config.metric)
        report.write_text(page, encoding="utf-8")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:100] or "suite"


def print_result(result: Any, suite_out: Path | None, report: Path) -> None:
    from collections import Counter

    from qbench.report.summary_view import METRIC_NAME

    screened = [t for t in result.trials if t.stage == "screen"]
    full = [t for t in result.trials if t.stage == "full"]
    metric = METRIC_NAME.get(result.metric or "", "accuracy")
    points = result.budget * 100
    print(f"qbench tune: {result.model} on {result.device}, budget {points:g} point"
          f"{'' if points == 1 else 's'} of {metric} below fp32 at the 95% lower bound, "
          f"{result.wall_s / 60:.1f} min")  # fmt: skip
    ran = [t for t in screened if t.status != "skipped"]
    print(f"planned {len(screened)} cells, {len(ran)} ran in the screen (run "
          f"{result.runs.get('screen')}); {len(full)} evaluated in full (run "
          f"{result.runs.get('full', '-')})")  # fmt: skip
    skipped = Counter(t.verdict for t in screened if t.status == "skipped")
    for reason, n in skipped.most_common():
        print(f"  skipped x{n}: {reason[len('skipped: ') :][:110]}")
    for t in ran:
        print(f"  screen {t.cell_id}: {t.verdict}")
    for t in full:
        print(f"  full   {t.cell_id}: {t.verdict}")
    for f in result.finals:
        extra = (f", {f['times_fastest']:.3f}x the fastest's time, p={f['p_slower']:.3f}"
                 if "p_slower" in f else " (fastest)")  # fmt: skip
        print(f"  final  {f['cell_id']}: median {f['median_ms']:.3f} ms{extra}")
    if result.pareto:
        from qbench.report.summary import METRICS as ACCURACY_METRICS

        print("Pareto front (time per input, accuracy):")
        for p in result.pareto:
            acc = next((v for k, v in p.items() if k in ACCURACY_METRICS), None)
            shown = "—" if acc is None else f"{acc:.4f}"
            print(f"  {p['ms_per_input']:.3f} ms  {shown}  {p['cell_id']}")
    w = result.winner
    if w is None:
        print(f"nothing qualifies, no winner: {result.why}")
    else:
        ci = ""
        if w["accuracy_ci_low"] is not None and w["accuracy_ci_high"] is not None:
            ci = f" [{w['accuracy_ci_low']:.3f}, {w['accuracy_ci_high']:.3f}]"
        acc = "—" if w["accuracy"] is None else f"{w['accuracy']:.4f}"
        ref = result.reference["cell_id"]
        versus = f"{w['speedup']:.2f}x the best fp32 ({ref})"
        if w["cell_id"] == ref:
            versus = "the best fp32 itself: no faster configuration meets the budget"
        print(f"winner: {w['cell_id']}: {versus}; {metric} {acc}{ci}; {result.why}")
    for note in result.notes:
        print(f"note: {note}")
    if suite_out:
        print(f"suite reproducing the winner: {suite_out} (qbench run {suite_out})")
    print(f"report: {report}")
