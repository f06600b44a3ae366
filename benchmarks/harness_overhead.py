"""How much does qbench's own timing add to the latency it reports?

For each model, one ONNX Runtime session (1 thread) is timed two ways in the same process,
in alternating rounds so that drift and noise hit both alike:
  qbench: backend.open(...).runner(x) timed by qbench.measure.latency.time_rounds and
          summarised by qbench.measure.stats.summarize -- the code path of `qbench run`;
  bare:   `t0 = perf_counter_ns(); session.run(None, feed); t1 = ...` in a plain loop.
It prints the p50 of each and their ratio (goal: within 2%).

    python benchmarks/harness_overhead.py [--models digits_cnn mobilenet_v2] [--rounds 10]
        [--iters N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np


def prepare_artifact(model: str) -> tuple[Path, dict[str, np.ndarray]]:
    """The fp32 ONNX artifact and one input (named, in the model's order and dtypes), through
    qbench's own prepare stage."""
    from qbench.agent import prepare
    from qbench.inputs import InputSpec, batch_of, bind, load_npz
    from qbench.plan import build_plan
    from qbench.suite.loader import load_suite

    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "overhead.yaml"
        suite.write_text(
            textwrap.dedent(f"""
            name: overhead
            models: [{model}]
            methods: [fp32]
            backends: [onnxruntime]
            accuracy: {{samples: 8}}
        """)
        )
        plan = build_plan(*load_suite(suite))
    prepared = prepare(plan.runnable[0])
    # inputs are named: the .npz holds x0, x1, ... and their names (qbench.inputs.save_npz)
    spec = [InputSpec.from_json(s) for s in prepared["model_inputs"]]
    x, _ = load_npz(prepared["eval_path"])
    return Path(prepared["artifact_path"]), batch_of(bind(spec, x), 1)


def bare_round(session: Any, feed: dict, iters: int) -> list[float]:
    clock, run, out = time.perf_counter_ns, session.run, []
    for _ in range(iters):
        start = clock()
        run(None, feed)
        out.append((clock() - start) / 1e6)
    return out


def measure(model: str, rounds: int, iters: int) -> dict[str, float]:
    from qbench.backends.base import feed_by_name
    from qbench.backends.onnxruntime import OnnxRuntimeBackend, OrtParams
    from qbench.measure.latency import time_rounds
    from qbench.measure.stats import summarize

    artifact, x = prepare_artifact(model)
    session = OnnxRuntimeBackend().open(artifact, "onnx", 1, OrtParams())
    runner = session.runner(x)
    feed = feed_by_name(session.input_names, x)  # what the runner feeds, by name
    for _ in range(20):  # warm both paths
        runner()
    qbench_p50s, bare_p50s = [], []
    for i in range(rounds):
        # Alternate which path goes first, so neither always inherits the other's cache state.
        for path in ("qbench", "bare") if i % 2 == 0 else ("bare", "qbench"):
            if path == "qbench":
                samples = time_rounds(runner, warmup=0, min_iters=iters, min_seconds=0.0)[0]
                qbench_p50s.append(summarize(samples)["latency_p50_ms"])
            else:
                bare_p50s.append(float(np.median(bare_round(session.session, feed, iters))))
    ratios = [q / b for q, b in zip(qbench_p50s, bare_p50s, strict=True)]
    return {
        "qbench_p50_ms": statistics.median(qbench_p50s),
        "bare_p50_ms": statistics.median(bare_p50s),
        "ratio": statistics.median(ratios),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "mobilenet_v2"])
    parser.add_argument("--rounds", type=int, default=10, help="alternating round pairs")
    parser.add_argument(
        "--iters", type=int, default=0, help="iterations per round (default: about 1 s of work)"
    )
    args = parser.parse_args()
    print(f"{'model':<14} {'qbench p50 ms':>14} {'bare p50 ms':>12} {'ratio':>8}")
    worst = 0.0
    for model in args.models:
        iters = args.iters or (2000 if model == "digits_cnn" else 60)
        result = measure(model, args.rounds, iters)
        worst = max(worst, abs(result["ratio"] - 1))
        print(
            f"{model:<14} {result['qbench_p50_ms']:>14.4f} {result['bare_p50_ms']:>12.4f} "
            f"{result['ratio']:>8.4f}"
        )
    print(f"largest |ratio - 1|: {worst * 100:.2f}% (goal: within 2%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
