"""How well does `qbench compare` tell a real slowdown from noise on this machine?

Runs a small suite over and over, each run a separate `qbench run` process (as nightly runs
are): a real ONNX Runtime model with fixed threads, the same model on ONNX Runtime with a
busy wait that the slowed runs set (tests/plugins/sleepy.py: a real session, slowed as a
slower kernel would be), and the null backend (a fixed wait). Quiet runs q0..qN go to one
store; between them, runs s0..sN-1 go to another, with QBENCH_NULL_SLOWDOWN (default 1.10: the
null backend waits 10% longer) and QBENCH_SLEEPY_EXTRA_MS (10% of the real cell's p50 in q0).
Then:

  no-change pairs   (q_i, q_i+1) for every cell, and (q_i, s_i) for the plain ONNX Runtime
                    cell, which the slowdown does not touch: every regression verdict is a
                    false alarm
  slowdown pairs    (q_i, s_i) for the null cell and the slowed ONNX Runtime cell: every
                    regression verdict is a detection

Each pair is judged twice: as two lone runs (`qbench compare STORE_A STORE_B`: the noise comes
from the runs' timing rounds) and with the quiet store's history before the base (`qbench
compare previous latest --store`: the noise comes from the cell's history).

    python benchmarks/regression_detection.py                 # 20 pairs, about 10 minutes
    python benchmarks/regression_detection.py --pairs 5 --model digits_cnn   # a quick look
    python benchmarks/regression_detection.py --pairs 1 --model digits_cnn --quick  # smoke test

Goal (issue 6): at least 95% of 10% slowdowns detected, at most 5% false alarms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXTRA_ENV = "QBENCH_SLEEPY_EXTRA_MS"  # tests/plugins/sleepy.py's injected busy wait
# The table's names of the cells' backends.
NAMES = {"onnxruntime": "onnxruntime", "null": "null", "sleepy_onnxruntime": "onnxruntime+wait"}


MEASUREMENT = "{warmup: 20, min_iters: 100, min_seconds: 1.0, repeats: 5}"
# --quick: enough to run every step (a smoke test), not to judge detection
QUICK = "{warmup: 1, min_iters: 5, min_seconds: 0.02, repeats: 2}"


def write_suite(
    folder: Path, model: str, sleep_ms: float, samples: int, measurement: str = MEASUREMENT
) -> Path:
    path = folder / "detection.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: detection
            models: [{model}]
            methods: [fp32]
            backends:
              - onnxruntime
              - {{name: "null", params: {{sleep_ms: {sleep_ms}}}}}
              - {{name: sleepy_onnxruntime, params: {{wait_ms: 0}}}}
            scenario: {{batch: [1], threads: [1]}}
            measurement: {measurement}
            accuracy: {{samples: {samples}}}
            """
        ).lstrip()
    )
    return path


def qbench_run(suite: Path, store: Path, slowdown: float | None, extra_ms: float = 0.0) -> None:
    env = dict(os.environ)
    env.pop("QBENCH_NULL_SLOWDOWN", None)
    env.pop(EXTRA_ENV, None)
    env["QBENCH_PLUGINS"] = "tests.plugins.sleepy"  # the real backend a slowdown is injected in
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if slowdown is not None:
        env["QBENCH_NULL_SLOWDOWN"] = str(slowdown)
        env[EXTRA_ENV] = f"{extra_ms:.6f}"
    cmd = [
        sys.executable,
        "-m",
        "qbench.cli",
        "run",
        str(suite),
        "--store",
        str(store),
        "--no-report",
        "--no-confirm",  # the slowed cells stay as measured: confirmation is not the subject
        "-q",
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"qbench run failed: {proc.stderr.strip()}")


def judge(history: Any, base: str, cand: str, with_history: bool) -> dict[str, Any]:
    """Cell id -> CellComparison of one pair; without history only the two runs are seen."""
    from qbench.regress.compare import Thresholds, compare_runs

    if not with_history:
        history = history[history["run_id"].isin([base, cand])]
    return {c.cell_id: c for c in compare_runs(history, base, cand, Thresholds()).cells}


