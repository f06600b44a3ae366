"""What do int8 (and other) artifacts buy over fp32 on this CPU, per runtime?

For one model, every (backend, method) variant is built through qbench's own prepare stage
(the artifacts `qbench run` measures, from the same cache), opened with the backend's session,
and timed in one process in interleaved rounds (1 thread, batch 1): each round times every
variant once, in rotating order, so drift and noise hit all alike. It prints each variant's
p50, its ratio to the same backend's fp32 (below 1 = faster), what ran (execution, delegate or
quantized-node counts) and the CPU's quantization-relevant ISA flags — an int8 ratio means
little without them (VNNI/dot-product instructions decide whether int8 kernels beat fp32).

    python benchmarks/int8_speedup.py [--model mobilenet_v2] [--rounds 15]
        [--variants litert:fp32 litert:static_int8 onnxruntime:fp32 onnxruntime:static_int8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import textwrap
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")


DEFAULT_VARIANTS = [
    "litert:fp32",
    "litert:static_int8",
    "litert:dynamic_int8",
    "litert:fp16",
    "onnxruntime:fp32",
    "onnxruntime:static_int8",
]


def prepare_variant(model: str, backend: str, method: str) -> tuple[Any, dict[str, Any]]:
    """(open session, row facts) for one variant, built by qbench's prepare stage."""
    from qbench.agent import prepare
    from qbench.inputs import InputSpec, batch_of, bind, load_npz
    from qbench.plan import build_plan
    from qbench.plugins import load_all
    from qbench.suite.loader import load_suite

    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "speedup.yaml"
        suite.write_text(
            textwrap.dedent(f"""
            name: int8-speedup
            models: [{model}]
            methods: [{method}]
            backends: [{backend}]
            accuracy: {{samples: 8}}
        """)
        )
        plan = build_plan(*load_suite(suite))
    if not plan.runnable:
        reason = plan.cells[0].skip_reason if plan.cells else "excluded"
        raise SystemExit(f"{backend}:{method} cannot run here: {reason}")
    cell = plan.runnable[0]
    prepared = prepare(cell)
    fam = load_all()
    backend_obj = fam.backends.get(backend)()
    method_obj = fam.methods.get(method)()
    session = backend_obj.open(
        Path(prepared["artifact_path"]),
        cell.artifact_format,
        1,
        backend_obj.Params(**cell.backend_params),
    )
    # inputs are named: the .npz holds x0, x1, ... and their names (qbench.inputs.save_npz)
    spec = [InputSpec.from_json(s) for s in prepared["model_inputs"]]
    loaded, _ = load_npz(prepared["eval_path"])
    x = batch_of(bind(spec, loaded), 1)
    facts = {
        "execution": method_obj.execution(
            cell.artifact_format, method_obj.Params(**cell.method_params)
        ),
        **{k: v for k, v in session.inspect().items() if k != "notes"},
    }
    return session.runner(x), facts


def what_ran(facts: dict[str, Any]) -> str:
    parts = [facts["execution"]]
    if facts.get("delegate") is not None:
        parts.append(
            f"{facts['delegate']} {facts.get('delegated_nodes')}/{facts.get('graph_nodes')} ops"
        )
    if facts.get("quantized_nodes") is not None:
        parts.append(f"quantized {facts['quantized_nodes']}/{facts.get('compute_nodes')}")
    return ", ".join(parts)


def main() -> int:
    from qbench.hostinfo import cpu_info
    from qbench.measure.latency import time_rounds
    from qbench.measure.stats import summarize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                        help="backend:method pairs")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--iters", type=int, default=20, help="iterations per variant per round")
    args = parser.parse_args()

    cpu = cpu_info()
    print(f"cpu: {cpu['cpu_model']}; quantization ISA flags: "
          f"{', '.join(cpu['cpu_flags']) or 'none'}")  # fmt: skip
    runners, facts = {}, {}
    for variant in args.variants:
        backend, method = variant.split(":")
        runners[variant], facts[variant] = prepare_variant(args.model, backend, method)
        for _ in range(10):  # warm-up
            runners[variant]()
    p50s: dict[str, list[float]] = {v: [] for v in args.variants}
    for i in range(args.rounds):
        order = args.variants[i % len(args.variants) :] + args.variants[: i % len(args.variants)]
        for variant in order:
            samples = time_rounds(runners[variant], warmup=0, min_iters=args.iters,
                                  min_seconds=0.0)[0]  # fmt: skip
            p50s[variant].append(summarize(samples)["latency_p50_ms"])
    print(f"{'variant':<26} {'p50 ms':>8} {'vs fp32':>8}  what ran")
    for variant in args.variants:
        backend = variant.split(":")[0]
        p50 = statistics.median(p50s[variant])
        base = p50s.get(f"{backend}:fp32")
        # Ratio of per-round medians: each round's pair saw the same machine state.
        ratio = (statistics.median(a / b for a, b in zip(p50s[variant], base, strict=True))
                 if base else float("nan"))  # fmt: skip
        print(f"{variant:<26} {p50:>8.3f} {ratio:>8.3f}  {what_ran(facts[variant])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
