"""Run the broken-input corpus of tests/test_bad_inputs.py and count how qbench answered.

    python benchmarks/fault_corpus.py [--verbose] [--src CHECKOUT] [--cases 'run-*,report-*']

Prints, over every case: how many were tried, how many printed a traceback, how many exited
with a code other than 2, how many printed more than one line, and how many lines missed what
they must name (the file, field or flag). The test asserts all of these are zero; this script
gives the counts (for before/after comparisons of a change).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tests.test_bad_inputs as corpus
from tests.test_bad_inputs import CASES, _qbench, _write_files


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
    cases = [c for c in CASES if any(fnmatch.fnmatch(c[0], p) for p in patterns)]
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
        )
        made = _qbench(["run", "s.yaml", "--store", "store", "--no-report", "-q"], store_dir, {})
        if made.returncode != 0:
            print(made.stderr, file=sys.stderr)
            return 1
        store = store_dir / "store"

        def one(case: tuple) -> tuple[str, object, list[str], list[str]]:
            name, files, argv, env, words = case
            folder = root / name
            folder.mkdir()
            _write_files(folder, files)
            argv = [str(store) if a == "STORE" else a for a in argv]
            proc = _qbench(argv, folder, env)
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            return name, proc, lines, words

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(one, cases))
    counts = {"tried": 0, "traceback": 0, "exit not 2": 0, "not one line": 0, "unnamed": 0}
    for name, proc, lines, words in answers:
        counts["tried"] += 1
        traceback = "Traceback" in proc.stderr  # type: ignore[attr-defined]
        counts["traceback"] += traceback
        counts["exit not 2"] += proc.returncode != 2  # type: ignore[attr-defined]
        counts["not one line"] += len(lines) != 1
        missing = [w for w in words if not lines or w not in lines[-1]]
        counts["unnamed"] += bool(missing)
        if args.verbose:
            last = lines[-1] if lines else "(nothing on stderr)"
            print(f"{name:<28} rc={proc.returncode} lines={len(lines)}"  # type: ignore[attr-defined]
                  f"{' TRACEBACK' if traceback else ''}  {last[:150]}")  # fmt: skip
    print("  ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
