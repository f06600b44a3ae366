"""`qbench compare` and `qbench dashboard`: nightly regression checks over a store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qbench.cli import EXIT_INVALID, EXIT_OK, EXIT_REGRESSION, output_file


def cmd_compare(args: argparse.Namespace) -> int:
    from qbench.regress.compare import (
        CompareError,
        NothingToCompare,
        Thresholds,
        compare,
        to_json_text,
        to_markdown,
    )

    thresholds = Thresholds(
        latency=args.threshold,
        alpha=args.alpha,
        accuracy=args.accuracy_threshold,
        memory=args.memory_threshold,
        size=args.size_threshold,
    )
    for name, value in (
        ("--threshold", args.threshold),
        ("--accuracy-threshold", args.accuracy_threshold),
        ("--memory-threshold", args.memory_threshold),
        ("--size-threshold", args.size_threshold),
    ):
        if not 0 <= value < 10:
            raise ValueError(f"{name} {value}: expected a fraction, e.g. 0.10 for 10%")
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha {args.alpha}: expected a probability between 0 and 1")
    if args.markdown:
        output_file(args.markdown, "--markdown")
    if args.json and args.json != "-":
        output_file(args.json, "--json")
    try:
        result = compare(args.base, args.candidate, args.store, thresholds)
    except NothingToCompare as exc:
        if not args.quiet:
            print(f"qbench compare: {exc}")
        return EXIT_OK
    except CompareError as exc:
        print(f"qbench: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    markdown = to_markdown(result)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        with open(args.markdown, "a", encoding="utf-8") as fh:  # GITHUB_STEP_SUMMARY appends
            fh.write(markdown)
    if args.json == "-":
        print(to_json_text(result))
    else:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(to_json_text(result), encoding="utf-8")
        if not args.quiet:
            print(markdown, end="")
    failing = result.failing
    if failing and not args.quiet:
        names = ", ".join(c.cell_id for c in failing)
        print(f"qbench compare: {len(failing)} regression(s): {names}", file=sys.stderr)
    if failing and args.fail_on == "regression":
        return EXIT_REGRESSION
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    from qbench.regress.dashboard import write_dashboard

    store = Path(args.store)
    if not store.is_dir():
        raise FileNotFoundError(f"{store}: no such store directory")
    output_file(args.output, "-o")
    out = write_dashboard(store, args.output, args.title)
    print(f"wrote {out}")
    return EXIT_OK
