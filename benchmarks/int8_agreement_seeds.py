"""How steady is a full-int8 model's top-1 agreement with fp32 across calibration draws?

One calibration draw gives one int8 model; its agreement on a few hundred crops of a few dozen
photos is itself noisy. This runs `qbench run` once per calibration seed (the same suite,
only `calibration.seed` changed; each seed draws other random crops for calibration) on
MobileNetV2 fp32 and static_int8 for one backend, on each dataset named, and prints every
int8 row: top-1 agreement with its 95% interval, output SQNR and the p50 ratio to fp32.

    python benchmarks/int8_agreement_seeds.py [--backend litert] [--seeds 0 1 2]
        [--datasets imagenet_samples sample_photos] [--params '{"calibrator": "percentile"}']
        [--keep DIR] [--model mobilenet_v2] [--samples 500] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = """\
name: agreement_seed_{seed}_{dataset}
description: {model} fp32 and static_int8, calibration seed {seed}
models: [{model}]
methods:
  - fp32
  - name: static_int8
    params: {params}
backends: [{backend}]
devices: [local]
scenario: {{batch: [1], threads: [1]}}
measurement: {measurement}
accuracy: {{dataset: {dataset}, samples: {samples}}}
calibration: {{samples: 64, seed: {seed}}}
output: {store}
"""


MEASUREMENT = "{warmup: 5, min_iters: 30, min_seconds: 1.0, repeats: 1}"
QUICK = "{warmup: 1, min_iters: 5, min_seconds: 0.05, repeats: 1}"  # --quick: a smoke test's

RUN_QBENCH = "import sys; from qbench.cli import main; sys.exit(main())"  # this interpreter's


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="litert")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=["imagenet_samples", "sample_photos"])
    parser.add_argument("--params", default="{}", help="static_int8 params as JSON")
    parser.add_argument("--keep", type=Path, help="keep the stores here")
    parser.add_argument("--model", default="mobilenet_v2", help="a built-in model")
    parser.add_argument("--samples", type=int, default=500, help="evaluation inputs (500)")
    parser.add_argument("--quick", action="store_true",
                        help="a brief timing (the agreement figures are unchanged)")  # fmt: skip
    args = parser.parse_args()

    import pandas as pd

    root = args.keep or Path(tempfile.mkdtemp(prefix="qbench-agreement-"))
    root.mkdir(parents=True, exist_ok=True)
    params = json.loads(args.params)
    lines = []
    for dataset in args.datasets:
        for seed in args.seeds:
            store = root / f"{dataset}-seed{seed}"
            suite = root / f"{dataset}-seed{seed}.yaml"
            timing = QUICK if args.quick else MEASUREMENT
            suite.write_text(SUITE.format(seed=seed, dataset=dataset, backend=args.backend,
                                          params=json.dumps(params), store=store,
                                          model=args.model, samples=args.samples,
                                          measurement=timing))  # fmt: skip
            command = [sys.executable, "-c", RUN_QBENCH, "run", str(suite), "-q", "--no-report"]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
                return done.returncode
            rows = pd.concat(pd.read_parquet(f) for f in (store / "results").glob("*.parquet"))
            fp32 = rows[rows.method == "fp32"].iloc[0]
            for _, r in rows[rows.method == "static_int8"].iterrows():
                lines.append(
                    f"{dataset:17} seed {seed}  agreement {r.fp32_agreement:.3f} "
                    f"({r.fp32_agreement_ci_low:.2f}-{r.fp32_agreement_ci_high:.2f}, "
                    f"{_int(r.accuracy_groups)} photos, {_int(r.accuracy_samples)} crops)  "
                    f"top-1 {_fmt(r.top1)} (fp32 {_fmt(fp32.top1)})  "
                    f"SQNR {r.output_sqnr_db:5.2f} dB  p50 {r.latency_p50_ms:.2f} ms "
                    f"= {r.latency_p50_ms / fp32.latency_p50_ms:.2f}x fp32"
                )
            print(lines[-1], flush=True)
    print(f"\n{args.model} static_int8 {json.dumps(params)} on {args.backend}, stores in {root}")
    print("\n".join(lines))
    return 0


def _int(value: float) -> str:
    """A count, or '-' where the row has none (a data set without photo groups)."""
    return "-" if value != value else str(int(value))


def _fmt(value: float) -> str:
    return "  -  " if value != value else f"{value:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
