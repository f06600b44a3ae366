"""Issue 17's goals on this x86 CPU: the fastest int8 and bf16 configurations qbench finds for
ResNet-18 and MobileNetV2 against fp32, and what AMX contributes.

Every variant is built by qbench's own prepare stage (the artifacts `qbench run` measures, from
the same cache), opened with its backend's session and timed in interleaved rounds (1 thread,
batch 1) in one process: each round times every variant once, in rotating order, so drift and
noise hit all alike; a ratio is the median over rounds of that round's ratio against ONNX
Runtime fp32. The artifacts are built in a separate process first, so the timing process holds
only the runtimes (as qbench's measure stage does). The timing process runs --processes times,
one after another: figures differ more between processes than between rounds of one process,
so each figure is the median over processes, printed with its range. Then the oneDNN-based
torch variants run again in a process whose oneDNN ISA is capped below AMX (ONEDNN_MAX_CPU_ISA,
the `isa` backend option; oneDNN reads it once per process), beside ONNX Runtime fp32, which
the cap does not touch, to show what AMX buys on the same machine.

    python benchmarks/x86_goals.py [--models resnet18 mobilenet_v2] [--rounds 7]
        [--seconds 0.6] [--processes 3] [--cap avx512_core_bf16]
        [--variants 'ort fp32,ort int8 (QDQ U8S8)']

Goals checked (issue 17): best int8 ResNet-18 >= 5x ONNX Runtime fp32; best int8 MobileNetV2
>= 2.5x the best fp32 of any backend; torch bf16 ResNet-18 >= 2.5x torch fp32 (same compile
setting); capped cells slower than uncapped ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# the same interleaved rounds as `qbench tune`'s finals
from qbench.measure.latency import interleaved_rounds  # noqa: E402
from qbench.tune.finals import ratio  # noqa: E402


def interleave(runners: dict, rounds: int, seconds: float) -> dict[str, list[float]]:
    """Per-round median latency of every runner, in interleaved rounds (qbench's own loop)."""
    return interleaved_rounds(runners, rounds, 5, seconds)


# (label, backend, backend params, method, method params); the label names the variant.
VARIANTS: list[tuple[str, str, dict[str, Any], str, dict[str, Any]]] = [
    ("ort fp32", "onnxruntime", {}, "fp32", {}),
    ("ort int8 (QDQ U8S8)", "onnxruntime", {}, "static_int8", {}),
    ("torch fp32 eager", "torch", {}, "fp32", {}),
    ("torch fp32 eager NHWC", "torch", {"channels_last": True}, "fp32", {}),
    ("torch fp32 compiled", "torch", {"compile": True}, "fp32", {}),
    ("torch bf16 eager", "torch", {}, "bf16", {}),
    ("torch bf16 compiled", "torch", {"compile": True}, "bf16", {}),
    ("torch int8 PT2E+inductor", "torch", {}, "static_int8", {}),
    ("torch int8 FX (legacy)", "torch", {}, "static_int8", {"torch_flow": "fx"}),
    ("openvino fp32", "openvino", {}, "fp32", {}),
    ("openvino bf16", "openvino", {}, "bf16", {}),
    ("openvino int8 (NNCF)", "openvino", {}, "nncf_int8", {}),
    # the same IR compiled with the export's dynamic batch axis (shapes: dynamic)
    ("openvino fp32 dyn shapes", "openvino", {"shapes": "dynamic"}, "fp32", {}),
    ("openvino int8 dyn shapes", "openvino", {"shapes": "dynamic"}, "nncf_int8", {}),
    ("litert fp32", "litert", {}, "fp32", {}),
    ("litert int8", "litert", {}, "static_int8", {}),
]
# Variants whose kernels are oneDNN's inside torch: the ISA cap changes them.
CAPPED = ["ort fp32", "torch fp32 eager", "torch bf16 eager", "torch bf16 compiled",
          "torch int8 PT2E+inductor"]  # fmt: skip
ANCHOR = "ort fp32"  # every ratio is against it, in the same process


def _yaml_member(name: str, params: dict[str, Any]) -> str:
    return json.dumps({"name": name, "params": params}) if params else name


def prepare_variant(model: str, variant: tuple) -> dict[str, Any] | str:
    """The planned cell and prepare stage's output of one variant (built by qbench, from its
    cache), or why it cannot run here. Run in a process of its own (see build_all)."""
    from qbench.agent import prepare
    from qbench.plan import build_plan
    from qbench.suite.loader import load_suite

    _label, backend, bparams, method, mparams = variant
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "goals.yaml"
        suite.write_text(textwrap.dedent(f"""
            name: x86-goals
            models: [{model}]
            methods: [{_yaml_member(method, mparams)}]
            backends: [{_yaml_member(backend, bparams)}]
            accuracy: {{samples: 8}}
            calibration: {{samples: 64}}
        """))  # fmt: skip
        plan = build_plan(*load_suite(suite))
    if not plan.runnable:
        return plan.cells[0].skip_reason if plan.cells else "excluded"
    cell = plan.runnable[0]
    try:
        return {"cell": cell.to_json(), "prepared": prepare(cell)}
    except Exception as exc:
        return f"prepare failed: {type(exc).__name__}: {exc}"


def open_variant(built: dict[str, Any], batch: int = 1) -> tuple[Any, dict[str, Any]]:
    """(timed callable, facts) of a prepared variant: its backend's session, nothing else."""
    from qbench.inputs import InputSpec, batch_of, bind, load_npz
    from qbench.plan import Cell
    from qbench.plugins import load_members

    cell, prepared = Cell.from_json(built["cell"]), built["prepared"]
    fam = load_members(cell.members)
    backend_obj = fam.backends.get(cell.backend)()
    session = backend_obj.open(Path(prepared["artifact_path"]), cell.artifact_format, 1,
                               backend_obj.Params(**cell.backend_params))  # fmt: skip
    spec = [InputSpec.from_json(s) for s in prepared["model_inputs"]]
    x, _ = load_npz(prepared["eval_path"])
    run = session.runner(batch_of(bind(spec, x), batch))
    method_obj = fam.methods.get(cell.method)()
    typed = method_obj.Params(**cell.method_params)
    facts = {
        "execution": method_obj.execution(cell.artifact_format, typed),
        **{k: v for k, v in session.inspect().items() if k != "notes"},
    }
    return run, facts


def measure(models: list[str], labels: list[str], rounds: int, seconds: float) -> dict:
    """Time the prepared variants `labels` of each model in this process. Building them ran
    in another process (--build): like qbench's measure stage, this one holds only runtimes."""
    done = subprocess.run(
        [sys.executable, __file__, "--build", ",".join(labels), "--models", *models],
        capture_output=True, text=True, cwd=tempfile.gettempdir(),
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"building failed ({done.returncode}): {done.stderr[-2000:]}")
    built = json.loads(done.stdout.strip().splitlines()[-1])
    out: dict[str, Any] = {}
    for model in models:
        runners, facts, skipped = {}, {}, {}
        for label in labels:
            got = built[model][label]
            if isinstance(got, str):
                skipped[label] = got
            else:
                runners[label], facts[label] = open_variant(got)
        p50s = interleave(runners, rounds, seconds)
        out[model] = {"p50s": p50s, "facts": facts, "skipped": skipped}
    return out


def build_all(models: list[str], labels: list[str]) -> dict[str, dict[str, Any]]:
    variants = [v for v in VARIANTS if v[0] in labels]
    return {m: {v[0]: prepare_variant(m, v) for v in variants} for m in models}


def _what_ran(f: dict[str, Any]) -> str:
    parts = [f.get("execution", "")]
    if f.get("quantized_nodes") is not None:
        parts.append(f"int8 nodes {f['quantized_nodes']}/{f.get('compute_nodes')}")
    if f.get("onednn_kernels"):
        parts.append(str(f["onednn_kernels"]).split(",")[0])
    if f.get("delegate"):
        parts.append(f"{f['delegate']} {f.get('delegated_nodes')}/{f.get('graph_nodes')} ops")
    return "; ".join(p for p in parts if p)


def child(labels: list[str], args: Any, env: dict[str, str]) -> dict:
    """Time `labels` in a fresh process; its per-model p50s and facts."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", ",".join(labels), "--models", *args.models,
         "--rounds", str(args.rounds), "--seconds", str(args.seconds)],
        capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(),
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"timing process failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    """The median of per-process figures and their range, e.g. '2.41x [2.29, 2.65]'."""
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:.2f}x"
    return f"{mid:.2f}x [{min(values):.2f}, {max(values):.2f}]"


def report(model: str, runs: list[dict]) -> dict[str, list[float]]:
    """Print the model's table; return each goal's figure per timing process.

    A variant's speed-up over ONNX Runtime fp32 is the median over rounds of that round's
    ratio, taken in each process, then the median over processes. Processes differ more than
    rounds do (where the loader placed code and weights, the host's load in those minutes),
    so the range over processes is printed beside every figure."""
    speeds: dict[str, list[float]] = {}
    p50s_all: dict[str, list[float]] = {}
    for run in runs:
        p50s = run[model]["p50s"]
        for name in p50s:
            speeds.setdefault(name, []).append(ratio(p50s, ANCHOR, name))
            p50s_all.setdefault(name, []).append(statistics.median(p50s[name]))
    speed = {name: statistics.median(values) for name, values in speeds.items()}
    facts, skipped = runs[0][model]["facts"], runs[0][model]["skipped"]
    print(
        f"\n## {model} (1 thread, batch 1; x = times faster than ONNX Runtime fp32 in the "
        f"same process, median of per-round ratios, median over {len(runs)} processes)"
    )
    print(f"{'variant':<28} {'p50 ms':>8} {'x ort fp32':>11}  {'per process':<14} what ran")
    for name in sorted(speed, key=lambda n: speed[n], reverse=True):
        low, high = min(speeds[name]), max(speeds[name])
        print(f"{name:<28} {statistics.median(p50s_all[name]):>8.3f} {speed[name]:>11.2f}  "
              f"{f'[{low:.2f}, {high:.2f}]':<14} {_what_ran(facts[name])}")  # fmt: skip
    for name, why in skipped.items():
        print(f"{name:<28} {'skipped':>8}  {why}")
    fp32 = [n for n in speed if "fp32" in n]
    int8 = [n for n in speed if "int8" in n]
    pairs: list[tuple[str, str, str]] = []
    if fp32 and int8:  # --variants may leave either out
        best_fp32 = max(fp32, key=lambda n: speed[n])
        best_int8 = max(int8, key=lambda n: speed[n])
        # each goal is a direct ratio between two variants timed in the same rounds of a process
        pairs += [
            (f"best int8 ({best_int8}) vs ORT fp32", ANCHOR, best_int8),
            (f"best int8 ({best_int8}) vs best fp32 ({best_fp32})", best_fp32, best_int8),
        ]
    pairs += [("torch bf16 vs torch fp32, eager, fp32 NCHW", "torch fp32 eager",
              "torch bf16 eager"),
             ("torch bf16 vs torch fp32, eager, fp32 NHWC", "torch fp32 eager NHWC",
              "torch bf16 eager"),
             ("torch bf16 vs torch fp32, both compiled", "torch fp32 compiled",
              "torch bf16 compiled")]  # fmt: skip
    return {text: [ratio(r[model]["p50s"], slow, fast) for r in runs]
            for text, slow, fast in pairs if slow in speed and fast in speed}  # fmt: skip


def chosen(given: str | None) -> list[str]:
    """--variants: the labels to time, in VARIANTS' order, the anchor always among them."""
    labels = [v[0] for v in VARIANTS]
    if not given:
        return labels
    wanted = {w.strip() for w in given.split(",") if w.strip()} | {ANCHOR}
    unknown = sorted(wanted - set(labels))
    if unknown:
        raise SystemExit(f"--variants: no such variant {', '.join(unknown)}; expected labels "
                         f"among: {', '.join(labels)}")  # fmt: skip
    return [label for label in labels if label in wanted]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per process")
    parser.add_argument("--seconds", type=float, default=0.6, help="per variant per round")
    parser.add_argument("--processes", type=int, default=3,
                        help="timing processes, one after another: each figure is the median "
                        "over them, printed with their range")  # fmt: skip
    parser.add_argument("--cap", default="avx512_core_bf16", help="oneDNN ISA of the capped run")
    parser.add_argument("--variants", help="comma-separated labels to time (default: all; "
                        f"'{ANCHOR}' is always timed: every ratio is against it)")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)  # labels this process times
    parser.add_argument("--build", help=argparse.SUPPRESS)  # labels this process builds
    args = parser.parse_args()

    if args.build:  # JSON on stdout's last line
        print(json.dumps(build_all(args.models, args.build.split(",")), default=str))
        return 0

    if args.child:  # JSON on stdout's last line
        got = measure(args.models, args.child.split(","), args.rounds, args.seconds)
        print(json.dumps(got, default=str))
        return 0

    from qbench.hostinfo import cpu_info, onednn_isa

    cpu = cpu_info()
    print(f"cpu: {cpu['cpu_model']}; flags: {', '.join(cpu['cpu_flags'])}")
    print(f"oneDNN ISA (torch): {onednn_isa()}")
    labels = chosen(args.variants)
    runs = [child(labels, args, dict(os.environ)) for _ in range(max(1, args.processes))]
    goals = {model: report(model, runs) for model in args.models}

    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": args.cap.upper()}
    capped = child([c for c in CAPPED if c in labels], args, env)
    print(f"\n## torch with oneDNN capped at {args.cap} (its own process; x = times faster than "
          "ONNX Runtime fp32 there, which the cap does not touch)")  # fmt: skip
    for model in args.models:
        p50s, facts = capped[model]["p50s"], capped[model]["facts"]
        print(f"{model}:")
        for name in CAPPED[1:]:
            if name not in p50s or name not in runs[0][model]["p50s"]:
                continue
            uncapped = statistics.median(ratio(r[model]["p50s"], ANCHOR, name) for r in runs)
            kern = str(facts[name].get("onednn_kernels", "")).split(",")[0]
            print(f"  {name:<26} capped x{ratio(p50s, ANCHOR, name):5.2f} "
                  f"({statistics.median(p50s[name]):7.3f} ms) | uncapped "
                  f"x{uncapped:5.2f} | {kern}")  # fmt: skip

    print(f"\n## goals (median over {len(runs)} timing processes [lowest, highest])")
    checks = []
    for text, values in goals.get("resnet18", {}).items():
        if "vs best fp32" not in text:
            checks.append((f"ResNet-18 {text}", values, 5.0 if "int8" in text else 2.5))
    for text, values in goals.get("mobilenet_v2", {}).items():
        if "vs best fp32" in text:
            checks.append((f"MobileNetV2 {text}", values, 2.5))
    for text, values, goal in checks:
        verdict = "met" if statistics.median(values) >= goal else "NOT met"
        print(f"{text}: {spread(values)} (goal >= {goal}x): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
