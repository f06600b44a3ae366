"""Issue 17's goals on this x86 CPU: the fastest int8 and bf16 configurations qbench finds for
ResNet-18 and MobileNetV2 against fp32, and what AMX contributes.

Every variant is built by qbench's own prepare stage (the artifacts `qbench run` measures, from
the same cache), opened with its backend's session and timed in interleaved rounds (1 thread,
batch 1) in one process: each round times every variant once, in rotating order, so drift and
noise hit all alike; a ratio is the median over rounds of that round's ratio against ONNX
Runtime fp32. The artifacts are built in a separate process first, so the timing process holds
only the runtimes (as qbench's measure stage does). Then the oneDNN-based torch variants run
again in a process whose oneDNN ISA is capped below AMX (ONEDNN_MAX_CPU_ISA, the `isa` backend
option; oneDNN reads it once per process), beside ONNX Runtime fp32, which the cap does not
touch, to show what AMX buys on the same machine.

    python benchmarks/x86_goals.py [--models resnet18 mobilenet_v2] [--rounds 7]
        [--seconds 0.6] [--cap avx512_core_bf16]

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
from qbench.tune.finals import interleave, ratio  # noqa: E402

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


def groups() -> dict[str, list[str]]:
    """Variant labels per timing process."""
    return {"main": [v[0] for v in VARIANTS]}


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


def child(group: str, labels: list[str], args: Any, env: dict[str, str]) -> dict:
    """Run one process's variants; its per-model p50s and facts."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", ",".join(labels), "--models", *args.models,
         "--rounds", str(args.rounds), "--seconds", str(args.seconds)],
        capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(),
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{group} process failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def merged(model: str, parts: dict[str, dict]) -> dict[str, float]:
    """Each variant's speed-up over ONNX Runtime fp32 (median of per-round ratios, taken in
    the variant's own process) and its p50."""
    out = {}
    for part in parts.values():
        p50s = part[model]["p50s"]
        for name in p50s:
            if name == ANCHOR and name in out:
                continue
            out[name] = ratio(p50s, ANCHOR, name)
    return out


def report(model: str, parts: dict[str, dict]) -> dict[str, Any]:
    speed = merged(model, parts)
    print(f"\n## {model} (1 thread, batch 1; x = times faster than ONNX Runtime fp32 in the "
          "same process, median of per-round ratios)")  # fmt: skip
    print(f"{'variant':<28} {'p50 ms':>8} {'x ort fp32':>11}  process  what ran")
    rows = []
    for group, part in parts.items():
        got = part[model]
        for name, values in got["p50s"].items():
            if name == ANCHOR and group != "main":
                continue
            rows.append((speed[name], name, statistics.median(values), group, got["facts"][name]))
    for x, name, p50, group, facts in sorted(rows, reverse=True):
        print(f"{name:<28} {p50:>8.3f} {x:>11.2f}  {group:<8} {_what_ran(facts)}")
    for part in parts.values():
        for name, why in part[model]["skipped"].items():
            print(f"{name:<28} {'skipped':>8}  {why}")
    fp32 = [n for n in speed if "fp32" in n]
    int8 = [n for n in speed if "int8" in n]
    best_fp32, best_int8 = max(fp32, key=speed.get), max(int8, key=speed.get)
    goals: dict[str, Any] = {
        "best_int8": best_int8,
        "best_fp32": best_fp32,
        "int8_vs_ort_fp32": speed[best_int8],
        "int8_vs_best_fp32": speed[best_int8] / speed[best_fp32],
    }
    p50s = parts["main"][model]["p50s"]
    for mode in ("eager", "compiled"):
        if f"torch bf16 {mode}" in p50s and f"torch fp32 {mode}" in p50s:
            goals[f"bf16_vs_fp32_{mode}"] = ratio(p50s, f"torch fp32 {mode}", f"torch bf16 {mode}")
    if "torch bf16 eager" in p50s and "torch fp32 eager NHWC" in p50s:
        goals["bf16_vs_fp32_nhwc"] = ratio(p50s, "torch fp32 eager NHWC", "torch bf16 eager")
    return goals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.6, help="per variant per round")
    parser.add_argument("--cap", default="avx512_core_bf16", help="oneDNN ISA of the capped run")
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
    parts = {group: child(group, labels, args, dict(os.environ))
             for group, labels in groups().items()}  # fmt: skip
    goals = {model: report(model, parts) for model in args.models}

    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": args.cap.upper()}
    capped = child("capped", CAPPED, args, env)
    print(f"\n## torch with oneDNN capped at {args.cap} (its own process; x = times faster than "
          "ONNX Runtime fp32 there, which the cap does not touch)")  # fmt: skip
    for model in args.models:
        p50s, facts = capped[model]["p50s"], capped[model]["facts"]
        speed = merged(model, {"main": parts["main"]})
        print(f"{model}:")
        for name in CAPPED[1:]:
            if name not in p50s:
                continue
            kern = str(facts[name].get("onednn_kernels", "")).split(",")[0]
            print(f"  {name:<26} capped x{ratio(p50s, ANCHOR, name):5.2f} "
                  f"({statistics.median(p50s[name]):7.3f} ms) | uncapped "
                  f"x{speed.get(name, float('nan')):5.2f} | {kern}")  # fmt: skip

    print("\n## goals")
    checks = []
    if "resnet18" in goals:
        g = goals["resnet18"]
        checks.append((f"ResNet-18 best int8 ({g['best_int8']}) vs ORT fp32",
                       g["int8_vs_ort_fp32"], 5.0))  # fmt: skip
        for key, text in (("bf16_vs_fp32_eager", "eager, fp32 NCHW"),
                          ("bf16_vs_fp32_nhwc", "eager, fp32 NHWC"),
                          ("bf16_vs_fp32_compiled", "both compiled")):  # fmt: skip
            checks.append((f"ResNet-18 torch bf16 vs torch fp32, {text}",
                           g.get(key, float("nan")), 2.5))  # fmt: skip
    if "mobilenet_v2" in goals:
        g = goals["mobilenet_v2"]
        checks.append((f"MobileNetV2 best int8 ({g['best_int8']}) vs best fp32 "
                       f"({g['best_fp32']})", g["int8_vs_best_fp32"], 2.5))  # fmt: skip
    for text, value, goal in checks:
        verdict = "met" if value >= goal else "NOT met"
        print(f"{text}: {value:.2f}x (goal >= {goal}x): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
