"""The `qbench` command line. Heavy libraries are imported only by the subcommand that needs
them, so `qbench --help` is instant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_REGRESSION = 0, 1, 2, 3
# the command finished but has no answer: `qbench run` with no ok cell (all failed, timed out
# or skipped), `qbench tune` with no configuration that qualifies
EXIT_NO_RESULT = 4


def budget_fraction(text: str) -> float:
    """--budget: a fraction of accuracy (0.01 = one point), or points with a % (1%)."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is no number (e.g. 0.01 or 1%)") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text}: a fraction in [0, 1) (0.01 = one point)")
    return value


BUDGET_ARGUMENT: dict = {
    "type": budget_fraction,
    "default": 0.01,
    "metavar": "FRACTION",
    "help": "accuracy budget of the summary's within-budget pick: at most this much below fp32 "
    "at the 95%% lower bound (default 0.01 = one point; 1%% also works)",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors in one line, as qbench says every other mistake (argparse's
    own prints the usage first: 4-10 lines for one wrong value); --help shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"qbench: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="qbench",
        description="Measure what quantization buys a neural network: models x methods x "
        "backends x devices, from one suite file, into a Parquet store and an HTML report.",
        epilog="Exit codes: 0 the run completed with at least one ok cell (failed cells are "
        "listed, not fatal); 1 an unexpected error; 2 invalid input (suite, device file, "
        "arguments, runs that cannot be compared, a file or folder that cannot be read or "
        "written: a full disk, no permission); 3 `qbench compare` found a regression (with "
        "--fail-on regression, the default); 4 no result: `qbench run` had no ok cell (every "
        "cell failed, timed out or was skipped), `qbench tune` found no configuration that "
        "qualifies; 130 / 143 interrupted (Ctrl-C / SIGTERM).",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a suite (or one model given by --model): every cell measured, stored and "
        "reported",
        description="Run a suite file, or your own model without writing one: e.g. "
        "`qbench run --model m.onnx --data images/ --methods fp32,static_int8 --backends "
        "onnxruntime` (the same plan, store and report as a suite).",
    )
    run.add_argument(
        "suite", nargs="?", help="suite YAML file, e.g. suites/cnn.yaml (or give --model)"
    )
    own = run.add_argument_group(
        "your own model (instead of a suite file)",
        "Each flag maps to a suite field; `qbench run --model M --dry-run` shows the plan.",
    )
    own.add_argument(
        "--model",
        action="append",
        metavar="MODEL",
        help="a .onnx or .tflite file, or a torch factory `file.py:function` / "
        "`package.module:function` (repeat for several models)",
    )
    own.add_argument(
        "--weights", help="torch factory: state dict to load (.safetensors, .pt read weights-only)"
    )
    own.add_argument(
        "--input",
        action="append",
        metavar="NAME:SHAPE[:DTYPE] | NAME=VALUE",
        help="torch factory: an input, e.g. x:3x32x32 or ids:128:int64 (repeat, in call "
        "order); a .onnx file: a constant fed to that input, e.g. sr=16000 (repeat)",
    )
    own.add_argument(
        "--data",
        metavar="DATA",
        help="an image folder (one sub-folder per class, or flat), a .npz/.npy of inputs, "
        "`synthetic`, or a dataset name (`qbench list datasets`); default: auto",
    )
    own.add_argument(
        "--data-param",
        action="append",
        metavar="KEY=VALUE",
        help="a dataset parameter, e.g. layout=NHWC, resize=256, mean=[0.5,0.5,0.5] (YAML "
        "values; repeat)",
    )
    own.add_argument(
        "--methods",
        default="fp32,dynamic_int8,static_int8",
        help="comma-separated methods (default: fp32,dynamic_int8,static_int8)",
    )
    own.add_argument(
        "--backends",
        help="comma-separated backends (default: those that load the model's format)",
    )
    own.add_argument("--batch", default="1", help="comma-separated batch sizes (default: 1)")
    own.add_argument("--threads", default="1", help="comma-separated thread counts (default: 1)")
    own.add_argument("--device", default="local", help="device name or file (default: local)")
    own.add_argument("--name", help="suite name for rows and the report (default: the model's)")
    run.add_argument("--store", help="store directory (default: the suite's `output`)")
    run.add_argument(
        "--report",
        help="HTML report to write (default: the suite's `report`, else reports/SUITE.html)",
    )
    run.add_argument("--no-report", action="store_true", help="do not write a report")
    run.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="RUN_ID",
        help="continue an interrupted run of this suite in the store (default: its latest run): "
        "cells it measured or skipped are kept, its missing, failed and timed-out cells run, "
        "into that same run; refused if the suite file changed or the hardware differs",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (runnable and skipped cells) and stop; with --model, the suite the "
        "flags make goes to stdout alone (`> suite.yaml` saves it) and the plan to stderr; "
        "with --json, one document with both",
    )
    run.add_argument(
        "--executor",
        default="local",
        metavar="NAME[:ADDRESS]",
        help="where cells run: local (default, one at a time here) or ray[:ADDRESS] (each cell "
        "on a node of a Ray cluster holding the resource dev:DEVICE; ADDRESS e.g. HOST:6379, "
        "default RAY_ADDRESS or a local cluster; see `qbench list executors`)",
    )
    run.add_argument("--budget", **BUDGET_ARGUMENT)
    run.add_argument(
        "--no-confirm",
        action="store_true",
        help="do not time the summary's picks against their fp32 reference in interleaved "
        "rounds after the run (their speed-ups are then from cells timed apart, and say so)",
    )
    out = run.add_mutually_exclusive_group()
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    out.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document (summary and rows) to stdout, nothing else",
    )

    report = sub.add_parser("report", help="write an offline HTML report of a store")
    report.add_argument("store", help="store directory, e.g. results/")
    report.add_argument("-o", "--output", required=True, help="HTML file to write")
    report.add_argument("--latest", action="store_true", help="only the latest run")
    report.add_argument("--title", help="page title")
    report.add_argument("--budget", **BUDGET_ARGUMENT)

    exp = sub.add_parser(
        "export",
        help="write the artifact a measured cell ran (the file to ship) with its metadata",
        description="Copy the artifact of a measured cell (the quantized .onnx, .tflite, "
        "OpenVINO IR or torch file its backend loaded) out of the cache, checked against the "
        "hash its row recorded, with NAME.json beside it: method, parameters, hash, measured "
        "figures. A run id exports every ok cell of that run into a folder.",
    )
    exp.add_argument("target", metavar="CELL_OR_RUN", help="a cell id (its latest ok row) or a "
                     "run id, e.g. digits_cnn/static_int8/onnxruntime/local/b1/t1")  # fmt: skip
    exp.add_argument(
        "-o", "--output", required=True, help="file to write (a cell); folder (a run, or ending /)"
    )
    exp.add_argument("--store", default="results", help="store directory (default: results)")

    cmp = sub.add_parser(
        "compare",
        help="per cell, the change between two runs with a verdict: regression, improvement "
        "or no change (exit 3 on a regression)",
        description="Compare a candidate run with a base run cell by cell. A latency verdict "
        "needs a significant Mann-Whitney U test on the raw samples AND a change beyond the "
        "threshold, allowing for the cell's own noise (from its history in the store, else "
        "its timing rounds). Runs on different hardware are refused.",
    )
    cmp.add_argument(
        "base",
        help="base run: with --store, `previous` (the latest earlier run on the same "
        "hardware), `latest` or a run id (prefix); without, a store directory (its latest run)",
    )
    cmp.add_argument("candidate", help="candidate run: as BASE (`latest` with --store)")
    cmp.add_argument("--store", help="store holding both runs (history gives each cell's noise)")
    cmp.add_argument(
        "--threshold", type=float, default=0.10, help="relative p50 latency change (0.10)"
    )
    cmp.add_argument(
        "--accuracy-threshold",
        type=float,
        default=0.01,
        help="absolute accuracy change, 0..1 (0.01 = one point)",
    )
    cmp.add_argument(
        "--memory-threshold", type=float, default=0.10, help="relative peak memory change (0.10)"
    )
    cmp.add_argument(
        "--size-threshold", type=float, default=0.01, help="relative artifact size change (0.01)"
    )
    cmp.add_argument(
        "--alpha", type=float, default=0.01, help="significance of the Mann-Whitney test (0.01)"
    )
    cmp.add_argument(
        "--fail-on",
        choices=["regression", "never"],
        default="regression",
        help="exit 3 when a cell regressed or broke (default), or never",
    )
    cmp.add_argument("--markdown", metavar="FILE", help="also write the Markdown summary here")
    cmp.add_argument("--json", metavar="FILE", help="write the JSON summary here (- for stdout)")
    cmp.add_argument("-q", "--quiet", action="store_true", help="print nothing")

    from qbench.cli_tune import add_parser as add_tune

    add_tune(sub)

    dash = sub.add_parser(
        "dashboard",
        help="offline HTML of a store's history: per-cell trends with change points",
    )
    dash.add_argument("store", help="store directory holding the runs to draw")
    dash.add_argument("-o", "--output", required=True, help="HTML file to write")
    dash.add_argument("--title", help="page title")

    lst = sub.add_parser("list", help="list plugin members (with parameters) or devices")
    lst.add_argument(
        "family",
        nargs="?",
        default="all",
        choices=[
            "all",
            "models",
            "datasets",
            "methods",
            "backends",
            "devices",
            "power-meters",
            "transports",
            "executors",
        ],
    )
    lst.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern on names")

    dev = sub.add_parser("devices", help="probe this host, or list device descriptions")
    dev_sub = dev.add_subparsers(dest="devices_command", required=True, metavar="ACTION")
    probe = dev_sub.add_parser(
        "probe",
        help="detect this host (CPU, quantization ISA flags, GPUs, Edge TPU, power sensors) "
        "and print it as a device description",
    )
    probe.add_argument(
        "--write", metavar="PATH", help="write the description to PATH (e.g. devices/NAME.yaml)"
    )
    probe.add_argument("--force", action="store_true", help="overwrite an existing --write file")
    probe.add_argument(
        "--name", help="device name (default: the --write file's stem, else the host name)"
    )
    dev_list = dev_sub.add_parser("list", help="the device files (same as `qbench list devices`)")
    dev_list.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern on names")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"qbench {version('qbench')}"
    except PackageNotFoundError:
        return "qbench (not installed)"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from qbench.suite.loader import SuiteError

    try:
        if args.command == "run":
            from qbench.cli_run import cmd_run

            return cmd_run(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "tune":
            from qbench.cli_tune import cmd_tune

            return cmd_tune(args)
        if args.command == "devices":
            return cmd_devices(args)
        if args.command == "compare":
            from qbench.cli_regress import cmd_compare

            return cmd_compare(args)
        if args.command == "dashboard":
            from qbench.cli_regress import cmd_dashboard

            return cmd_dashboard(args)
        return cmd_list(args)
    except SuiteError as exc:
        print(f"qbench: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (FileNotFoundError, ValueError) as exc:
        print(f"qbench: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:  # a full disk, no permission, a file where a folder is needed
        from qbench.files import describe_os_error

        print(f"qbench: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (qbench.runner.Terminated)
        what = "terminated" if getattr(exc, "exit_code", None) else "interrupted"
        resume = " (`qbench run SUITE --resume` measures the rest)" if args.command == "run" else ""
        print(f"qbench: {what}; rows measured so far are in the store{resume}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


def cmd_export(args: argparse.Namespace) -> int:
    from qbench.artifact_export import export

    store = Path(args.store)
    if not (store / "results").is_dir():
        raise ValueError(f"--store {store}: no qbench store there (run a suite first)")
    for path in export(store, args.target, args.output):
        print(f"wrote {path}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from qbench.files import write_atomic
    from qbench.report import build_report_html
    from qbench.store.parquet import load

    out = output_file(args.output, "-o")
    runs, results = load(args.store)
    if args.latest and len(runs):
        latest = runs.sort_values("started_at")["run_id"].iloc[-1]
        runs, results = runs[runs.run_id == latest], results[results.run_id == latest]
    if results.empty:
        raise ValueError(f"{args.store}: the store holds no results")
    page = build_report_html(runs, results, title=args.title or "qbench report", budget=args.budget)
    write_atomic(out, page)  # a full disk leaves no truncated page
    print(f"wrote {out} ({len(results)} rows)")
    return EXIT_OK


def output_file(given: str, flag: str, example: str = "report.html") -> Path:
    """A file the command will write, checked before any work: not a folder, and no file
    standing where one of its folders would be (one line naming the flag; exit 2)."""
    path = Path(given)
    if path.is_dir():
        raise ValueError(f"{flag} {given}: is a folder; expected a file to write, e.g. "
                         f"{path / example}")  # fmt: skip
    return _folders_above(path, given, flag)


def store_folder(given: str, flag: str) -> Path:
    """A store the command will write into: a folder, or a path where one can be made."""
    path = Path(given)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {given}: is a file; a store is a folder (it is created if "
                         "missing)")  # fmt: skip
    return _folders_above(path, given, flag)


def _folders_above(path: Path, given: str, flag: str) -> Path:
    """No file stands where one of the path's folders would be made."""
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{flag} {given}: {parent} is a file, not a folder")
    return path


def cmd_list(args: argparse.Namespace) -> int:
    from qbench.params import describe_params
    from qbench.plugins import load_all

    families = load_all()
    names = (
        [
            "models",
            "datasets",
            "methods",
            "backends",
            "devices",
            "power-meters",
            "transports",
            "executors",
        ]
        if args.family == "all"
        else [args.family]
    )
    for family in names:
        print(f"{family}:")
        if family == "devices":
            _list_devices(args.pattern)
            continue
        registry = families.by_name(family)
        members = registry.names(args.pattern)
        if not members:
            print("  (none registered)")
        for name in members:
            member = registry.get(name)
            print(f"  {name:<16} {member.description}")
            extra = _member_facts(family, member)
            if extra:
                print(f"  {'':<16} {extra}")
            for pname, ptype, default, doc in describe_params(member.Params):
                print(f"  {'':<16}   {pname}: {ptype} = {default}  {doc}")
    return EXIT_OK


def _member_facts(family: str, member: Any) -> str:
    if family == "methods":
        return f"produces: {', '.join(member.produces)}"
    if family == "backends":
        why = member().unavailable()
        state = f"; UNAVAILABLE: {why}" if why else ""
        return f"loads: {', '.join(member.loads)}{state}"
    if family == "models":
        return f"format: {member.format}; dataset: {member.dataset}"
    return ""


def cmd_devices(args: argparse.Namespace) -> int:
    if args.devices_command == "list":
        print("devices:")
        _list_devices(args.pattern)
        return EXIT_OK
    out = output_file(args.write, "--write", "NAME.yaml") if args.write else None
    if out is not None:
        if out.suffix not in (".yaml", ".yml"):
            raise ValueError(f"--write {out}: a device file must end in .yaml")
        if out.exists() and not args.force:
            raise ValueError(f"--write {out}: the file exists (--force overwrites it)")
    import yaml

    from qbench.probe import probe, readiness_summary

    name = args.name or (out.stem if out is not None else None)
    device = probe(name)
    summary = readiness_summary(device["probe"].get("cpu_flags", []))
    facts = device["probe"]
    header = (
        f"# Written by `qbench devices probe` on {facts.get('host')}, {facts.get('probed_at')}.\n"
        f"# {summary}\n"
        "# `probe` holds what was detected on that host at that time. Datasheet figures go under\n"
        "# `datasheet:` (peak_int8_tops, peak_fp16_tflops, peak_fp32_tflops,\n"
        "# memory_bandwidth_gbs, tdp_w, ...), each with its source in a comment.\n"
    )
    text = header + yaml.safe_dump(device, sort_keys=False, width=100, allow_unicode=True)
    if out is None:
        print(text, end="")
        return EXIT_OK
    from qbench.devices import load_device
    from qbench.files import write_atomic

    write_atomic(out, text)
    written = load_device(out)  # what was written must load (SuiteError -> exit 2)
    print(f"wrote {out} (device {written.name})")
    print(summary)
    return EXIT_OK


def _list_devices(pattern: str) -> None:
    import fnmatch

    from qbench.devices import REPO_DEVICES, load_device

    folders = {REPO_DEVICES.resolve(), (Path.cwd() / "devices").resolve()}
    files = sorted({p for f in folders if f.is_dir() for p in f.glob("*.yaml")})
    for path in files:
        device = load_device(path)
        if fnmatch.fnmatch(device.name, pattern):
            print(
                f"  {device.name:<16} {device.description} [{device.kind}; transport "
                f"{device.transport.name}; backends {', '.join(device.backends) or 'any'}]"
            )


if __name__ == "__main__":
    sys.exit(main())
