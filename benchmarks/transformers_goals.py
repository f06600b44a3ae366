"""Issue 18's expected ratios on this CPU: all-MiniLM-L6-v2 (batch 8 x 128 tokens) and
SmolLM2-135M (batch 1: prefill and decode) across methods and runtimes, 1 thread.

Every variant is built by qbench's own prepare stage (the artifacts `qbench run` measures, from
the same cache) in a separate process, then opened with its backend's session and timed in
interleaved rounds in one process: each round times every variant once, in rotating order, so
drift and noise from a shared machine hit all alike; a ratio is the median over rounds of that
round's ratio. For SmolLM2 a round of a variant is one 128-token prefill (time to first token)
and 32 greedy decode steps with the KV cache (median ms per token); its compiled variants
decode through a static KV cache with a compiled step, their prefill stays eager (as qbench's
causal-LM cells run them); its ONNX Runtime variants run the graph exported with its KV cache.

    python benchmarks/transformers_goals.py [--rounds 5] [--seconds 1.0] [--skip-llm]
        [--skip-encoder] [--variants 'ort fp32,ort int8'] [--encoder MODEL_ENTRY]

Expected (issue 18, one hand measurement): torch bf16 ~3.3x torch fp32; torch int8 (compiled)
and ONNX Runtime int8 2.2-2.5x their fp32; LiteRT dynamic int8 ~6x LiteRT fp32; int4 saves
size, not prefill time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from x86_goals import interleave, open_variant, prepare_variant, ratio  # noqa: E402

INT8_ORT = {"weight_type": "int8", "per_channel": True}
# (label, backend, backend params, method, method params)
ENCODER: list[tuple[str, str, dict[str, Any], str, dict[str, Any]]] = [
    ("torch fp32 eager", "torch", {}, "fp32", {}),
    ("torch fp32 compiled", "torch", {"compile": True}, "fp32", {}),
    ("torch bf16 eager", "torch", {}, "bf16", {}),
    ("torch bf16 compiled", "torch", {"compile": True}, "bf16", {}),
    ("torch int8 eager", "torch", {}, "torchao", {"scheme": "int8_dynamic"}),
    ("torch int8 compiled", "torch", {"compile": True}, "torchao", {"scheme": "int8_dynamic"}),
    ("torch int4 compiled", "torch", {"compile": True}, "torchao", {"scheme": "int4_weight"}),
    ("ort fp32", "onnxruntime", {}, "fp32", {}),
    ("ort int8", "onnxruntime", {}, "dynamic_int8", INT8_ORT),
    ("ort int4 MatMulNBits", "onnxruntime", {}, "weight_only", {"accuracy_level": 4}),
    ("ort int8 MatMulNBits", "onnxruntime", {}, "weight_only", {"bits": 8, "accuracy_level": 4}),
    ("litert fp32", "litert", {}, "fp32", {}),
    ("litert int8", "litert", {}, "dynamic_int8", {}),
    ("litert int4 weights", "litert", {}, "weight_only", {"accuracy_level": 4}),
]
LLM: list[tuple[str, str, dict[str, Any], str, dict[str, Any]]] = [
    ("torch fp32", "torch", {}, "fp32", {}),
    ("torch bf16", "torch", {}, "bf16", {}),
    ("torch int8 dynamic", "torch", {}, "torchao", {"scheme": "int8_dynamic"}),
    ("torch int8 weights", "torch", {}, "torchao", {"scheme": "int8_weight"}),
    ("torch int4 weights", "torch", {}, "torchao", {"scheme": "int4_weight"}),
    ("torch fp32 compiled", "torch", {"compile": True}, "fp32", {}),
    ("torch bf16 compiled", "torch", {"compile": True}, "bf16", {}),
    ("torch int8 dyn compiled", "torch", {"compile": True}, "torchao", {"scheme": "int8_dynamic"}),
    ("torch int4 compiled", "torch", {"compile": True}, "torchao", {"scheme": "int4_weight"}),
    ("ort fp32", "onnxruntime", {}, "fp32", {}),
    ("ort int8", "onnxruntime", {}, "dynamic_int8", INT8_ORT),
    ("ort int4 MatMulNBits", "onnxruntime", {}, "weight_only", {"accuracy_level": 4}),
]
# (what, slow variant, fast variant): decode (ms per token) ratios within one runtime
LLM_RATIOS = [
    ("ORT fp32 / torch fp32 (eager)", "torch fp32", "ort fp32"),
    ("ORT int8 / ORT fp32", "ort fp32", "ort int8"),
    ("ORT int4 / ORT fp32", "ort fp32", "ort int4 MatMulNBits"),
    ("torch int4 compiled / torch fp32 compiled", "torch fp32 compiled", "torch int4 compiled"),
]
# (what, slow variant, fast variant, expected)
ENCODER_RATIOS = [
    ("torch bf16 / torch fp32 (eager)", "torch fp32 eager", "torch bf16 eager", "~3.3x"),
    ("torch bf16 / torch fp32 (compiled)", "torch fp32 compiled", "torch bf16 compiled", "~3.3x"),
    ("torch int8 / torch fp32 (compiled)", "torch fp32 compiled", "torch int8 compiled",
     "2.2-2.5x"),
    ("torch int8 / torch fp32 (eager)", "torch fp32 eager", "torch int8 eager", ""),
    ("ORT int8 / ORT fp32", "ort fp32", "ort int8", "2.2-2.5x"),
    ("LiteRT dynamic int8 / LiteRT fp32", "litert fp32", "litert int8", "~6x"),
    ("torch int4 / torch fp32 (compiled)", "torch fp32 compiled", "torch int4 compiled",
     "size, not speed"),
    ("ORT int4 / ORT fp32", "ort fp32", "ort int4 MatMulNBits", "size, not speed"),
    ("LiteRT int4 weights / LiteRT fp32", "litert fp32", "litert int4 weights", ""),
]  # fmt: skip
PROMPT, DECODE = 128, 32


def build(model: str, variants: list[tuple]) -> dict[str, Any]:
    return {v[0]: prepare_variant(model, v) for v in variants}


def chosen(variants: list[tuple], given: str | None) -> list[tuple]:
    """--variants: those of `variants` whose labels are listed (default: all)."""
    if not given:
        return variants
    wanted = {w.strip() for w in given.split(",") if w.strip()}
    return [v for v in variants if v[0] in wanted]


def built_in_child(model: str, which: str, variants: str | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--build", which, "--model", model,
         *(["--variants", variants] if variants else [])],
        capture_output=True, text=True, cwd=tempfile.gettempdir(),
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"building failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def encoder_section(rounds: int, seconds: float, variants: str | None = None,
                    model: str = "minilm") -> None:  # fmt: skip
    from qbench.inputs import load_npz

    built = built_in_child(model, "encoder", variants)
    runners, facts, tokens = {}, {}, "?"
    for label, got in built.items():
        if isinstance(got, str):
            print(f"{label:<24} skipped: {got}")
            continue
        runners[label], facts[label] = open_variant(got, batch=8)
        facts[label]["bytes"] = got["prepared"]["artifact_bytes"]
        x, _ = load_npz(got["prepared"]["eval_path"])
        tokens = next(iter(x.values())).shape[-1]  # the data's sequence length
    p50s = interleave(runners, rounds, seconds)
    entry = json.loads(model) if model.lstrip().startswith("{") else {"label": model}
    name = entry.get("label") or entry.get("name")
    print(f"\n## {name}: batch 8 x {tokens} tokens, 1 thread ({rounds} interleaved rounds)")
    print(f"{'variant':<24} {'p50 ms':>9} {'MB':>7}  what ran")
    for label in runners:
        f = facts[label]
        nodes = f"quantized {f.get('quantized_nodes')}/{f.get('compute_nodes')}"
        kernels = str(f.get("onednn_kernels") or "").split(",")[0]
        print(f"{label:<24} {statistics.median(p50s[label]):>9.2f} {f['bytes'] / 1e6:>7.1f}  "
              f"{f.get('execution')}; {nodes}{'; ' + kernels if kernels else ''}")  # fmt: skip
    print("\nratio (median of per-round ratios)          measured   expected")
    for what, slow, fast, expected in ENCODER_RATIOS:
        if slow in p50s and fast in p50s:
            print(f"{what:<44} {ratio(p50s, slow, fast):>7.2f}x   {expected}")


def llm_section(rounds: int, variants: str | None = None) -> None:
    import numpy as np

    from qbench.inputs import load_npz
    from qbench.plan import Cell
    from qbench.plugins import load_members

    built = built_in_child("smollm2", "llm", variants)
    lms: dict[str, Any] = {}
    sizes: dict[str, float] = {}
    prompt = None
    for label, got in built.items():
        if isinstance(got, str):
            print(f"{label:<22} skipped: {got}")
            continue
        cell, prepared = Cell.from_json(got["cell"]), got["prepared"]
        backend = load_members(cell.members).backends.get(cell.backend)()
        session = backend.open(Path(prepared["artifact_path"]), cell.artifact_format, 1,
                               backend.Params(**cell.backend_params))  # fmt: skip
        # compiled sessions decode through a static KV cache this long (prefill stays eager)
        lms[label] = session.lm(PROMPT + DECODE + 16)
        sizes[label] = prepared["artifact_bytes"] / 1e6
        if prompt is None:
            x, _ = load_npz(prepared["eval_path"])
            prompt = np.ascontiguousarray(next(iter(x.values())).reshape(-1)[:PROMPT])
    assert prompt is not None
    ttft: dict[str, list[float]] = {k: [] for k in lms}
    per_token: dict[str, list[float]] = {k: [] for k in lms}
    for lm in lms.values():  # warm-up
        token, state = lm.prefill(prompt)
        for _ in range(4):
            token, state = lm.decode(token, state)
    names = list(lms)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            lm = lms[name]
            start = time.perf_counter()
            token, state = lm.prefill(prompt)
            ttft[name].append((time.perf_counter() - start) * 1e3)
            steps = []
            for _ in range(DECODE):
                start = time.perf_counter()
                token, state = lm.decode(token, state)
                steps.append((time.perf_counter() - start) * 1e3)
            per_token[name].append(statistics.median(steps))
    print(f"\n## smollm2: batch 1, {PROMPT}-token prompt, {DECODE} decode steps, 1 thread "
          f"({rounds} interleaved rounds)")  # fmt: skip
    print(f"{'variant':<22} {'TTFT ms':>9} {'ms/token':>9} {'tok/s':>7} {'MB':>7} "
          f"{'TTFT x fp32':>12} {'decode x fp32':>14}")  # fmt: skip
    for name in names:
        tok = statistics.median(per_token[name])
        print(f"{name:<22} {statistics.median(ttft[name]):>9.1f} {tok:>9.2f} {1000 / tok:>7.1f} "
              f"{sizes[name]:>7.1f} {ratio(ttft, 'torch fp32', name):>11.2f}x "
              f"{ratio(per_token, 'torch fp32', name):>13.2f}x")  # fmt: skip
    print("\ndecode ratio (median of per-round ratios)      TTFT   decode")
    for what, slow, fast in LLM_RATIOS:
        if slow in per_token and fast in per_token:
            print(
                f"{what:<44} {ratio(ttft, slow, fast):>5.2f}x {ratio(per_token, slow, fast):>6.2f}x"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per variant per round")
    parser.add_argument("--skip-llm", action="store_true")
    parser.add_argument("--skip-encoder", action="store_true")
    parser.add_argument("--variants", help="comma-separated labels to build and time (default: "
                        "all; the ratios need both of their variants)")  # fmt: skip
    parser.add_argument("--encoder", default="minilm",
                        help="the encoder: a built-in model, or a suite's model entry as JSON, "
                        'e.g. {"name": "hf_local", "label": "mine", "params": {"path": ...}} '
                        "(default: minilm)")  # fmt: skip
    parser.add_argument("--build", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:  # JSON on stdout's last line
        variants = chosen(ENCODER if args.build == "encoder" else LLM, args.variants)
        print(json.dumps(build(args.model, variants), default=str))
        return 0
    from qbench.hostinfo import cpu_info, onednn_isa

    cpu = cpu_info()
    print(f"cpu: {cpu['cpu_model']}; flags: {', '.join(cpu['cpu_flags'])}")
    print(f"oneDNN ISA (torch): {onednn_isa()}")
    if not args.skip_encoder:
        encoder_section(args.rounds, args.seconds, args.variants, args.encoder)
    if not args.skip_llm:
        llm_section(args.rounds, args.variants)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
