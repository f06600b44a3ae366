"""The nine ONNX Model Zoo "light" graphs that ship inside the `onnx` wheel, run by `qbench run`.

They are what a user's own ONNX files often look like: opset 9, IR 3 (initializers listed as
graph inputs), a fixed batch of 1, inputs named `data_0` / `gpu_0/data_0`, some with outputs
shaped [N, C, 1, 1], and every weight computed by ConstantOfShape (placeholder values: latency
and size mean something, accuracy does not, and the rows say so instead of claiming agreement).

    python benchmarks/model_zoo_light.py [--methods fp32,dynamic_int8,static_int8] [--keep DIR]
        [--graphs 'squeezenet*,resnet50'] [--samples 20] [--min-seconds 1.0]

Writes a suite for the graphs found, runs it (one process per cell, as always) and prints one
line per cell: status, p50 latency and its ratio to the model's fp32 cell, packed size, how
many compute nodes run quantized, and what the row says about agreement.
"""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="fp32,dynamic_int8,static_int8")
    parser.add_argument("--keep", help="folder for the suite, store and report (default: temp)")
    parser.add_argument("--samples", type=int, default=20, help="evaluation inputs per cell")
    parser.add_argument("--graphs", default="*", help="comma-separated fnmatch patterns on the "
                        "graphs' file names without .onnx (default: all)")  # fmt: skip
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timing per cell (1.0)")
    args = parser.parse_args()
    patterns = args.graphs.split(",")
    graphs = [g for g in sorted(LIGHT.glob("*.onnx"))
              if any(fnmatch.fnmatch(g.stem, p) for p in patterns)]  # fmt: skip
    if not graphs:
        print(f"no light graphs under {LIGHT} match {args.graphs}", file=sys.stderr)
        return 1
    folder = Path(args.keep or tempfile.mkdtemp(prefix="qbench-zoo-"))
    folder.mkdir(parents=True, exist_ok=True)
    models = "\n".join(f"  - {{name: onnx_file, params: {{path: {g}}}}}" for g in graphs)
    methods = ", ".join(args.methods.split(","))
    suite = folder / "model_zoo_light.yaml"
    suite.write_text(
        f"name: model_zoo_light\nmodels:\n{models}\nmethods: [{methods}]\n"
        "backends: [onnxruntime]\n"
        f"measurement: {{warmup: 2, min_iters: 10, min_seconds: {args.min_seconds}, "
        "timeout_s: 1800}\n"
        f"accuracy: {{samples: {args.samples}}}\ncalibration: {{samples: 16}}\n"
        f"output: {folder / 'store'}\nreport: {folder / 'model_zoo_light.html'}\n"
    )
    proc = subprocess.run([sys.executable, "-m", "qbench.cli", "run", str(suite), "-q"])
    if proc.returncode != 0:
        return proc.returncode
    from qbench.store.parquet import load

    runs, results = load(folder / "store")
    latest = runs.sort_values("started_at")["run_id"].iloc[-1]
    rows = results[results.run_id == latest].to_dict("records")
    fp32 = {r["model"]: r["latency_p50_ms"] for r in rows if r["method"] == "fp32"}
    print(f"{'model':<20} {'method':<13} {'status':<8} {'p50 ms':>9} {'vs fp32':>8} "
          f"{'packed MB':>10} {'quantized':>10}  agreement")  # fmt: skip
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['model']:<20} {r['method']:<13} {r['status']:<8} {r.get('error')}")
            continue
        base = fp32.get(r["model"])
        ratio = f"{base / r['latency_p50_ms']:.2f}x" if base else ""
        empty = [n for n in r["notes"] if n.startswith("fp32_agreement empty")]
        said = empty[0].split("empty: ", 1)[-1].split(" (")[0] if empty else None
        agreement = f"empty: {said}" if said else f"{r['fp32_agreement']:.3f}"
        print(
            f"{r['model']:<20} {r['method']:<13} {r['status']:<8} {r['latency_p50_ms']:9.2f} "
            f"{ratio:>8} {r['packed_bytes'] / 1e6:10.1f} "
            f"{int(r['quantized_nodes'])}/{int(r['compute_nodes']):<7}  {agreement}"
        )
    print(f"store {folder / 'store'}, report {folder / 'model_zoo_light.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
