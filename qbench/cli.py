"""The `qbench` command line. Heavy libraries are imported only by the subcommand that needs
them, so `qbench --help` is instant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_INVALID = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qbench",
        description="Measure what quantization buys a neural network: models x methods x "
        "backends x devices, from one suite file, into a Parquet store and an HTML report.",
        epilog="Exit codes: 0 the run completed (failed cells are listed, not fatal); "
        "1 an unexpected error; 2 invalid input (suite, device file, arguments).",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a suite: every cell measured, stored and reported")
    run.add_argument("suite", help="suite YAML file, e.g. suites/cnn.yaml")
    run.add_argument("--store", help="store directory (default: the suite's `output`)")
    run.add_argument(
        "--report",
        help="HTML report to write (default: the suite's `report`, else reports/SUITE.html)",
    )
    run.add_argument("--no-report", action="store_true", help="do not write a report")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (runnable and skipped cells) and stop",
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
        return cmd_list(args)
    except SuiteError as exc:
        print(f"qbench: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (FileNotFoundError, ValueError) as exc:
        print(f"qbench: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("qbench: interrupted; rows measured so far are in the store", file=sys.stderr)
        return 130


def cmd_report(args: argparse.Namespace) -> int:
    from qbench.report import build_report_html
    from qbench.store.parquet import load

    runs, results = load(args.store)
    if args.latest and len(runs):
        latest = runs.sort_values("started_at")["run_id"].iloc[-1]
        runs, results = runs[runs.run_id == latest], results[results.run_id == latest]
    if results.empty:
        raise ValueError(f"{args.store}: the store holds no results")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        build_report_html(runs, results, title=args.title or "qbench report"), encoding="utf-8"
    )
    print(f"wrote {out} ({len(results)} rows)")
    return EXIT_OK


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
