"""Where an OpenVINO cell's time goes, layer type by layer type: the CPU plugin's own per-node
counters (PERF_COUNT) for the fp32, bf16 and NNCF int8 artifacts qbench builds for a model,
compiled as the openvino backend compiles them (1 thread, latency hint, static batch-1
shapes, INFERENCE_PRECISION_HINT as the backend sets it).

It explains a ratio that x86_goals.py measures: which layers int8 speeds up and which it
does not (MobileNetV2's depthwise convolutions have no VNNI/AMX dot product to use: each
output channel reads one input channel).

    python benchmarks/openvino_layers.py [--model mobilenet_v2] [--calls 300]
        [--variants 'openvino fp32,openvino int8 (NNCF)']

The CPU plugin honours oneDNN's ISA cap (the backend's `isa` option): run under
ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 it shows the same layers without AMX kernels.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from x86_goals import VARIANTS, prepare_variant

LABELS = ("openvino fp32", "openvino bf16", "openvino int8 (NNCF)")


def layer_times(built: dict[str, Any], calls: int) -> tuple[float, dict[tuple[str, str], list]]:
    """(mean ms per call, {(layer type, kernel): [ms per call, layers]}) from PERF_COUNT, on
    the model the openvino backend's session compiled for the batch (its config too)."""
    from qbench.backends.openvino import OpenVinoParams
    from qbench.inputs import InputSpec, batch_of, bind, load_npz
    from qbench.plan import Cell
    from qbench.plugins import load_members

    cell, prepared = Cell.from_json(built["cell"]), built["prepared"]
    backend = load_members(cell.members).backends.get("openvino")()
    params = OpenVinoParams(**cell.backend_params)
    session = backend.open(Path(prepared["artifact_path"]), cell.artifact_format, 1, params)
    spec = [InputSpec.from_json(s) for s in prepared["model_inputs"]]
    x, _ = load_npz(prepared["eval_path"])
    session.runner(batch_of(bind(spec, x), 1))  # compiles for the batch's static shapes
    # the same model and shapes compiled again with the plugin's per-node counters on
    model = session.model.clone()
    model.reshape({p.get_any_name(): p.get_partial_shape()
                   for p in session.compiled.inputs})  # fmt: skip
    compiled = session.core.compile_model(model, "CPU", {**session.config, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    for index, (tensor, _) in enumerate(session.bound):
        request.set_input_tensor(index, tensor)
    for _ in range(50):
        request.infer()
    totals: dict[tuple[str, str], list] = defaultdict(lambda: [0.0, 0])
    started = time.perf_counter()
    for _ in range(calls):
        request.infer()
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                totals[(info.node_type, info.exec_type)][0] += (
                    info.real_time.total_seconds() * 1000 / calls
                )
    wall = (time.perf_counter() - started) * 1000 / calls  # includes reading the counters
    for info in request.profiling_info:
        if info.status == info.Status.EXECUTED:
            totals[(info.node_type, info.exec_type)][1] += 1
    return wall, dict(totals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--variants", default=",".join(LABELS),
                        help=f"comma-separated, among: {', '.join(LABELS)}")  # fmt: skip
    args = parser.parse_args()
    labels = [w.strip() for w in args.variants.split(",") if w.strip()]
    unknown = [w for w in labels if w not in LABELS]
    if unknown:
        raise SystemExit(f"--variants: no such variant {', '.join(unknown)}; expected among: "
                         f"{', '.join(LABELS)}")  # fmt: skip
    by_label = {v[0]: v for v in VARIANTS}
    for label in labels:
        built = prepare_variant(args.model, by_label[label])
        if isinstance(built, str):
            print(f"\n## {label}: {built}")
            continue
        wall, totals = layer_times(built, args.calls)
        counted = sum(ms for ms, _ in totals.values())
        print(f"\n## {args.model}, {label}: layers {counted:.3f} ms per call (wall with the "
              f"counters read: {wall:.3f} ms)")  # fmt: skip
        for (kind, kernel), (ms, n) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
            if ms >= 0.005:
                print(f"  {ms:7.3f} ms {n:3d}x  {kind:<22} {kernel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