def run_pairs(suite: Path, quiet_store: Path, slow_store: Path, pairs: int,
              slowdown: float) -> None:  # fmt: skip
    """q0, then s_i and q_i+1 for each pair; the slowed runs' busy wait is calibrated on q0."""
    from qbench.regress.history import load_history

    started = time.perf_counter()
    qbench_run(suite, quiet_store, None)  # q0
    first = load_history(quiet_store)
    slowed_cell = next(c for c in first["cell_id"].unique() if "/sleepy_onnxruntime" in c)
    base_p50 = float(first.loc[first["cell_id"] == slowed_cell, "latency_p50_ms"].iloc[0])
    extra_ms = (slowdown - 1) * base_p50  # calibrated: the real cell becomes x slowdown
    for i in range(pairs):
        qbench_run(suite, slow_store, slowdown, extra_ms)  # s_i
        qbench_run(suite, quiet_store, None)  # q_i+1
        print(f"  runs {2 * i + 3}/{2 * pairs + 1} ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20, help="pairs of each kind (20)")
    parser.add_argument("--model", default="mobilenet_v2", help="real model on ORT")
    parser.add_argument("--sleep-ms", type=float, default=2.0, help="null backend wait (2.0)")
    parser.add_argument("--slowdown", type=float, default=1.10, help="injected factor (1.10)")
    parser.add_argument("--samples", type=int, default=50, help="accuracy inputs per run")
    parser.add_argument("--keep", metavar="DIR", help="keep the two stores in DIR")
    parser.add_argument("--reuse", metavar="DIR",
                        help="judge the stores an earlier --keep DIR left, without new runs "
                        "(the same measurements under another decision rule)")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="brief timings: checks that the script runs, its figures mean "
                        "nothing")  # fmt: skip
    args = parser.parse_args()

    import pandas as pd

    from qbench.regress.history import load_history

    root = Path(args.reuse or args.keep or tempfile.mkdtemp(prefix="qbench-detect-"))
    root.mkdir(parents=True, exist_ok=True)
    quiet_store, slow_store = root / "quiet", root / "slowed"
    started = time.perf_counter()
    if not args.reuse:
        measurement = QUICK if args.quick else MEASUREMENT
        run_pairs(write_suite(root, args.model, args.sleep_ms, args.samples, measurement),
                  quiet_store, slow_store, args.pairs, args.slowdown)  # fmt: skip
    quiet, slowed = load_history(quiet_store), load_history(slow_store)
    slowed_cell = next(c for c in quiet["cell_id"].unique() if "/sleepy_onnxruntime" in c)
    q_ids = quiet.drop_duplicates("run_id").sort_values("run_started_at")["run_id"].tolist()
    s_ids = slowed.drop_duplicates("run_id").sort_values("run_started_at")["run_id"].tolist()

    ort_cell = f"{args.model}/fp32/onnxruntime/local/b1/t1"
    null_cell = next(c for c in quiet["cell_id"].unique() if "/null" in c)
    # (kind, cell, base run, candidate run, history the candidate is judged with)
    cases: list[tuple[str, str, str, str, Any]] = []
    started_at = dict(zip(quiet["run_id"], quiet["run_started_at"], strict=True))
    pairs = min(len(s_ids), len(q_ids) - 1)  # --reuse: the pairs the stores hold
    for i in range(pairs):
        # s_i is judged with the quiet history up to q_i (its base), as a nightly would be;
        # q_i+1 with the quiet store (compare_runs keeps only runs up to the base).
        with_s = pd.concat(
            [
                quiet[quiet["run_started_at"] <= started_at[q_ids[i]]],
                slowed[slowed["run_id"] == s_ids[i]],
            ],
            ignore_index=True,
        )
        cases.append(("no change", null_cell, q_ids[i], q_ids[i + 1], quiet))
        cases.append(("no change", ort_cell, q_ids[i], q_ids[i + 1], quiet))
        cases.append(("no change", slowed_cell, q_ids[i], q_ids[i + 1], quiet))
        cases.append(("no change", ort_cell, q_ids[i], s_ids[i], with_s))
        cases.append(("slowdown", null_cell, q_ids[i], s_ids[i], with_s))
        cases.append(("slowdown", slowed_cell, q_ids[i], s_ids[i], with_s))

    print(
        f"\n{pairs} rounds on {args.model} (ORT, 1 thread) and the null backend "
        f"({args.sleep_ms:g} ms), injected slowdown x{args.slowdown:g}; "
        f"{time.perf_counter() - started:.0f} s of runs\n"
    )
    print("| pairs | cell | n | regression verdicts, runs alone | with history |")
    print("|---|---|---|---|---|")
    summary: dict[tuple[str, str], list[int]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    for kind, cell, base, cand, history in cases:
        key = (kind, NAMES.get(cell.split("/")[2].split("[")[0], cell))
        counts = summary.setdefault(key, [0, 0, 0])
        counts[0] += 1
        for slot, with_history in ((1, False), (2, True)):
            verdict = judge(history, base, cand, with_history)[cell]
            counts[slot] += verdict.verdict == "regression"
            if with_history:
                change = verdict.change("latency_min_ms") or verdict.change("latency_p50_ms")
                ratios.setdefault(key, []).append(1 + change.change if change else float("nan"))
    for (kind, backend), (n, alone, hist) in sorted(summary.items()):
        what = "detected" if kind == "slowdown" else "false alarms"
        print(
            f"| {kind} | {backend} | {n} | {alone}/{n} {what} ({alone / n:.0%}) | "
            f"{hist}/{n} ({hist / n:.0%}) |"
        )
    print("\nmeasured ratios of the judged latency (fastest call, else p50; candidate / base):")
    for (kind, backend), rs in sorted(ratios.items()):
        rs = sorted(rs)
        print(
            f"  {kind:9} {backend:11} min {rs[0]:.3f}  median {rs[len(rs) // 2]:.3f}  "
            f"max {rs[-1]:.3f}"
        )
    # The goal is judged on real cells: the null backend's fixed wait has almost no noise.
    real = [k for k in summary if k[1] != "null"]
    false_alarms = sum(summary[k][2] for k in real if k[0] == "no change")
    no_change = sum(summary[k][0] for k in real if k[0] == "no change")
    slow_n, _, detected = summary[("slowdown", "onnxruntime+wait")]
    ok = detected / slow_n >= 0.95 and false_alarms / no_change <= 0.05
    print(
        f"\ngoal on real ONNX Runtime cells (>= 95% detected, <= 5% false alarms, with "
        f"history): detected {detected}/{slow_n} ({detected / slow_n:.0%}), false alarms "
        f"{false_alarms}/{no_change} ({false_alarms / no_change:.1%}) -> "
        f"{'met' if ok else 'NOT met'}"
    )
    if args.keep:
        print(f"stores kept in {quiet_store} and {slow_store}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
