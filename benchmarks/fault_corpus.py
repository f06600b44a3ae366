"""Run the broken-input corpus of tests/test_bad_inputs.py and count how qbench answered.

    python benchmarks/fault_corpus.py [--verbose] [--src CHECKOUT] [--cases 'run-*,report-*']

Prints, over every case: how many were tried, how many printed a traceback, how many hung
(still running after tests.test_bad_inputs.CASE_TIMEOUT_S), how many exited with another code
than expected (2 for a refused input; 0 for a damaged store that readers read on), how many
were silently accepted (exit 0, nothing said, where an error was expected), how many printed
more than one line (a refusal) or anything but warnings (a damaged store), and how many lines
missed what they must name (the file, field or flag). The test asserts all of these are zero;
this script gives the counts (for before/after comparisons of a change).
"""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tests.test_bad_inputs as corpus
from tests.test_bad_inputs import CASE_TIMEOUT_S, CASES, STORE_CASES, _prepare, _qbench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="print each case's answer")
    parser.add_argument(
        "--src", help="qbench checkout to run the corpus against (default: this one)"
    )
    parser.add_argument("--cases", default="*", help="comma-separated fnmatch patterns on the "
                        "case names (default: every case)")  # fmt: skip
    args = parser.parse_args()
    patterns = args.cases.split(",")
    expected = {c[0]: 2 for c in CASES} | {c[0]: 0 for c in STORE_CASES}
    cases = [c for c in CASES + STORE_CASES if any(fnmatch.fnmatch(c[0], p) for p in patterns)]
    if not cases:
        print(f"--cases {args.cases}: no case matches", file=sys.stderr)
        return 2
    if args.src:  # e.g. a worktree of an older commit, for before/after counts
        corpus.REPO = Path(args.src).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store_dir = root / "store-run"
        store_dir.mkdir()
        (store_dir / "s.yaml").write_text(
            'name: one\nmodels: [digits_cnn]\nbackends: ["null"]\n'
            "measurement: {warmup: 1, min_iters: 3, min_seconds: 0.01}\n"
            'accuracy: {samples: 20}\npower: "off"\n'
        )  # as tests/test_bad_inputs.py's store_with_a_run
        made = _qbench(["run", "s.yaml", "--store", "store", "--no-report", "-q"], store_dir, {})
        if made.returncode != 0:
            print(made.stderr, file=sys.stderr)
            return 1
        store = store_dir / "store"

        def one(case: tuple) -> tuple[str, int | None, str, list[str]]:
            name, files, argv, env, words = case
            folder = root / name
            folder.mkdir()
            argv = _prepare(folder, store, files, argv)
            try:
                proc = _qbench(argv, folder, env, CASE_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:  # a FIFO opened, a stream read whole
                err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
                return name, None, err, words
            return name, proc.returncode, proc.stderr, words

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(one, cases))
    counts = dict.fromkeys(("tried", "traceback", "hang", "wrong exit", "silently accepted",
                            "not one line", "unnamed"), 0)  # fmt: skip
    for name, code, err, words in answers:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        counts["tried"] += 1
        counts["traceback"] += "Traceback" in err
        counts["hang"] += code is None
        counts["wrong exit"] += code is not None and code != expected[name]
        counts["silently accepted"] += expected[name] == 2 and code == 0 and not lines
        if expected[name] == 2:
            counts["not one line"] += len(lines) != 1
        else:  # a damaged store: warnings only, one where a file is at fault
            counts["not one line"] += any(not ln.startswith("qbench: warning:") for ln in lines)
        counts["unnamed"] += any(not lines or w not in lines[-1 if code else 0] for w in words)
        if args.verbose:
            last = lines[-1] if lines else "(nothing on stderr)"
            state = "HANG" if code is None else f"rc={code}"
            print(f"{name:<30} {state} lines={len(lines)}"
                  f"{' TRACEBACK' if 'Traceback' in err else ''}  {last[:150]}")  # fmt: skip
    print("  ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
